"""Run directories on shared storage (``run_dir: s3://bucket/runs/plant``), via a local mirror.

Object stores have no rename, no ``flock`` and no partial reads worth the name, while every
stage writes atomically by renaming folders. So a remote run directory is worked on through
a local *mirror*: :func:`open_run` takes the run's lock object, pulls what changed since the
mirror last saw it, and hands the stages an ordinary :class:`~mmdata.rundir.RunDir` on the
mirror; every time the manifest is saved (a stage starts, completes or fails) the changed
files are pushed. The push uploads the files first, then ``mirror-index.json`` (size, mtime
and sha256 of every file, so another machine's mirror gets the same mtimes and can check
what it pulled), then ``manifest.json`` — the commit point: a stage the remote manifest
calls complete has all its files there — and only then deletes remote files the run no
longer has (a re-run stage's old outputs).

A killed run therefore leaves the remote consistent at its last completed stage, and any
machine resumes it: stages complete in the remote manifest are pulled and skipped.

* The lock is an object, ``RUN/.lock`` (host, pid, start time). It is advisory — two hosts
  racing within the same round trip could both take it. A lock whose holder was a process
  on this host that has exited (a killed run) is taken over; another host's stays until
  someone deletes it, and the error says which object to delete.
* Credentials come from the environment (``AWS_ACCESS_KEY_ID``... or an instance role),
  never from the config; ``run_storage.options`` holds the rest (``client_kwargs:
  {endpoint_url: ...}`` for an S3-compatible server).
* The mirror lives in ``run_storage.cache_dir`` (default ``$MMDATA_RUN_CACHE`` or
  ``~/.cache/mmdata/runs``), one folder per run URL.

>>> is_remote("s3://bucket/run"), is_remote("runs/demo"), is_remote("file:///tmp/run")
(True, False, False)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmdata import atomic
from mmdata.config import RunStorageConfig
from mmdata.errors import RunDirError
from mmdata.rundir import MANIFEST_NAME, RunDir

INDEX_NAME = "mirror-index.json"
LOCK_NAME = ".lock"
_LOCAL_ONLY = (".lock", ".work")  # this machine's: never pushed, never deleted by a pull


def is_remote(target: str | Path) -> bool:
    """True when ``target`` is an fsspec URL other than ``file://``."""
    text = str(target)
    return "://" in text and not text.startswith("file://")


def local_path(target: str | Path) -> Path:
    """``target`` as a local path (``file://`` stripped).

    >>> local_path("file:///tmp/run")
    PosixPath('/tmp/run')
    """
    text = str(target)
    return Path(text.removeprefix("file://"))


def mirror_root(url: str, storage: RunStorageConfig) -> Path:
    """The local mirror folder of run ``url``.

    >>> mirror_root("s3://b/run", RunStorageConfig(cache_dir="/c")).parent
    PosixPath('/c')
    """
    base = storage.cache_dir or os.environ.get("MMDATA_RUN_CACHE") or str(
        Path.home() / ".cache" / "mmdata" / "runs")  # fmt: skip
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return Path(base) / digest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _holder_is_gone(owner: str) -> bool:
    """True when a lock's holder (``host:pid:ns``) was a process on this host that has exited.

    >>> _holder_is_gone(f"{socket.gethostname()}:{os.getpid()}:0")
    False
    """
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's process: only its owner knows
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _is_local_only(rel: str) -> bool:
    return rel.split("/", 1)[0] in _LOCAL_ONLY


class RunMirror:
    """A remote run directory and its local mirror (see the module docstring).

    >>> RunMirror("s3://bucket/run", RunStorageConfig(cache_dir="/c")).url
    's3://bucket/run'
    """

    def __init__(self, url: str, storage: RunStorageConfig, local: Path | None = None) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **storage.options)
        self.local = local or mirror_root(self.url, storage)
        self._state_path = self.local.with_name(self.local.name + ".state.json")
        # relpath -> [size, mtime_ns, sha256] of each file as last pulled or pushed
        self._state: dict[str, list[Any]] = {}
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"

    def remote_path(self, rel: str) -> str:
        """The storage path (no protocol) of ``rel`` in the run."""
        return f"{self.root}/{rel}"

    def lock(self) -> None:
        """Take the run's lock object, or raise :class:`RunDirError` naming its holder."""
        path = self.remote_path(LOCK_NAME)
        try:
            self.fs.invalidate_cache()
            held = json.loads(self.fs.cat_file(path)) if self.fs.exists(path) else None
            if held is not None and not _holder_is_gone(str(held.get("owner", ""))):
                raise RunDirError(
                    f"run directory {self.url!r} is in use by {held.get('owner', '?')!r}",
                    hint=f"wait for it to finish; if that process is gone, delete "
                    f"{self.url}/{LOCK_NAME}",
                )  # fmt: skip
            self.fs.pipe_file(path, json.dumps({"owner": self._owner}).encode())
            self.fs.invalidate_cache()
            held = json.loads(self.fs.cat_file(path))
        except OSError as err:
            raise RunDirError(f"cannot reach run directory {self.url!r}: {err}",
                              hint="check the URL, run_storage.options and the credentials "
                              "in the environment") from err  # fmt: skip
        if held.get("owner") != self._owner:
            raise RunDirError(
                f"run directory {self.url!r} was locked by {held['owner']!r} at the same time",
                hint="run one process per run directory",
            )

    def unlock(self) -> None:
        """Delete the lock object if this mirror holds it."""
        path = self.remote_path(LOCK_NAME)
        with contextlib.suppress(OSError, ValueError):
            self.fs.invalidate_cache()
            if json.loads(self.fs.cat_file(path)).get("owner") == self._owner:
                self.fs.rm_file(path)

    def _remote_index(self) -> dict[str, list[Any]]:
        path = self.remote_path(INDEX_NAME)
        self.fs.invalidate_cache()
        if not self.fs.exists(path):
            return {}
        files: dict[str, list[Any]] = json.loads(self.fs.cat_file(path))["files"]
        return files

    def pull(self, prefixes: list[str] | None = None) -> int:
        """Bring the mirror up to the remote's committed state; returns files downloaded.

        Files whose size, mtime and hash already match are kept; files the remote lacks are
        deleted (except this machine's ``.work`` and lock); pulled files get the mtime the
        pushing machine had, so mtime-based fingerprints agree across machines. With
        ``prefixes`` (relative paths of files or folders), only those are fetched and
        nothing is deleted: how a Ray worker on another node fetches a job's inputs.
        """
        self.local.mkdir(parents=True, exist_ok=True)
        if self._state_path.exists():
            self._state = json.loads(self._state_path.read_text(encoding="utf-8"))
        files = self._remote_index()
        if prefixes is not None:
            heads = tuple(p.rstrip("/") + "/" for p in prefixes)
            files = {rel: v for rel, v in files.items()
                     if rel in prefixes or rel.startswith(heads)}  # fmt: skip
        pulled = sum(self._fetch(rel, *entry) for rel, entry in sorted(files.items()))
        if prefixes is not None:
            self._save_state()
            return pulled
        manifest = self.local / MANIFEST_NAME
        if self.fs.exists(self.remote_path(MANIFEST_NAME)):
            with atomic.atomic_path(manifest) as tmp:
                self.fs.get_file(self.remote_path(MANIFEST_NAME), str(tmp))
        elif manifest.exists():  # the remote run was deleted: start afresh
            manifest.unlink()
        for rel in self._local_files():
            if rel not in files and rel != MANIFEST_NAME:
                (self.local / rel).unlink()
                self._state.pop(rel, None)
        self._save_state()
        return pulled

    def _fetch(self, rel: str, size: int, mtime_ns: int, digest: str) -> bool:
        """Download one indexed file unless the mirror already has it; True if downloaded."""
        dest = self.local / rel
        st = dest.stat() if dest.is_file() else None
        if self._state.get(rel) == [size, mtime_ns, digest] and st is not None and (
            st.st_size, st.st_mtime_ns) == (size, mtime_ns):  # fmt: skip
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(dest) as tmp:
            self.fs.get_file(self.remote_path(rel), str(tmp))
            if _sha256(tmp) != digest:
                raise RunDirError(
                    f"{self.url}/{rel} does not match its mirror-index entry",
                    hint="another process may be writing this run; re-run",
                )
        os.utime(dest, ns=(mtime_ns, mtime_ns))
        self._state[rel] = [size, mtime_ns, digest]
        return True

    def _local_files(self) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.local):
            rel_dir = Path(dirpath).relative_to(self.local).as_posix()
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d not in _LOCAL_ONLY]
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not _is_local_only(rel):
                    out.append(rel)
        return sorted(out)

    def push(self) -> int:
        """Upload what changed, then the index, then the manifest; delete what is gone.

        Returns the number of files uploaded (the manifest not counted).
        """
        current: dict[str, list[Any]] = {}
        pushed = 0
        for rel in self._local_files():
            if rel == MANIFEST_NAME:
                continue
            st = (self.local / rel).stat()
            known = self._state.get(rel)
            if known is not None and known[:2] == [st.st_size, st.st_mtime_ns]:
                current[rel] = known
                continue
            current[rel] = [st.st_size, st.st_mtime_ns, _sha256(self.local / rel)]
            self.fs.put_file(str(self.local / rel), self.remote_path(rel))
            pushed += 1
        self.fs.pipe_file(self.remote_path(INDEX_NAME), json.dumps(
            {"url": self.url, "files": current}, sort_keys=True).encode())  # fmt: skip
        self.fs.put_file(str(self.local / MANIFEST_NAME), self.remote_path(MANIFEST_NAME))
        gone = [rel for rel in self._state if rel not in current]
        for rel in gone:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.remote_path(rel))
        self._state = current
        self._save_state()
        return pushed

    def _save_state(self) -> None:
        atomic.write_text(self._state_path, json.dumps(self._state, sort_keys=True))


@contextlib.contextmanager
def open_run(target: str | Path, storage: RunStorageConfig | None = None) -> Iterator[RunDir]:
    """Open a run directory, local or remote; a remote one is pushed after every stage.

    >>> import tempfile, pathlib
    >>> with open_run(pathlib.Path(tempfile.mkdtemp()) / "run") as run:
    ...     run.manifest.schema_version
    'mmdata.manifest/1'
    """
    if not is_remote(target):
        with RunDir.open(local_path(target)) as run:
            yield run
        return
    mirror = RunMirror(str(target), storage or RunStorageConfig())
    mirror.lock()
    try:
        mirror.pull()
        with RunDir.open(mirror.local) as run:
            run.remote_url = mirror.url
            run.after_save = mirror.push
            mirror.push()
            yield run
    finally:
        mirror.unlock()
