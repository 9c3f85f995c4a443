"""The ingest sink: what a connector writes while reading one item.

A connector reads one item into a :class:`PartSink`, which writes each stream's rows to a
part file for that item. Only when the item completes are its parts kept; a failed item
leaves nothing and is quarantined whole. :mod:`mmdata.stitch` then stitches a stream's
parts into ``streams/<stream_id>.parquet``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.base import Modality, SourceItem
from connectors.files import is_remote
from mmdata.errors import InputDataError


@dataclass
class Reject:
    """One quarantined piece of an item (plain data, crosses process boundaries)."""

    uri: str
    locator: str | None
    reason: str
    error_class: str
    units: int = 1


@dataclass
class PartInfo:
    """One item's rows of one stream."""

    path: str
    uri: str
    rows: int
    modality: str
    meta: dict[str, Any]
    seq: int


@dataclass
class ItemResult:
    """What reading one item produced."""

    uri: str
    seq: int
    units_in: int = 0
    units_out: int = 0
    parts: dict[str, PartInfo] = field(default_factory=dict)  # suffix -> part
    rejects: list[Reject] = field(default_factory=list)
    flags: dict[str, int] = field(default_factory=dict)
    failed: bool = False


def sha256_file(uri: str, storage_options: dict[str, Any]) -> str:
    """Streaming sha256 of a local or remote file."""
    h = hashlib.sha256()
    with _open(uri, storage_options) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _open(uri: str, storage_options: dict[str, Any]) -> IO[bytes]:
    if is_remote(uri):
        import fsspec

        return fsspec.open(uri, "rb", **storage_options).open()
    return open(uri.removeprefix("file://"), "rb")


class PartSink:
    """The :class:`~connectors.base.ItemSink` of the ingest stage."""

    def __init__(
        self, item: SourceItem, part_dir: Path, storage_options: dict[str, Any], max_bytes: int
    ) -> None:
        self.item = item
        self._dir = part_dir
        self._storage = storage_options
        self._max_bytes = max_bytes
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._schemas: dict[str, pa.Schema] = {}
        self._sha: str | None = None
        self._local: str | None = None
        self._tmp_local: str | None = None
        self.result = ItemResult(item.uri, item.seq)

    # --- reading -----------------------------------------------------------------------
    def open(self) -> IO[bytes]:
        return _open(self.item.uri, self._storage)

    def read_bytes(self) -> bytes:
        if self.item.size > self._max_bytes:
            raise InputDataError(f"{self.item.uri}: {self.item.size} bytes is over the limit")
        with self.open() as fh:
            data = fh.read(self._max_bytes + 1)
        if len(data) > self._max_bytes:
            raise InputDataError(f"{self.item.uri}: grew beyond the size limit while reading")
        self._sha = hashlib.sha256(data).hexdigest()
        return data

    def local_path(self) -> str:
        if not is_remote(self.item.uri):
            return self.item.uri.removeprefix("file://")
        if self._local is None:
            suffix = Path(self.item.uri).suffix
            fd, tmp = tempfile.mkstemp(suffix=suffix, dir=self._dir)
            with os.fdopen(fd, "wb") as out, self.open() as src:
                shutil.copyfileobj(src, out, 1 << 20)
            self._local = self._tmp_local = tmp
        return self._local

    # --- writing -----------------------------------------------------------------------
    def count_in(self, n: int) -> None:
        self.result.units_in += int(n)

    def emit(
        self,
        suffix: str,
        rows: pa.Table,
        *,
        modality: Modality,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if rows.num_rows == 0:
            return
        for col in ("ts_ns", "locator"):
            if col not in rows.column_names:
                raise TypeError(f"connector emitted rows without a {col!r} column")
        if rows.schema.field("ts_ns").type != pa.int64():
            raise TypeError("ts_ns must be int64 nanoseconds")
        if suffix not in self._writers:
            self._dir.mkdir(parents=True, exist_ok=True)
            path = self._dir / f"{_safe(suffix)}.{self.item.seq:08d}.parquet"
            self._schemas[suffix] = rows.schema
            self._writers[suffix] = pq.ParquetWriter(path, rows.schema, compression="zstd")
            self.result.parts[suffix] = PartInfo(
                str(path), self.item.uri, 0, modality, dict(meta or {}), self.item.seq
            )
        elif rows.schema != self._schemas[suffix]:
            rows = rows.select(self._schemas[suffix].names).cast(self._schemas[suffix])
        if meta:
            self.result.parts[suffix].meta.update(meta)
        self._writers[suffix].write_table(rows)
        self.result.parts[suffix].rows += rows.num_rows
        self.result.units_out += rows.num_rows

    def reject(
        self, locator: str, reason: str, *, error_class: str = "InputDataError", units: int = 1
    ) -> None:
        self.result.rejects.append(Reject(self.item.uri, locator, reason, error_class, units))

    def flag(self, name: str, n: int = 1) -> None:
        self.result.flags[name] = self.result.flags.get(name, 0) + n

    # --- end of item -------------------------------------------------------------------
    def commit(self) -> ItemResult:
        """Close the parts; check that every unit is accounted for."""
        for w in self._writers.values():
            w.close()
        self._cleanup_local()
        r = self.result
        rejected = sum(x.units for x in r.rejects)
        missing = r.units_in - r.units_out - rejected
        if missing > 0:
            r.rejects.append(Reject(r.uri, None, f"{missing} units unaccounted for by the "
                                    "connector (a bug: please report it)", "ConnectorBug",
                                    missing))  # fmt: skip
        elif missing < 0:
            r.units_in -= missing  # emitted more rows than declared: count what was seen
        sha = self._sha or sha256_file(r.uri, self._storage)
        for part in r.parts.values():
            part.meta["sha256"] = sha
        return r

    def abort(self, err: BaseException) -> ItemResult:
        """Drop everything the item emitted; quarantine the whole item."""
        for suffix, w in self._writers.items():
            with contextlib.suppress(Exception):
                w.close()
            Path(self.result.parts[suffix].path).unlink(missing_ok=True)
        self._cleanup_local()
        reason = str(err) or type(err).__name__
        cls = type(err).__name__
        return ItemResult(self.item.uri, self.item.seq, units_in=1, failed=True,
                          rejects=[Reject(self.item.uri, None, reason, cls, 1)])  # fmt: skip

    def _cleanup_local(self) -> None:
        if self._tmp_local:
            Path(self._tmp_local).unlink(missing_ok=True)
            self._tmp_local = None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
