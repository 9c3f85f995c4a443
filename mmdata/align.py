"""The aligner: ingested streams + clock models → windows → Parquet records.

Per asset, reference time is processed in chunks of ``align.chunk_s`` (memory stays flat as
the input grows): each stream's rows for the chunk are read by row group, mapped to
reference time with the device's clock model, cut into the chunk's windows with
``searchsorted`` (no resampling: each modality keeps its own rate), and written as records
(:mod:`mmdata.records`) to ``RUN/records/asset_id=<a>/date=<YYYY-MM-DD>/part-NNNNN.parquet``.

Counts: windows planned in = records out + windows dropped (crossing a break, empty, or
missing a required modality), each dropped window quarantined with its reason.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import soundfile as sf

from mmdata import atomic
from mmdata.config import AlignConfig, PipelineConfig, config_hash
from mmdata.records import RECORD_SCHEMA, RECORD_SCHEMA_VERSION, record_id
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import ProgressFn, StageContext, StageOutcome, StageSpec, run_stage
from mmdata.timebase import NS_PER_MS, NS_PER_S, ClockModel
from mmdata.windows import plan_windows

_HEADER = ("stream_id", "device_id", "ts_ns", "segment", "source_uri", "source_locator",
           "source_sha256")  # fmt: skip
_DENSE = ("sensor", "audio")


@dataclass
class ClockInfo:
    """A device's clock model and its quality, as the aligner needs them.

    ``segments`` holds per-segment models of a device whose clock jumped (segments without
    a model of their own use the device model).
    """

    model: ClockModel
    uncertain: bool = False
    exceeds_tolerance: bool = False
    segments: dict[int, ClockModel] = field(default_factory=dict)

    def to_reference(self, ts: np.ndarray, segment: np.ndarray | None) -> np.ndarray:
        """Device times → reference times, each row by its segment's model."""
        if not ts.size:
            return ts
        if not self.segments or segment is None:
            return self.model.to_reference(ts)
        out = self.model.to_reference(ts)
        for seg, model in self.segments.items():
            mask = segment == seg
            if mask.any():
                out[mask] = model.to_reference(ts[mask])
        return out


@dataclass
class StreamReader:
    """Reads a stream's rows for a device-time range, by row group."""

    entry: dict[str, Any]
    path: Path
    clock: ClockInfo
    _bounds: list[tuple[int, int]] = field(default_factory=list)
    _cache: dict[int, pa.Table] = field(default_factory=dict)

    def __post_init__(self) -> None:
        meta = pq.read_metadata(self.path)
        ts_col = meta.schema.to_arrow_schema().get_field_index("ts_ns")
        for i in range(meta.num_row_groups):
            st = meta.row_group(i).column(ts_col).statistics
            self._bounds.append((int(st.min), int(st.max)))

    @property
    def modality(self) -> str:
        return str(self.entry["modality"])

    def columns(self) -> list[str] | None:
        """Columns the aligner needs: dense streams skip their per-row locators."""
        if self.modality not in _DENSE:
            return None
        names = pq.read_schema(self.path).names
        return [n for n in names if n not in ("stream_id", "device_id", "source_locator")]

    def read(self, dev_lo: int, dev_hi: int) -> pa.Table:
        """Rows with device time in ``[dev_lo, dev_hi)`` (row groups pruned by statistics)."""
        groups = [i for i, (a, b) in enumerate(self._bounds) if b >= dev_lo and a < dev_hi]
        cols = self.columns()
        if not groups:
            empty = pq.read_schema(self.path).empty_table()
            return empty.select(cols) if cols else empty
        # Consecutive chunks overlap by a margin: keep the last groups instead of re-reading.
        missing = [g for g in groups if g not in self._cache]
        if missing:
            pf = pq.ParquetFile(self.path)
            fresh = {g: pf.read_row_group(g, columns=cols) for g in missing}
        else:
            fresh = {}
        self._cache = {g: self._cache.get(g) or fresh[g] for g in groups}
        table = pa.concat_tables([self._cache[g] for g in groups])
        ts = table.column("ts_ns")
        mask = pc.and_(pc.greater_equal(ts, dev_lo), pc.less(ts, dev_hi))
        return table.filter(mask)


@dataclass
class Chunk:
    """One stream's data for one chunk, in reference time, sorted."""

    reader: StreamReader
    ref_ts: np.ndarray
    table: pa.Table
    uri_codes: np.ndarray | None = None
    uris: list[str] = field(default_factory=list)
    shas: dict[int, str] = field(default_factory=dict)
    dev_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    locators: pa.ChunkedArray | None = None


@dataclass
class AssetResult:
    """What aligning one asset produced."""

    asset_id: str
    planned: int = 0
    written: int = 0
    dropped: list[tuple[int, int, str]] = field(default_factory=list)  # start, end, reason
    files: list[str] = field(default_factory=list)


def _sorted_chunk(reader: StreamReader, table: pa.Table, ref_ts: np.ndarray) -> Chunk:
    if ref_ts.size > 1 and np.any(np.diff(ref_ts) < 0):
        order = np.argsort(ref_ts, kind="stable")
        table, ref_ts = table.take(pa.array(order)), ref_ts[order]
    chunk = Chunk(reader, ref_ts, table)
    if table.num_rows:
        uri = table.column("source_uri").unify_dictionaries()
        chunk.uri_codes = np.concatenate([c.indices.to_numpy() for c in uri.chunks])
        chunk.uris = uri.chunks[0].dictionary.to_pylist()
        sha = table.column("source_sha256").unify_dictionaries()
        sha_codes = np.concatenate([c.indices.to_numpy() for c in sha.chunks])
        sha_values = sha.chunks[0].dictionary.to_pylist()
        _, where = np.unique(chunk.uri_codes, return_index=True)
        first = {int(chunk.uri_codes[i]): int(i) for i in where}
        chunk.shas = {code: sha_values[int(sha_codes[i])] for code, i in first.items()}
        chunk.dev_ts = table.column("ts_ns").to_numpy()
        if "source_locator" in table.column_names:
            chunk.locators = table.column("source_locator")
    return chunk


def _audio_frames(table: pa.Table) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Per-frame device times and samples (frames × channels) of audio chunk rows."""
    if table.num_rows == 0:
        return np.zeros(0, np.int64), np.zeros((0, 1), np.float32), 0, 1
    rate = int(table.column("sample_rate")[0].as_py())
    ch = int(table.column("channels")[0].as_py())
    n = table.column("n_frames").to_numpy().astype(np.int64)
    flat = pc.list_flatten(table.column("samples").combine_chunks()).to_numpy()
    samples = flat.astype(np.float32, copy=False).reshape(-1, ch)
    row_ts = table.column("ts_ns").to_numpy()
    starts = np.repeat(row_ts, n)
    within = np.arange(n.sum(), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    return starts + (within * NS_PER_S) // rate, samples, rate, ch


def _provenance(chunk: Chunk, i0: int, i1: int, sid: str) -> list[dict[str, Any]]:
    """Provenance of rows [i0, i1): one entry per item, with row locators when the stream
    keeps them in memory (sparse streams) or the device-time range (dense streams)."""
    if i1 <= i0 or chunk.uri_codes is None:
        return []
    codes = chunk.uri_codes[i0:i1]
    cuts = np.flatnonzero(np.diff(codes)) + 1
    starts = (np.concatenate([[0], cuts]) + i0).tolist()
    ends = (np.concatenate([cuts, [i1 - i0]]) + i0 - 1).tolist()
    out = []
    for a, b in zip(starts, ends, strict=True):
        if chunk.locators is not None:
            la, lb = chunk.locators[a].as_py(), chunk.locators[b].as_py()
            loc = la if a == b else f"{la} … {lb}"
        else:
            lo, hi = int(chunk.dev_ts[a : b + 1].min()), int(chunk.dev_ts[a : b + 1].max())
            loc = f"device ts_ns {lo}…{hi}"
        code = int(chunk.uri_codes[a])
        out.append({"stream_id": sid, "uri": chunk.uris[code], "locator": loc,
                    "sha256": chunk.shas.get(code)})  # fmt: skip
    return out


def _extent(readers: list[StreamReader]) -> tuple[int, int]:
    use = [r for r in readers if r.modality in _DENSE] or readers
    lo = min(m.to_reference(int(r.entry["ts_min_ns"])) for r in use
             for m in [r.clock.model, *r.clock.segments.values()])  # fmt: skip
    hi = max(m.to_reference(int(r.entry["ts_max_ns"])) for r in use
             for m in [r.clock.model, *r.clock.segments.values()])  # fmt: skip
    return int(lo), int(hi) + 1


def asset_layout(readers: list[StreamReader], max_gap_ns: int) -> list[tuple[int, int]]:
    """Breaks of an asset's dense streams, in reference time, read row group by row group.

    Only time columns are read and one row of state is carried between groups, so memory
    does not grow with the length of the input.
    """
    breaks: set[tuple[int, int]] = set()
    for r in readers:
        if r.modality not in _DENSE:
            continue
        pf = pq.ParquetFile(r.path)
        cols = ["ts_ns", "segment"] + (["n_frames", "sample_rate"] if r.modality == "audio" else [])
        prev_end: int | None = None
        prev_seg: int | None = None
        for g in range(pf.metadata.num_row_groups):
            t = pf.read_row_group(g, columns=cols)
            seg = t.column("segment").to_numpy()
            start = r.clock.to_reference(t.column("ts_ns").to_numpy(), seg)
            if r.modality == "audio":  # a row is a chunk: it ends where its last frame ends
                dur = (t.column("n_frames").to_numpy().astype(np.int64) * NS_PER_S
                       // t.column("sample_rate").to_numpy().astype(np.int64))  # fmt: skip
                end = start + dur
            else:
                end = start
            if prev_end is not None:
                start = np.concatenate([[prev_end], start])
                end = np.concatenate([[prev_end], end])
                seg = np.concatenate([[prev_seg], seg])
            gap = start[1:] - end[:-1] > max_gap_ns
            for i in np.flatnonzero(gap | (seg[1:] != seg[:-1])):
                a, b = int(end[i]), int(start[i + 1])
                breaks.add((min(a, b), max(a, b)))
            prev_end, prev_seg = int(end[-1]), int(seg[-1])
    return sorted(breaks)


def partitions(extent: tuple[int, int], cfg: AlignConfig) -> list[tuple[int, int]]:
    """The asset × time partitions of an asset: ``partition_s`` each, on the epoch grid."""
    lo, hi = extent
    step = cfg.partition_s * NS_PER_S
    first = (lo // step) * step
    return [(a, a + step) for a in range(first, hi, step)]


class AssetAligner:
    """Aligns one asset's streams over a range of reference time, chunk by chunk.

    ``breaks`` are the asset's breaks (gaps and clock jumps in dense streams) over its whole
    extent, found beforehand by :func:`asset_layout`, so every partition of the asset
    numbers spans and drops break-crossing windows the same way.
    """

    def __init__(self, asset_id: str, readers: list[StreamReader], cfg: AlignConfig,
                 shaping: str, anchors: np.ndarray | None) -> None:  # fmt: skip
        self.asset_id = asset_id
        self.readers = readers
        self.cfg = cfg
        self.shaping = shaping
        self.anchors = anchors
        self.breaks: list[tuple[int, int]] = []

    def extent(self) -> tuple[int, int]:
        """Reference-time extent of the asset's data (dense streams if any, else all)."""
        return _extent(self.readers)

    def run(self, writer: RecordWriter, part: tuple[int, int] | None = None,
            breaks: list[tuple[int, int]] | None = None) -> AssetResult:  # fmt: skip
        """Align the windows starting in ``part`` (default: the whole asset) into ``writer``."""
        res = AssetResult(self.asset_id)
        if not self.readers:
            return res
        lo, hi = self.extent()
        self.breaks = sorted(breaks) if breaks is not None else asset_layout(
            self.readers, self.cfg.max_gap_ms * NS_PER_MS)  # fmt: skip
        step = self.cfg.chunk_s * NS_PER_S
        p0, p1 = part if part is not None else ((lo // step) * step, hi)
        w = self.cfg.window
        length = (w.length_ms if w.mode != "event" else w.pre_ms + w.post_ms) * NS_PER_MS
        c0 = p0
        while c0 < min(p1, hi):
            c1 = min(c0 + step, p1)
            self._chunk(c0, c1, length, lo, hi, writer, res)
            c0 = c1
        return res

    def _chunk(self, c0: int, c1: int, length: int, lo: int, hi: int,
               writer: RecordWriter, res: AssetResult) -> None:  # fmt: skip
        w = self.cfg.window
        pad = max(length, (w.pre_ms + w.post_ms) * NS_PER_MS) + self.cfg.max_gap_ms * NS_PER_MS
        chunks = self._read(c0 - pad, c1 + pad)
        anchors = None
        if self.anchors is not None:
            anchors = self.anchors[(self.anchors >= c0) & (self.anchors < c1)]
        plan = plan_windows((max(lo, c0), min(hi, c1)), w, self.breaks, anchors)
        if w.mode != "event":  # windows belong to the chunk holding their start
            keep = (plan.starts >= c0) & (plan.starts < c1)
            plan.starts, plan.ends, plan.span = plan.starts[keep], plan.ends[keep], plan.span[keep]
        dropped = self._dropped_at_breaks(c0, c1, lo, hi)
        for s, e in dropped:
            res.dropped.append((s, e, "window crosses a break (gap or clock jump)"))
        res.planned += plan.starts.size + len(dropped)
        builder = _RecordBuilder(self, chunks)
        for k in range(plan.starts.size):
            rec, reason = builder.build(int(plan.starts[k]), int(plan.ends[k]), int(plan.span[k]))
            if rec is None:
                res.dropped.append((int(plan.starts[k]), int(plan.ends[k]), reason))
            else:
                writer.add(rec)
                res.written += 1

    def _dropped_at_breaks(self, c0: int, c1: int, lo: int, hi: int) -> list[tuple[int, int]]:
        """Grid windows starting in [c0, c1) that would cross a break."""
        w = self.cfg.window
        if w.mode == "event" or not self.breaks:
            return []
        full = plan_windows((max(lo, c0), min(hi, c1)), w, [])
        out = []
        for s, e in zip(full.starts.tolist(), full.ends.tolist(), strict=True):
            if c0 <= s < c1 and any(s < max(b, a + 1) and e > a for a, b in self.breaks):
                out.append((s, e))
        return out

    def _read(self, ref_lo: int, ref_hi: int) -> list[Chunk]:
        out: list[Chunk] = []
        for r in self.readers:
            c = r.clock
            models = [c.model, *c.segments.values()]
            lo = min(m.to_device(ref_lo) for m in models) - 1
            hi = max(m.to_device(ref_hi) for m in models) + 1
            table = r.read(lo, hi)
            seg = table.column("segment").to_numpy() if table.num_rows else None
            if r.modality == "audio":
                dev, samples, rate, ch = _audio_frames(table)
                rows = table.column("ts_ns").to_numpy()
                base = _sorted_chunk(r, table, c.to_reference(rows, seg))
                n = table.column("n_frames").to_numpy() if table.num_rows else np.zeros(0, int)
                frame_seg = np.repeat(seg, n) if seg is not None else None
                out.append(_AudioChunk(
                    r, c.to_reference(dev, frame_seg), base.table, base.uri_codes,
                    base.uris, base.shas, base.dev_ts, base.locators, samples=samples,
                    rate=rate, channels=ch, row_ref=base.ref_ts,
                ))  # fmt: skip
            else:
                ts = table.column("ts_ns").to_numpy()
                out.append(_sorted_chunk(r, table, c.to_reference(ts, seg)))
        return out


@dataclass
class _AudioChunk(Chunk):
    samples: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.float32))
    rate: int = 0
    channels: int = 1
    row_ref: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


class _RecordBuilder:
    """Builds the record of one window from a chunk's streams."""

    def __init__(self, aligner: AssetAligner, chunks: list[Chunk]) -> None:
        self.a = aligner
        self.cfg = aligner.cfg
        self.chunks = chunks

    def build(self, start: int, end: int, span: int) -> tuple[dict[str, Any] | None, str]:
        length = end - start
        rec: dict[str, Any] = {
            "schema_version": RECORD_SCHEMA_VERSION,
            "record_id": record_id(self.a.asset_id, start, end, self.a.shaping),
            "asset_id": self.a.asset_id,
            "date": dt.datetime.fromtimestamp(start // NS_PER_S, dt.UTC).date().isoformat(),
            "window_start_ns": start, "window_end_ns": end, "span": span,
            "sensors": [], "audio": None, "audio_info": None, "image": None, "frames": [],
            "text": [], "labels": [], "provenance": [],
        }  # fmt: skip
        cov: dict[str, list[float]] = {"sensors": [], "audio": [], "image": [], "text": []}
        flags = {"gap": False, "stale": False, "clock_uncertain": False,
                 "exceeds_tolerance": False, "missing_modality": False}  # fmt: skip
        for ch in self.chunks:
            r = ch.reader
            sid = str(r.entry["stream_id"])
            used = False
            if r.modality == "sensor":
                used = self._sensor(ch, sid, start, end, rec, cov)
            elif isinstance(ch, _AudioChunk):
                used = self._audio(ch, sid, start, end, rec, cov)
            elif r.modality in ("image", "video"):
                used = self._frames(ch, sid, start, end, rec, cov, flags)
            elif r.modality == "text":
                used = self._text(ch, sid, start, end, rec, cov)
            if used:
                flags["clock_uncertain"] |= r.clock.uncertain
                flags["exceeds_tolerance"] |= r.clock.exceeds_tolerance
        coverage = {k: (float(np.mean(v)) if v else 0.0) for k, v in cov.items()}
        present = {k for k, v in cov.items() if v}
        flags["gap"] = any(0.0 < c < 0.98 for k, c in coverage.items() if k in ("sensors", "audio"))
        flags["missing_modality"] = any(coverage[k] == 0.0 for k in present)
        rec["coverage"] = coverage
        rec["flags"] = flags
        if not self.cfg.keep_empty and all(c == 0.0 for c in coverage.values()):
            return None, "window holds no data"
        for need in self.cfg.require:
            if coverage[need] == 0.0:
                return None, f"window has no {need} (align.require)"
        _ = length
        return rec, ""

    def _slice(self, ts: np.ndarray, start: int, end: int) -> tuple[int, int]:
        return int(np.searchsorted(ts, start, "left")), int(np.searchsorted(ts, end, "left"))

    def _sensor(self, ch: Chunk, sid: str, start: int, end: int, rec: dict[str, Any],
                cov: dict[str, list[float]]) -> bool:  # fmt: skip
        i0, i1 = self._slice(ch.ref_ts, start, end)
        names = [c for c in ch.reader.entry["meta"].get("channels") or
                 [n for n in ch.table.column_names if n not in _HEADER]]  # fmt: skip
        rate = float(ch.reader.entry["meta"].get("sample_rate_hz") or 0.0)
        values = [ch.table.column(n).slice(i0, i1 - i0).to_numpy().astype(np.float32)
                  for n in names]  # fmt: skip
        rec["sensors"].append({
            "stream_id": sid, "device_id": ch.reader.entry["device_id"], "sample_rate": rate,
            "channels": names, "first_ts_ns": int(ch.ref_ts[i0]) if i1 > i0 else None,
            "n_samples": i1 - i0, "values": values,
        })  # fmt: skip
        expected = rate * (end - start) / NS_PER_S if rate else max(1, i1 - i0)
        cov["sensors"].append(min(1.0, (i1 - i0) / expected) if expected else 0.0)
        rec["provenance"].extend(_provenance(ch, i0, i1, sid))
        return i1 > i0

    def _audio(self, ch: _AudioChunk, sid: str, start: int, end: int, rec: dict[str, Any],
               cov: dict[str, list[float]]) -> bool:  # fmt: skip
        i0, i1 = self._slice(ch.ref_ts, start, end)
        expected = ch.rate * (end - start) / NS_PER_S if ch.rate else 1
        cov["audio"].append(min(1.0, (i1 - i0) / expected) if i1 > i0 else 0.0)
        if i1 <= i0 or rec["audio"] is not None:
            return i1 > i0
        buf = io.BytesIO()
        sf.write(buf, ch.samples[i0:i1], ch.rate, format="WAV", subtype=self.cfg.audio_subtype)
        rec["audio"] = {"bytes": buf.getvalue(), "path": None}
        rec["audio_info"] = {"stream_id": sid, "device_id": ch.reader.entry["device_id"],
                             "sample_rate": ch.rate, "channels": ch.channels,
                             "n_frames": i1 - i0, "first_ts_ns": int(ch.ref_ts[i0])}  # fmt: skip
        r0 = max(0, int(np.searchsorted(ch.row_ref, start, "right")) - 1)
        r1 = int(np.searchsorted(ch.row_ref, end, "left"))
        rec["provenance"].extend(_provenance(ch, r0, r1, sid))
        return True

    def _match(self, ts: np.ndarray, start: int, end: int, modality: str) -> tuple[int, int, int]:
        """Indices [i0, i1) of items in the window, the as-of item, and its staleness."""
        sp = self.cfg.sparse.get(modality)  # type: ignore[call-overload]
        direction = sp.direction if sp else ("backward" if modality == "image" else "nearest")
        tol = (sp.tolerance_ms if sp else (600 if modality == "image" else 30_000)) * NS_PER_MS
        i0, i1 = self._slice(ts, start, end)
        anchor = {"backward": end - 1, "forward": start, "nearest": (start + end) // 2}[direction]
        if direction == "backward":
            j = int(np.searchsorted(ts, anchor, "right")) - 1
        elif direction == "forward":
            j = int(np.searchsorted(ts, anchor, "left"))
        else:
            j = int(np.argmin(np.abs(ts - anchor))) if ts.size else -1
        if j < 0 or j >= ts.size or abs(int(ts[j]) - anchor) > tol + (end - start):
            return i0, i1, -1
        dist = 0 if start <= ts[j] < end else min(abs(int(ts[j]) - start), abs(int(ts[j]) - end))
        if dist > tol:
            return i0, i1, -1
        return i0, i1, j

    def _frames(self, ch: Chunk, sid: str, start: int, end: int, rec: dict[str, Any],
                cov: dict[str, list[float]], flags: dict[str, bool]) -> bool:  # fmt: skip
        i0, i1, j = self._match(ch.ref_ts, start, end, "image")
        idx = sorted(set(range(i0, i1)) | ({j} if j >= 0 else set()))
        if not idx:
            cov["image"].append(0.0)
            return False
        t = ch.table
        uri = t.column("uri") if "uri" in t.column_names else None
        dev = t.column("ts_ns")
        for i in idx:
            ts = int(ch.ref_ts[i])
            stale = 0 if start <= ts < end else min(abs(ts - start), abs(ts - end))
            path = uri[i].as_py() if uri is not None else None
            data = self._image_bytes(path) if self.cfg.inline_images and path else None
            rec["frames"].append({
                "stream_id": sid, "ts_ns": ts, "device_ts_ns": int(dev[i].as_py()),
                "staleness_ns": stale, "path": path, "bytes": data,
                "width": _opt_int(t, "width", i), "height": _opt_int(t, "height", i),
            })  # fmt: skip
        primary = j if j >= 0 else idx[-1]
        pf = next(f for f in rec["frames"] if f["ts_ns"] == int(ch.ref_ts[primary]))
        if rec["image"] is None and ch.reader.modality == "image":
            rec["image"] = {"bytes": pf["bytes"], "path": pf["path"]}
        flags["stale"] |= pf["staleness_ns"] > 0
        cov["image"].append(1.0)
        for i in idx:
            rec["provenance"].extend(_provenance(ch, i, i + 1, sid))
        return True

    @staticmethod
    def _image_bytes(path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    def _text(self, ch: Chunk, sid: str, start: int, end: int, rec: dict[str, Any],
              cov: dict[str, list[float]]) -> bool:  # fmt: skip
        sp = self.cfg.sparse.get("text")
        tol = (sp.tolerance_ms if sp else 30_000) * NS_PER_MS
        direction = sp.direction if sp else "nearest"
        lo = start - (tol if direction in ("backward", "nearest") else 0)
        hi = end + (tol if direction in ("forward", "nearest") else 0)
        i0, i1 = self._slice(ch.ref_ts, lo, hi)
        t = ch.table
        for i in range(i0, i1):
            ts = int(ch.ref_ts[i])
            stale = 0 if start <= ts < end else min(abs(ts - start), abs(ts - end))
            rec["text"].append({
                "stream_id": sid, "ts_ns": ts, "staleness_ns": stale,
                "note_id": t.column("note_id")[i].as_py(), "text": t.column("text")[i].as_py(),
                "lang": t.column("lang")[i].as_py(), "kind": t.column("kind")[i].as_py(),
            })  # fmt: skip
            rec["provenance"].extend(_provenance(ch, i, i + 1, sid))
        cov["text"].append(1.0 if i1 > i0 else 0.0)
        return i1 > i0


def _opt_int(t: pa.Table, name: str, i: int) -> int | None:
    return int(t.column(name)[i].as_py()) if name in t.column_names else None


class RecordWriter:
    """Writes records to ``asset_id=<a>/date=<d>/part-NNNNN.parquet``, row groups by count."""

    def __init__(self, root: Path, records_per_group: int, records_per_file: int = 4096,
                 prefix: str = "part-00000") -> None:  # fmt: skip
        self.root = root
        self.prefix = prefix
        self.per_group = records_per_group
        self.per_file = records_per_file
        self.buffer: list[dict[str, Any]] = []
        self.writer: pq.ParquetWriter | None = None
        self.key: tuple[str, str] | None = None
        self.in_file = 0
        self.parts: dict[tuple[str, str], int] = {}
        self.files: list[str] = []

    def add(self, rec: dict[str, Any]) -> None:
        key = (rec["asset_id"], rec["date"])
        if key != self.key or self.in_file >= self.per_file:
            self._roll(key)
        self.buffer.append(rec)
        self.in_file += 1
        if len(self.buffer) >= self.per_group:
            self._flush()

    def _roll(self, key: tuple[str, str]) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
        n = self.parts.get(key, 0)
        self.parts[key] = n + 1
        name = self.prefix if n == 0 else f"{self.prefix}-{n}"
        rel = f"asset_id={key[0]}/date={key[1]}/{name}.parquet"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(path, RECORD_SCHEMA, compression="zstd",
                                       write_statistics=["window_start_ns", "window_end_ns",
                                                         "asset_id", "record_id"])  # fmt: skip
        self.files.append(rel)
        self.key, self.in_file = key, 0

    def _flush(self) -> None:
        if self.buffer and self.writer is not None:
            self.writer.write_table(records_table(self.buffer))
        self.buffer = []

    def close(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


_NO_SENSORS = pa.schema([f for f in RECORD_SCHEMA if f.name != "sensors"])
_SENSORS_AT = RECORD_SCHEMA.get_field_index("sensors")


def records_table(records: list[dict[str, Any]]) -> pa.Table:
    """Records (``sensors[*].values`` as numpy arrays) → an Arrow table of RECORD_SCHEMA.

    Sensor values are assembled from numpy buffers with offsets, never as Python floats.
    """
    rest = pa.Table.from_pylist(
        [{k: v for k, v in r.items() if k != "sensors"} for r in records], schema=_NO_SENSORS
    )
    entries = [e for r in records for e in r["sensors"]]
    outer = np.cumsum([0] + [len(r["sensors"]) for r in records], dtype=np.int32)
    middle = np.cumsum([0] + [len(e["values"]) for e in entries], dtype=np.int32)
    arrays = [v for e in entries for v in e["values"]]
    inner = np.cumsum([0] + [a.size for a in arrays], dtype=np.int64)  # < 2**31 per group
    flat = np.concatenate(arrays).astype(np.float32) if arrays else np.zeros(0, np.float32)
    values = pa.ListArray.from_arrays(
        pa.array(middle), pa.ListArray.from_arrays(pa.array(inner.astype(np.int32)), pa.array(flat))
    )
    field_types = {f.name: f.type for f in RECORD_SCHEMA.field("sensors").type.value_type}
    cols = {
        name: pa.array([e[name] for e in entries], field_types[name])
        for name in ("stream_id", "device_id", "sample_rate", "channels", "first_ts_ns",
                     "n_samples")
    }  # fmt: skip
    cols["values"] = values
    struct = pa.StructArray.from_arrays(list(cols.values()), fields=list(
        RECORD_SCHEMA.field("sensors").type.value_type))  # fmt: skip
    sensors = pa.ListArray.from_arrays(pa.array(outer), struct)
    return rest.add_column(
        _SENSORS_AT, RECORD_SCHEMA.field("sensors"), sensors
    ).replace_schema_metadata(RECORD_SCHEMA.metadata)


def load_readers(ingest_dir: Path, clocks: dict[str, ClockInfo]) -> dict[str, list[StreamReader]]:
    """Stream readers by asset, from the ingest index (devices without a model: identity)."""
    index = json.loads((ingest_dir / "streams.json").read_text(encoding="utf-8"))["streams"]
    out: dict[str, list[StreamReader]] = {}
    for e in sorted(index, key=lambda x: x["stream_id"]):
        if not e["rows"]:
            continue
        clock = clocks.get(e["device_id"]) or ClockInfo(ClockModel(), uncertain=True)
        out.setdefault(e["asset_id"], []).append(StreamReader(e, ingest_dir / e["file"], clock))
    return out


def _job_clocks(job: dict[str, Any]) -> dict[str, ClockInfo]:
    return {
        d: ClockInfo(ClockModel(**c["model"]), c["uncertain"], c["exceeds"],
                     {int(k): ClockModel(**v) for k, v in c.get("segments", {}).items()})
        for d, c in job["clocks"].items()
    }  # fmt: skip


def align_asset(job: dict[str, Any]) -> AssetResult:
    """Align one asset × time partition (a process-pool job; plain data in and out).

    ``job["part"]`` is ``[start_ns, end_ns)`` and ``job["part_index"]`` names its files;
    without them the whole asset is one partition.
    """
    cfg = AlignConfig.model_validate(job["align"])
    readers = load_readers(Path(job["ingest_dir"]), _job_clocks(job)).get(job["asset_id"], [])
    anchors = _anchors(readers, cfg)
    index = int(job.get("part_index", 0))
    writer = RecordWriter(Path(job["out_dir"]), cfg.records_per_group, prefix=f"part-{index:05d}")
    part = tuple(job["part"]) if job.get("part") else None
    breaks = [tuple(b) for b in job["breaks"]] if "breaks" in job else None
    try:
        aligner = AssetAligner(job["asset_id"], readers, cfg, job["shaping"], anchors)
        res = aligner.run(writer, part, breaks)
    finally:
        writer.close()
    res.files = writer.files
    return res


def plan_jobs(base: dict[str, Any], ingest_dir: Path, clocks: dict[str, ClockInfo],
              cfg: AlignConfig) -> list[dict[str, Any]]:  # fmt: skip
    """One job per asset × time partition, with the asset's breaks found once up front."""
    jobs = []
    for asset, readers in sorted(load_readers(ingest_dir, clocks).items()):
        breaks = asset_layout(readers, cfg.max_gap_ms * NS_PER_MS)
        for i, part in enumerate(partitions(_extent(readers), cfg)):
            jobs.append({**base, "asset_id": asset, "part": list(part), "part_index": i,
                         "breaks": [list(b) for b in breaks]})  # fmt: skip
    return jobs


def _anchors(readers: list[StreamReader], cfg: AlignConfig) -> np.ndarray | None:
    on = cfg.window.on if cfg.window.mode == "event" else None
    if on is None:
        return None
    modality = {"notes": "text", "frames": "image", "labels": "labels"}[on]
    out = []
    for r in readers:
        if r.modality == modality:
            t = pq.read_table(r.path, columns=["ts_ns", "segment"])
            out.append(r.clock.to_reference(t.column(0).to_numpy(), t.column(1).to_numpy()))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def run_assets(jobs: list[dict[str, Any]], workers: int,
               on_done: Callable[[AssetResult], None]) -> list[AssetResult]:  # fmt: skip
    """Align assets, in a spawn process pool when ``workers > 1``."""
    if workers <= 1 or len(jobs) <= 1:
        results = []
        for j in jobs:
            results.append(align_asset(j))
            on_done(results[-1])
        return results
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(align_asset, j) for j in jobs]
        results = []
        for f in futures:
            results.append(f.result())
            on_done(results[-1])
        return results


def _merge(results: list[AssetResult]) -> list[AssetResult]:
    """Partition results → one per asset (in partition order)."""
    by_asset: dict[str, AssetResult] = {}
    for r in results:
        m = by_asset.setdefault(r.asset_id, AssetResult(r.asset_id))
        m.planned += r.planned
        m.written += r.written
        m.dropped.extend(r.dropped)
        m.files.extend(r.files)
    return [by_asset[a] for a in sorted(by_asset)]


def shaping_hash(config: PipelineConfig) -> str:
    """Hash of the config that shapes records (window and join rules)."""
    return config_hash(config.align.model_dump(
        mode="json", exclude={"workers", "chunk_s", "partition_s"}))  # fmt: skip


def write_index(out_dir: Path, results: list[AssetResult]) -> None:
    """``records/_index.json``: files per asset and counts."""
    atomic.write_json(out_dir / "_index.json", {
        "schema_version": RECORD_SCHEMA_VERSION,
        "assets": {r.asset_id: {"records": r.written, "dropped": len(r.dropped),
                                "files": r.files} for r in results},
    })  # fmt: skip


def read_clocks(sync_dir: Path) -> dict[str, ClockInfo]:
    """Clock models from ``RUN/sync/clock_models.json`` (empty when there is none)."""
    path = sync_dir / "clock_models.json"
    if not path.exists():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for dev, m in doc["devices"].items():
        model = ClockModel(offset_ns=int(m["offset_ns"]), drift_ppm=float(m["drift_ppm"]),
                           origin_ns=int(m["origin_ns"]))  # fmt: skip
        info = ClockInfo(model, bool(m.get("clock_uncertain")), bool(m.get("exceeds_tolerance")))
        for seg in m.get("segment_models") or []:
            if "offset_ns" in seg:
                info.segments[int(seg["segment"])] = ClockModel(
                    offset_ns=int(seg["offset_ns"]), drift_ppm=float(seg["drift_ppm"]),
                    origin_ns=int(seg["origin_ns"]))  # fmt: skip
            info.uncertain |= bool(seg.get("clock_uncertain"))
            info.exceeds_tolerance |= bool(seg.get("exceeds_tolerance"))
        out[dev] = info
    return out


def run_align(
    run: RunDir, config: PipelineConfig, *, progress: ProgressFn | None = None,
    force: bool = False,
) -> StageOutcome:  # fmt: skip
    """The ``records`` stage: align every asset of the ingested run into ``RUN/records``."""
    ingest_dir, sync_dir = run.stage_path("ingest"), run.stage_path("sync")
    clocks = read_clocks(sync_dir)
    upstream = [run.manifest.stages[s].fingerprint for s in ("ingest", "sync")
                if s in run.manifest.stages]  # fmt: skip
    spec = StageSpec(name="records", version="1",
                     config=config.align.model_dump(mode="json"),
                     inputs_fingerprint=config_hash({"upstream": upstream}))  # fmt: skip

    def stage(ctx: StageContext) -> StageCounts:
        base = {
            "align": config.align.model_dump(mode="json"),
            "clocks": {d: {"model": c.model.model_dump(), "uncertain": c.uncertain,
                           "exceeds": c.exceeds_tolerance,
                           "segments": {str(k): v.model_dump() for k, v in c.segments.items()}}
                       for d, c in clocks.items()},
            "ingest_dir": str(ingest_dir), "out_dir": str(ctx.out_dir),
            "shaping": shaping_hash(config),
        }  # fmt: skip
        jobs = plan_jobs(base, ingest_dir, clocks, config.align)
        done = 0

        def tick(r: AssetResult) -> None:
            nonlocal done
            done += 1
            ctx.report(f"align: {r.asset_id}", done, len(jobs))

        results = _merge(run_assets(jobs, config.align.workers, tick))
        for r in results:
            for start, end, reason in r.dropped:
                ctx.quarantine.record(f"asset:{r.asset_id}", "WindowDropped", reason,
                                      locator=f"window {start}-{end}")  # fmt: skip
        write_index(ctx.out_dir, results)
        planned = sum(r.planned for r in results)
        written = sum(r.written for r in results)
        return StageCounts(in_=planned, out=written, quarantined=planned - written)

    return run_stage(run, spec, stage, progress=progress, force=force)
