"""Execution engines: where a stage's jobs run — this machine's processes or a Ray cluster.

A stage plans its work as *jobs* (JSON strings: one records file to scrub, one asset × time
partition to align) and hands them with a module-level stage function ``fn(job) -> str`` to
an :class:`Engine`. The engine only decides placement; the stage function is the same on
every engine, and the stage gathers the results by job index, so outputs are byte-identical
whichever engine ran them.

* :class:`~mmdata.engine.local.LocalEngine` — the default: a spawn process pool of
  ``workers`` processes (or this process when ``workers`` is 1).
* :class:`~mmdata.engine.ray.RayEngine` — one Ray task per job on the cluster named by
  ``config.ray.address`` (``local`` starts one on this machine). A task whose worker dies
  (killed, OOM) is retried; a Python exception is deterministic and is *not* retried.

Either way, a job whose function raises comes back as a :class:`JobFailure` (its error
class and message) so that the stage can quarantine that partition with its reason —
unless it is a setup error (:meth:`JobFailure.check`: a missing key would fail every job);
a job that cannot be run at all (a crashed pool, retries used up) fails the stage.

>>> from mmdata.engine.local import LocalEngine
>>> with LocalEngine() as engine:
...     sorted(engine.map(json.dumps, ["a", "b"], name="demo"))
[(0, '"a"'), (1, '"b"')]
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from mmdata.errors import InputDataError, MmdataError, StageError

if TYPE_CHECKING:
    from mmdata.config import PipelineConfig
    from mmdata.rundir import RunDir

JobFn = Callable[[str], str]
T = TypeVar("T")


@dataclass(frozen=True)
class Resources:
    """What one job needs on a Ray node (the local engine runs one job per process).

    >>> Resources(num_gpus=1).num_cpus
    1.0
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass(frozen=True)
class JobFailure:
    """A job whose function raised: the stage quarantines its partition with this reason.

    ``kind`` is ``input`` for an :class:`~mmdata.errors.InputDataError` (bad input data),
    ``setup`` for any other :class:`~mmdata.errors.MmdataError` (a missing key, model or
    setting: every job would fail alike, so :meth:`check` fails the stage instead) and
    ``error`` for any other exception (its class says which).

    >>> JobFailure.of(ValueError("bad chunk"))
    JobFailure(error_class='ValueError', message='bad chunk', kind='error')
    """

    error_class: str
    message: str
    kind: Literal["input", "setup", "error"] = "error"

    @classmethod
    def of(cls, err: BaseException) -> JobFailure:
        """The failure that ``err`` describes."""
        if isinstance(err, InputDataError):
            return cls(type(err).__name__, err.message, "input")
        if isinstance(err, MmdataError):
            return cls(type(err).__name__, str(err), "setup")
        return cls(type(err).__name__, str(err) or repr(err), "error")

    def check(self, what: str) -> JobFailure:
        """This failure, for the stage to quarantine ``what``; raises for a setup failure.

        >>> JobFailure("DependencyError", "no PII key", "setup").check("job 0")
        Traceback (most recent call last):
        mmdata.errors.StageError: job 0 failed: DependencyError: no PII key
          fix: fix the setup; on Ray, workers need this process's keys, files and settings
        """
        if self.kind == "setup":
            raise StageError(f"{what} failed: {self.error_class}: {self.message}",
                             hint="fix the setup; on Ray, workers need this process's keys, "
                             "files and settings")  # fmt: skip
        return self

    def to_json(self) -> str:
        """This failure as JSON (how it travels back from a Ray worker)."""
        return json.dumps({"error_class": self.error_class, "message": self.message,
                           "kind": self.kind})  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> JobFailure:
        """The failure :meth:`to_json` wrote."""
        return cls(**json.loads(text))


JobResult = str | JobFailure
ONE_CPU = Resources()  # the default: one CPU per job


class Engine(Protocol):
    """Runs a stage function over jobs; yields ``(job index, result)`` as jobs finish.

    Results come in completion order: a stage collects them by index and uses them in job
    order, so its outputs do not depend on which job finished first.
    """

    def map(self, fn: JobFn, jobs: list[str], *, name: str, workers: int = 1,
            resources: Resources = ONE_CPU,
            actors: int | None = None) -> Iterator[tuple[int, JobResult]]:  # fmt: skip
        """Run ``fn(job)`` for every job.

        ``workers``: the local engine's process count; ``actors``: on Ray, run the jobs as a
        Ray Data pipeline in a pool of that many actors (for stages that load models).
        """
        ...

    def close(self) -> None:
        """Release what the engine started (a no-op where nothing was)."""
        ...


def in_order(results: Iterable[tuple[int, T]], n: int,
             on_done: Callable[[int, T, int], None] | None = None) -> list[T]:  # fmt: skip
    """Collect ``n`` results by job index (so outputs do not depend on completion order);
    ``on_done(index, result, finished so far)`` as each lands.

    >>> in_order(iter([(1, "b"), (0, "a")]), 2)
    ['a', 'b']
    """
    got: dict[int, T] = {}
    for k, res in results:
        got[k] = res
        if on_done is not None:
            on_done(k, res, len(got))
    return [got[k] for k in range(n)]


def job_target(fn: JobFn) -> str:
    """``module:qualname`` of a module-level function (how a job function travels).

    >>> job_target(json.dumps)
    'json:dumps'
    """
    name = f"{fn.__module__}:{fn.__qualname__}"
    if "<" in fn.__qualname__ or "." in fn.__qualname__:
        raise TypeError(f"job function {name!r} must be defined at module level")
    return name


def resolve_target(target: str) -> JobFn:
    """The function :func:`job_target` named."""
    import importlib

    module, _, qualname = target.partition(":")
    fn: JobFn = getattr(importlib.import_module(module), qualname)
    return fn


def make_engine(config: PipelineConfig, run: RunDir | Path) -> Engine:
    """The engine ``config.engine`` names, for the run directory ``run``.

    Ray keeps its files under the run's ``.work/ray``. When ``run`` mirrors a run directory
    on shared storage (``run.remote_url``), Ray workers on other nodes stage their files
    through the storage (:mod:`mmdata.engine.staging`).
    """
    run_root = run if isinstance(run, Path) else run.root
    remote_url = None if isinstance(run, Path) else run.remote_url
    if config.engine == "ray":
        from mmdata.engine.ray import RayEngine
        from mmdata.engine.staging import Staging

        staging = None if remote_url is None else Staging(
            remote_url, str(run_root), config.run_storage.options, config.run_storage.cache_dir,
            driver_node="", token=uuid.uuid4().hex,
            always=config.ray.staging == "always")  # fmt: skip
        return RayEngine(config.ray.address, temp_root=run_root / ".work" / "ray",
                         num_cpus=config.ray.num_cpus, staging=staging,
                         object_store_mb=config.ray.object_store_mb)  # fmt: skip
    from mmdata.engine.local import LocalEngine

    return LocalEngine()
