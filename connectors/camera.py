"""Camera frames: folders of JPEG / PNG files, one frame per file, indexed without decoding.

Each file is read once (its sha256 is taken from the same bytes); width, height and EXIF
come from the header (:mod:`connectors.imageheader`), never from decoding pixels.

Options:

* ``timestamp`` — where a frame's device time comes from (default ``{exif: true}``):

  - ``{filename: "cam_%Y%m%dT%H%M%S.%fZ", tz: UTC}``: a strftime-like file-name pattern
    (see :mod:`connectors.timeparse`), or ``{regex: "...(?P<Y>...)..."}`` with named groups;
    ``tz`` applies when the name carries no zone (default UTC);
  - ``{exif: true, tz: ...}``: EXIF DateTimeOriginal + SubSecTimeOriginal +
    OffsetTimeOriginal; without OffsetTimeOriginal ``tz`` applies, and without that either
    the file is quarantined;
  - ``fallback``: ``{filename: ..., fallback: exif}`` tries the name first, then EXIF;
    ``{exif: true, filename: ..., fallback: filename}`` the other way round. Frames timed
    by the fallback are counted in the flag ``timestamp_fallback``.
* ``inline`` (default false): put the file bytes in the ``bytes`` column; otherwise the
  frame stays a reference (``source_uri`` + ``source_sha256``, added by ingest).
* ``max_pixels`` (default 178,956,970, Pillow's decompression-bomb limit): larger images
  are quarantined.

Quarantined with a reason (one file each): not a JPEG/PNG signature, a truncated or corrupt
JPEG (no EOI at the end, broken marker structure before the frame header), a truncated PNG
(no IEND), an image over ``max_pixels``, an unusable time. Zero-byte files, symlinks and
files outside the root are refused at listing. Kept but flagged: a file whose signature
disagrees with its extension (``extension_mismatch``), data after the image's end marker
such as a maker trailer or a motion-photo video (``trailing_data``).

Stream ``<asset>.<device>.frames`` (modality image), one row per good file:
``ts_ns, locator ("file"), uri, width int32, height int32, format ("jpeg"/"png"),
ts_source ("filename"/"exif"), bytes`` (binary, null unless ``inline``).
Meta: ``{"kind": "camera", "inline": bool}``.
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import BaseOptions, Connector, ItemSink, SourceContext, SourceItem
from connectors.imageheader import ImageHeader, exif_time_ns, read_header
from connectors.timeparse import FilenameTime, zone
from mmdata.errors import ConfigError, InputDataError

PIL_BOMB_PIXELS = 178_956_970  # 2 × PIL.Image.MAX_IMAGE_PIXELS: where Pillow refuses
SCHEMA = pa.schema(
    [("ts_ns", pa.int64()), ("locator", pa.string()), ("uri", pa.string()),
     ("width", pa.int32()), ("height", pa.int32()), ("format", pa.string()),
     ("ts_source", pa.string()), ("bytes", pa.binary())]
)  # fmt: skip
_ROW = pa.struct(list(SCHEMA))  # one row via a struct array: ~5x cheaper than pa.table(...)
_EXTENSIONS = {"jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"), "png": (".png",)}


class CameraTimestamp(BaseModel):
    """Where a frame's device time comes from (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filename: str | None = Field(None, description="strftime-like file-name time pattern.")
    regex: str | None = Field(None, description="Regex with named time groups (Y m d H M S f z).")
    exif: bool = Field(False, description="Use EXIF DateTimeOriginal (+SubSec, +Offset).")
    tz: str | None = Field(
        None,
        description="Zone for times written without one (file names default to UTC; EXIF "
        "without OffsetTimeOriginal and without tz is quarantined).",
    )
    fallback: Literal["exif", "filename"] | None = Field(
        None, description="Second source of time when the first one fails."
    )

    @model_validator(mode="after")
    def _check(self) -> CameraTimestamp:
        has_pattern = self.filename is not None or self.regex is not None
        if self.filename is not None and self.regex is not None:
            raise ValueError("either filename or regex, not both")
        if not has_pattern and not self.exif:
            raise ValueError("one of filename, regex or exif: true")
        if self.fallback == "filename" and not (self.exif and has_pattern):
            raise ValueError("fallback: filename only with exif: true and a filename/regex pattern")
        if self.fallback == "exif" and not has_pattern:
            raise ValueError("fallback: exif only with a filename/regex pattern to fall back from")
        if self.exif and has_pattern and self.fallback is None:
            raise ValueError(
                "a fallback saying which comes first when both exif and a pattern are set: "
                "fallback: exif (name first) or fallback: filename (EXIF first)"
            )
        _check_time_config(self.filename, self.regex, self.tz or "UTC")
        return self

    def order(self) -> tuple[str, ...]:
        """Sources of time to try, in order ("filename", "exif")."""
        has_pattern = self.filename is not None or self.regex is not None
        if has_pattern and self.fallback == "exif":
            return ("filename", "exif")
        if self.fallback == "filename":
            return ("exif", "filename")
        return ("filename",) if has_pattern else ("exif",)


def _check_time_config(filename: str | None, regex: str | None, tz: str) -> None:
    """Compile the pattern and zone now, so a bad one is a config error, not N quarantines."""
    try:
        zone(tz)
        if filename is not None:
            FilenameTime.compile(filename, tz)
        elif regex is not None:
            FilenameTime.compile(regex, tz, is_regex=True)
    except ConfigError as err:
        _, value, allowed = err.problems[0]
        raise ValueError(f"{allowed} (not {value!r})") from None


class CameraOptions(BaseOptions):
    """Options of the camera connector."""

    timestamp: CameraTimestamp = Field(
        default_factory=lambda: CameraTimestamp(exif=True),
        description="Where frame times come from: {filename|regex: ..., tz} or {exif: true}.",
    )
    inline: bool = Field(False, description="Store the file bytes in the `bytes` column.")
    max_pixels: int = Field(PIL_BOMB_PIXELS, gt=0, description="Larger images are quarantined.")


class CameraConnector(Connector):
    """Folders of JPEG / PNG frames, timed by file name or EXIF."""

    name: ClassVar[str] = "camera"
    Options: ClassVar[type[BaseOptions]] = CameraOptions
    modality = "image"
    patterns: ClassVar[tuple[str, ...]] = ("*.jpg", "*.jpeg", "*.png")

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        ts: CameraTimestamp = self.options.timestamp
        self._order = ts.order()
        self._tz: dt.tzinfo | None = zone(ts.tz) if ts.tz else None
        self._pattern: FilenameTime | None = None
        if ts.filename is not None:
            self._pattern = FilenameTime.compile(ts.filename, ts.tz or "UTC")
        elif ts.regex is not None:
            self._pattern = FilenameTime.compile(ts.regex, ts.tz or "UTC", is_regex=True)

    def read(self, item: SourceItem, sink: ItemSink) -> None:
        """Index one image file: header, time, one row (or raise to quarantine it)."""
        opts: CameraOptions = self.options
        sink.count_in(1)
        data = sink.read_bytes()
        header = read_header(data, exif="exif" in self._order)
        if header.pixels > opts.max_pixels:
            raise InputDataError(
                f"image claims {header.width}×{header.height} = {header.pixels:,} pixels, "
                f"over max_pixels={opts.max_pixels:,} (a decompression bomb or corrupt header)",
                hint="raise the source's max_pixels option if such frames are genuine",
            )
        ts_ns, ts_source = self.frame_time(item.uri, header)
        if not item.uri.lower().endswith(_EXTENSIONS[header.format]):
            sink.flag("extension_mismatch")
        if header.trailing_bytes:
            sink.flag("trailing_data")
        row = {
            "ts_ns": ts_ns, "locator": "file", "uri": item.uri,
            "width": header.width, "height": header.height, "format": header.format,
            "ts_source": ts_source, "bytes": data if opts.inline else None,
        }  # fmt: skip
        if ts_source != self._order[0]:
            sink.flag("timestamp_fallback")
        table = pa.Table.from_struct_array(pa.array([row], _ROW))
        sink.emit("frames", table, modality="image",
                  meta={"kind": "camera", "inline": opts.inline})  # fmt: skip

    def frame_time(self, uri: str, header: ImageHeader) -> tuple[int, str]:
        """Device time (int ns UTC) of a frame and where it came from ("filename"/"exif")."""
        failures: list[str] = []
        for source in self._order:
            try:
                if source == "filename":
                    assert self._pattern is not None
                    return self._pattern.parse(uri), source
                info = header.exif()
                if info is None:
                    raise InputDataError("the file has no EXIF block")
                return exif_time_ns(info, self._tz), source
            except InputDataError as err:
                failures.append(f"{source}: {err.message}")
        raise InputDataError(
            "no usable timestamp (" + "; ".join(failures) + ")",
            hint="check the source's timestamp option (file-name pattern, EXIF, tz)",
        )
