"""The run directory: one folder per run, a subfolder per stage, and ``manifest.json``.

Layout::

    RUN/
      manifest.json          config hash, package versions, per-stage status/timings/counts
      quarantine/<stage>.parquet
      <stage>/               each stage's outputs (synth/, ingest/, sync/, records/, ...)
      .work/                 stages in progress (never read as output)
      .lock                  held by the process running stages here

>>> import tempfile, pathlib
>>> with RunDir.open(pathlib.Path(tempfile.mkdtemp()) / "run") as run:
...     run.manifest.schema_version
'mmdata.manifest/1'
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmdata import atomic
from mmdata._version import __version__
from mmdata.errors import RunDirError

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION: Final = "mmdata.manifest/1"

#: Distributions whose versions every manifest records (missing ones are skipped).
_TRACKED_PACKAGES = (
    "numpy", "pyarrow", "polars", "pillow", "av", "soundfile", "pydantic", "pyyaml",
    "torch", "transformers", "peft", "presidio-analyzer", "spacy", "ray", "decord",
)  # fmt: skip


class StageCounts(BaseModel):
    """Items a stage took in, put out, and quarantined; they must reconcile."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    in_: int = Field(alias="in", ge=0, description="Items the stage received.")
    out: int = Field(ge=0, description="Items the stage produced.")
    quarantined: int = Field(0, ge=0, description="Items rejected to quarantine.")

    def reconciles(self) -> bool:
        """True when in = out + quarantined."""
        return self.in_ == self.out + self.quarantined


class StageRecord(BaseModel):
    """What the manifest knows of one stage."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["running", "complete", "failed"]
    fingerprint: str = Field(description="sha256 over stage, code version, config, inputs.")
    config_hash: str
    started_ns: int = Field(description="Wall-clock start, ns since the epoch.")
    finished_ns: int | None = None
    elapsed_ns: int | None = None
    counts: StageCounts | None = None
    error: str | None = Field(None, description="Error class and message of a failed stage.")


class Manifest(BaseModel):
    """The run's ``manifest.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["mmdata.manifest/1"] = MANIFEST_SCHEMA_VERSION
    mmdata_version: str = __version__
    config_hash: str | None = Field(None, description="Hash of the pipeline config, if any.")
    python: str = Field(default_factory=lambda: platform.python_version())
    platform: str = Field(default_factory=lambda: f"{sys.platform}-{platform.machine()}")
    packages: dict[str, str] = Field(default_factory=lambda: package_versions())
    stages: dict[str, StageRecord] = Field(default_factory=dict)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape outputs."""
    found = {"mmdata-toolkit": __version__}
    for name in _TRACKED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


class RunDir:
    """An open, locked run directory. Use :meth:`open` as a context manager."""

    def __init__(self, root: Path, manifest: Manifest, lock: IO[str]) -> None:
        self.root = root
        self.manifest = manifest
        self._lock = lock
        #: the shared-storage URL this folder mirrors (:mod:`mmdata.rundir_remote`), if any
        self.remote_url: str | None = None
        #: called after every manifest save (a remote run pushes its changes there)
        self.after_save: Callable[[], object] | None = None

    @classmethod
    def open(cls, root: Path | str) -> RunDir:
        """Create or reopen a run directory and take its lock.

        Raises :class:`RunDirError` when ``root`` is a non-empty folder that is not a run
        directory, is not writable, or another process holds the lock.
        """
        path = Path(root)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"run directory {str(path)!r} is a file", hint="choose a folder")
        manifest_path = path / MANIFEST_NAME
        if path.is_dir() and any(path.iterdir()) and not manifest_path.exists():
            raise RunDirError(
                f"{str(path)!r} is not empty and has no {MANIFEST_NAME}: not an mmdata run dir",
                hint="give a new or empty folder (mmdata will not write into other data)",
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock = open(path / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 - held open
        except OSError as err:
            raise RunDirError(f"cannot create run directory {str(path)!r}: {err}") from err
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RunDirError(
                f"run directory {str(path)!r} is in use by another mmdata process",
                hint="wait for it to finish, or use another --run-dir",
            ) from None
        manifest = (
            Manifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
            if manifest_path.exists()
            else Manifest()
        )
        manifest.mmdata_version = __version__
        manifest.packages = package_versions()
        run = cls(path, manifest, lock)
        run.save_manifest()
        return run

    def close(self) -> None:
        """Release the lock."""
        if not self._lock.closed:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def stage_path(self, stage: str) -> Path:
        """Folder holding a completed stage's outputs."""
        return self.root / stage

    def work_path(self, stage: str) -> Path:
        """Folder a running stage writes into before it is moved into place."""
        return self.root / ".work" / stage

    def quarantine_path(self, stage: str) -> Path:
        """Parquet file of a stage's quarantined items."""
        return self.root / "quarantine" / f"{stage}.parquet"

    def save_manifest(self) -> None:
        """Atomically rewrite ``manifest.json``."""
        atomic.write_text(
            self.root / MANIFEST_NAME,
            self.manifest.model_dump_json(indent=2, by_alias=True) + "\n",
        )
        if self.after_save is not None:
            self.after_save()


def fingerprint_tree(root: Path) -> str:
    """A cheap fingerprint of a file tree: relative path, size and mtime of every file.

    Like ``make``, it trusts mtimes; content hashes are taken where a stage needs them.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a").write_text("x")
    >>> fingerprint_tree(d) == fingerprint_tree(d)
    True
    """
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
