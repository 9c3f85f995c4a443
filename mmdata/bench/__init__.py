"""The bench harness: workloads that time mmdata against a baseline measured in the same run.

Performance goals live here, never in tests. Each workload returns mmdata's figure, a
baseline's figure for the same job, and their ratio (> 1 means mmdata is better, whatever
the unit's direction). Stages register their workloads with :func:`workload`.

>>> from mmdata.bench import WORKLOADS
>>> "synth" in WORKLOADS
True
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmdata.errors import UsageError


class BenchOptions(BaseModel):
    """Knobs shared by all workloads."""

    model_config = ConfigDict(extra="forbid")

    scale: float = Field(1.0, gt=0, le=100, description="Multiplies each workload's data size.")
    repeat: int = Field(1, ge=1, le=20, description="Runs per side; the best one counts.")
    workdir: Path | None = Field(None, description="Scratch folder (default: a temp dir).")
    engine: Literal["local", "ray"] = Field(
        "local",
        description="ray: workloads that run on an engine (align) also measure it on a local "
        "Ray cluster, reported next to the local engine's figure from the same run.",
    )


class BenchResult(BaseModel):
    """One workload's figures."""

    workload: str
    metric: str = Field(description="What is measured, e.g. 'device-seconds generated per s'.")
    unit: str
    mmdata: float = Field(description="mmdata's figure.")
    baseline: float = Field(description="The baseline's figure, measured in the same run.")
    baseline_name: str = Field(description="What the baseline is.")
    higher_is_better: bool = True
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """mmdata relative to the baseline: > 1 means mmdata is better."""
        if self.higher_is_better:
            return self.mmdata / self.baseline if self.baseline else float("inf")
        return self.baseline / self.mmdata if self.mmdata else float("inf")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, with the ratio included."""
        return {**self.model_dump(mode="json"), "ratio": self.ratio}


#: A workload function: its result, or several (e.g. the local and the Ray engine's figures).
WorkloadFn = Callable[[BenchOptions, Path], "BenchResult | list[BenchResult]"]


@dataclass(frozen=True)
class Workload:
    """A registered benchmark."""

    name: str
    description: str
    run: WorkloadFn = field(repr=False)


WORKLOADS: dict[str, Workload] = {}


def workload(name: str, description: str) -> Callable[[WorkloadFn], WorkloadFn]:
    """Register a workload function ``fn(options, scratch_dir) -> BenchResult`` (or a list)."""

    def register(fn: WorkloadFn) -> WorkloadFn:
        WORKLOADS[name] = Workload(name, description, fn)
        return fn

    return register


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn`` (every workload's timer).

    >>> best_of(2, lambda: None) >= 0
    True
    """
    import time

    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _expand(name: str) -> list[str]:
    """A workload name, or a group: ``scrub`` → ``scrub-text``, ``scrub-images``."""
    if name in WORKLOADS:
        return [name]
    group = [w for w in WORKLOADS if w.startswith(f"{name}-")]
    return group or [name]


def run_workloads(names: list[str], options: BenchOptions) -> list[BenchResult]:
    """Run the named workloads or groups (all when ``names`` is empty), in registration order.

    >>> results = run_workloads(["synth"], BenchOptions(scale=0.05))  # doctest: +SKIP
    """
    names = [w for n in names for w in _expand(n)]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise UsageError(
            f"unknown bench workload(s): {', '.join(unknown)}",
            hint=f"choose from: {', '.join(WORKLOADS)}",
        )
    selected = [w for w in WORKLOADS.values() if not names or w.name in names]
    results: list[BenchResult] = []
    for w in selected:
        if options.workdir is not None:
            scratch = options.workdir / w.name
            scratch.mkdir(parents=True, exist_ok=True)
            got = w.run(options, scratch)
        else:
            with tempfile.TemporaryDirectory(prefix=f"mmdata-bench-{w.name}-") as tmp:
                got = w.run(options, Path(tmp))
        results.extend(got if isinstance(got, list) else [got])
    return results


# Workload modules register themselves on import.
from mmdata.bench import align as _align  # noqa: E402,F401
from mmdata.bench import features as _features  # noqa: E402,F401
from mmdata.bench import ingest as _ingest  # noqa: E402,F401
from mmdata.bench import scrub as _scrub  # noqa: E402,F401
from mmdata.bench import synth as _synth  # noqa: E402,F401
