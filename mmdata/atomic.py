"""Atomic file writes: temp file in the same directory + fsync + rename (+ fsync of the dir).

A killed process never leaves a half-written file under the final name: readers see the
old file or the whole new one.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_json(d / "x.json", {"a": 1})
>>> (d / "x.json").read_text()
'{\\n  "a": 1\\n}\\n'
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (so a rename inside it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it is fsynced and renamed over ``path``.

    Use it for libraries that want a file name (soundfile, PyAV, Pillow).

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hi")
    >>> target.read_text()
    'hi'
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=".tmp" + final.suffix, dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: Path | str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file for writing; it replaces ``path`` only if the block completes.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "b.bin"
    >>> with atomic_open(target) as fh:
    ...     _ = fh.write(b"ok")
    >>> target.read_bytes()
    b'ok'
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open mode {mode!r} not supported; use 'wb' or 'w'")
    with atomic_path(path) as tmp:
        encoding = None if "b" in mode else "utf-8"
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()


def write_bytes(path: Path | str, data: bytes) -> None:
    """Atomically write bytes to ``path``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: Path | str, text: str) -> None:
    """Atomically write UTF-8 text to ``path``."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted-as-given UTF-8 JSON."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_parquet(path: Path | str, table: pa.Table, **kwargs: Any) -> None:
    """Atomically write an Arrow table as Parquet (zstd unless ``compression`` is given).

    >>> import tempfile, pathlib, pyarrow as pa
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.parquet"
    >>> write_parquet(p, pa.table({"x": [1, 2]}))
    >>> pq.read_table(p).num_rows
    2
    """
    kwargs.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)
