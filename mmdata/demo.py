"""The demo pipeline on the bundled synthetic factory.

At this stage of the project the demo generates the factory as the run's ``synth`` stage
and summarises it; later stages append themselves here.

>>> import tempfile, pathlib
>>> summary = run_demo(DemoConfig(run_dir=pathlib.Path(tempfile.mkdtemp()) / "run",
...                               assets=1, minutes=0.1))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import ProgressFn, StageContext, StageOutcome, StageSpec, run_stage
from mmdata.synth import SynthConfig, generate_factory


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


def run_demo(config: DemoConfig, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run the demo pipeline and return a JSON-able summary of what was written."""
    synth_cfg = SynthConfig(assets=config.assets, minutes=config.minutes, seed=config.seed)
    outcomes: list[StageOutcome] = []
    with RunDir.open(config.run_dir) as run:
        spec, fn = synth_stage(synth_cfg)
        outcomes.append(run_stage(run, spec, fn, progress=progress, force=config.force))
        factory = run.stage_path("synth")
        truth = json.loads((factory / "ground_truth.json").read_text(encoding="utf-8"))
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
