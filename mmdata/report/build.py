"""Collect what the run report shows from a run directory, stage by stage.

Each part is read from the files its stage wrote (``manifest.json``, ``quarantine/``,
``ingest/streams.json``, ``sync/clock_models.json``, ``records/``, ``audit/``, ``dataset/``,
``features/``, ``train/``, ``eval/``) and is either the data or an :class:`Absent` saying
why not: ``stage not run``, ``stage failed: ...``, ``stage running`` or ``could not read
...`` — a half-run or broken run still gets a report.

Nothing here reads content that can hold PII: of the records only window bounds, coverage
and flags; of the notes stream only its timestamps; of the audit only counts; of the
evaluation only metrics (never the model's answers); of the dataset only its card, build
report and the labels and splits of ``samples.parquet``.

Windows are aggregated into at most :data:`MAX_BINS` bins per asset (each bin: time span,
window count, flag counts, mean coverage, label and split counts), so the timeline stays
small for long runs.

>>> Absent("stage not run").reason
'stage not run'
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmdata.errors import RunDirError
from mmdata.timebase import ClockModel

__all__ = [
    "FLAGS",
    "MAX_BINS",
    "STAGE_ORDER",
    "Absent",
    "AssetTimeline",
    "QuarantineGroup",
    "RunReport",
    "StreamLane",
    "WindowBins",
    "collect",
]

T = TypeVar("T")

#: Stages in pipeline order (stage name = folder name in the run directory).
STAGE_ORDER = (
    "synth",
    "ingest",
    "sync",
    "records",
    "scrubbed",
    "dataset",
    "features",
    "train",
    "eval",
)
FLAGS = ("gap", "stale", "clock_uncertain", "exceeds_tolerance", "missing_modality")
COVERAGE = ("sensors", "audio", "image", "text")
MAX_BINS = 240
_MAX_MESSAGE = 160
_MODALITY_ORDER = {"sensor": 0, "audio": 1, "image": 2, "video": 3, "text": 4}


@dataclass(frozen=True)
class Absent:
    """Why a part of the report has no data."""

    reason: str


@dataclass(frozen=True)
class QuarantineGroup:
    """Quarantined items of one stage with one error class."""

    stage: str
    error_class: str
    count: int
    example: str  # the first message, cut short


@dataclass(frozen=True)
class StreamLane:
    """One ingested stream placed on reference time."""

    stream_id: str
    device_id: str
    modality: str
    rows: int
    segments: int
    spans: list[tuple[int, int]]  # reference time
    ticks: list[tuple[int, int]]  # (reference time, events) of sparse streams (notes)
    flags: dict[str, int]


@dataclass
class WindowBins:
    """Windows of one asset aggregated into time bins (arrays of equal length)."""

    start_ns: np.ndarray
    end_ns: np.ndarray
    n: np.ndarray
    flags: dict[str, np.ndarray]  # windows flagged, per flag
    coverage: dict[str, np.ndarray]  # mean coverage, per modality (NaN: none)
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # windows, per label
    splits: dict[str, np.ndarray] = field(default_factory=dict)  # windows, per split


@dataclass
class AssetTimeline:
    """Streams and windows of one asset."""

    asset_id: str
    lanes: list[StreamLane]
    windows: int = 0
    bins: WindowBins | None = None
    coverage_mean: dict[str, float | None] = field(default_factory=dict)
    flag_counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Timeline:
    """Every asset's timeline, and what placed the streams on reference time."""

    assets: list[AssetTimeline]
    reference_time: bool  # False: no clock models, streams in device time
    windows: Absent | None  # why there are no windows, if there are none
    labels: Absent | None  # why windows carry no labels
    classes: list[str]


@dataclass
class RunReport:
    """Everything the page shows."""

    name: str
    manifest: dict[str, Any]
    quarantine: list[QuarantineGroup] | Absent
    timeline: Timeline | Absent
    clocks: dict[str, Any] | Absent
    audit: dict[str, Any] | Absent
    dataset: dict[str, Any] | Absent
    features: dict[str, Any] | Absent
    train: dict[str, Any] | Absent
    eval: dict[str, Any] | Absent


def _state(manifest: dict[str, Any], stage: str) -> Absent | None:
    """None when ``stage`` completed, else why not."""
    rec = manifest.get("stages", {}).get(stage)
    if rec is None:
        return Absent("stage not run")
    status = rec.get("status")
    if status == "complete":
        return None
    if status == "failed":
        return Absent(f"stage failed: {rec.get('error') or 'no error recorded'}")
    return Absent(f"stage {status}: no complete output yet")


def _guard(path: Path, fn: Callable[[], T]) -> T | Absent:
    """``fn()``, or an :class:`Absent` naming the file when it is missing or malformed."""
    try:
        return fn()
    except FileNotFoundError:
        return Absent(f"missing file {path.name} (in {path.parent.name}/)")
    except (OSError, ValueError, KeyError, TypeError, IndexError, pa.ArrowException) as err:
        return Absent(
            f"could not read {path.parent.name}/{path.name}: {type(err).__name__}: "
            f"{str(err)[:_MAX_MESSAGE]}"
        )


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- quarantine ------------------------------------------------------------------------
def quarantine_groups(run_dir: Path) -> list[QuarantineGroup]:
    """Counts per stage and error class of every ``quarantine/<stage>.parquet``."""
    out: list[QuarantineGroup] = []
    for path in sorted((run_dir / "quarantine").glob("*.parquet")):
        table = pq.read_table(path, columns=["error_class", "message"])
        groups: dict[str, list[Any]] = {}
        for cls, msg in zip(
            table.column("error_class").to_pylist(),
            table.column("message").to_pylist(),
            strict=True,
        ):
            g = groups.setdefault(str(cls), [0, str(msg or "")])
            g[0] += 1
        for cls, (count, msg) in sorted(groups.items()):
            example = msg if len(msg) <= _MAX_MESSAGE else msg[: _MAX_MESSAGE - 1] + "\u2026"
            out.append(QuarantineGroup(path.stem, cls, count, example))
    return out


# -- timeline --------------------------------------------------------------------------
def _clock_models(doc: dict[str, Any] | None) -> dict[str, ClockModel]:
    if doc is None:
        return {}
    return {
        dev: ClockModel(
            offset_ns=int(d["offset_ns"]),
            drift_ppm=float(d["drift_ppm"]),
            origin_ns=int(d["origin_ns"]),
        )
        for dev, d in doc.get("devices", {}).items()
    }


def _bin_points(ts: np.ndarray, bins: int) -> list[tuple[int, int]]:
    """Sorted event times → at most ``bins`` (first time in bin, events) pairs."""
    if ts.size == 0:
        return []
    ts = np.sort(ts)
    lo, hi = int(ts[0]), int(ts[-1])
    if ts.size <= bins or hi == lo:
        uniq, counts = np.unique(ts, return_counts=True)
        return [(int(t), int(c)) for t, c in zip(uniq, counts, strict=True)]
    idx = ((ts - lo).astype(np.float64) / (hi - lo) * (bins - 1)).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    counts = np.diff(np.r_[starts, ts.size])
    return [(int(ts[s]), int(c)) for s, c in zip(starts, counts, strict=True)]


def _stream_lane(ingest: Path, st: dict[str, Any], model: ClockModel | None) -> StreamLane:
    def ref(t: int) -> int:
        return int(model.to_reference(t)) if model is not None else t

    spans: list[tuple[int, int]] = []
    ticks: list[tuple[int, int]] = []
    rows = int(st.get("rows") or 0)
    segments = int(st.get("segments") or 1)
    if rows and st.get("ts_min_ns") is not None:
        if st.get("modality") == "text":
            ts = pq.read_table(ingest / st["file"], columns=["ts_ns"]).column("ts_ns")
            ts_np = ts.to_numpy(zero_copy_only=False).astype(np.int64)
            ticks = [(ref(t), c) for t, c in _bin_points(ts_np, MAX_BINS)]
        elif segments > 1:  # a clock jump: one span per segment, as the sync stage sees them
            table = pq.read_table(ingest / st["file"], columns=["ts_ns", "segment"])
            g = table.group_by("segment").aggregate([("ts_ns", "min"), ("ts_ns", "max")])
            g = g.sort_by("segment")
            spans = [
                (ref(a), ref(b))
                for a, b in zip(
                    g.column("ts_ns_min").to_pylist(),
                    g.column("ts_ns_max").to_pylist(),
                    strict=True,
                )
            ]
        else:
            spans = [(ref(int(st["ts_min_ns"])), ref(int(st["ts_max_ns"])))]
    return StreamLane(
        stream_id=str(st["stream_id"]),
        device_id=str(st["device_id"]),
        modality=str(st.get("modality", "?")),
        rows=rows,
        segments=segments,
        spans=spans,
        ticks=ticks,
        flags={str(k): int(v) for k, v in sorted((st.get("flags") or {}).items())},
    )


@dataclass
class _Windows:
    """Window columns of one asset, before binning."""

    ids: list[np.ndarray] = field(default_factory=list)
    start: list[np.ndarray] = field(default_factory=list)
    end: list[np.ndarray] = field(default_factory=list)
    flags: dict[str, list[np.ndarray]] = field(default_factory=dict)
    coverage: dict[str, list[np.ndarray]] = field(default_factory=dict)


def _struct_field(col: pa.ChunkedArray, name: str, dtype: Any, fill: Any) -> np.ndarray:
    arr = col.combine_chunks()
    if not isinstance(arr, pa.StructArray) or arr.type.get_field_index(name) < 0:
        return np.full(len(arr), fill, dtype=dtype)
    values = pc.fill_null(arr.field(name), fill)
    if arr.null_count:
        values = pc.if_else(arr.is_valid(), values, fill)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=dtype)


def _read_windows(records: Path) -> dict[str, _Windows]:
    cols = ["record_id", "asset_id", "window_start_ns", "window_end_ns", "coverage", "flags"]
    out: dict[str, _Windows] = {}
    for path in sorted(records.glob("asset_id=*/date=*/*.parquet")):
        t = pq.read_table(path, columns=cols)
        assets = t.column("asset_id").to_numpy(zero_copy_only=False)
        for asset in sorted(set(assets.tolist())):
            sel = t.filter(pc.equal(t.column("asset_id"), asset)) if len(set(assets)) > 1 else t
            w = out.setdefault(str(asset), _Windows())
            w.ids.append(np.asarray(sel.column("record_id").to_pylist(), dtype=object))
            w.start.append(sel.column("window_start_ns").to_numpy().astype(np.int64))
            w.end.append(sel.column("window_end_ns").to_numpy().astype(np.int64))
            for f in FLAGS:
                w.flags.setdefault(f, []).append(
                    _struct_field(sel.column("flags"), f, np.bool_, False)
                )
            for m in COVERAGE:
                w.coverage.setdefault(m, []).append(
                    _struct_field(sel.column("coverage"), m, np.float64, np.nan)
                )
    return out


def _sample_labels(dataset: Path) -> tuple[dict[str, str | None], dict[str, str]]:
    """record_id → label (first task's label, by task name) and → split."""
    t = pq.read_table(dataset / "samples.parquet", columns=["record_id", "task", "label", "split"])
    labels: dict[str, str | None] = {}
    splits: dict[str, str] = {}
    rows = sorted(
        zip(
            *(t.column(c).to_pylist() for c in ("record_id", "task", "label", "split")), strict=True
        ),
        key=lambda r: (r[0], r[1]),
    )
    for rid, _task, label, split in rows:
        splits.setdefault(rid, split)
        if labels.get(rid) is None:
            labels[rid] = label
    return labels, splits


def _bin(
    w: _Windows, labels: tuple[dict[str, str | None], dict[str, str]] | None, classes: list[str]
) -> WindowBins:
    start, end = np.concatenate(w.start), np.concatenate(w.end)
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    ids = np.concatenate(w.ids)[order]
    n = start.size
    lo, hi = int(start[0]), int(end.max())
    if n <= MAX_BINS:
        key = np.arange(n)
    else:
        key = ((start - lo).astype(np.float64) / max(hi - lo, 1) * MAX_BINS).astype(np.int64)
        key = np.minimum(key, MAX_BINS - 1)
    firsts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])

    def total(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values.astype(np.float64), firsts)

    counts = np.diff(np.r_[firsts, n])
    bins = WindowBins(
        start_ns=start[firsts],
        end_ns=np.maximum.reduceat(end, firsts),
        n=counts,
        flags={f: total(np.concatenate(w.flags[f])[order]).astype(np.int64) for f in FLAGS},
        coverage={},
    )
    for m in COVERAGE:
        cov = np.concatenate(w.coverage[m])[order]
        ok = ~np.isnan(cov)
        with np.errstate(invalid="ignore", divide="ignore"):
            bins.coverage[m] = total(np.where(ok, cov, 0.0)) / total(ok)
    if labels is not None:
        by_label, by_split = labels
        lab = np.array(
            [
                by_label.get(r) or "(unlabeled)" if r in by_split else "(not in dataset)"
                for r in ids
            ],
            dtype=object,
        )
        spl = np.array([by_split.get(r, "(not in dataset)") for r in ids], dtype=object)
        names = [*classes, *sorted(set(lab.tolist()) - set(classes))]
        bins.labels = {c: total(lab == c).astype(np.int64) for c in names if (lab == c).any()}
        bins.splits = {
            s: total(spl == s).astype(np.int64)
            for s in ("train", "validation", "test", "(not in dataset)")
            if (spl == s).any()
        }
    return bins


def _timeline(run_dir: Path, manifest: dict[str, Any], clocks: dict[str, Any] | None) -> Timeline:
    ingest = run_dir / "ingest"
    index = _json(ingest / "streams.json")["streams"]
    models = _clock_models(clocks)
    by_asset: dict[str, list[StreamLane]] = {}
    order = sorted(
        index,
        key=lambda s: (
            str(s["asset_id"]),
            _MODALITY_ORDER.get(s.get("modality"), 9),
            str(s["stream_id"]),
        ),
    )
    for st in order:
        lane = _stream_lane(ingest, st, models.get(st["device_id"]))
        by_asset.setdefault(str(st["asset_id"]), []).append(lane)
    windows_state = _state(manifest, "records")
    label_state = _state(manifest, "dataset")
    windows: dict[str, _Windows] = {}
    if windows_state is None:
        windows = _read_windows(run_dir / "records")
    labels = None
    classes: list[str] = []
    if label_state is None:
        labels = _sample_labels(run_dir / "dataset")
        report = run_dir / "dataset" / "build_report.json"
        classes = [str(c) for c in _json(report).get("classes", [])] if report.is_file() else []
    assets = []
    for asset in sorted(set(by_asset) | set(windows)):
        at = AssetTimeline(asset, by_asset.get(asset, []))
        w = windows.get(asset)
        if w is not None and w.start and sum(a.size for a in w.start):
            at.bins = _bin(w, labels, classes)
            at.windows = int(at.bins.n.sum())
            at.flag_counts = {f: int(at.bins.flags[f].sum()) for f in FLAGS}
            for m in COVERAGE:
                cov = np.concatenate(w.coverage[m])
                cov = cov[~np.isnan(cov)]
                at.coverage_mean[m] = float(cov.mean()) if cov.size else None
        assets.append(at)
    return Timeline(assets, bool(models), windows_state, label_state, classes)


# -- the rest --------------------------------------------------------------------------
def _audit(run_dir: Path) -> dict[str, Any]:
    """The ``mmdata audit`` summary, else counts from the scrub stage's findings."""
    audit = run_dir / "audit"
    summary = audit / "summary.json"
    if summary.is_file():
        doc: dict[str, Any] = _json(summary)
    else:
        from mmdata.scrub.audit import audit_summary

        doc = audit_summary(audit / "findings.parquet")
        doc["residual"] = None  # not re-scanned yet
    doc["report_html"] = (audit / "report.html").is_file()
    return doc


def _dataset(run_dir: Path) -> dict[str, Any]:
    ds = run_dir / "dataset"
    card = ds / "README.md"
    return {
        "report": _json(ds / "build_report.json"),
        "card": card.read_text(encoding="utf-8") if card.is_file() else None,
    }


def _train(run_dir: Path) -> dict[str, Any]:
    tr = run_dir / "train"
    summary = tr / "summary.json"
    return {
        "history": _jsonl(tr / "metrics.jsonl"),
        "summary": _json(summary) if summary.is_file() else None,
    }


def _eval(run_dir: Path) -> dict[str, Any]:
    ev = run_dir / "eval"
    ablation = ev / "ablation.json"
    histories = {
        p.parent.name: _jsonl(p) for p in sorted((ev / "ablation").glob("*/metrics.jsonl"))
    }
    return {
        "metrics": _json(ev / "metrics.json"),
        "ablation": _json(ablation) if ablation.is_file() else None,
        "histories": histories,
    }


def _part(manifest: dict[str, Any], stage: str, path: Path, fn: Callable[[], T]) -> T | Absent:
    state = _state(manifest, stage)
    return state if state is not None else _guard(path, fn)


def collect(run_dir: Path) -> RunReport:
    """Read everything the report shows from ``run_dir`` (which holds a ``manifest.json``).

    >>> collect(Path("runs/demo")).timeline  # doctest: +SKIP
    """
    try:
        manifest: dict[str, Any] = _json(run_dir / "manifest.json")
    except FileNotFoundError:
        raise RunDirError(
            f"{str(run_dir)!r} is not an mmdata run directory (no manifest.json)",
            hint="give the run directory a pipeline wrote, e.g. runs/demo",
        ) from None
    except (OSError, ValueError) as err:
        raise RunDirError(
            f"cannot read {str(run_dir / 'manifest.json')!r}: {err}",
            hint="the run directory is damaged; re-run the pipeline into a new one",
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("stages", {}), dict):
        raise RunDirError(f"{str(run_dir / 'manifest.json')!r} is not an mmdata manifest")
    clocks = _part(
        manifest,
        "sync",
        run_dir / "sync" / "clock_models.json",
        lambda: dict(_json(run_dir / "sync" / "clock_models.json")),
    )
    timeline = _part(
        manifest,
        "ingest",
        run_dir / "ingest" / "streams.json",
        lambda: _timeline(run_dir, manifest, None if isinstance(clocks, Absent) else clocks),
    )
    return RunReport(
        name=run_dir.resolve().name,
        manifest=manifest,
        quarantine=_guard(run_dir / "quarantine", lambda: quarantine_groups(run_dir)),
        timeline=timeline,
        clocks=clocks,
        audit=_part(
            manifest, "scrubbed", run_dir / "audit" / "findings.parquet", lambda: _audit(run_dir)
        ),
        dataset=_part(
            manifest,
            "dataset",
            run_dir / "dataset" / "build_report.json",
            lambda: _dataset(run_dir),
        ),
        features=_part(
            manifest,
            "features",
            run_dir / "features" / "summary.json",
            lambda: dict(_json(run_dir / "features" / "summary.json")),
        ),
        train=_part(
            manifest, "train", run_dir / "train" / "metrics.jsonl", lambda: _train(run_dir)
        ),
        eval=_part(manifest, "eval", run_dir / "eval" / "metrics.json", lambda: _eval(run_dir)),
    )
