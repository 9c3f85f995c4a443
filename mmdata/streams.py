"""Normalized streams: the ingest sink (per-item part files) and the per-stream finalizer.

A connector reads one item into a :class:`PartSink`, which writes each stream's rows to a
part file for that item. Only when the item completes are its parts kept; a failed item
leaves nothing. The finalizer then stitches a stream's parts in item order into
``streams/<stream_id>.parquet``:

* rows carry ``stream_id, device_id, ts_ns, segment`` + payload + ``source_ref``;
* a backward time step larger than ``clock_jump_ns`` starts a new ``segment`` (flagged
  ``clock_jumps``); smaller disorder is sorted (flagged ``non_monotonic`` with a count);
* rows repeating a timestamp of their segment are quarantined (``duplicates``);
* row groups are sized by bytes and sorted by time, ready for windowing.
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors.base import Modality, SourceItem
from connectors.files import is_remote
from mmdata.errors import InputDataError

SOURCE_REF_TYPE = pa.struct(
    [("uri", pa.string()), ("locator", pa.string()), ("sha256", pa.string())]
)


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


# --------------------------------------------------------------------------------------
# Finalizing a stream


@dataclass
class StreamStats:
    """Counts and bounds of a finalized stream."""

    rows: int = 0
    ts_min_ns: int | None = None
    ts_max_ns: int | None = None
    segments: int = 0
    flags: dict[str, int] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)


def _order_part(ts: np.ndarray, start_segment: int, prev_last: int | None,
                clock_jump_ns: int) -> tuple[np.ndarray, np.ndarray, int, int]:  # fmt: skip
    """Segment ids and a stable order for one part's rows; also jump and disorder counts."""
    if ts.size == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int64), 0, 0
    steps = np.diff(ts, prepend=ts[0] if prev_last is None else prev_last)
    if prev_last is None:
        steps[0] = 0
    jumps = steps < -clock_jump_ns
    segment = (start_segment + np.cumsum(jumps)).astype(np.int32)
    backward = (steps < 0) & ~jumps
    backward[0] = False  # a small step back into the previous item is an overlap, merged later
    disorder = int(np.count_nonzero(backward))
    order = np.lexsort((ts, segment)) if disorder else np.arange(ts.size)
    return segment, order.astype(np.int64), int(np.count_nonzero(jumps)), disorder


def _prepare_part(part: PartInfo, header: dict[str, str]) -> pa.Table:
    table = attach_source_ref(pq.read_table(part.path), part.uri, part.meta.get("sha256", ""))
    n = table.num_rows
    for i, (name, value) in enumerate(header.items()):
        table = table.add_column(i, name, pa.array([value] * n, pa.string()))
    return table


def finalize_stream(
    parts: list[PartInfo],
    out_path: Path,
    header: dict[str, str],
    *,
    clock_jump_ns: int,
    row_group_bytes: int,
) -> StreamStats:
    """Stitch a stream's parts (in ``seq`` order) into one time-sorted Parquet file.

    ``header`` holds constant leading columns (stream_id, device_id). A small backward
    step into the previous part (overlapping files) merges and sorts the two; a step
    beyond ``clock_jump_ns`` starts a new segment instead.
    """
    stats = StreamStats()
    writer: pq.ParquetWriter | None = None
    rows_per_group = 0
    segment = 0
    prev_last: int | None = None
    pending: pa.Table | None = None

    def write(table: pa.Table | None) -> None:
        nonlocal writer, rows_per_group
        if table is None or table.num_rows == 0:
            return
        if writer is None:
            per_row = max(1, table.nbytes // max(1, table.num_rows))
            rows_per_group = max(1024, row_group_bytes // per_row)
            writer = pq.ParquetWriter(out_path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=rows_per_group)

    def bump(name: str, n: int) -> None:
        if n:
            stats.flags[name] = stats.flags.get(name, 0) + n

    try:
        for part in sorted(parts, key=lambda p: p.seq):
            table = _prepare_part(part, header)
            ts = table.column("ts_ns").to_numpy()
            seg, order, jumps, disorder = _order_part(ts, segment, prev_last, clock_jump_ns)
            bump("clock_jumps", jumps)
            bump("non_monotonic", disorder)
            ts_idx = table.column_names.index("ts_ns")
            table = table.add_column(ts_idx + 1, "segment", pa.array(seg, pa.int32()))
            if disorder:
                table = table.take(pa.array(order))
            if table.num_rows == 0:
                continue
            first_seg = int(table.column("segment")[0].as_py())
            first_ts = int(table.column("ts_ns")[0].as_py())
            crosses = (
                pending is not None
                and prev_last is not None
                and (first_seg == segment and first_ts < prev_last)
            )
            if crosses and pending is not None:
                bump("overlapping_items", 1)
                merged = pa.concat_tables([pending, table])
                m_order = np.lexsort((merged.column("ts_ns").to_numpy(),
                                      merged.column("segment").to_numpy()))  # fmt: skip
                table = _drop_duplicates(merged.take(pa.array(m_order)), stats, None, segment)
            else:
                table = _drop_duplicates(table, stats, prev_last, segment)
                write(pending)
            pending = table
            if table.num_rows:
                segment = int(table.column("segment")[-1].as_py())
                prev_last = int(table.column("ts_ns")[-1].as_py())
                tmin = int(pc.min(table.column("ts_ns")).as_py())
                tmax = int(pc.max(table.column("ts_ns")).as_py())
                stats.ts_min_ns = tmin if stats.ts_min_ns is None else min(stats.ts_min_ns, tmin)
                stats.ts_max_ns = tmax if stats.ts_max_ns is None else max(stats.ts_max_ns, tmax)
        write(pending)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        return stats
    stats.rows = pq.read_metadata(out_path).num_rows
    stats.segments = segment + 1
    return stats


def _drop_duplicates(
    table: pa.Table, stats: StreamStats, prev_last: int | None, prev_segment: int
) -> pa.Table:
    ts = table.column("ts_ns").to_numpy()
    seg = table.column("segment").to_numpy()
    if ts.size == 0:
        return table
    dup = np.zeros(ts.size, bool)
    dup[1:] = (ts[1:] == ts[:-1]) & (seg[1:] == seg[:-1])
    if prev_last is not None and seg[0] == prev_segment and ts[0] == prev_last:
        dup[0] = True
    if not dup.any():
        return table
    locs = table.column("source_ref").combine_chunks().field("locator").to_pylist()
    uris = table.column("source_ref").combine_chunks().field("uri").to_pylist()
    for i in np.flatnonzero(dup):
        stats.rejects.append(Reject(uris[i], locs[i], f"duplicate timestamp ts_ns={int(ts[i])} "
                                    "in its segment; the first row was kept",
                                    "DuplicateTimestamp"))  # fmt: skip
    stats.flags["duplicates"] = stats.flags.get("duplicates", 0) + int(dup.sum())
    return table.filter(pa.array(~dup))


def attach_source_ref(table: pa.Table, uri: str, sha256: str) -> pa.Table:
    """Replace a part's ``locator`` column by the ``source_ref`` struct."""
    n = table.num_rows
    loc = table.column("locator").cast(pa.string())
    ref = pa.StructArray.from_arrays(
        [pa.array([uri] * n, pa.string()), loc.combine_chunks(),
         pa.array([sha256] * n, pa.string())],
        fields=list(SOURCE_REF_TYPE),
    )  # fmt: skip
    idx = table.column_names.index("locator")
    return table.remove_column(idx).append_column("source_ref", ref)
