"""Stitching a stream's per-item parts into one time-sorted Parquet file.

Parts come in item order (files in natural name order). Rows get ``stream_id``,
``device_id`` (constant header columns), ``segment`` and the provenance columns
``source_uri, source_locator, source_sha256``. Within and across
parts:

* a backward time step larger than ``clock_jump_ns`` starts a new ``segment`` (flag
  ``clock_jumps``) — a device clock that was stepped back is not "sorted away";
* smaller disorder inside a part is sorted (flag ``non_monotonic``, the number of rows
  that stepped back);
* a part that starts before the previous part ended (overlapping files) is merged in time
  order at the end (flag ``overlapping_items``);
* a row repeating the timestamp of the previous row of its segment is quarantined
  (``DuplicateTimestamp``; the first row is kept).

Parts that are in order are streamed batch by batch, so memory is bounded by about 20 bytes
per row of the largest single part (its time index), not by the stream's length.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmdata.streams import PartInfo, Reject

#: Provenance columns of every stream row: the item (file or URL), where in it, its sha256.
#: uri and sha256 repeat for every row of an item, so they are dictionary-encoded.
SOURCE_COLUMNS = ("source_uri", "source_locator", "source_sha256")
_DICT = pa.dictionary(pa.int32(), pa.string())
_BATCH_ROWS = 65_536


@dataclass
class StreamStats:
    """Counts and bounds of a finalized stream."""

    rows: int = 0
    ts_min_ns: int | None = None
    ts_max_ns: int | None = None
    segments: int = 0
    flags: dict[str, int] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)

    def bump(self, name: str, n: int) -> None:
        """Add ``n`` to flag ``name`` (no entry for zero)."""
        if n:
            self.flags[name] = self.flags.get(name, 0) + int(n)


def _order_part(
    ts: np.ndarray, start_segment: int, prev_last: int | None, clock_jump_ns: int
) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """Segment ids, a stable sort order (None when already in order), jumps, disorder."""
    steps = np.diff(ts, prepend=ts[0] if prev_last is None else prev_last)
    if prev_last is None:
        steps[0] = 0
    jumps = steps < -clock_jump_ns
    segment = (start_segment + np.cumsum(jumps)).astype(np.int32)
    backward = (steps < 0) & ~jumps
    backward[0] = False  # a small step back into the previous part is an overlap, merged later
    disorder = int(np.count_nonzero(backward))
    order = np.lexsort((ts, segment)) if disorder else None
    return segment, order, int(np.count_nonzero(jumps)), disorder


def _constant(value: str, n: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value]))


def attach_source(table: pa.Table, uri: str, sha256: str) -> pa.Table:
    """Replace a part's ``locator`` column by the provenance columns (one item's part)."""
    n = table.num_rows
    loc = table.column("locator").cast(pa.string())
    table = table.drop_columns(["locator"])
    return (table.append_column("source_uri", _constant(uri, n))
            .append_column("source_locator", loc)
            .append_column("source_sha256", _constant(sha256, n)))  # fmt: skip


def _decorate(table: pa.Table, part: PartInfo, header: dict[str, str], seg: np.ndarray) -> pa.Table:
    if "_uri" in table.column_names:  # a batched part: each row names its own item
        loc = table.column("locator").cast(pa.string())
        uri = table.column("_uri").combine_chunks().dictionary_encode()
        sha = table.column("_sha256").combine_chunks().dictionary_encode()
        table = table.drop_columns(["_uri", "_sha256", "locator"])
        table = (table.append_column("source_uri", uri).append_column("source_locator", loc)
                 .append_column("source_sha256", sha))  # fmt: skip
    else:
        table = attach_source(table, part.uri, str(part.meta.get("sha256", "")))
    for i, (name, value) in enumerate(header.items()):
        table = table.add_column(i, name, _constant(value, table.num_rows))
    at = table.column_names.index("ts_ns") + 1
    return table.add_column(at, "segment", pa.array(seg, pa.int32()))


class _GroupedWriter:
    """Buffers tables so row groups reach a target size in bytes."""

    def __init__(self, path: Path, row_group_bytes: int) -> None:
        self.path = path
        self.row_group_bytes = row_group_bytes
        self.writer: pq.ParquetWriter | None = None
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.rows_per_group = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self.writer is None:
            per_row = max(1, table.nbytes // table.num_rows)
            self.rows_per_group = max(16, self.row_group_bytes // per_row)
            # Dictionary-encode only the repeated columns: per-row locators are unique.
            self.writer = pq.ParquetWriter(
                self.path, table.schema, compression="zstd", compression_level=1,
                use_dictionary=["stream_id", "device_id", "source_uri", "source_sha256"],
                write_statistics=["ts_ns", "segment"],
            )  # fmt: skip
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        if self.writer is not None and self.buffer:
            whole = pa.concat_tables(self.buffer, promote_options="none")
            self.writer.write_table(whole, row_group_size=self.rows_per_group)
        self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


def _batches(part: pa.Table, order: np.ndarray | None) -> Iterator[tuple[int, pa.Table]]:
    """(offset, slice) in sorted order: zero-copy slices of the memory-mapped part."""
    table = part if order is None else part.take(pa.array(order))
    for offset in range(0, table.num_rows, _BATCH_ROWS):
        yield offset, table.slice(offset, _BATCH_ROWS)


def _read_part(path: str) -> pa.Table:
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).read_all()


def finalize_stream(
    parts: list[PartInfo],
    out_path: Path,
    header: dict[str, str],
    *,
    clock_jump_ns: int,
    row_group_bytes: int,
) -> StreamStats:
    """Stitch ``parts`` into ``out_path`` (see the module docstring); return its stats."""
    stats = StreamStats()
    writer = _GroupedWriter(out_path, row_group_bytes)
    segment, prev_last, overlap = 0, None, False
    try:
        for part in sorted(parts, key=lambda p: p.seq):
            pf = _read_part(part.path)
            ts = pf.column("ts_ns").to_numpy()
            if ts.size == 0:
                continue
            seg, order, jumps, disorder = _order_part(ts, segment, prev_last, clock_jump_ns)
            stats.bump("clock_jumps", jumps)
            stats.bump("non_monotonic", disorder)
            s_ts = ts if order is None else ts[order]
            s_seg = seg if order is None else seg[order]
            dup = np.zeros(ts.size, bool)
            dup[1:] = (s_ts[1:] == s_ts[:-1]) & (s_seg[1:] == s_seg[:-1])
            if prev_last is not None and s_seg[0] == segment:
                if s_ts[0] == prev_last:
                    dup[0] = True
                elif s_ts[0] < prev_last:
                    overlap = True
                    stats.bump("overlapping_items", 1)
            if dup.any():
                _reject_duplicates(pf, order, np.flatnonzero(dup), s_ts, part, stats)
            for offset, table in _batches(pf, order):
                n = table.num_rows
                keep = ~dup[offset : offset + n]
                table = _decorate(table, part, header, s_seg[offset : offset + n])
                writer.write(table if keep.all() else table.filter(pa.array(keep)))
            last = int(s_ts[-1])
            same = prev_last is not None and int(s_seg[-1]) == segment
            prev_last = max(last, prev_last) if same and prev_last is not None else last
            segment = int(s_seg[-1])
            kept = s_ts[~dup]
            if kept.size:
                lo, hi = int(kept.min()), int(kept.max())
                stats.ts_min_ns = lo if stats.ts_min_ns is None else min(stats.ts_min_ns, lo)
                stats.ts_max_ns = hi if stats.ts_max_ns is None else max(stats.ts_max_ns, hi)
    finally:
        writer.close()
    if writer.writer is None:
        return stats
    if overlap:
        _merge_sorted(out_path, stats, writer.rows_per_group)
    stats.rows = pq.read_metadata(out_path).num_rows
    stats.segments = segment + 1
    return stats


def _reject_duplicates(
    pf: pa.Table,
    order: np.ndarray | None,
    rows: np.ndarray,
    s_ts: np.ndarray,
    part: PartInfo,
    stats: StreamStats,
) -> None:
    cols = ["locator", "_uri"] if "_uri" in pf.column_names else ["locator"]
    table = pf.select(cols)
    src_rows = pa.array(rows if order is None else order[rows])
    picked = table.column("locator").take(src_rows).to_pylist()
    uris = table.column("_uri").take(src_rows).to_pylist() if "_uri" in cols else None
    for k, (i, loc) in enumerate(zip(rows, picked, strict=True)):
        stats.rejects.append(Reject(
            uris[k] if uris else part.uri, loc, f"duplicate timestamp ts_ns={int(s_ts[i])} in "
            "its segment; the first row was kept", "DuplicateTimestamp",
        ))  # fmt: skip
    stats.bump("duplicates", len(rows))


def _merge_sorted(path: Path, stats: StreamStats, rows_per_group: int) -> None:
    """Overlapping parts: sort the whole stream by (segment, ts) and drop new duplicates.

    Overlapping files are rare; this path holds the stream in memory.
    """
    table = pq.read_table(path)
    order = np.lexsort((table.column("ts_ns").to_numpy(), table.column("segment").to_numpy()))
    table = table.take(pa.array(order))
    ts = table.column("ts_ns").to_numpy()
    seg = table.column("segment").to_numpy()
    dup = np.zeros(ts.size, bool)
    dup[1:] = (ts[1:] == ts[:-1]) & (seg[1:] == seg[:-1])
    if dup.any():
        idx = pa.array(np.flatnonzero(dup))
        uris = table.column("source_uri").take(idx).to_pylist()
        locs = table.column("source_locator").take(idx).to_pylist()
        for i, uri, loc in zip(np.flatnonzero(dup), uris, locs, strict=True):
            stats.rejects.append(Reject(
                uri, loc, f"duplicate timestamp ts_ns={int(ts[i])} in its "
                "segment (overlapping files); the first row was kept", "DuplicateTimestamp",
            ))  # fmt: skip
        stats.bump("duplicates", int(dup.sum()))
        table = table.filter(pa.array(~dup))
    tmp = path.with_suffix(".sorted.parquet")
    pq.write_table(table, tmp, compression="zstd", row_group_size=rows_per_group)
    os.replace(tmp, path)
