"""Video files (MP4, MKV, AVI, MOV): one row per frame with its exact device time.

Frames stay in the file as references (``source_uri`` + ``source_sha256`` +
``source_locator`` = ``frame N``); this connector only works out *when* each frame was
taken, exactly, in int64 nanoseconds:

* PyAV demuxes the video stream without decoding: exact packet pts (in the stream's
  time base), the stream's start offset, codec, size and container metadata. Frame ``N`` is
  the ``N``-th in presentation (pts) order, so B-frames and variable frame rates are right.
* decord (when installed and able to open the file) is the decoder of record: its frame
  count and ``get_frame_timestamp`` (float seconds relative to the stream start) are
  snapped onto the time-base grid (``pts = round(t / time_base) + start_pts``) and checked
  against PyAV's pts. Where they disagree beyond float32 precision, PyAV's exact pts win
  and the frames are counted in the flag ``decord_pts_mismatch``; a different frame count
  is flagged ``frame_count_mismatch``.
* Without decord (not installed, or it cannot open the file, e.g. AV1), PyAV alone is
  used and the rows say ``decoder = "pyav"``.

``ts_ns = start_ns + pts × time_base`` (exact rational arithmetic, rounded half up to 1 ns),
where ``start_ns`` is the device time of pts 0, set by the ``start`` option:

* ``{metadata: true}`` (default): the container's ``creation_time`` tag (ISO-8601; a value
  without a zone is read in ``tz``, default UTC — what MP4 and Matroska store);
* ``{filename: "cam_%Y%m%dT%H%M%S.%fZ", tz: UTC}`` or ``{regex: ...}``: from the file name;
* ``{ns: 1772352000000000000}``: a configured constant.

Option ``decoder``: ``auto`` (decord when it can, else PyAV) or ``pyav``.

Quarantined with a reason (the whole file): not a readable container, no video stream, a
codec that no available decoder handles, a truncated file (the MP4 index lists more frames
than can be read, or none can be read), no usable start time. The audio track of a video
is the audio connector's business, not this one's.

Stream ``<asset>.<device>.frames`` (modality video): ``ts_ns, locator ("frame N"), uri,
frame_index int64, pts int64, width int32, height int32, codec, decoder``.
Meta: ``kind`` ("video"), ``decoder``, ``codec``, ``time_base`` ("1/90000"),
``start_source`` ("metadata" / "filename" / "config"), ``width``, ``height``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import BaseOptions, Connector, ItemSink, SourceContext, SourceItem
from connectors.camera import _check_time_config
from connectors.timeparse import FilenameTime, parse_iso_ns, zone
from mmdata.errors import InputDataError
from mmdata.timebase import NS_PER_S

SCHEMA = pa.schema(
    [("ts_ns", pa.int64()), ("locator", pa.string()), ("uri", pa.string()),
     ("frame_index", pa.int64()), ("pts", pa.int64()), ("width", pa.int32()),
     ("height", pa.int32()), ("codec", pa.string()), ("decoder", pa.string())]
)  # fmt: skip


class VideoStart(BaseModel):
    """Device time of pts 0 (see the module docstring); exactly one way must be given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metadata: bool = Field(False, description="The container's creation_time tag.")
    filename: str | None = Field(None, description="strftime-like file-name time pattern.")
    regex: str | None = Field(None, description="Regex with named time groups.")
    ns: int | None = Field(None, description="A constant device time in int ns UTC.")
    tz: str = Field("UTC", description="Zone for times written without one.")

    @model_validator(mode="after")
    def _one_way(self) -> VideoStart:
        given = [self.metadata, self.filename is not None, self.regex is not None,
                 self.ns is not None]  # fmt: skip
        if sum(given) != 1:
            raise ValueError("exactly one of metadata: true, filename, regex or ns")
        _check_time_config(self.filename, self.regex, self.tz)
        return self


class VideoOptions(BaseOptions):
    """Options of the video connector."""

    start: VideoStart = Field(
        default_factory=lambda: VideoStart(metadata=True),
        description="Device time of pts 0: {metadata: true} | {filename|regex: ..., tz} | "
        "{ns: int}.",
    )
    decoder: Literal["auto", "pyav"] = Field(
        "auto", description="auto: decord when it can open the file, else PyAV."
    )


@dataclass
class VideoProbe:
    """What PyAV says about a file's video stream, without decoding anything."""

    format: str
    codec: str  # canonical codec name (h264, av1, ...), "unknown" without a decoder
    decodable: bool  # PyAV has a decoder for it
    width: int
    height: int
    time_base: Fraction
    start_pts: int
    declared_frames: int  # the container's own count (MP4 sample table), 0 if unknown
    pts: np.ndarray  # int64, presentation order
    no_pts: int = 0  # packets without pts or dts
    discarded: int = 0  # packets outside the edit list
    metadata: dict[str, str] = field(default_factory=dict)


def probe_video(path: str) -> VideoProbe:
    """Demux the first video stream of ``path`` with PyAV (raises InputDataError)."""
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as err:
        raise InputDataError(f"not a readable video container: {err}") from err
    with container:
        if not container.streams.video:
            raise InputDataError("the file has no video stream (audio only?)")
        stream = container.streams.video[0]
        ctx = stream.codec_context  # None when FFmpeg has no decoder for the stream
        codec_obj = getattr(ctx, "codec", None)
        codec = codec_obj.canonical_name if codec_obj is not None else "unknown"
        tb = stream.time_base
        if tb is None or tb <= 0:
            raise InputDataError(f"video stream has no usable time base ({tb})")
        pts: list[int] = []
        no_pts = discarded = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # end-of-stream flush or an empty (dropped-frame) AVI chunk
                if packet.is_discard:
                    discarded += 1
                    continue
                p = packet.pts if packet.pts is not None else packet.dts
                if p is None:
                    no_pts += 1
                else:
                    pts.append(int(p))
        except (av.FFmpegError, OSError) as err:
            raise InputDataError(f"corrupt video container while demuxing: {err}") from err
        meta = {k.lower(): str(v) for k, v in stream.metadata.items()}
        meta.update({k.lower(): str(v) for k, v in container.metadata.items()})
        fmt = container.format.name
        # The MP4/MOV sample table is a reliable count; AVI's "frames" counts time slots.
        declared = int(stream.frames or 0) if "mp4" in fmt or "mov" in fmt else 0
        return VideoProbe(
            format=fmt, codec=codec, decodable=codec_obj is not None,
            width=int(getattr(ctx, "width", 0) or 0), height=int(getattr(ctx, "height", 0) or 0),
            time_base=Fraction(tb.numerator, tb.denominator),
            start_pts=int(stream.start_time) if stream.start_time is not None else 0,
            declared_frames=declared, pts=np.sort(np.asarray(pts, dtype=np.int64)),
            no_pts=no_pts, discarded=discarded, metadata=meta,
        )  # fmt: skip


def pts_to_ns(pts: np.ndarray, time_base: Fraction) -> np.ndarray:
    """Exact ``pts × time_base`` in int64 ns, rounded half up.

    >>> pts_to_ns(np.array([0, 1, 135000]), Fraction(1, 90000)).tolist()
    [0, 11111, 1500000000]
    """
    num = time_base.numerator * NS_PER_S
    den = time_base.denominator
    if num * den < 2**62:
        # Split pts = q·den + r so that no intermediate product leaves int64.
        q, r = np.divmod(pts.astype(np.int64), np.int64(den))
        return q * np.int64(num) + (r * np.int64(num) + np.int64(den // 2)) // np.int64(den)
    return np.array([(int(p) * num + den // 2) // den for p in pts], dtype=np.int64)


def decord_times(path: str) -> tuple[np.ndarray | None, str]:
    """decord's per-frame start times (float64 seconds from the stream start), or None.

    The second value says why decord was not used ("" when it was).
    """
    try:
        import decord
    except ImportError:
        return None, "decord is not installed"
    try:
        reader = decord.VideoReader(path, num_threads=1)
        n = len(reader)
        times = reader.get_frame_timestamp(np.arange(n))[:, 0] if n else np.zeros(0)
    except Exception as err:  # decord raises its own DECORDError / RuntimeError
        return None, f"decord cannot open the file: {str(err).splitlines()[0][:200]}"
    return np.asarray(times, dtype=np.float64), ""


class VideoConnector(Connector):
    """Video containers: exact per-frame device times from pts, frames kept as references."""

    name: ClassVar[str] = "video"
    Options: ClassVar[type[BaseOptions]] = VideoOptions
    modality = "video"
    patterns: ClassVar[tuple[str, ...]] = ("*.mp4", "*.mkv", "*.avi", "*.mov")

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        start: VideoStart = self.options.start
        self._pattern: FilenameTime | None = None
        if start.filename is not None:
            self._pattern = FilenameTime.compile(start.filename, start.tz)
        elif start.regex is not None:
            self._pattern = FilenameTime.compile(start.regex, start.tz, is_regex=True)

    def read(self, item: SourceItem, sink: ItemSink) -> None:
        """Time every frame of one video file (or raise to quarantine it)."""
        opts: VideoOptions = self.options
        path = sink.local_path()
        probe = probe_video(path)
        n = int(probe.pts.size)
        if n == 0:
            raise InputDataError(
                "no video frames could be read (truncated or corrupt file)",
                hint="a recording cut short before its index was written cannot be read",
            )
        if probe.declared_frames > n + probe.discarded + probe.no_pts:
            raise InputDataError(
                f"truncated video: the container's index lists {probe.declared_frames} "
                f"frames but only {n} could be read"
            )
        start_ns, start_source = self._start_ns(item.uri, probe)

        decoder, times, why = "pyav", None, "decoder: pyav configured"
        if opts.decoder == "auto":
            times, why = decord_times(path)
            decoder = "decord" if times is not None else "pyav"
        if decoder == "pyav" and not probe.decodable:
            raise InputDataError(
                f"unsupported codec: neither decord ({why}) nor PyAV can decode the video stream"
            )
        counted = n + probe.no_pts + probe.discarded
        if times is not None:
            counted = max(len(times), counted)
            self._cross_check(times, probe, sink)
        sink.count_in(counted)
        if probe.no_pts:
            sink.reject("frames", f"{probe.no_pts} packets carry neither pts nor dts",
                        units=probe.no_pts)  # fmt: skip
        if probe.discarded:
            sink.reject("frames", f"{probe.discarded} packets lie outside the container's "
                        "edit list (never presented)", units=probe.discarded)  # fmt: skip
        if counted > n + probe.no_pts + probe.discarded:
            missing = counted - n - probe.no_pts - probe.discarded
            sink.reject("frames", f"decord counts {missing} more frames than PyAV can time",
                        units=missing)  # fmt: skip

        ts = start_ns + pts_to_ns(probe.pts, probe.time_base)
        idx = np.arange(n, dtype=np.int64)
        cols = {
            "ts_ns": ts, "locator": [f"frame {i}" for i in range(n)], "uri": [item.uri] * n,
            "frame_index": idx, "pts": probe.pts,
            "width": np.full(n, probe.width, np.int32),
            "height": np.full(n, probe.height, np.int32),
            "codec": [probe.codec] * n, "decoder": [decoder] * n,
        }  # fmt: skip
        tb = probe.time_base
        meta = {"kind": "video", "decoder": decoder, "codec": probe.codec,
                "time_base": f"{tb.numerator}/{tb.denominator}", "start_source": start_source,
                "width": probe.width, "height": probe.height}  # fmt: skip
        sink.emit("frames", pa.table(cols, schema=SCHEMA), modality="video", meta=meta)

    def _start_ns(self, uri: str, probe: VideoProbe) -> tuple[int, str]:
        start: VideoStart = self.options.start
        if start.ns is not None:
            return start.ns, "config"
        if self._pattern is not None:
            return self._pattern.parse(uri), "filename"
        raw = probe.metadata.get("creation_time")
        if not raw:
            raise InputDataError(
                "the container has no creation_time tag to start the frame times from",
                hint="set the source's start option: {filename: ...} or {ns: ...}",
            )
        try:
            return parse_iso_ns(raw, zone(start.tz)), "metadata"
        except InputDataError as err:
            raise InputDataError(f"creation_time tag: {err.message}") from err

    @staticmethod
    def _cross_check(times: np.ndarray, probe: VideoProbe, sink: ItemSink) -> None:
        """Compare decord's float times with PyAV's exact pts; flag what disagrees."""
        n = int(probe.pts.size)
        if len(times) != n:
            sink.flag("frame_count_mismatch")
            return
        tb = float(probe.time_base)
        ticks = times / tb + probe.start_pts
        # decord hands out float32 seconds: allow their rounding error (~t·2⁻²⁴) + half a tick.
        bound = 0.5 + np.abs(times) * 2.0**-23 / tb
        bad = int(np.count_nonzero(np.abs(ticks - probe.pts) > bound))
        if bad:
            sink.flag("decord_pts_mismatch", bad)
