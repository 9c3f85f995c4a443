"""The Ray engine: one Ray task per job on a cluster; identical results to the local engine.

``address`` is ``"local"`` (start a cluster on this machine: ``num_cpus`` CPUs, no
dashboard, a small object store, auth off, its files in a short temp dir), ``"auto"`` (the
cluster this process runs in, e.g. under ``ray job submit``) or ``ray://head:10001``. When
Ray is already initialised in this process, that cluster is used and left running.

Jobs and results are JSON strings and the job function travels by name
(``module:qualname``), so nothing of ours is pickled. Each task is
``max_retries=2, retry_exceptions=False``: a worker that dies (killed, OOM) is retried on
another worker, but a Python exception is deterministic — it comes back at once as a
:class:`~mmdata.engine.JobFailure` for the stage to quarantine. A task whose retries are
used up fails the stage (:class:`~mmdata.errors.StageError`).

Ray workers are reused across tasks, so a stage function's per-process model cache loads
its models once per worker. Secrets never travel with a job: a worker loads the scrub key
from its own environment or key file, so a cluster's workers need them (a ``local``
cluster inherits this process's environment when it starts).

>>> with RayEngine("local", num_cpus=1) as engine:  # doctest: +SKIP
...     list(engine.map(str.upper, ["a"], name="demo"))
[(0, 'A')]
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from mmdata.engine import (
    ONE_CPU,
    JobFailure,
    JobFn,
    JobResult,
    Resources,
    job_target,
    resolve_target,
)
from mmdata.engine.staging import Staging, collect_outputs, staged_call
from mmdata.errors import DependencyError, StageError

OBJECT_STORE_MB = 256  # jobs and results are small JSON strings
MAX_RETRIES = 2
_SOCKET_PATH_BUDGET = 40  # Ray appends ~65 chars of session/socket path; Unix limit is 107


def _call(fn: JobFn, job: str) -> tuple[bool, str]:
    try:
        return True, fn(job)
    except Exception as err:  # deterministic: reported, not retried
        return False, JobFailure.of(err).to_json()


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def run_job(target: str, job: str, staging: str | None = None) -> tuple[bool, str, list[str]]:
    """Run one job in a Ray worker: ``(ok, output or failure JSON, staged output files)``."""
    fn = resolve_target(target)
    stage = Staging.from_json(staging) if staging else None
    return staged_call(lambda j: _call(fn, j), job, stage, _node_id() if stage else None)


def ray_temp_dir(temp_root: Path) -> Path:
    """``temp_root`` when short enough for Ray's socket paths, else ``/tmp/mmray-<hash>``.

    >>> str(ray_temp_dir(Path("/r/.work/ray")))
    '/r/.work/ray'
    >>> ray_temp_dir(Path("/" + "x" * 80)).name.startswith("mmray-")
    True
    """
    root = temp_root.resolve() if temp_root.exists() else temp_root.absolute()
    if len(str(root)) <= _SOCKET_PATH_BUDGET:
        return root
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"mmray-{digest}"


POOL_CPUS = 0.5  # an actor's CPU share (see _map_pool)


class JobActor:
    """A Ray Data actor: resolves the job function once, then runs one job per row."""

    def __init__(self, target: str, staging: str | None = None) -> None:
        self.fn = resolve_target(target)
        self.staging = Staging.from_json(staging) if staging else None
        self.node = _node_id() if staging else None

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = [staged_call(lambda j: _call(self.fn, j), job, self.staging, self.node)
                for job in batch.column("job").to_pylist()]  # fmt: skip
        uploaded = pa.array([r[2] for r in rows], pa.list_(pa.string()))
        return pa.table({"k": batch.column("k"), "ok": [r[0] for r in rows],
                         "payload": [r[1] for r in rows], "uploaded": uploaded})  # fmt: skip


class RayEngine:
    """Runs each job as a Ray task (see the module docstring for placement and retries)."""

    def __init__(
        self, address: str = "local", *, temp_root: Path | None = None,
        num_cpus: int | None = None, object_store_mb: int = OBJECT_STORE_MB,
        staging: Staging | None = None,
    ) -> None:  # fmt: skip
        self.address = address
        self.staging = staging
        self.temp_root = temp_root
        self.num_cpus = num_cpus
        self.object_store_mb = object_store_mb
        self._started = False
        self._remote: Any = None
        self._scratch: Path | None = None

    def connect(self) -> Any:
        """Initialise Ray (once per process); return the ``ray`` module."""
        try:
            import ray
        except ImportError as err:  # pragma: no cover - ray is a project dependency
            raise DependencyError("the Ray engine needs ray[data]",
                                  hint="pip install 'ray[data]'") from err  # fmt: skip
        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            opts: dict[str, Any] = {"log_to_driver": False, "logging_level": "WARNING"}
            if self.address == "local":
                opts.update(num_cpus=self.num_cpus or os.cpu_count() or 1,
                            include_dashboard=False,
                            object_store_memory=self.object_store_mb << 20)  # fmt: skip
                if self.temp_root is not None:
                    temp = ray_temp_dir(self.temp_root)
                    temp.mkdir(parents=True, exist_ok=True)
                    opts["_temp_dir"] = str(temp)
                    if temp.parent == Path(tempfile.gettempdir()) and temp.name.startswith(
                            "mmray-"):  # fmt: skip
                        self._scratch = temp  # the short stand-in for a long path: removed on close
            else:
                opts["address"] = self.address
            ray.init(**opts)
            self._started = True
            atexit.register(self.close)  # stages leave Ray up for the next one
        if self._remote is None:
            self._remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(run_job)
        return ray

    def map(self, fn: JobFn, jobs: list[str], *, name: str, workers: int = 1,
            resources: Resources = ONE_CPU,
            actors: int | None = None) -> Iterator[tuple[int, JobResult]]:  # fmt: skip
        """Run every job on the cluster; yield ``(index, output or failure)`` as each finishes.

        Without ``actors``: one task per job (``workers`` is ignored: the cluster's resources
        bound the parallelism). With ``actors``: a Ray Data pipeline over the jobs whose map
        runs in a pool of ``actors`` long-lived actors (``ActorPoolStrategy``), each holding
        ``resources`` (``num_gpus`` for an encoder): a stage function that caches its models
        per process loads them once per actor.
        """
        if actors:
            yield from self._map_pool(fn, jobs, name=name, resources=resources, size=actors)
            return
        ray = self.connect()
        target = job_target(fn)
        task = self._remote.options(name=name, num_cpus=resources.num_cpus,
                                    num_gpus=resources.num_gpus)  # fmt: skip
        staging = self._staging_json()
        refs = [task.remote(target, job, staging) for job in jobs]
        index = {ref.hex(): k for k, ref in enumerate(refs)}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    k = index[ref.hex()]
                    try:
                        ok, payload, uploaded = ray.get(ref)
                    except ray.exceptions.RayError as err:
                        raise StageError(
                            f"{name}: job {k} could not run on Ray after {MAX_RETRIES} "
                            f"retries: {type(err).__name__}",
                            hint="check the cluster's logs (worker memory?) and re-run the "
                            "stage") from err  # fmt: skip
                    self._collect(uploaded)
                    yield k, payload if ok else JobFailure.from_json(payload)
        finally:
            for ref in pending:  # a stage that stops early leaves no tasks running
                ray.cancel(ref)

    def _map_pool(self, fn: JobFn, jobs: list[str], *, name: str, resources: Resources,
                  size: int) -> Iterator[tuple[int, JobResult]]:  # fmt: skip
        """The jobs through ``from_items → map_batches(JobActor, ActorPoolStrategy)``."""
        if not jobs:
            return
        self.connect()
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # One block per job: Ray Data would otherwise pack small items into one block (and
        # one actor). Fractional CPUs: actors holding whole CPUs can starve the pipeline's
        # own tasks on a small cluster (seen to deadlock on 2 CPUs).
        items = [{"k": k, "job": job} for k, job in enumerate(jobs)]
        ds = ray.data.from_items(items, override_num_blocks=len(jobs)).map_batches(
            JobActor, batch_size=1,
            fn_constructor_kwargs={"target": job_target(fn), "staging": self._staging_json()},
            compute=ray.data.ActorPoolStrategy(size=max(1, min(size, len(jobs)))),
            num_cpus=min(resources.num_cpus, POOL_CPUS), num_gpus=resources.num_gpus,
            batch_format="pyarrow",
        )  # fmt: skip
        try:
            for row in ds.iter_rows():
                k = int(row["k"])
                payload = str(row["payload"])
                self._collect(list(row["uploaded"]))
                yield k, payload if row["ok"] else JobFailure.from_json(payload)
        except ray.exceptions.RayError as err:
            raise StageError(f"{name}: the actor pool could not finish: {type(err).__name__}",
                             hint="check the cluster's logs (worker memory?) and re-run the "
                             "stage") from err  # fmt: skip

    def _staging_json(self) -> str | None:
        """The staging for workers, with this driver's node id (after :meth:`connect`)."""
        if self.staging is None:
            return None
        return replace(self.staging, driver_node=_node_id()).to_json()

    def _collect(self, uploaded: list[str]) -> None:
        if self.staging is not None and uploaded:
            collect_outputs(self.staging, uploaded)

    def close(self) -> None:
        """Shut Ray down if this engine started it."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None
        self._remote = None

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()
