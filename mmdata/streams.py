"""The ingest sink: what a connector writes while reading one item.

Part files are temporary Arrow IPC files (uncompressed, memory-mapped when stitched).

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

import numpy as np
import pyarrow as pa

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
class JobResult:
    """What reading a batch of consecutive items produced."""

    items: list[ItemResult]
    parts: list[tuple[str, PartInfo]]  # (stream suffix, part)


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


#: An item whose emitted rows exceed this many bytes writes its own part file as it goes;
#: smaller items are batched with their neighbours into one part per job.
SPILL_BYTES = 16 << 20


class PartSink:
    """The :class:`~connectors.base.ItemSink` of the ingest stage (one item)."""

    def __init__(
        self, item: SourceItem, part_dir: Path, storage_options: dict[str, Any], max_bytes: int
    ) -> None:
        self.item = item
        self._dir = part_dir
        self._storage = storage_options
        self._max_bytes = max_bytes
        self._writers: dict[str, pa.ipc.RecordBatchFileWriter] = {}
        self._schemas: dict[str, pa.Schema] = {}
        self._pending: dict[str, list[pa.Table]] = {}
        self._pending_bytes = 0
        self._modality: dict[str, str] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._rows: dict[str, int] = {}
        self._paths: dict[str, Path] = {}
        self._sha: str | None = None
        self._local: str | None = None
        self._tmp_local: str | None = None
        self.result = ItemResult(item.uri, item.seq)
        self.tables: dict[str, pa.Table] = {}  # small outputs, kept in memory after commit

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
            self._dir.mkdir(parents=True, exist_ok=True)
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
        if suffix not in self._schemas:
            self._schemas[suffix] = rows.schema
            self._modality[suffix] = modality
            self._meta[suffix] = {}
            self._rows[suffix] = 0
        elif rows.schema != self._schemas[suffix]:
            rows = rows.select(self._schemas[suffix].names).cast(self._schemas[suffix])
        if meta:
            self._meta[suffix].update(meta)
        self._rows[suffix] += rows.num_rows
        self.result.units_out += rows.num_rows
        if suffix in self._writers:
            self._writers[suffix].write_table(rows)
            return
        self._pending.setdefault(suffix, []).append(rows)
        self._pending_bytes += rows.nbytes
        if self._pending_bytes > SPILL_BYTES:
            self._spill()

    def _spill(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        for suffix, tables in self._pending.items():
            if suffix not in self._writers:
                path = self._dir / f"{_safe(suffix)}.item{self.item.seq:08d}.arrow"
                self._paths[suffix] = path
                self._writers[suffix] = pa.ipc.new_file(str(path), self._schemas[suffix])
            for t in tables:
                self._writers[suffix].write_table(t)
        self._pending, self._pending_bytes = {}, 0

    def reject(
        self, locator: str, reason: str, *, error_class: str = "InputDataError", units: int = 1
    ) -> None:
        self.result.rejects.append(Reject(self.item.uri, locator, reason, error_class, units))

    def flag(self, name: str, n: int = 1) -> None:
        self.result.flags[name] = self.result.flags.get(name, 0) + n

    # --- end of item -------------------------------------------------------------------
    def commit(self) -> ItemResult:
        """Finish the item: spilled parts closed, small outputs kept in ``tables``."""
        if self._writers:
            self._spill()  # an item that spilled keeps all its rows in its own parts
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
        self._sha = self._sha or sha256_file(r.uri, self._storage)
        for suffix, path in self._paths.items():
            meta = {**self._meta[suffix], "sha256": self._sha}
            r.parts[suffix] = PartInfo(str(path), r.uri, self._rows[suffix],
                                       self._modality[suffix], meta, r.seq)  # fmt: skip
        for suffix, tables in self._pending.items():
            self.tables[suffix] = pa.concat_tables(tables)
        self._pending = {}
        return r

    @property
    def sha256(self) -> str:
        """sha256 of the item (after commit)."""
        return self._sha or ""

    def stream_info(self, suffix: str) -> tuple[str, dict[str, Any]]:
        """Modality and metadata of a stream this item emitted."""
        return self._modality[suffix], self._meta[suffix]

    def abort(self, err: BaseException) -> ItemResult:
        """Drop everything the item emitted; quarantine the whole item."""
        for w in self._writers.values():
            with contextlib.suppress(Exception):
                w.close()
        for path in self._paths.values():
            path.unlink(missing_ok=True)
        self._pending, self.tables = {}, {}
        self._cleanup_local()
        reason = str(err) or type(err).__name__
        cls = type(err).__name__
        return ItemResult(self.item.uri, self.item.seq, units_in=1, failed=True,
                          rejects=[Reject(self.item.uri, None, reason, cls, 1)])  # fmt: skip

    def _cleanup_local(self) -> None:
        if self._tmp_local:
            Path(self._tmp_local).unlink(missing_ok=True)
            self._tmp_local = None


class JobParts:
    """Batches the small outputs of a job's consecutive items into shared part files.

    Rows keep their item in ``_uri`` / ``_sha256`` columns. A part holds a contiguous run of
    items; an item with its own (spilled) part closes the run, so stitching in ``seq``
    order keeps the listing order. Tables are buffered and written once per run, so a
    thousand one-row items make one row group, not a thousand.
    """

    def __init__(self, part_dir: Path, job: int) -> None:
        self.dir = part_dir
        self.job = job
        self.run = 0
        self.tables: dict[str, list[pa.Table]] = {}
        self.infos: dict[str, PartInfo] = {}
        self.done: list[tuple[str, PartInfo]] = []

    def add(self, sink: PartSink) -> None:
        """Take a committed item's in-memory outputs."""
        for suffix, table in sink.tables.items():
            zeros = np.zeros(table.num_rows, np.int32)
            table = table.append_column("_uri", pa.array([sink.item.uri]).take(zeros))
            table = table.append_column("_sha256", pa.array([sink.sha256]).take(zeros))
            modality, meta = sink.stream_info(suffix)
            if suffix not in self.infos:
                path = self.dir / f"{_safe(suffix)}.job{self.job:06d}.{self.run:04d}.arrow"
                self.infos[suffix] = PartInfo(str(path), sink.item.uri, 0, modality, {},
                                              sink.item.seq)  # fmt: skip
                self.tables[suffix] = []
            self.tables[suffix].append(table)
            self.infos[suffix].rows += table.num_rows
            self.infos[suffix].meta.update(meta)
        sink.tables = {}

    def close_run(self) -> None:
        """Write the current run's parts (before an item with its own part, or at the end)."""
        for suffix, tables in self.tables.items():
            info = self.infos[suffix]
            self.dir.mkdir(parents=True, exist_ok=True)
            write_part(info.path, pa.concat_tables(tables, promote_options="permissive"))
            self.done.append((suffix, info))
        self.tables, self.infos = {}, {}
        self.run += 1


def write_part(path: Path | str, table: pa.Table) -> None:
    """Write a part file (Arrow IPC) as the stitcher expects it."""
    with pa.ipc.new_file(str(path), table.schema) as w:
        w.write_table(table)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
