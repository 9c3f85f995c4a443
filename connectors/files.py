"""Listing a source's files, locally or through fsspec (``s3://…``), safely.

Nothing outside the source's root is read: symlinks are refused unless
``follow_symlinks`` is set and their target stays inside the root; ``..`` tricks are
caught by resolving every path. Zero-byte and oversized files are refused at listing.
Refused entries come back as ``(uri, reason)`` so the ingest stage can quarantine them.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.csv").write_text("x\\n")
>>> [i.uri.endswith("a.csv") for i in list_source_files(str(d), BaseOptions(), ("*.csv",))]
[True]
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec

from connectors.base import BaseOptions, SourceItem
from mmdata.errors import InputDataError

_GLOB_CHARS = set("*?[")
_DIGITS = re.compile(r"(\d+)")


def is_remote(path: str) -> bool:
    """True for fsspec URLs other than local files (s3://, gs://, memory://, ...)."""
    return "://" in path and not path.startswith("file://")


def filesystem(path: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    """The fsspec filesystem for ``path`` and the path inside it."""
    return fsspec.core.url_to_fs(path, **storage_options)


def _static_prefix(path: str) -> str:
    parts = Path(path).parts
    keep = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        keep.append(part)
    return str(Path(*keep)) if keep else "."


def natural_key(path: str) -> list[Any]:
    """Sort key comparing digit runs as numbers: vib_2.csv before vib_10.csv.

    >>> sorted(["v_10.csv", "v_2.csv", "v_1.csv"], key=natural_key)
    ['v_1.csv', 'v_2.csv', 'v_10.csv']
    """
    return [(0, int(tok), tok) if tok.isdigit() else (1, 0, tok) for tok in _DIGITS.split(path)]


def _matches(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    low = name.lower()
    return any(fnmatch.fnmatchcase(low, p.lower()) for p in patterns)


def list_source_files(
    path: str, options: BaseOptions, default_patterns: tuple[str, ...]
) -> Iterator[SourceItem | tuple[str, str]]:
    """Files of one source in sorted order, or ``(uri, reason)`` for refused entries."""
    patterns = tuple(options.patterns) if options.patterns else default_patterns
    max_bytes = options.max_file_mb * 1024 * 1024
    if is_remote(path):
        yield from _list_remote(path, options, patterns, max_bytes)
        return
    local = path.removeprefix("file://")
    is_glob = bool(_GLOB_CHARS & set(local))
    if options.root is not None:
        root = Path(options.root)
    elif is_glob:
        root = Path(_static_prefix(local))
    elif os.path.isdir(local):
        root = Path(local)
    else:
        root = Path(local).parent
    root_real = root.resolve()

    if is_glob:
        candidates = sorted(glob.glob(local, recursive=True), key=natural_key)
        candidates = [c for c in candidates if not os.path.isdir(c) or os.path.islink(c)]
    elif os.path.isdir(local):
        candidates = []
        for dirpath, dirnames, filenames in os.walk(local, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames + [d for d in dirnames if os.path.islink(
                    os.path.join(dirpath, d))]):  # fmt: skip
                if _matches(name, patterns):
                    candidates.append(os.path.join(dirpath, name))
        candidates.sort(key=natural_key)
    elif os.path.lexists(local):
        candidates = [local]
    else:
        raise InputDataError(f"source path {path!r} does not exist", hint="check the path")

    seq = 0
    root_prefix = str(root_real).rstrip(os.sep) + os.sep
    real_dirs: dict[str, str] = {}  # realpath of each parent folder, resolved once
    for cand in candidates:
        uri = os.path.abspath(cand)
        st = os.lstat(cand)
        if stat.S_ISLNK(st.st_mode):
            if not options.follow_symlinks:
                yield uri, "symlink not followed (set follow_symlinks: true to allow)"
                continue
            real = os.path.realpath(cand)
            st = os.stat(real) if os.path.exists(real) else st
        else:
            parent, name = os.path.split(uri)
            if parent not in real_dirs:
                real_dirs[parent] = os.path.realpath(parent)
            real = os.path.join(real_dirs[parent], name)
        if not (real + os.sep).startswith(root_prefix) and real != str(root_real):
            yield uri, f"path resolves outside the source root {str(root_real)!r}"
            continue
        if not stat.S_ISREG(st.st_mode):
            yield uri, "not a regular file"
            continue
        if st.st_size == 0:
            yield uri, "zero-byte file"
            continue
        if st.st_size > max_bytes:
            yield uri, f"file of {st.st_size} bytes exceeds max_file_mb={options.max_file_mb}"
            continue
        yield SourceItem(uri, st.st_size, seq, f"{st.st_size}:{st.st_mtime_ns}")
        seq += 1


def _list_remote(
    path: str, options: BaseOptions, patterns: tuple[str, ...], max_bytes: int
) -> Iterator[SourceItem | tuple[str, str]]:
    fs, inner = filesystem(path, options.storage_options)
    protocol = path.split("://", 1)[0]
    if _GLOB_CHARS & set(inner):
        found = fs.glob(inner, detail=True)
        root = _static_prefix(inner)
    elif fs.isdir(inner):
        found = {
            k: v for k, v in fs.find(inner, detail=True).items()
            if _matches(k.rsplit("/", 1)[-1], patterns)
        }  # fmt: skip
        root = inner
    else:
        found = {inner: fs.info(inner)}
        root = inner.rsplit("/", 1)[0]
    root = (options.root.split("://", 1)[-1] if options.root else root).rstrip("/")
    seq = 0
    for key in sorted(found, key=natural_key):
        info = found[key]
        uri = f"{protocol}://{key}"
        if info.get("type") == "directory":
            continue
        if ".." in key.split("/") or not (key == root or key.startswith(root + "/")):
            yield uri, f"key escapes the source root {root!r}"
            continue
        size = int(info.get("size") or 0)
        if size == 0:
            yield uri, "zero-byte file"
            continue
        if size > max_bytes:
            yield uri, f"file of {size} bytes exceeds max_file_mb={options.max_file_mb}"
            continue
        tag = info.get("ETag") or info.get("etag") or info.get("LastModified") or ""
        yield SourceItem(uri, size, seq, f"{size}:{tag}")
        seq += 1
