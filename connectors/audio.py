"""Audio files and the audio track of video files, cut into fixed-length chunks of samples.

Decoding: WAV/FLAC/MP3/OGG/Opus (and anything else libsndfile reads) through ``soundfile``;
M4A/AAC and the audio track of MP4/MKV/MOV through PyAV. A file the first decoder cannot
open is tried with the other. Audio is read incrementally, a bounded batch of chunks at a
time, so a day-long file never sits in memory. Samples are float32 at the file's own rate
(never resampled) with every channel kept (never downmixed).

Options:

* ``start`` (required): the device time of the file's time zero, one of

  - ``{filename: "mic_%Y%m%dT%H%M%S.%fZ", tz: UTC}`` — from the file name (see
    :class:`connectors.timeparse.FilenameTime`; ``regex: true`` for a regex with named
    groups);
  - ``{bext: true, tz: ...}`` — the Broadcast WAV ``bext`` chunk: midnight of
    OriginationDate (local time in ``tz``) + TimeReference samples; without a
    TimeReference, OriginationDate + OriginationTime;
  - ``{metadata: true}`` — the container's ``creation_time`` (MP4/MOV/MKV, via PyAV);
  - ``{ns: <int>}`` or ``{iso: "2026-03-01T08:00:00Z"}`` — a constant from the config.

  A time that cannot be found or parsed quarantines the file. When a container's audio
  track starts after time zero (first packet pts > 0, e.g. audio of a video), that offset
  is added so audio and video of one file share a time line.
* ``chunk_ms`` (default 1000): chunk length; a chunk holds ``sample_rate * chunk_ms //
  1000`` frames (the last one may be shorter).
* ``on_truncated`` (``quarantine`` | ``salvage``): a file whose decoded length disagrees
  with its declared length (a WAV data chunk declaring more bytes than the file holds, a
  FLAC cut short, a decoder error mid-file) is quarantined whole by default; ``salvage``
  keeps what decodes, flags ``truncated`` (or ``length_mismatch`` when longer than
  declared) and quarantines the declared-but-missing chunks.
* ``track`` (default 0): which audio track of a container.

Stream ``<asset>.<device>.audio`` (also for the audio of a video), one row per chunk:
``ts_ns`` (int64, device time of the chunk's first sample: ``start + offset +
first_sample * 1e9 // sample_rate``, in integers), ``locator`` (``"samples A-B"``,
inclusive, 0-based from the first decoded sample), ``sample_rate`` (int32), ``channels``
(int16), ``n_frames`` (int32), ``samples`` (list<float32>, frames interleaved). Stream
meta: ``sample_rate_hz, channels, chunk_ms, decoder, container`` and ``subtype``
(soundfile) or ``codec`` (PyAV).

Units are chunks: the count comes from the declared frame count (the WAV data chunk,
libsndfile's frame count, or the container's duration). Container durations are
approximate (Matroska stores milliseconds, raw ADTS is estimated from the bit rate), so
there a difference up to ``max(2 codec frames, 100 ms)`` is accepted and the decoded
chunks are counted.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import BaseOptions, Connector, ItemSink, SourceItem
from connectors.timeparse import FilenameTime, parse_iso_ns, zone
from mmdata.errors import InputDataError, MmdataError
from mmdata.timebase import NS_PER_S, datetime_to_ns

SCHEMA = pa.schema(
    [("ts_ns", pa.int64()), ("locator", pa.string()), ("sample_rate", pa.int32()),
     ("channels", pa.int16()), ("n_frames", pa.int32()), ("samples", pa.list_(pa.float32()))]
)  # fmt: skip
#: Extensions decoded by PyAV first (soundfile first for everything else).
_AV_FIRST = {".m4a", ".aac", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".3gp"}
#: Samples per emitted batch (all channels), bounding memory per step.
_BATCH_VALUES = 1 << 18  # 1 MiB of float32: bounded memory, still fast
#: WAV format tags whose frame count is data bytes / block align.
_PCM_TAGS = {1, 3, 6, 7, 0xFFFE}
_UNKNOWN = 1 << 62  # libsndfile's frame count for streams of unknown length


class StartOptions(BaseModel):
    """Where the device time of a file's first sample comes from (exactly one way)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filename: str | None = Field(None, description="strftime-like pattern (or regex) in names.")
    regex: bool = Field(False, description="`filename` is a regex with named groups.")
    bext: bool = Field(False, description="Broadcast WAV bext chunk (date, time, TimeReference).")
    metadata: bool = Field(False, description="The container's creation_time (PyAV).")
    ns: int | None = Field(None, description="A constant start, int ns since the epoch (UTC).")
    iso: str | None = Field(None, description="A constant start, ISO-8601.")
    tz: str = Field("UTC", description="Zone of times written without one.")

    @model_validator(mode="after")
    def _one_way(self) -> StartOptions:
        chosen = [
            k
            for k in ("filename", "bext", "metadata", "ns", "iso")
            if getattr(self, k) is not None and getattr(self, k) is not False
        ]
        if len(chosen) != 1:
            raise ValueError(
                "exactly one of filename, bext, metadata, ns, iso must be set "
                f"(got {', '.join(chosen) or 'none'})"
            )
        try:
            tz = zone(self.tz)
            if self.filename is not None:
                FilenameTime.compile(self.filename, self.tz, is_regex=self.regex)
            if self.iso is not None:
                parse_iso_ns(self.iso, tz)
        except MmdataError as err:
            raise ValueError(err.message) from None
        return self


class AudioOptions(BaseOptions):
    """Options of the audio connector."""

    start: StartOptions = Field(description="Device time of each file's first sample.")
    chunk_ms: int = Field(1000, gt=0, le=3_600_000, description="Length of one row of audio.")
    on_truncated: Literal["quarantine", "salvage"] = Field(
        "quarantine",
        description="A file shorter/longer than declared: refuse it, or keep "
        "what decodes (flagged).",
    )
    track: int = Field(0, ge=0, description="Which audio track of a container (0 = first).")


@dataclass
class _Wav:
    """What the RIFF chunk walk found in a WAV file."""

    format_tag: int
    block_align: int
    data_offset: int
    data_size: int  # as declared
    file_size: int
    bext: bytes | None

    @property
    def available(self) -> int:
        """Bytes of sample data actually in the file."""
        return max(0, self.file_size - self.data_offset)

    @property
    def declared_frames(self) -> int | None:
        """Frames the data chunk declares (None for compressed formats)."""
        if self.format_tag not in _PCM_TAGS or self.block_align <= 0:
            return None
        return self.data_size // self.block_align


@dataclass
class _Decoded:
    """An opened audio stream: its shape, declared length and a block iterator."""

    sample_rate: int
    channels: int
    declared: int | None  # frames; None when unknown
    tolerance: int  # accepted |declared - decoded| in frames
    meta: dict[str, Any]
    blocks: Iterator[np.ndarray] = field(default_factory=lambda: iter(()))
    offset_ns: int = 0  # pts of the first sample after the file's time zero
    error: str | None = None  # why decoding stopped early, if it did
    creation_time: str | None = None
    close: Callable[[], None] = lambda: None


class AudioConnector(Connector):
    """Audio files (WAV/FLAC/MP3/OGG/Opus/M4A/AAC) and audio tracks of videos."""

    name: ClassVar[str] = "audio"
    Options: ClassVar[type[BaseOptions]] = AudioOptions
    modality = "audio"
    patterns: ClassVar[tuple[str, ...]] = (
        "*.wav", "*.flac", "*.mp3", "*.ogg", "*.opus", "*.m4a", "*.aac", "*.mp4", "*.mkv",
        "*.mov",
    )  # fmt: skip

    def read(self, item: SourceItem, sink: ItemSink) -> None:
        """Decode one file into chunk rows of stream ``audio``."""
        opts: AudioOptions = self.options
        with sink.open() as fh:
            wav = _parse_riff(fh)
            if wav is not None and wav.data_size == 0 and wav.available == 0:
                raise InputDataError("zero-length audio: the WAV data chunk is empty")
            if wav is not None and wav.data_size > wav.available:
                self._truncated_wav(wav)
            dec = _open_decoder(fh, item.uri, opts.track)
            try:
                start_ns = self._start_ns(item, fh, wav, dec)
                decoded = self._emit_all(dec, start_ns, sink)
            finally:
                dec.close()
        self._account(dec, decoded, wav, sink)

    # --- start time --------------------------------------------------------------------
    def _start_ns(self, item: SourceItem, fh: IO[bytes], wav: _Wav | None, dec: _Decoded) -> int:
        s: StartOptions = self.options.start
        if s.ns is not None:
            return s.ns
        if s.iso is not None:
            return parse_iso_ns(s.iso, zone(s.tz))
        if s.filename is not None:
            return FilenameTime.compile(s.filename, s.tz, is_regex=s.regex).parse(item.uri)
        if s.bext:
            if wav is None:
                raise InputDataError("start: {bext: true} needs a WAV file; this is not RIFF")
            if wav.bext is None:
                raise InputDataError(
                    "no bext chunk: not a Broadcast WAV file",
                    hint="use start: {filename: ...} or {iso: ...} instead",
                )
            return bext_start_ns(wav.bext, dec.sample_rate, zone(s.tz))
        created = dec.creation_time if dec.creation_time else _container_creation_time(fh)
        if not created:
            raise InputDataError(
                "the container has no creation_time metadata",
                hint="use start: {filename: ...} or {iso: ...} instead",
            )
        return parse_iso_ns(created, zone(s.tz))

    # --- rows --------------------------------------------------------------------------
    def _emit_all(self, dec: _Decoded, start_ns: int, sink: ItemSink) -> int:
        sr, ch = dec.sample_rate, dec.channels
        chunk = chunk_frames(sr, self.options.chunk_ms)
        batch = chunk * max(1, _BATCH_VALUES // (chunk * ch))
        meta = {"sample_rate_hz": sr, "channels": ch, "chunk_ms": self.options.chunk_ms, **dec.meta}
        done = 0
        for block in _rebatch(dec.blocks, batch):
            table = chunk_rows(block, done, start_ns + dec.offset_ns, sr, chunk)
            sink.emit("audio", table, modality="audio", meta=meta)
            done += block.shape[0]
        return done

    def _truncated_wav(self, wav: _Wav) -> None:
        if self.options.on_truncated == "salvage":
            return
        frames = wav.declared_frames
        what = f" ({frames} frames)" if frames is not None else ""
        raise InputDataError(
            f"truncated WAV: the data chunk declares {wav.data_size} bytes{what} but the file "
            f"holds only {wav.available} bytes of samples",
            hint="set on_truncated: salvage to keep the samples that are there",
        )

    def _account(self, dec: _Decoded, decoded: int, wav: _Wav | None, sink: ItemSink) -> None:
        """Count chunks in from the declared length; settle any difference with decoding."""
        chunk = chunk_frames(dec.sample_rate, self.options.chunk_ms)
        out = -(-decoded // chunk)
        declared, tolerance = dec.declared, dec.tolerance
        if wav is not None and wav.declared_frames is not None:
            declared, tolerance = wav.declared_frames, 0
        cut = wav is not None and wav.data_size > wav.available
        if decoded == 0:
            if dec.error or cut or declared:
                raise InputDataError(f"no audio could be decoded: {dec.error or 'file truncated'}")
            raise InputDataError("zero-length audio: the file holds no samples")
        diff = 0 if declared is None else declared - decoded
        if not dec.error and not cut and abs(diff) <= tolerance:
            sink.count_in(out)  # exact, or an approximate declared length confirmed
            return
        if wav is not None and cut:
            problem = (f"the WAV data chunk declares {wav.data_size} bytes but the file holds "
                       f"{wav.available}; {decoded} frames decoded")  # fmt: skip
        elif declared is None:
            problem = f"decoding stopped after {decoded} frames"
        else:
            only = "only " if diff > 0 else ""
            problem = f"declared {declared} frames but {only}{decoded} could be decoded"
        problem += f" ({dec.error})" if dec.error else ""
        if self.options.on_truncated == "quarantine":
            raise InputDataError(f"wrong declared length: {problem}",
                                 hint="set on_truncated: salvage to keep what decodes")  # fmt: skip
        if diff < 0 and not dec.error:  # more than declared: keep it all, say so
            sink.flag("length_mismatch")
            sink.count_in(out)
            return
        sink.flag("truncated")
        lost = 0 if declared is None else max(0, -(-declared // chunk) - out)
        sink.count_in(out + lost)
        if lost:
            sink.reject(f"samples {decoded}-{max(decoded, declared or 0) - 1}",
                        f"truncated: {problem}; these chunks are missing",
                        error_class="TruncatedAudio", units=lost)  # fmt: skip


def chunk_frames(sample_rate: int, chunk_ms: int) -> int:
    """Frames per chunk (at least one).

    >>> chunk_frames(16000, 1000), chunk_frames(44100, 10), chunk_frames(8, 1)
    (16000, 441, 1)
    """
    return max(1, sample_rate * chunk_ms // 1000)


def sample_time_ns(start_ns: int, index: np.ndarray, sample_rate: int) -> np.ndarray:
    """Device time of sample ``index``: ``start + index * 1e9 // rate``, exact in int64.

    Split into whole seconds and a remainder so a day at 192 kHz does not overflow.

    >>> sample_time_ns(0, np.array([0, 1, 16000, 3]), 16000).tolist()
    [0, 62500, 1000000000, 187500]
    >>> int(sample_time_ns(0, np.array([1]), 44100)[0])  # floor of 22675.73...
    22675
    """
    idx = index.astype(np.int64)
    sr = np.int64(sample_rate)
    return np.int64(start_ns) + (idx // sr) * NS_PER_S + ((idx % sr) * NS_PER_S) // sr


def chunk_rows(
    block: np.ndarray, first: int, start_ns: int, sample_rate: int, chunk: int
) -> pa.Table:
    """Rows of ``SCHEMA`` for a (frames, channels) float32 block starting at sample ``first``.

    >>> t = chunk_rows(np.zeros((5, 2), np.float32), 10, 0, 4, 2)
    >>> t.column("locator").to_pylist(), t.column("n_frames").to_pylist()
    (['samples 10-11', 'samples 12-13', 'samples 14-14'], [2, 2, 1])
    >>> t.column("ts_ns").to_pylist()
    [2500000000, 3000000000, 3500000000]
    """
    n, ch = block.shape
    starts = np.arange(0, n, chunk, dtype=np.int64)
    sizes = np.minimum(chunk, n - starts)
    index = first + starts
    ends = (index + sizes - 1).tolist()
    offsets = pa.array(np.append(starts, n) * ch, pa.int32())
    values = pa.array(np.ascontiguousarray(block, dtype=np.float32).reshape(-1), pa.float32())
    return pa.table(
        {
            "ts_ns": pa.array(sample_time_ns(start_ns, index, sample_rate), pa.int64()),
            "locator": [f"samples {a}-{b}" for a, b in zip(index.tolist(), ends, strict=True)],
            "sample_rate": pa.array(np.full(len(starts), sample_rate, np.int32)),
            "channels": pa.array(np.full(len(starts), ch, np.int16)),
            "n_frames": pa.array(sizes.astype(np.int32)),
            "samples": pa.ListArray.from_arrays(offsets, values),
        },
        schema=SCHEMA,
    )


def _rebatch(blocks: Iterator[np.ndarray], batch: int) -> Iterator[np.ndarray]:
    """Re-cut blocks of any length into blocks of exactly ``batch`` frames (last: fewer)."""
    pending: list[np.ndarray] = []
    have = 0
    for b in blocks:
        if b.shape[0] == 0:
            continue
        pending.append(b)
        have += b.shape[0]
        while have >= batch:
            joined = pending[0] if len(pending) == 1 else np.concatenate(pending)
            yield joined[:batch]
            rest = joined[batch:]
            pending, have = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)
    if have:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


# --------------------------------------------------------------------------------------
# WAV / Broadcast WAV headers


def _parse_riff(fh: IO[bytes]) -> _Wav | None:
    """Walk a RIFF/RF64 WAVE file's chunk headers; None if the file is not RIFF WAVE."""
    fh.seek(0, 2)
    size = fh.tell()
    fh.seek(0)
    head = fh.read(12)
    if head[:4] not in (b"RIFF", b"RF64", b"BW64"):
        return None
    if len(head) < 12:
        raise InputDataError(f"truncated WAV header: the file is only {size} bytes")
    if head[8:12] != b"WAVE":
        return None
    fmt: bytes | None = None
    bext: bytes | None = None
    ds64_data: int | None = None
    data: tuple[int, int] | None = None
    pos = 12
    for _ in range(10_000):
        if pos + 8 > size:
            break
        fh.seek(pos)
        cid, csize = struct.unpack("<4sI", fh.read(8))
        body = pos + 8
        if cid == b"fmt ":
            fmt = fh.read(min(csize, 40))
        elif cid == b"bext":
            bext = fh.read(min(csize, 1024))
        elif cid == b"ds64" and csize >= 16:
            ds64_data = struct.unpack("<8xQ", fh.read(16))[0]
        elif cid == b"data":
            data = (body, ds64_data if csize == 0xFFFFFFFF and ds64_data is not None else csize)
        pos = body + csize + (csize & 1)
    if fmt is None or len(fmt) < 16:
        raise InputDataError(
            f"truncated WAV header: the file is {size} bytes and its fmt "
            "chunk is missing or cut short"
        )
    if data is None:
        raise InputDataError(
            f"truncated WAV header: the file is {size} bytes and has no data chunk"
        )
    tag, align = struct.unpack("<H10xH", fmt[:14])
    return _Wav(tag, align, data[0], data[1], size, bext)


_BEXT_DATE = re.compile(rb"(\d{4})\D(\d{2})\D(\d{2})")
_BEXT_TIME = re.compile(rb"(\d{2})\D(\d{2})\D(\d{2})")


def bext_start_ns(bext: bytes, sample_rate: int, tz: dt.tzinfo) -> int:
    """Start time from a ``bext`` chunk body (EBU Tech 3285).

    OriginationDate (10 bytes at 320) and OriginationTime (8 bytes at 330) are local time in
    ``tz``; TimeReference (uint64 at 338) counts samples since midnight. With a
    TimeReference the start is midnight + TimeReference samples (exact), moved by a day if
    that lands more than 12 h from OriginationTime (a recording that began before
    midnight); without one (0) it is OriginationDate + OriginationTime.
    """
    if len(bext) < 346:
        raise InputDataError(f"bext chunk is {len(bext)} bytes, shorter than the 346 needed")
    d = _BEXT_DATE.fullmatch(bext[320:330])
    t = _BEXT_TIME.fullmatch(bext[330:338])
    (time_ref,) = struct.unpack("<Q", bext[338:346])
    if d is None or t is None:
        raise InputDataError(
            f"bext OriginationDate/Time {bext[320:338]!r} is not 'yyyy-mm-dd' + 'hh:mm:ss'"
        )
    try:
        midnight = dt.datetime(int(d[1]), int(d[2]), int(d[3]), tzinfo=tz)
        origin = midnight.replace(hour=int(t[1]), minute=int(t[2]), second=int(t[3]))
    except ValueError as err:
        raise InputDataError(f"bext origination date/time is impossible: {err}") from err
    origin_ns = datetime_to_ns(origin)
    if time_ref == 0:
        return origin_ns
    day = 86_400 * NS_PER_S
    start = datetime_to_ns(midnight) + int(sample_time_ns(0, np.array([time_ref]), sample_rate)[0])
    if start - origin_ns > day // 2:
        start -= day
    elif origin_ns - start > day // 2:
        start += day
    return start


# --------------------------------------------------------------------------------------
# Decoders


def _open_decoder(fh: IO[bytes], uri: str, track: int) -> _Decoded:
    """Open with soundfile or PyAV (by extension first, then the other)."""
    ext = PurePosixPath(uri.split("?", 1)[0]).suffix.lower()
    order = [_open_av, _open_sf] if ext in _AV_FIRST else [_open_sf, _open_av]
    errors = []
    for opener in order:
        fh.seek(0)
        try:
            return opener(fh, track)
        except InputDataError:
            raise
        except Exception as err:  # a decoder refusing the file: try the next one
            why = getattr(err, "error_string", None) or getattr(err, "strerror", None) or err
            errors.append(f"{'PyAV' if opener is _open_av else 'soundfile'}: {why}")
    raise InputDataError(
        "not a readable audio file (unsupported codec or not audio): " + "; ".join(errors)
    )


def _open_sf(fh: IO[bytes], track: int) -> _Decoded:
    import soundfile as sf

    f = sf.SoundFile(fh)
    if track:
        f.close()
        raise InputDataError(f"track {track} asked for, but {f.format} files hold one stream")
    declared = None if f.frames >= _UNKNOWN or (f.frames == 0 and f.format != "WAV") else f.frames
    if declared == 0:
        f.close()
        raise InputDataError("zero-length audio: the file holds no samples")
    meta = {"decoder": "soundfile", "container": f.format, "subtype": f.subtype}
    dec = _Decoded(f.samplerate, f.channels, declared, 0, meta)
    dec.blocks, dec.close = _sf_blocks(f, dec), f.close
    return dec


def _sf_blocks(f: Any, dec: _Decoded) -> Iterator[np.ndarray]:
    while True:
        try:
            # Small reads: a decoder error loses at most one read's worth (salvage).
            block = f.read(4096, dtype="float32", always_2d=True)
        except RuntimeError as err:  # libsndfile: lost sync, bad seek, ...
            dec.error = str(err)
            return
        if block.shape[0] == 0:
            return
        yield block


def _open_av(fh: IO[bytes], track: int) -> _Decoded:
    import av

    container = av.open(fh, "r")
    try:
        streams = container.streams.audio
        if track >= len(streams):
            raise InputDataError(
                f"no audio track {track}: the file has {len(streams)}"
                + (" (a video without sound?)" if container.streams.video else "")
            )
        stream = streams[track]
        ctx = stream.codec_context
        sr = int(ctx.sample_rate or stream.rate or 0)
        ch = int(ctx.layout.nb_channels) if ctx.layout else int(getattr(ctx, "channels", 0))
        if sr <= 0 or ch <= 0:
            raise InputDataError(f"audio track {track} has no sample rate or channel count")
    except BaseException:
        container.close()
        raise
    declared = _av_declared_frames(container, stream, sr)
    created = container.metadata.get("creation_time") or stream.metadata.get("creation_time")
    meta = {"decoder": "pyav", "container": container.format.name, "codec": ctx.name}
    tolerance = max(2 * (ctx.frame_size or 1024), sr // 10)
    dec = _Decoded(sr, ch, declared, tolerance, meta, creation_time=created)
    dec.blocks, dec.close = _av_blocks(container, stream, dec), container.close
    return dec


_MKV_DURATION = re.compile(r"(\d+):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")


def _av_declared_frames(container: Any, stream: Any, sr: int) -> int | None:
    """The track's length in frames as the container states it (approximate), or None.

    From the track's duration (MP4/MOV/OGG), else Matroska's per-track ``DURATION`` tag (the
    track's end time), else the file's duration when the track is the only stream.
    """
    tb = stream.time_base
    start_us = 0
    if stream.start_time is not None and tb is not None:
        start_us = stream.start_time * tb.numerator * 1_000_000 // tb.denominator
    if stream.duration and tb is not None:
        return int(stream.duration * tb.numerator * sr // tb.denominator)
    m = _MKV_DURATION.fullmatch(str(stream.metadata.get("DURATION", "")))
    if m:
        end_ns = (int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])) * NS_PER_S
        end_ns += int((m[4] or "0").ljust(9, "0"))
        return max(0, (end_ns - start_us * 1000) * sr // NS_PER_S)
    if container.duration and len(container.streams) == 1:
        return max(0, (container.duration - start_us) * sr // 1_000_000)
    return None


def _av_blocks(container: Any, stream: Any, dec: _Decoded) -> Iterator[np.ndarray]:
    """Decode packets one by one; frames to float32 interleaved at the same rate."""
    import av

    resampler = None
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                if resampler is None:
                    if frame.pts is not None and frame.time_base is not None:
                        tb = frame.time_base
                        dec.offset_ns = frame.pts * tb.numerator * NS_PER_S // tb.denominator
                    # Same rate and layout: the resampler only makes float32 interleaved.
                    resampler = av.AudioResampler(
                        format="flt", layout=frame.layout, rate=frame.sample_rate
                    )
                if frame.sample_rate != dec.sample_rate or frame.layout.nb_channels != dec.channels:
                    raise InputDataError(
                        f"the audio format changes mid-stream ({frame.sample_rate} Hz, "
                        f"{frame.layout.nb_channels} channels; the track declared "
                        f"{dec.sample_rate} Hz, {dec.channels} channels)"
                    )
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1, dec.channels)
        if resampler is not None:
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1, dec.channels)
    except av.error.FFmpegError as err:
        dec.error = str(err)


def _container_creation_time(fh: IO[bytes]) -> str | None:
    """``creation_time`` of a file PyAV can open (for files decoded by soundfile)."""
    import av

    where = fh.tell()  # the open soundfile decoder reads on from here
    fh.seek(0)
    try:
        with av.open(fh, "r") as c:
            meta = dict(c.metadata)
            for s in c.streams.audio:
                meta.update({k: v for k, v in s.metadata.items() if k not in meta})
    except av.error.FFmpegError as err:
        raise InputDataError(f"cannot read container metadata: {err}") from err
    finally:
        fh.seek(where)
    value = meta.get("creation_time")
    return str(value) if value else None
