"""Sync events from ingested streams: onsets in sensor and audio streams, flashes in frames.

Streams are read a row group at a time (only the columns needed) and cut into contiguous
runs of samples (a new run at a segment change, a gap, or a change of rate); each run is
scanned in blocks of about two million samples, each block carrying the tail of the one
before as context, so an onset on a block boundary is found once. Onsets are then chosen
as sync events over the whole stream (:func:`mmdata.sync.events.select_sync`).

* ``sensor`` streams: ``ts_ns`` per sample plus every floating-point column as a channel;
* ``audio`` streams: one row per chunk (``ts_ns`` of its first sample, ``sample_rate``,
  ``channels``, ``n_frames``, interleaved ``samples``);
* ``image`` streams: ``ts_ns`` and the frame's ``uri`` (or inline ``bytes``): each frame is
  decoded at 1/8 size (JPEG draft mode) for its mean brightness;
* ``video`` streams (and image rows whose ``uri`` is a video file: ``.mp4``, ``.mkv``,
  ``.mov``, ``.avi``, ``.m4v``, ``.webm``): each file is decoded once (PyAV, 1/8 size grey)
  and row ``frame_index`` gets the brightness of the file's frame of that index in
  presentation order (without ``frame_index``: the rows in time order, when they are
  exactly the file's frames).

An onset's time is the middle of the sample period it begins in (it lies in
``(t[i-1], t[i]]``), its resolution one sample period; a flash's time is the middle of
``(last dark frame, first bright frame]``, its resolution that interval.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from mmdata.config import FlashConfig, OnsetConfig
from mmdata.sync.events import detect_flashes, detect_onsets, select_sync

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

BLOCK_SAMPLES = 1 << 21
_BATCH_ROWS = 1 << 16
_SNIPPET_PRE_MS = 20.0
_SNIPPET_POST_MS = 80.0
_TAIL_MS = _SNIPPET_POST_MS + 20.0  # a block's last stretch is left to the next one
_FRAME_BATCH = 1024
_VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".m4v", ".webm")
_NOT_CHANNELS = {"ts_ns", "segment"}


@dataclass(frozen=True)
class Snippet:
    """Raw samples around an onset, kept for cross-correlation refinement."""

    start_ns: int  # device time of samples[0]
    rate_hz: float
    samples: npt.NDArray[np.float32]
    modality: str


@dataclass
class EventSet:
    """The sync events of one device clock segment (device time), sorted by time."""

    t_ns: IntArray
    res_ns: IntArray
    kind: list[str]
    stream: list[str]
    snippets: list[Snippet | None]

    def __len__(self) -> int:
        return int(self.t_ns.size)

    @classmethod
    def empty(cls) -> EventSet:
        """No events."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), [], [], [])

    def merged(self, other: EventSet) -> EventSet:
        """Both sets, sorted by time."""
        t = np.concatenate([self.t_ns, other.t_ns])
        order = np.argsort(t, kind="stable")
        res = np.concatenate([self.res_ns, other.res_ns])
        kind = self.kind + other.kind
        stream = self.stream + other.stream
        snippets = self.snippets + other.snippets
        return EventSet(t[order], res[order], [kind[i] for i in order],
                        [stream[i] for i in order], [snippets[i] for i in order])  # fmt: skip


@dataclass
class StreamScan:
    """What scanning one stream found: events per segment and a summary for the audit."""

    events: dict[int, EventSet] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Piece:
    segment: int
    ts: IntArray
    x: npt.NDArray[np.float32]
    rate: float
    joins: bool  # continues the previous piece without a gap


@dataclass
class _Raw:
    segment: int
    ts: int
    period: int
    energy: float
    snippet: Snippet


def _float_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if pa.types.is_floating(f.type) and f.name not in _NOT_CHANNELS]


def _sensor_pieces(path: Path) -> Iterator[_Piece]:
    pf = pq.ParquetFile(path)
    chans = _float_columns(pf.schema_arrow)
    if not chans:
        return
    cols = ["ts_ns", "segment", *chans]
    last_ts: int | None = None
    last_seg: int | None = None
    period: float | None = None
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=cols):
        ts = batch.column(0).to_numpy().astype(np.int64)
        seg = batch.column(1).to_numpy().astype(np.int64)
        x = np.column_stack([batch.column(i + 2).to_numpy(zero_copy_only=False)
                             for i in range(len(chans))]).astype(np.float32)  # fmt: skip
        if ts.size == 0:
            continue
        if period is None:
            diffs = np.diff(ts)
            diffs = diffs[diffs > 0]
            if diffs.size == 0:
                continue
            period = float(np.median(diffs))
        cut = (
            np.flatnonzero((np.diff(ts) > 1.5 * period) | (np.diff(ts) <= 0) | (np.diff(seg) != 0))
            + 1
        )
        bounds = [0, *cut.tolist(), ts.size]
        for a, b in itertools.pairwise(bounds):
            # only the first piece of a batch can continue the previous batch
            joins = (a == 0 and last_ts is not None and last_seg == int(seg[0])
                     and 0 < ts[0] - last_ts <= 1.5 * period)  # fmt: skip
            yield _Piece(int(seg[a]), ts[a:b], x[a:b], 1e9 / period, bool(joins))
        last_ts, last_seg = int(ts[-1]), int(seg[-1])


def _audio_pieces(path: Path) -> Iterator[_Piece]:
    pf = pq.ParquetFile(path)
    cols = ["ts_ns", "segment", "sample_rate", "channels", "n_frames", "samples"]
    end_ts: float | None = None
    last: tuple[int, int, int] | None = None
    for batch in pf.iter_batches(batch_size=256, columns=cols):
        ts = batch.column(0).to_numpy().astype(np.int64)
        seg = batch.column(1).to_numpy().astype(np.int64)
        rate = batch.column(2).to_numpy().astype(np.int64)
        ch = batch.column(3).to_numpy().astype(np.int64)
        nfr = batch.column(4).to_numpy().astype(np.int64)
        samples = batch.column(5)
        values = samples.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        offsets = samples.offsets.to_numpy().astype(np.int64)
        for i in range(ts.size):
            if nfr[i] <= 0 or rate[i] <= 0 or ch[i] <= 0:
                continue
            x = values[offsets[i] : offsets[i + 1]].reshape(-1, int(ch[i]))
            key = (int(seg[i]), int(rate[i]), int(ch[i]))
            period = 1e9 / rate[i]
            joins = last == key and end_ts is not None and abs(ts[i] - end_ts) <= 1.5 * period
            sample_ts = ts[i] + (np.arange(x.shape[0], dtype=np.int64) * 1_000_000_000) // rate[i]
            yield _Piece(key[0], sample_ts, x, float(rate[i]), bool(joins))
            end_ts = float(ts[i]) + x.shape[0] * period
            last = key


def scan_onsets(
    path: Path, modality: str, config: OnsetConfig, *, keep_snippets: bool = True
) -> StreamScan:
    """Sync-tap onsets of a ``sensor`` or ``audio`` stream file, per segment."""
    pieces = _sensor_pieces(path) if modality == "sensor" else _audio_pieces(path)
    raws: list[_Raw] = []
    samples = 0
    run_ts: list[IntArray] = []
    run_x: list[npt.NDArray[np.float32]] = []
    ctx_len = 0
    state: dict[str, Any] = {"segment": 0, "rate": 0.0}

    def flush(final: bool) -> None:
        nonlocal run_ts, run_x, ctx_len
        if not run_ts:
            return
        ts = np.concatenate(run_ts)
        x = np.concatenate(run_x)
        rate = float(state["rate"])
        tail = 0 if final else round((_TAIL_MS + 4 * config.frame_ms) * rate / 1000)
        found = detect_onsets(x, rate, config)
        period = round(1e9 / rate)
        for idx, energy in zip(found.index.tolist(), found.energy.tolist(), strict=True):
            if idx < ctx_len or idx >= ts.size - tail:
                continue
            snip = _snippet(ts, x, idx, rate, modality) if keep_snippets else None
            raws.append(_Raw(int(state["segment"]), int(ts[idx]), period, energy, snip))  # type: ignore[arg-type]
        if final:
            run_ts, run_x, ctx_len = [], [], 0
            return
        keep = min(ts.size, round((config.background_ms / 1000 + 0.05) * rate)
                   + config.whiten_order + 16 + tail)  # fmt: skip
        run_ts, run_x = [ts[-keep:]], [x[-keep:]]
        ctx_len = keep - tail

    for piece in pieces:
        samples += piece.ts.size
        if not piece.joins or piece.x.shape[1:] != (
            run_x[0].shape[1:] if run_x else piece.x.shape[1:]
        ):
            flush(final=True)
            state["segment"], state["rate"] = piece.segment, piece.rate
        run_ts.append(piece.ts)
        run_x.append(piece.x)
        if sum(a.size for a in run_ts) >= BLOCK_SAMPLES:
            flush(final=False)
    flush(final=True)
    return _choose(raws, config, {"samples": samples, "onsets": len(raws)})


def _snippet(
    ts: IntArray, x: npt.NDArray[np.float32], idx: int, rate: float, modality: str
) -> Snippet:
    lo = max(0, idx - round(_SNIPPET_PRE_MS * rate / 1000))
    hi = min(ts.size, idx + round(_SNIPPET_POST_MS * rate / 1000))
    seg = x[lo:hi].astype(np.float64)
    seg = seg - seg.mean(axis=0)
    chan = int(np.argmax((seg * seg).sum(axis=0))) if seg.ndim > 1 else 0
    mono = seg[:, chan] if seg.ndim > 1 else seg
    return Snippet(int(ts[lo]), rate, mono.astype(np.float32), modality)


def _choose(raws: list[_Raw], config: OnsetConfig, summary: dict[str, Any]) -> StreamScan:
    scan = StreamScan(summary=summary)
    by_seg: dict[int, list[_Raw]] = {}
    for r in sorted(raws, key=lambda r: (r.segment, r.ts)):
        by_seg.setdefault(r.segment, []).append(r)
    chosen = 0
    for seg, items in by_seg.items():
        t = np.array([r.ts for r in items], dtype=np.int64)
        e = np.array([r.energy for r in items])
        mask = select_sync(t, e, config.relative_db, config.isolation_ms * 1_000_000)
        picked = [r for r, m in zip(items, mask.tolist(), strict=True) if m]
        chosen += len(picked)
        scan.events[seg] = EventSet(
            np.array([r.ts - r.period // 2 for r in picked], dtype=np.int64),
            np.array([r.period for r in picked], dtype=np.int64),
            ["onset"] * len(picked), [""] * len(picked), [r.snippet for r in picked],
        )  # fmt: skip
    scan.summary["events"] = chosen
    return scan


# -- camera flashes ---------------------------------------------------------------------


def frame_brightness(data: bytes | None, uri: str | None, scale: int = 8) -> float:
    """Mean brightness (0-255) of an image given as bytes or a path/URL; NaN if unreadable.

    JPEGs are decoded at 1/``scale`` size in grey (Pillow's draft mode): cheap, and the
    mean does not need the detail.
    """
    from PIL import Image

    try:
        if data is not None:
            handle: Any = io.BytesIO(data)
        elif uri is not None and "://" in uri and not uri.startswith("file://"):
            import fsspec

            handle = io.BytesIO(fsspec.open(uri, "rb").open().read())
        elif uri is not None:
            handle = uri.removeprefix("file://")
        else:
            return float("nan")
        with Image.open(handle) as im:
            im.draft("L", (max(1, im.width // scale), max(1, im.height // scale)))
            return float(np.asarray(im.convert("L"), dtype=np.float32).mean())
    except Exception:  # an unreadable frame only loses its brightness
        return float("nan")


def _video_brightness(uri: str) -> FloatArray | None:
    """Mean luma of every frame of a video file, in presentation order (None if unusable)."""
    try:
        import av

        vals: list[tuple[int, float]] = []
        with av.open(uri.removeprefix("file://")) as box:
            stream = box.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in box.decode(stream):
                small = frame.reformat(width=max(2, frame.width // 8),
                                       height=max(2, frame.height // 8), format="gray")  # fmt: skip
                vals.append((int(frame.pts or 0), float(small.to_ndarray().mean())))
    except Exception:  # an undecodable video only loses its flashes
        return None
    vals.sort()
    return np.array([v for _, v in vals])


def scan_flashes(path: Path, config: FlashConfig, *, workers: int = 4) -> StreamScan:
    """Flash onsets of an ``image`` stream file, per segment."""
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    cols = [c for c in ("ts_ns", "segment", "uri", "bytes", "frame_index") if c in names]
    ts_parts: list[IntArray] = []
    seg_parts: list[IntArray] = []
    bright_parts: list[FloatArray] = []
    video_rows: dict[str, list[int]] = {}
    frame_index: list[int | None] = []
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # a batch at a time: inline frames never sit in memory all at once
        for batch in pf.iter_batches(batch_size=_FRAME_BATCH, columns=cols):
            data = batch.to_pydict()
            n = batch.num_rows
            uris = data.get("uri", [None] * n)
            inline = data.get("bytes", [None] * n)
            bright = np.full(n, np.nan)
            images = []
            for i, (u, b) in enumerate(zip(uris, inline, strict=True)):
                if b is None and u is not None and Path(str(u)).suffix.lower() in _VIDEO_SUFFIXES:
                    video_rows.setdefault(str(u), []).append(done + i)
                else:
                    images.append(i)
            scales = [config.decode_scale] * len(images)
            values = pool.map(frame_brightness, [inline[i] for i in images],
                              [uris[i] for i in images], scales)  # fmt: skip
            bright[images] = list(values)
            frame_index.extend(data.get("frame_index", [None] * n))
            ts_parts.append(np.asarray(data["ts_ns"], dtype=np.int64))
            seg_parts.append(np.asarray(data["segment"], dtype=np.int64))
            bright_parts.append(bright)
            done += n
    ts = np.concatenate(ts_parts) if ts_parts else np.zeros(0, np.int64)
    seg = np.concatenate(seg_parts) if seg_parts else np.zeros(0, np.int64)
    bright = np.concatenate(bright_parts) if bright_parts else np.zeros(0)
    for uri, rows in video_rows.items():
        luma = _video_brightness(uri)
        if luma is None:
            continue
        # row -> decoded frame: its frame_index (the N-th in presentation order), else the
        # rows in time order when they are exactly the file's frames
        known = [frame_index[i] for i in rows]
        if all(k is not None and 0 <= k < luma.size for k in known):
            bright[rows] = luma[np.asarray(known, dtype=np.int64)]
        elif len(rows) == luma.size:
            bright[sorted(rows, key=lambda i: int(ts[i]))] = luma
    ok = np.isfinite(bright)
    scan = StreamScan(summary={"frames": int(ts.size), "unreadable_frames": int((~ok).sum())})
    flashes = 0
    for s in np.unique(seg).tolist():
        m = ok & (seg == s)
        order = np.argsort(ts[m], kind="stable")
        t_s, b_s = ts[m][order], bright[m][order]
        found = detect_flashes(t_s, b_s, config)
        flashes += len(found)
        scan.events[int(s)] = EventSet(
            (found.dark_ns + (found.bright_ns - found.dark_ns) // 2).astype(np.int64),
            (found.bright_ns - found.dark_ns).astype(np.int64),
            ["flash"] * len(found), [""] * len(found), [None] * len(found),
        )  # fmt: skip
    scan.summary["events"] = flashes
    return scan
