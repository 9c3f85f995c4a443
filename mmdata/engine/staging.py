"""Jobs on Ray nodes that cannot see the driver's files: staged through the run's storage.

A run directory on shared storage (``run_dir: s3://...``) is worked on through the driver's
local mirror (:mod:`mmdata.rundir_remote`), and jobs name files by their paths in that
mirror. A Ray worker on another node has no such folder, so :func:`staged_call` gives it
one: every path in the job under the driver's mirror is mapped to this node's own mirror of
the run; the job's inputs (paths outside ``.work/``) are fetched from the run's committed
files (``mirror-index.json``: previous stages, pushed when they completed — each node keeps
what it fetched for the next job); the job runs; the files it wrote under its ``.work/``
outputs are uploaded to ``RUN/.work/...`` on the storage, and their paths travel back with
the result. The driver (:func:`collect_outputs`) downloads them into its own mirror and
deletes them from the storage, so the stage publishes exactly what a local run would.

On the driver's own node the mirror is right there and nothing is staged, unless
``ray.staging`` is ``always`` (which tests use to run this path on one machine).

>>> _paths({"in": "/m/records/a.parquet", "out": "/m/.work/scrubbed", "x": 1}, "/m")
(['records/a.parquet'], ['.work/scrubbed'])
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmdata.atomic import atomic_path

JobCall = Callable[[str], tuple[bool, str]]


@dataclass(frozen=True)
class Staging:
    """What a worker needs to reach a remote run: no secrets (credentials are the node's)."""

    url: str  # the run directory on storage
    driver_root: str  # the driver's mirror of it
    options: dict[str, Any]  # fsspec storage options (endpoint...)
    cache_dir: str | None  # where nodes keep their mirrors (run_storage.cache_dir)
    driver_node: str  # Ray node id of the driver
    token: str  # this stage run's id (nodes clear work folders of earlier runs)
    always: bool = False  # stage even on the driver's node

    def to_json(self) -> str:
        """As JSON (how it travels to workers)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Staging:
        """The staging :meth:`to_json` wrote."""
        return cls(**json.loads(text))

    def mirror(self, local: Path | None = None) -> Any:
        """A mirror of the run at ``local``; by default this node's (``<cache>/<digest>.node``)."""
        from mmdata.config import RunStorageConfig
        from mmdata.rundir_remote import RunMirror, mirror_root

        storage = RunStorageConfig(options=self.options, cache_dir=self.cache_dir)
        if local is None:
            base = mirror_root(self.url, storage)
            local = base.with_name(base.name + ".node")
        return RunMirror(self.url, storage, local=local)


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    return value


def _paths(job: Any, root: str) -> tuple[list[str], list[str]]:
    """Relative paths under ``root`` in a parsed job: (inputs, ``.work/`` outputs)."""
    found: list[str] = []

    def note(text: str) -> str:
        if text.startswith(root + "/"):
            found.append(text[len(root) + 1 :])
        return text

    _walk(job, note)
    inputs = sorted({p for p in found if not p.startswith(".work/")})
    outputs = sorted({p for p in found if p.startswith(".work/")})
    return inputs, outputs


def _rebase(text: str, old: str, new: str) -> str:
    """``text`` (JSON or not) with every path under ``old`` moved under ``new``."""
    try:
        doc = json.loads(text)
    except ValueError:
        return text.replace(old + "/", new + "/")

    def move(s: str) -> str:
        return new + s[len(old) :] if s == old or s.startswith(old + "/") else s

    return json.dumps(_walk(doc, move))


def _snapshot(root: Path, rels: list[str]) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every finished file under ``rels`` (temp files start with '.')."""
    out: dict[str, tuple[int, int]] = {}
    for rel in rels:
        base = root / rel
        files = [base] if base.is_file() else (p for p in base.rglob("*") if p.is_file())
        for p in files:
            if not p.name.startswith("."):
                st = p.stat()
                out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def _fresh_work(root: Path, outputs: list[str], token: str) -> None:
    """Create the outputs' ``.work/<stage>`` folders; empty ones an earlier stage run left.

    On the driver the runner starts each stage run with an empty work folder; a node's
    mirror must look the same to the job, so a folder whose ``.token`` is not this stage
    run's is cleared first (under a lock: jobs of one run share a node's folder).
    """
    import fcntl
    import shutil

    work = root / ".work"
    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".staging.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        for stage in sorted({Path(rel).parts[1] for rel in outputs if len(Path(rel).parts) > 1}):
            folder = work / stage
            mark = folder / ".token"
            if folder.is_dir() and not (mark.is_file() and mark.read_text() == token):
                shutil.rmtree(folder)
            folder.mkdir(exist_ok=True)
            mark.write_text(token)


def staged_call(call: JobCall, job: str, staging: Staging | None,
                node_id: str | None) -> tuple[bool, str, list[str]]:  # fmt: skip
    """Run ``call(job)`` on this node: ``(ok, payload, files uploaded under RUN/.work)``."""
    if staging is None or (not staging.always and node_id == staging.driver_node):
        return (*call(job), [])
    mirror = staging.mirror()
    inputs, outputs = _paths(json.loads(job) if job.startswith(("{", "[")) else job,
                             staging.driver_root)  # fmt: skip
    mirror.pull(inputs)
    node_root = str(mirror.local)
    _fresh_work(mirror.local, outputs, staging.token)
    before = _snapshot(mirror.local, outputs)
    ok, payload = call(_rebase(job, staging.driver_root, node_root))
    after = _snapshot(mirror.local, outputs)
    uploaded = sorted(rel for rel, st in after.items() if before.get(rel) != st)
    for rel in uploaded:
        mirror.fs.put_file(str(mirror.local / rel), mirror.remote_path(rel))
    return ok, _rebase(payload, node_root, staging.driver_root), uploaded


def collect_outputs(staging: Staging, uploaded: list[str]) -> None:
    """On the driver: download a staged job's outputs into the mirror, delete them remotely."""
    if not uploaded:
        return
    mirror = staging.mirror(Path(staging.driver_root))
    for rel in uploaded:
        dest = mirror.local / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(dest) as tmp:
                mirror.fs.get_file(mirror.remote_path(rel), str(tmp))
        except FileNotFoundError:
            # Jobs running side by side on one node see each other's finished files and
            # upload them too; the first job collected wins, the copies are identical.
            if not dest.is_file():
                raise
            continue
        mirror.fs.rm_file(mirror.remote_path(rel))
