"""Reading ingested streams for the aligner: clock models, row-group reads, chunks.

A :class:`StreamReader` reads one stream's rows for a device-time range by row group (with
a small cache, since consecutive chunks overlap), and a :class:`Chunk` holds those rows
mapped to reference time with the device's clock model, plus their provenance.

Sidecar transcripts (``<audio stem>.transcript.json`` or ``<audio stem>.vtt`` next to an
audio file, see :mod:`mmdata.scrub.transcript`) are read by a :class:`TranscriptCache`, once
per file and job: the file's time zero comes from any of its rows (``ts_ns`` minus the time
of the row's first sample, from its ``samples A-B`` locator), each word's device time is
zero + its time in the file, and the device's clock model (the one its samples go through)
maps it to reference time. An audio chunk carries the :class:`Words` of its files.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmdata.errors import InputDataError
from mmdata.scrub.transcript import find_sidecar, load_sidecar
from mmdata.timebase import NS_PER_S, ClockModel

HEADER = ("stream_id", "device_id", "ts_ns", "segment", "source_uri", "source_locator",
           "source_sha256")  # fmt: skip
DENSE = ("sensor", "audio")


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
        """Columns the aligner needs: sensor streams skip their per-row locators (audio keeps
        its per-chunk ``samples A-B``: they place a file's transcript on its samples)."""
        if self.modality not in DENSE:
            return None
        skip = ("stream_id", "device_id") + (("source_locator",) if self.modality == "sensor"
                                             else ())  # fmt: skip
        return [n for n in pq.read_schema(self.path).names if n not in skip]

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


def sorted_chunk(reader: StreamReader, table: pa.Table, ref_ts: np.ndarray) -> Chunk:
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


def audio_frames(table: pa.Table) -> tuple[np.ndarray, np.ndarray, int, int]:
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


def provenance(chunk: Chunk, i0: int, i1: int, sid: str) -> list[dict[str, Any]]:
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


@dataclass(frozen=True)
class Words:
    """Transcript words in reference time ``[t0, t1)``, sorted by start.

    >>> w = Words(("call", "Ann"), np.array([0, 10]), np.array([8, 30]))
    >>> w.overlapping(9, 12).tolist(), w.overlapping(30, 40).tolist()
    ([1], [])
    """

    text: tuple[str, ...]
    t0: np.ndarray
    t1: np.ndarray

    @property
    def longest(self) -> int:
        """The longest word's duration (bounds the search in :meth:`overlapping`)."""
        return int((self.t1 - self.t0).max()) if self.t0.size else 0

    def overlapping(self, lo: int, hi: int) -> np.ndarray:
        """Indices of the words overlapping ``[lo, hi)``: a binary search, not a scan."""
        a = int(np.searchsorted(self.t0, lo - self.longest, "left"))
        b = int(np.searchsorted(self.t0, hi, "left"))
        return np.arange(a, b)[self.t1[a:b] > lo]

    @staticmethod
    def concat(parts: list[Words]) -> Words:
        """The words of several files, sorted by (start, end)."""
        t0 = np.concatenate([p.t0 for p in parts])
        t1 = np.concatenate([p.t1 for p in parts])
        text = [w for p in parts for w in p.text]
        order = np.lexsort((t1, t0))
        return Words(tuple(text[i] for i in order.tolist()), t0[order], t1[order])


_SAMPLES = re.compile(r"^samples (\d+)-\d+$")


def _file_zero(locator: str | None, ts_ns: int, rate: int) -> int:
    """Device time of a file's sample 0, from one of its rows (inverse of the audio
    connector's ``ts = zero + A * 1e9 // rate``, exact in integers)."""
    m = _SAMPLES.match(locator or "")
    if m is None or rate <= 0:
        raise InputDataError(
            f"its audio rows carry no 'samples A-B' locator (got {locator!r}), so the "
            "transcript cannot be placed on the samples",
            hint="ingest the audio with the audio connector",
        )
    a = int(m.group(1))
    return ts_ns - ((a // rate) * NS_PER_S + ((a % rate) * NS_PER_S) // rate)


class TranscriptCache:
    """Sidecar transcripts of one job's audio files in reference time, each read once.

    ``bad`` maps each unusable sidecar to ``(audio uri, what is wrong)``; the audio's records
    then carry no transcript. Remote audio (``s3://...``) has no sidecar looked up.

    >>> cache = TranscriptCache()
    >>> cache.files, cache.bad
    ({}, {})
    """

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], Words | None] = {}
        self.bad: dict[str, tuple[str, str]] = {}

    def words(self, reader: StreamReader, table: pa.Table) -> Words | None:
        """The words of every file with rows in ``table`` (an audio read), or None."""
        if table.num_rows == 0:
            return None
        uris = table.column("source_uri").to_pylist()
        first: dict[str, int] = {}
        for i, u in enumerate(uris):
            first.setdefault(u, i)
        parts = []
        for uri, i in sorted(first.items()):
            key = (str(reader.entry["stream_id"]), uri)
            if key not in self.files:
                self.files[key] = self._load(reader, uri, table, i)
            found = self.files[key]
            if found is not None and found.text:
                parts.append(found)
        return Words.concat(parts) if parts else None

    def _load(self, reader: StreamReader, uri: str, table: pa.Table, row: int) -> Words | None:
        sidecar = None if "://" in uri else find_sidecar(uri)
        if sidecar is None:
            return None
        try:
            transcript = load_sidecar(uri)
            if transcript is None:  # removed since it was found
                return None
            locators = table.column("source_locator") if "source_locator" in (
                table.column_names) else None  # fmt: skip
            zero = _file_zero(locators[row].as_py() if locators is not None else None,
                              int(table.column("ts_ns")[row].as_py()),
                              int(table.column("sample_rate")[row].as_py()))  # fmt: skip
            n = len(transcript.words)
            dev0 = zero + np.array([w.start_ns for w in transcript.words], np.int64)
            dev1 = zero + np.array([w.end_ns for w in transcript.words], np.int64)
        except (InputDataError, ValueError, OverflowError, RecursionError) as err:
            message = err.message if isinstance(err, InputDataError) else f"{err}"
            self.bad[str(sidecar)] = (uri, message)
            return None
        # a file's rows share one clock segment (a jump starts a new file or a gap)
        seg = np.full(n, int(table.column("segment")[row].as_py()), np.int64)
        t0, t1 = reader.clock.to_reference(dev0, seg), reader.clock.to_reference(dev1, seg)
        return Words(tuple(w.text for w in transcript.words), t0, t1)


def sidecar_digests(ingest_dir: Path) -> dict[str, str]:
    """sha256 of every sidecar transcript of the ingested (local) audio files, by path: part
    of the records stage's inputs, so adding or editing a transcript re-aligns."""
    index = json.loads((ingest_dir / "streams.json").read_text(encoding="utf-8"))["streams"]
    out: dict[str, str] = {}
    for e in index:
        if e["modality"] != "audio" or not e["rows"]:
            continue
        col = pq.read_table(ingest_dir / e["file"], columns=["source_uri"]).column(0)
        for uri in pc.unique(col.cast(pa.string())).to_pylist():
            sidecar = None if uri is None or "://" in uri else find_sidecar(uri)
            if sidecar is not None:
                try:
                    out[str(sidecar)] = hashlib.sha256(sidecar.read_bytes()).hexdigest()
                except OSError as err:  # unreadable: the aligner quarantines it
                    out[str(sidecar)] = f"unreadable: {err.strerror}"
    return dict(sorted(out.items()))


@dataclass
class AudioChunk(Chunk):
    samples: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.float32))
    rate: int = 0
    channels: int = 1
    row_ref: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    words: Words | None = None  # sidecar transcripts of the chunk's files


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
