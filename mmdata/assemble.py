"""Assembling one window's record from the chunks of an asset's streams.

Dense streams (sensors, audio) are sliced by ``searchsorted`` on reference time and keep
their own rates; sparse streams (frames, notes) are matched as-of with a direction and a
tolerance, their staleness recorded. Coverage, flags and provenance are computed here.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import numpy as np
import pyarrow as pa
import soundfile as sf

from mmdata.config import AlignConfig
from mmdata.records import RECORD_SCHEMA_VERSION, record_id
from mmdata.stream_reader import AudioChunk, Chunk, provenance
from mmdata.timebase import NS_PER_MS, NS_PER_S

_HEADER = ("stream_id", "device_id", "ts_ns", "segment", "source_uri", "source_locator",
           "source_sha256")  # fmt: skip


class RecordBuilder:
    """Builds the record of one window from a chunk's streams."""

    def __init__(self, asset_id: str, shaping: str, cfg: AlignConfig, chunks: list[Chunk]) -> None:
        self.asset_id = asset_id
        self.shaping = shaping
        self.cfg = cfg
        self.chunks = chunks

    def build(self, start: int, end: int, span: int) -> tuple[dict[str, Any] | None, str]:
        """The record of window ``[start, end)``, or ``(None, reason)`` when it is dropped."""
        rec: dict[str, Any] = {
            "schema_version": RECORD_SCHEMA_VERSION,
            "record_id": record_id(self.asset_id, start, end, self.shaping),
            "asset_id": self.asset_id,
            "date": dt.datetime.fromtimestamp(start // NS_PER_S, dt.UTC).date().isoformat(),
            "window_start_ns": start, "window_end_ns": end, "span": span,
            "sensors": [], "audio": None, "audio_info": None, "transcript": [], "image": None,
            "frames": [],
            "text": [], "labels": [], "provenance": [],
        }  # fmt: skip
        cov: dict[str, list[float]] = {"sensors": [], "audio": [], "image": [], "text": []}
        flags = {"gap": False, "stale": False, "clock_uncertain": False,
                 "exceeds_tolerance": False, "missing_modality": False,
                 "pii_unchecked": False, "scrubbed": False}  # fmt: skip
        for ch in self.chunks:
            r = ch.reader
            sid = str(r.entry["stream_id"])
            used = False
            if r.modality == "sensor":
                used = self._sensor(ch, sid, start, end, rec, cov)
            elif isinstance(ch, AudioChunk):
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
        rec["provenance"].extend(provenance(ch, i0, i1, sid))
        return i1 > i0

    def _audio(self, ch: AudioChunk, sid: str, start: int, end: int, rec: dict[str, Any],
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
        rec["transcript"] = _words(ch, i0, i1)
        r0 = max(0, int(np.searchsorted(ch.row_ref, start, "right")) - 1)
        r1 = int(np.searchsorted(ch.row_ref, end, "left"))
        rec["provenance"].extend(provenance(ch, r0, r1, sid))
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
            rec["provenance"].extend(provenance(ch, i, i + 1, sid))
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
            rec["provenance"].extend(provenance(ch, i, i + 1, sid))
        cov["text"].append(1.0 if i1 > i0 else 0.0)
        return i1 > i0


def _words(ch: AudioChunk, i0: int, i1: int) -> list[dict[str, Any]]:
    """Transcript words overlapping the audio samples ``[i0, i1)``, timed in the record's WAV.

    A word's reference times are placed on the samples: its start on the last sample at or
    before it, its end on the first sample at or after it (never narrower than the word),
    and those sample positions, counted from the WAV's first sample, give the times. Where
    the audio is continuous that is the reference time since the first sample (to within a
    sample and the clock's drift); where the window stitches two files across a short gap,
    words after the gap still land on their own samples. Words straddling an edge are
    clipped to the WAV.
    """
    words = ch.words
    if words is None or i1 <= i0 or ch.rate <= 0:
        return []
    ts = ch.ref_ts[i0:i1]
    idx = words.overlapping(int(ts[0]), int(ts[-1]) + -(-NS_PER_S // ch.rate))
    if not idx.size:
        return []
    first = np.clip(np.searchsorted(ts, words.t0[idx], "right") - 1, 0, ts.size - 1)
    after = np.clip(np.searchsorted(ts, words.t1[idx], "left"), 0, ts.size)
    t0 = first.astype(np.int64) * NS_PER_S // ch.rate
    t1 = np.maximum(-(-after.astype(np.int64) * NS_PER_S // ch.rate), t0)
    return [{"word": words.text[k], "t0_ns": a, "t1_ns": b}
            for k, a, b in zip(idx.tolist(), t0.tolist(), t1.tolist(), strict=True)]  # fmt: skip


def _opt_int(t: pa.Table, name: str, i: int) -> int | None:
    return int(t.column(name)[i].as_py()) if name in t.column_names else None
