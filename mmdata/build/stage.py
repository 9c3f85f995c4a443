"""The build stage: scrubbed records (+ labels) → instruction datasets in ``RUN/dataset``.

Two passes over the records files:

1. **Labels and splits.** Only the small columns are read (ids, windows, provenance,
   labels). Every window gets its labels (annotations first, then ``build.ground_truth``),
   then :func:`~mmdata.build.splits.assign_splits` places it, and
   :func:`~mmdata.build.leakage.leakage_check` audits the placement independently.
2. **Samples.** Per file, each placed record becomes one sample per applicable task
   (:func:`~mmdata.build.templates.make_samples`); the samples are written in every
   configured format (:func:`~mmdata.build.formats.write_formats`).

Besides the formats, ``RUN/dataset`` holds what the feature cache and the trainer read:
``media.parquet`` (every distinct medium), ``sensors.parquet`` (every sensor window, keyed by
the sha256 of its float32 samples), ``samples.parquet`` (one row per sample: split, task,
label, target, the hashes of its media and sensors), ``build_report.json`` (splits, label
balance, leakage check, skipped tasks, rejected samples) and the dataset card ``README.md``.

Counts: ``in`` = records read; ``out`` = records that gave at least one sample; every other
record is quarantined with its reason (bad media, no task applies, dropped by the split's
guard gap), so in = out + quarantined.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmdata import atomic
from mmdata.build.card import write_card
from mmdata.build.formats import write_formats
from mmdata.build.labels import Fault, WindowLabels, dataset_classes, load_ground_truth
from mmdata.build.samples import SAMPLES_SCHEMA, Sample
from mmdata.build.splits import WindowMeta, assign_splits, leakage_check
from mmdata.build.templates import SampleContext, TemplateSet, make_samples
from mmdata.config import PipelineConfig, config_hash
from mmdata.errors import ConfigError, InputDataError, StageError
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import ProgressFn, StageContext, StageOutcome, StageSpec, run_stage

__all__ = ["SAMPLES_FILE", "SENSORS_FILE", "run_build", "sensor_sha256"]

SAMPLES_FILE = "samples.parquet"
SENSORS_FILE = "sensors.parquet"
REPORT_FILE = "build_report.json"
_META_COLUMNS = ["record_id", "asset_id", "window_start_ns", "window_end_ns", "labels",
                 "provenance"]  # fmt: skip

SENSORS_SCHEMA = pa.schema([
    ("sha256", pa.string()), ("record_id", pa.string()), ("stream_id", pa.string()),
    ("sample_rate", pa.float64()), ("channels", pa.list_(pa.string())),
    ("values", pa.list_(pa.list_(pa.float32()))),
])  # fmt: skip


def sensor_sha256(values: np.ndarray) -> str:
    """Content hash of a sensor window: sha256 of its float32 samples, channels-major, LE.

    >>> sensor_sha256(np.zeros((1, 2), np.float32))[:12]
    'af5570f5a181'
    """
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").tobytes()).hexdigest()


def run_build(run: RunDir, config: PipelineConfig, *, progress: ProgressFn | None = None,
              force: bool = False) -> StageOutcome:  # fmt: skip
    """The ``dataset`` stage: build the instruction datasets from the scrubbed records.

    >>> # run_build(RunDir.open("runs/demo"), config)  # after `mmdata scrub`
    """
    cfg = config.build
    source = "scrubbed" if cfg.input == "scrubbed" else "records"
    if source == "records" and not cfg.allow_unscrubbed:
        raise ConfigError("pipeline", "build.input", "records",
                          "'scrubbed', or set build.allow_unscrubbed: true to build from "
                          "records that were never scrubbed for PII")  # fmt: skip
    upstream = run.manifest.stages.get(source)
    if upstream is None or upstream.status != "complete":
        verb = "scrub" if source == "scrubbed" else "align"
        raise StageError(f"build needs a completed {source} stage in this run",
                         hint=f"run `mmdata {verb}` first")  # fmt: skip
    resolved = run.root / "labels" / RESOLVED_LABELS
    extra = _resolved_labels(resolved)
    templates = TemplateSet.load(cfg.templates)
    templates.check_tasks(cfg.tasks)
    truth = load_ground_truth(cfg.ground_truth) if cfg.ground_truth else None
    spec = StageSpec(
        name="dataset", version="1", config=cfg,
        inputs_fingerprint=config_hash({
            source: upstream.fingerprint,
            "ground_truth": _file_hash(cfg.ground_truth), "templates": _file_hash(cfg.templates),
            "lines": {a: c.line for a, c in sorted(config.assets.items())},
            "labels": _file_hash(str(resolved)) if resolved.is_file() else None,
        }),
    )  # fmt: skip
    in_dir = run.stage_path(source)

    def stage(ctx: StageContext) -> StageCounts:
        files = sorted(in_dir.glob("asset_id=*/date=*/*.parquet"))
        metas, labels = _labels_pass(files, config, truth, extra)
        split = assign_splits(metas, cfg.split)
        gap_ns = cfg.split.gap_ms * 1_000_000
        classes = dataset_classes(truth, [lb.defect for lb in labels.values() if lb.defect],
                                  cfg.normal_label)  # fmt: skip
        sctx = SampleContext(cfg, templates, classes)
        samples, sensors, skipped, used = _samples_pass(files, split.assignment, labels, sctx,
                                                         ctx, extra)  # fmt: skip
        for rid, reason in sorted(split.dropped.items()):
            ctx.quarantine.record("dataset", "SplitGuardGap", reason, item_id=rid)
        for rid in sorted(set(split.assignment) - used - _quarantined(ctx)):
            ctx.quarantine.record("dataset", "NoTaskApplies", "no task of build.tasks applies "
                                  "to this window (see skipped in build_report.json)",
                                  item_id=rid)  # fmt: skip
        report = write_formats(samples, ctx.out_dir, cfg.formats, name="mmdata")
        written = {s.sample_id for s in samples} - {sid for sid, f, _ in report.rejected
                                                    if f == "*"}  # fmt: skip
        kept = [s for s in samples if s.sample_id in written]
        _write_index(ctx.out_dir, kept, sensors)
        placed = {s.record_id: s.split for s in kept}
        leakage = leakage_check([m for m in metas if m.record_id in placed], placed, gap_ns)
        if not leakage.ok:
            raise StageError("the split leaks between train and test:\n" + leakage.summary(),
                             hint="report this: assign_splits must never leak")  # fmt: skip
        summary = {
            "schema_version": "mmdata.build_report/1",
            "source": source, "classes": classes, "tasks": list(cfg.tasks),
            "records": len(metas), "records_used": len(used), "samples": len(kept),
            "samples_per_split_task": _per_split_task(kept),
            "label_balance": _label_balance(kept),
            "skipped": {f"{t}: {r}": n for (t, r), n in sorted(skipped.items())},
            "splits": split.to_json(), "leakage": leakage.to_json(), "formats": report.to_json(),
            "console": [*split.summary(), *leakage.summary().splitlines()],
        }  # fmt: skip
        atomic.write_json(ctx.out_dir / REPORT_FILE, summary)
        write_card(ctx.out_dir, run, config, summary)
        n_in = len(metas)
        return StageCounts(in_=n_in, out=len(used), quarantined=n_in - len(used))

    return run_stage(run, spec, stage, progress=progress, force=force)


def _file_hash(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as err:
        raise InputDataError(f"{path}: cannot read: {err.strerror}") from err


RESOLVED_LABELS = "resolved.parquet"  # RUN/labels/: annotators' labels, one decision per row


def _resolved_labels(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Labels pulled from Label Studio (``mmdata labels pull|import``), by record id, in the
    record ``labels`` struct shape; they are added to the records' own labels."""
    if not path.is_file():
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    cols = ["record_id", "name", "value", "start_ns", "end_ns", "source", "annotator"]
    for row in pq.read_table(path, columns=cols).to_pylist():
        rid = row.pop("record_id")
        out.setdefault(rid, []).append(row)
    return out


def _labels_pass(files: list[Path], config: PipelineConfig,
                 truth: dict[str, list[Fault]] | None, extra: dict[str, list[dict[str, Any]]]
                 ) -> tuple[list[WindowMeta], dict[str, WindowLabels]]:  # fmt: skip
    from mmdata.build.labels import window_labels

    metas: list[WindowMeta] = []
    labels: dict[str, WindowLabels] = {}
    for path in files:
        for rec in pq.read_table(path, columns=_META_COLUMNS).to_pylist():
            rec["labels"] = (rec["labels"] or []) + extra.get(rec["record_id"], [])
            asset = rec["asset_id"]
            faults = truth.get(asset, []) if truth is not None else None
            lb = window_labels(rec, faults, config.build)
            labels[rec["record_id"]] = lb
            asset_cfg = config.assets.get(asset)
            metas.append(WindowMeta(
                record_id=rec["record_id"], asset_id=asset,
                line=asset_cfg.line if asset_cfg else None,
                start_ns=rec["window_start_ns"], end_ns=rec["window_end_ns"], label=lb.defect,
                sources=tuple(sorted({p["uri"] for p in rec["provenance"] or [] if p["uri"]})),
            ))  # fmt: skip
    return metas, labels


def _samples_pass(files: list[Path], assignment: dict[str, str], labels: dict[str, WindowLabels],
                  sctx: SampleContext, ctx: StageContext, extra: dict[str, list[dict[str, Any]]]
                  ) -> tuple[list[Sample], list[dict[str, Any]], Counter[tuple[str, str]],
                             set[str]]:  # fmt: skip
    samples: list[Sample] = []
    sensors: list[dict[str, Any]] = []
    skipped: Counter[tuple[str, str]] = Counter()
    used: set[str] = set()
    for k, path in enumerate(files):
        for rec in pq.read_table(path).to_pylist():
            rid = rec["record_id"]
            if rid not in assignment:
                continue
            rec["labels"] = (rec["labels"] or []) + extra.get(rid, [])
            try:
                made, skips = make_samples(rec, labels[rid], sctx)
            except InputDataError as err:
                ctx.quarantine.record(f"records/{path.name}", type(err).__name__, err.message,
                                      item_id=rid)  # fmt: skip
                continue
            skipped.update(skips)
            if not made:
                continue
            used.add(rid)
            shas = []
            for s in rec["sensors"] or []:
                values = np.asarray(s["values"], dtype=np.float32)
                sha = sensor_sha256(values)
                shas.append(sha)
                sensors.append({"sha256": sha, "record_id": rid, "stream_id": s["stream_id"],
                                "sample_rate": s["sample_rate"], "channels": s["channels"],
                                "values": s["values"]})  # fmt: skip
            for smp in made:
                smp.split = assignment[rid]
                smp.provenance["sensor_sha256"] = shas
            samples.extend(made)
        ctx.report(f"build: {path.parent.parent.name}", k + 1, len(files))
    return samples, sensors, skipped, used


def _quarantined(ctx: StageContext) -> set[str]:
    return {r.item_id for r in ctx.quarantine.rows if r.item_id}


def _write_index(out: Path, samples: list[Sample], sensors: list[dict[str, Any]]) -> None:
    rows = sorted(samples, key=lambda s: (s.split, s.sample_id))
    table = pa.table({
        "sample_id": [s.sample_id for s in rows], "record_id": [s.record_id for s in rows],
        "asset_id": [s.provenance.get("asset_id") for s in rows],
        "window_start_ns": [s.provenance.get("window_start_ns") for s in rows],
        "window_end_ns": [s.provenance.get("window_end_ns") for s in rows],
        "split": [s.split for s in rows], "task": [s.task for s in rows],
        "template": [s.template for s in rows], "label": [s.label for s in rows],
        "target": [json.dumps(s.target, sort_keys=True) for s in rows],
        "prompt": [s.prompt for s in rows], "response": [s.response for s in rows],
        "images": [[m.sha256 for m in s.images] for s in rows],
        "image_roles": [[m.role for m in s.images] for s in rows],
        "audios": [[m.sha256 for m in s.audios] for s in rows],
        "sensors": [list(s.provenance.get("sensor_sha256", [])) for s in rows],
    }, schema=SAMPLES_SCHEMA)  # fmt: skip
    atomic.write_parquet(out / SAMPLES_FILE, table)
    seen: dict[str, dict[str, Any]] = {}
    for row in sensors:
        seen.setdefault(row["sha256"], row)
    unique = [seen[k] for k in sorted(seen)]
    atomic.write_parquet(out / SENSORS_FILE, pa.Table.from_pylist(unique, schema=SENSORS_SCHEMA))


def _per_split_task(samples: list[Sample]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for s in samples:
        out.setdefault(s.split, {}).setdefault(s.task, 0)
        out[s.split][s.task] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def _label_balance(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """Windows per label per split (each window once, whatever its number of tasks)."""
    seen: dict[str, dict[str, str]] = {}
    for s in samples:
        seen.setdefault(s.split, {})[s.record_id] = s.label or "(unlabeled)"
    return {split: dict(sorted(Counter(v.values()).items())) for split, v in sorted(seen.items())}
