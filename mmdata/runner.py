"""The stage runner: run a stage into its run-dir folder atomically, or skip it when unchanged.

A stage is a function of a :class:`StageContext` that writes into ``ctx.out_dir`` and returns
its :class:`~mmdata.rundir.StageCounts`. The runner

* skips the stage when the manifest says it completed with the same fingerprint
  (stage name, code version, mmdata version, config hash, inputs fingerprint);
* otherwise clears any half-finished work from a killed run, runs the stage in
  ``RUN/.work/<stage>``, checks that counts reconcile (in = out + quarantined), writes the
  quarantine table, swaps the folder into ``RUN/<stage>`` and only then marks it complete.

>>> import tempfile, pathlib
>>> from mmdata.rundir import RunDir, StageCounts
>>> def hello(ctx):
...     (ctx.out_dir / "hello.txt").write_text("hi")
...     return StageCounts(in_=1, out=1)
>>> with RunDir.open(pathlib.Path(tempfile.mkdtemp()) / "run") as run:
...     first = run_stage(run, StageSpec(name="hello", config={"x": 1}), hello)
...     again = run_stage(run, StageSpec(name="hello", config={"x": 1}), hello)
>>> first.skipped, again.skipped
(False, True)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmdata import atomic
from mmdata._version import __version__
from mmdata.config import config_hash
from mmdata.errors import MmdataError, StageError
from mmdata.quarantine import QuarantineLog
from mmdata.rundir import RunDir, StageCounts, StageRecord

#: progress(description, done, total)
ProgressFn = Callable[[str, int, int], None]


class StageSpec(BaseModel):
    """What identifies one run of a stage."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Stage folder name.")
    version: str = Field("1", description="Bump when the stage's output format changes.")
    config: dict[str, Any] | BaseModel = Field(default_factory=dict)
    inputs_fingerprint: str = Field("", description="Fingerprint of the stage's inputs.")

    def fingerprint(self) -> str:
        """sha256 over everything that determines the stage's output."""
        parts = {
            "stage": self.name,
            "version": self.version,
            "mmdata": __version__,
            "config": config_hash(self.config),
            "inputs": self.inputs_fingerprint,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass
class StageContext:
    """Handed to a stage function: where to write, where to quarantine, how to report."""

    run: RunDir
    name: str
    out_dir: Path
    quarantine: QuarantineLog
    progress: ProgressFn | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def report(self, description: str, done: int, total: int) -> None:
        """Forward progress to the caller's progress bar, if any."""
        if self.progress is not None:
            self.progress(description, done, total)


@dataclass(frozen=True)
class StageOutcome:
    """What :func:`run_stage` did."""

    name: str
    skipped: bool
    counts: StageCounts
    elapsed_ns: int
    out_dir: Path
    fingerprint: str


StageFn = Callable[[StageContext], StageCounts]


def _is_current(run: RunDir, spec: StageSpec, fingerprint: str) -> bool:
    rec = run.manifest.stages.get(spec.name)
    return (
        rec is not None
        and rec.status == "complete"
        and rec.fingerprint == fingerprint
        and run.stage_path(spec.name).is_dir()
        and run.quarantine_path(spec.name).is_file()
    )


def run_stage(
    run: RunDir,
    spec: StageSpec,
    fn: StageFn,
    *,
    progress: ProgressFn | None = None,
    force: bool = False,
) -> StageOutcome:
    """Run ``fn`` as stage ``spec.name`` in ``run`` unless an identical run already completed.

    Raises :class:`StageError` when the stage fails as a whole or its counts do not
    reconcile; the manifest then records the stage as failed and no output is published.
    """
    fingerprint = spec.fingerprint()
    final = run.stage_path(spec.name)
    rec = run.manifest.stages.get(spec.name)
    if not force and rec is not None and _is_current(run, spec, fingerprint):
        assert rec.counts is not None
        return StageOutcome(spec.name, True, rec.counts, 0, final, fingerprint)

    work = run.work_path(spec.name)
    old = work.with_name(spec.name + ".old")
    for leftover in (work, old):  # half-finished work of a killed run
        if leftover.exists():
            shutil.rmtree(leftover)
    work.mkdir(parents=True)
    started = time.time_ns()
    t0 = time.perf_counter_ns()
    run.manifest.stages[spec.name] = StageRecord(
        status="running",
        fingerprint=fingerprint,
        config_hash=config_hash(spec.config),
        started_ns=started,
    )
    run.save_manifest()

    ctx = StageContext(run, spec.name, work, QuarantineLog(spec.name), progress)
    try:
        counts = fn(ctx)
        if counts.quarantined != len(ctx.quarantine):
            raise StageError(
                f"stage {spec.name!r} reported {counts.quarantined} quarantined items "
                f"but logged {len(ctx.quarantine)}",
                hint="this is a bug in the stage; report it",
            )
        if not counts.reconciles():
            raise StageError(
                f"stage {spec.name!r} counts do not reconcile: in={counts.in_} "
                f"!= out={counts.out} + quarantined={counts.quarantined}",
                hint="this is a bug in the stage; report it",
            )
    except BaseException as err:
        shutil.rmtree(work, ignore_errors=True)
        failed = run.manifest.stages[spec.name]
        failed.status = "failed"
        failed.error = f"{type(err).__name__}: {err}"[:2000]
        run.save_manifest()
        if isinstance(err, MmdataError) or not isinstance(err, Exception):
            raise
        raise StageError(f"stage {spec.name!r} failed: {type(err).__name__}: {err}") from err

    ctx.quarantine.write(run.quarantine_path(spec.name))
    if final.exists():
        final.rename(old)
    work.rename(final)
    atomic.fsync_dir(run.root)
    if old.exists():
        shutil.rmtree(old)

    elapsed = time.perf_counter_ns() - t0
    done = run.manifest.stages[spec.name]
    done.status = "complete"
    done.finished_ns = time.time_ns()
    done.elapsed_ns = elapsed
    done.counts = counts
    run.save_manifest()
    return StageOutcome(spec.name, False, counts, elapsed, final, fingerprint)
