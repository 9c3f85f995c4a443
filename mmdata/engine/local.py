"""The local engine: a spawn process pool on this machine (or this process).

Spawn, not fork: a forked child would inherit the parent's threads and loaded models in an
undefined state. With ``workers`` 1 (or a single job) the jobs run in this process, one
after the other — no start-up cost, and models load once per process either way.

>>> with LocalEngine() as engine:
...     list(engine.map(str.upper, ["a"], name="demo"))
[(0, 'A')]
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType

from mmdata.engine import ONE_CPU, JobFailure, JobFn, JobResult, Resources
from mmdata.errors import StageError


class LocalEngine:
    """Runs jobs in ``workers`` spawned processes; a job that raises is a :class:`JobFailure`.

    >>> with LocalEngine() as engine:
    ...     [r for _, r in engine.map(int, ["x"], name="demo")][0].error_class
    'ValueError'
    """

    def map(self, fn: JobFn, jobs: list[str], *, name: str, workers: int = 1,
            resources: Resources = ONE_CPU,
            actors: int | None = None) -> Iterator[tuple[int, JobResult]]:  # fmt: skip
        """Run ``fn`` over ``jobs``; yield ``(index, output or failure)`` as each finishes.

        ``actors`` (a Ray actor pool's size) is ignored: ``workers`` processes serve the jobs
        and, like actors, load a stage function's cached models once per process.
        """
        if workers <= 1 or len(jobs) <= 1:
            for k, job in enumerate(jobs):
                try:
                    out: JobResult = fn(job)
                except Exception as err:  # the partition is quarantined with this reason
                    out = JobFailure.of(err)
                yield k, out
            return
        mp = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp) as pool:
            futures = {pool.submit(fn, job): k for k, job in enumerate(jobs)}
            for fut in as_completed(futures):
                k = futures[fut]
                try:
                    out = fut.result()
                except BrokenProcessPool as err:
                    raise StageError(f"{name}: a worker process died running job {k}",
                                     hint="see the log for the cause (memory?) and re-run "
                                     "the stage") from err  # fmt: skip
                except Exception as err:
                    out = JobFailure.of(err)
                yield k, out

    def close(self) -> None:
        """Nothing to release: each :meth:`map` call owns its pool."""

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()
