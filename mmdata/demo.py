"""The demo pipeline on the bundled synthetic factory.

The demo generates the factory as the run's ``synth`` stage, writes the pipeline config
that reads it (``RUN/pipeline.yaml``) and runs the pipeline's stages on it.

>>> import tempfile, pathlib
>>> summary = run_demo(DemoConfig(run_dir=pathlib.Path(tempfile.mkdtemp()) / "run",
...                               assets=1, minutes=0.1))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from mmdata import atomic
from mmdata.align import run_align
from mmdata.build.stage import run_build
from mmdata.config import PipelineConfig
from mmdata.features.stage import run_features
from mmdata.ingest import read_index, run_ingest
from mmdata.report.page import write_report
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import ProgressFn, StageContext, StageOutcome, StageSpec, run_stage
from mmdata.scrub.review import review_run
from mmdata.scrub.stage import run_scrub
from mmdata.sync import run_sync
from mmdata.synth import SynthConfig, generate_factory
from mmdata.timebase import ClockModel
from mmdata.train.stage import console_lines, run_eval, run_train


class DemoConfig(BaseModel):
    """What the demo runs on."""

    model_config = ConfigDict(extra="forbid")

    run_dir: Path = Field(Path("runs/demo"), description="Run directory.")
    assets: int = Field(3, ge=1, le=50, description="Assets in the synthetic factory.")
    minutes: float = Field(10.0, gt=0, description="Minutes of data per asset.")
    seed: int = Field(0, description="Seed of the synthetic factory.")
    force: bool = Field(False, description="Re-run stages even when unchanged.")


def synth_stage(config: SynthConfig) -> tuple[StageSpec, Any]:
    """The ``synth`` stage: write the synthetic factory into the stage folder."""

    def run(ctx: StageContext) -> StageCounts:
        summary = generate_factory(config, ctx.out_dir, progress=ctx.progress)
        files = sum(summary.files.values())
        return StageCounts(in_=files, out=files, quarantined=0)

    return StageSpec(name="synth", version="1", config=config), run


def factory_pipeline(factory: Path, run_dir: Path) -> PipelineConfig:
    """The pipeline config that reads a synthetic factory folder, from its ground truth.

    >>> import tempfile
    >>> from mmdata.synth import SynthConfig, generate_factory
    >>> out = Path(tempfile.mkdtemp()) / "f"
    >>> _ = generate_factory(SynthConfig(assets=1, minutes=0.05, workers=1), out)
    >>> sorted(factory_pipeline(out, out.parent / "run").devices())
    ['acc-press-1', 'cam-press-1', 'mes-line', 'mic-press-1']
    """
    truth = json.loads((factory / "ground_truth.json").read_text(encoding="utf-8"))
    camera = truth["config"].get("camera", "jpeg")
    assets: dict[str, Any] = {}
    for dev_id, dev in sorted(truth["devices"].items()):
        asset = dev.get("asset")
        if not asset:
            continue
        root = factory / asset
        sources = assets.setdefault(asset, {"sources": []})["sources"]
        stamp = f"{dev_id}_%Y%m%dT%H%M%S.%fZ"
        if dev["kind"] == "camera" and camera == "mp4":
            sources.append({"connector": "video", "path": str(root / "cam"), "device": dev_id,
                            "start": {"filename": stamp}})  # fmt: skip
        elif dev["kind"] == "camera":
            sources.append({"connector": "camera", "path": str(root / "cam"), "device": dev_id,
                            "timestamp": {"filename": stamp}})  # fmt: skip
        elif dev["kind"] == "accelerometer":
            sources.append({"connector": "sensor", "path": str(root / "vib"), "device": dev_id,
                            "layout": "wide", "time": {"column": "ts_ns", "unit": "ns"},
                            "group": "accel"})  # fmt: skip
        elif dev["kind"] == "microphone":
            sources.append({"connector": "audio", "path": str(root / "mic"), "device": dev_id,
                            "start": {"filename": stamp}})  # fmt: skip
    notes = factory / "notes" / "operator_notes.jsonl"
    for asset, a in assets.items():
        a["sources"].append({"connector": "notes", "path": str(notes), "device": "mes-line",
                             "filter": {"asset": asset}})  # fmt: skip
    reference = next(d for d, v in sorted(truth["devices"].items())
                     if v["kind"] == "accelerometer")  # fmt: skip
    sync = {
        "reference": reference,
        "ntp_logs": {"*": str(factory / "*" / "clock" / "ntp-{device}.log")},
        "plant_clock": "mes-line",  # the MES server stamps notes with the plant clock
        # A 2 fps camera's flash is placed to about a frame period, not to 5 ms.
        "device_tolerance_ms": {"cam-*": 250},
    }
    build = {
        "ground_truth": str(factory / "ground_truth.json"),
        "formats": ["messages", "llama_factory"],
        "sensors_as": "tensor",  # the trainer reads sensors as features, not as prompt text
        "audio_as": "audio",
        # 25 % test: enough windows of every fault class to measure macro-F1 (at 15 % the
        # rarest class had 2 test windows, and one miss cost 0.08).
        "split": {"by": "time", "fractions": [0.6, 0.15, 0.25], "gap_ms": 2000},
    }
    return PipelineConfig.model_validate({"run_dir": str(run_dir), "assets": assets,
                                          "sync": sync, "build": build})  # fmt: skip


def demo_key_file(env: str = "MMDATA_PII_KEY") -> str | None:
    """The demo's PII key: None when ``env`` is set (the scrubber reads it), else a key file.

    The file (``$XDG_CONFIG_HOME/mmdata/demo-pii.key``, mode 600) is created once with a
    random key, so pseudonyms stay the same across demo runs on this machine. Real runs bring
    their own key (``scrub.key_env`` or ``scrub.key_file``); the key is never written into the
    run directory.
    """
    import os
    import secrets

    if os.environ.get(env):
        return None
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = home / "mmdata" / "demo-pii.key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    return str(path)


def clock_report(truth: dict[str, Any], clock_models: dict[str, Any]) -> list[dict[str, Any]]:
    """Recovered clock models next to the synthetic ground truth, per device.

    Ground truth maps every device to the plant clock; the recovered models map to the
    reference device, so the truth is made relative to it first. ``error_ms`` is the
    largest difference between recovered and true reference time over the device's run.
    """
    ref_dev = clock_models["reference"]
    origin = int(truth["origin_ns"])

    def true_model(dev: str) -> ClockModel:
        d = truth["devices"].get(dev, {})
        return ClockModel(offset_ns=int(d.get("offset_ns", 0)),
                          drift_ppm=float(d.get("drift_ppm", 0.0)), origin_ns=origin)  # fmt: skip

    ref_true = true_model(ref_dev)
    rows = []
    for dev, m in sorted(clock_models["devices"].items()):
        got = ClockModel(offset_ns=int(m["offset_ns"]), drift_ppm=float(m["drift_ppm"]),
                         origin_ns=int(m["origin_ns"]))  # fmt: skip
        t = np.linspace(int(truth["start_ns"]), int(truth["end_ns"]), 50).astype(np.int64)
        dev_t = true_model(dev).to_device(t)
        want = ref_true.to_device(true_model(dev).to_reference(dev_t))
        err = np.abs(got.to_reference(dev_t) - want).max()
        true_rel_offset = int(want[0] - dev_t[0])
        scale = (1 + true_model(dev).drift_ppm * 1e-6) / (1 + ref_true.drift_ppm * 1e-6)
        rows.append({
            "device": dev, "evidence": m.get("evidence"),
            "offset_ms": round((int(got.to_reference(dev_t[0])) - int(dev_t[0])) / 1e6, 3),
            "true_offset_ms": round(true_rel_offset / 1e6, 3),
            "drift_ppm": round(got.drift_ppm, 2), "true_drift_ppm": round((scale - 1) * 1e6, 2),
            "error_ms": round(float(err) / 1e6, 3),
            "clock_uncertain": bool(m.get("clock_uncertain")),
        })  # fmt: skip
    return rows


def run_demo(config: DemoConfig, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run the demo pipeline and return a JSON-able summary of what was written."""
    synth_cfg = SynthConfig(assets=config.assets, minutes=config.minutes, seed=config.seed)
    outcomes: list[StageOutcome] = []
    with RunDir.open(config.run_dir) as run:
        spec, fn = synth_stage(synth_cfg)
        outcomes.append(run_stage(run, spec, fn, progress=progress, force=config.force))
        factory = run.stage_path("synth")
        truth = json.loads((factory / "ground_truth.json").read_text(encoding="utf-8"))
        pipeline = factory_pipeline(factory, config.run_dir)
        key_file = demo_key_file(pipeline.scrub.key_env)
        if key_file is not None:
            scrub = pipeline.scrub.model_copy(update={"key_file": key_file})
            pipeline = pipeline.model_copy(update={"scrub": scrub})
        atomic.write_text(
            config.run_dir / "pipeline.yaml",
            yaml.safe_dump(pipeline.model_dump(mode="json", exclude_defaults=True),
                           sort_keys=False, allow_unicode=True),
        )  # fmt: skip
        outcomes.append(run_ingest(run, pipeline, progress=progress, force=config.force))
        streams = read_index(run.stage_path("ingest"))
        outcomes.append(run_sync(run, pipeline, progress=progress, force=config.force))
        models = json.loads((run.stage_path("sync") / "clock_models.json").read_text())
        outcomes.append(run_align(run, pipeline, progress=progress, force=config.force))
        outcomes.append(run_scrub(run, pipeline, progress=progress, force=config.force))
        review = review_run(config.run_dir, sample=20, seed=0)
        outcomes.append(run_build(run, pipeline, progress=progress, force=config.force))
        outcomes.append(run_features(run, pipeline, progress=progress, force=config.force))
        outcomes.append(run_train(run, pipeline, progress=progress, force=config.force))
        outcomes.append(run_eval(run, pipeline, progress=progress, force=config.force,
                                 ablation=True))  # fmt: skip
    report_path = write_report(config.run_dir)
    report = json.loads((run.stage_path("dataset") / "build_report.json").read_text())
    return {
        "run_dir": str(config.run_dir),
        "manifest": str(config.run_dir / "manifest.json"),
        "stages": [
            {
                "stage": o.name,
                "skipped": o.skipped,
                "elapsed_s": round(o.elapsed_ns / 1e9, 3),
                "counts": o.counts.model_dump(by_alias=True),
                "output": str(o.out_dir),
            }
            for o in outcomes
        ],
        "factory": factory_summary(factory, truth),
        "pipeline": str(config.run_dir / "pipeline.yaml"),
        "streams": [
            {k: st[k] for k in ("stream_id", "modality", "rows", "segments", "flags")}
            for st in streams
        ],
        "clocks": clock_report(truth, models),
        "records": str(config.run_dir / "records"),
        "audit": {
            "report": review["report"],
            "findings": review["summary"]["findings"],
            "residual": review["summary"]["residual"]["findings"],
        },
        "dataset": {
            "path": str(run.stage_path("dataset")),
            "samples": report["samples"],
            "console": report["console"],
        },
        "features": str(run.stage_path("features")),
        "eval": console_lines(run.stage_path("eval")),
        "report": str(report_path),
    }


def factory_summary(factory: Path, truth: dict[str, Any]) -> dict[str, Any]:
    """Counts of what a synthetic factory folder holds, from its ground truth and files."""
    files_by_kind: dict[str, int] = {}
    size = 0
    for p in factory.rglob("*"):
        if p.is_file():
            kind = p.suffix.lstrip(".") or "other"
            files_by_kind[kind] = files_by_kind.get(kind, 0) + 1
            size += p.stat().st_size
    faults: dict[str, int] = {}
    for intervals in truth.get("faults", {}).values():
        for iv in intervals:
            faults[iv["class"]] = faults.get(iv["class"], 0) + 1
    return {
        "path": str(factory),
        "assets": sorted({d["asset"] for d in truth["devices"].values() if d.get("asset")}),
        "devices": len(truth["devices"]),
        "files": dict(sorted(files_by_kind.items())),
        "megabytes": round(size / 1e6, 1),
        "sync_events": len(truth.get("sync_events", [])),
        "fault_intervals": faults,
        "notes": len(truth.get("notes", [])),
        "pii_spans": sum(len(n.get("spans", [])) for n in truth.get("notes", [])),
    }
