"""Image headers without decoding: size, format and EXIF capture time of JPEG and PNG.

A pure-Python reader of the few bytes that matter, so a folder of frames can be indexed
(dimensions, timestamps, checksums) without handing every file to an image library:

* **JPEG**: the marker segments after SOI are walked (fill bytes and standalone markers
  allowed) up to the first frame header (SOF0–SOF15 except DHT/JPG/DAC), which holds the
  height and width. An ``APP1`` ``Exif`` segment met on the way is kept for EXIF. The file
  must end with the EOI marker ``FFD9``; NUL padding after it is tolerated, other data
  after it (maker trailers, motion-photo videos) is measured as ``trailing_bytes``.
* **PNG**: the signature, the ``IHDR`` chunk (CRC checked) with width and height, then every
  chunk header up to ``IEND``; an ``eXIf`` chunk is kept for EXIF. Image data is not read.
* **EXIF** (TIFF structure, both byte orders): IFD0 Orientation (0x0112) and the pointer to
  the Exif IFD (0x8769), where DateTimeOriginal (0x9003), SubSecTimeOriginal (0x9291) and
  OffsetTimeOriginal (0x9011) live.

Anything malformed raises :class:`~mmdata.errors.InputDataError` naming what is wrong.

>>> import io
>>> from PIL import Image
>>> buf = io.BytesIO(); Image.new("RGB", (40, 30)).save(buf, "PNG")
>>> h = read_header(buf.getvalue()); (h.format, h.width, h.height)
('png', 40, 30)
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import zlib
from dataclasses import dataclass

from connectors.timeparse import parse_iso_ns
from mmdata.errors import InputDataError
from mmdata.timebase import NS_PER_S

JPEG_SOI = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# SOFn markers: C0–CF without C4 (DHT), C8 (JPG extension) and CC (DAC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone (no length field): TEM and RST0–RST7.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_EXIF_PREFIX = b"Exif\x00\x00"

_TAG_ORIENTATION = 0x0112
_TAG_EXIF_IFD = 0x8769
_TAG_DATETIME_ORIGINAL = 0x9003
_TAG_SUBSEC_ORIGINAL = 0x9291
_TAG_OFFSET_ORIGINAL = 0x9011
# Bytes per value of each TIFF field type (1 BYTE ... 13 IFD).
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_OFFSET = re.compile(r"[+-]\d{2}:?\d{2}|Z")
_SUBSEC = re.compile(r"\d*")
_EXIF_DATETIME = re.compile(r"(\d{4}):(\d{2}):(\d{2}) (\d{2}):(\d{2}):(\d{2})")


@dataclass(frozen=True)
class ExifInfo:
    """The EXIF fields this module reads (raw strings as written; None when absent)."""

    datetime_original: str | None = None
    subsec_original: str | None = None
    offset_original: str | None = None
    orientation: int | None = None


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an image says.

    ``exif_tiff`` is the raw EXIF TIFF block, None when the file has none or EXIF was not
    asked for; :meth:`exif` parses it on demand (so a damaged EXIF block only matters to
    callers that need it).
    """

    format: str  # "jpeg" | "png"
    width: int
    height: int
    exif_tiff: bytes | None = None
    trailing_bytes: int = 0  # data after the end of the image (JPEG EOI / PNG IEND)

    @property
    def pixels(self) -> int:
        """Width × height."""
        return self.width * self.height

    def exif(self) -> ExifInfo | None:
        """The parsed EXIF fields, or None without an EXIF block (raises if it is corrupt)."""
        return None if self.exif_tiff is None else parse_exif(self.exif_tiff)


def sniff_format(data: bytes) -> str | None:
    """'jpeg', 'png' or None, from the file signature.

    >>> sniff_format(b"\\x89PNG\\r\\n\\x1a\\n...."), sniff_format(b"GIF89a")
    ('png', None)
    """
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    return None


def read_header(data: bytes, *, exif: bool = True) -> ImageHeader:
    """Parse the header of a JPEG or PNG file held in ``data`` (the whole file).

    With ``exif=False`` the EXIF block is not kept. EXIF is never parsed here: see
    :meth:`ImageHeader.exif`.
    """
    fmt = sniff_format(data)
    if fmt == "jpeg":
        return _read_jpeg(data, exif)
    if fmt == "png":
        return _read_png(data, exif)
    head = data[:8].hex(" ")
    raise InputDataError(
        f"not a JPEG or PNG file (the first bytes are {head})",
        hint="only JPEG (FF D8 FF) and PNG files are read by this connector",
    )


def _read_jpeg(data: bytes, want_exif: bool) -> ImageHeader:
    pos = 2
    exif_span: tuple[int, int] | None = None
    while True:
        marker, body, end = _jpeg_segment(data, pos, "before the frame header (SOF)")
        if marker in _SOF:
            if end - body < 7:
                raise InputDataError(f"corrupt JPEG: frame header of only {end - body + 2} bytes")
            height = (data[body + 1] << 8) | data[body + 2]
            width = (data[body + 3] << 8) | data[body + 4]
            break
        if marker == 0xDA:
            raise InputDataError(f"corrupt JPEG: scan data (SOS) at byte {body - 4} before any "
                                 "frame header (SOF)")  # fmt: skip
        if (
            marker == 0xE1
            and want_exif
            and exif_span is None
            and data[body : body + 6] == _EXIF_PREFIX
        ):
            exif_span = (body + 6, end)
        pos = end
    trailing = 0 if _ends_with_eoi(data) else _bytes_after_eoi(data, end)
    if width == 0 or height == 0:
        raise InputDataError(
            f"JPEG frame header declares {width}×{height} pixels (a zero size is not supported)"
        )
    tiff = data[exif_span[0] : exif_span[1]] if exif_span else None
    return ImageHeader("jpeg", width, height, tiff, trailing)


def _jpeg_segment(data: bytes, pos: int, where: str) -> tuple[int, int, int]:
    """The marker at ``pos``, where its payload starts and where the segment ends."""
    n = len(data)
    if pos >= n or data[pos] != 0xFF:
        found = "the end of the file" if pos >= n else f"0x{data[pos]:02X}"
        raise InputDataError(f"corrupt JPEG: expected a marker at byte {pos} {where}, "
                             f"found {found}")  # fmt: skip
    while pos < n and data[pos] == 0xFF:  # fill bytes may precede a marker
        pos += 1
    if pos >= n:
        raise InputDataError(f"truncated JPEG: the file ends {where}")
    marker = data[pos]
    pos += 1
    if marker in _STANDALONE:
        return marker, pos, pos
    if marker in (0x00, 0xD8, 0xD9):
        what = {0x00: "a stuffed 0x00 byte", 0xD8: "a second SOI marker", 0xD9: "the EOI marker"}
        raise InputDataError(f"corrupt JPEG: {what[marker]} at byte {pos - 1}, {where}")
    if pos + 2 > n:
        raise InputDataError("truncated JPEG: the file ends inside a marker segment")
    seg_len = (data[pos] << 8) | data[pos + 1]
    end = pos + seg_len
    if seg_len < 2 or end > n:
        raise InputDataError(
            f"corrupt JPEG: marker 0x{marker:02X} at byte {pos - 1} declares "
            f"{seg_len} bytes, which run past the end of the file ({n} bytes)"
        )
    return marker, pos + 2, end


def _ends_with_eoi(data: bytes) -> bool:
    if data.endswith(b"\xff\xd9"):
        return True
    # Some writers pad files with NUL bytes after EOI; only the tail needs stripping.
    return data[-4096:].rstrip(b"\x00").endswith(b"\xff\xd9")


def _bytes_after_eoi(data: bytes, pos: int) -> int:
    """Bytes after the EOI of a file that does not end with one; raise if it has none.

    Some cameras append data after the image (maker trailers, motion-photo videos). Inside
    entropy-coded scan data every 0xFF byte is stuffed (FF 00) or a restart marker, so the
    first FF D9 after the first scan header is the image's real end.
    """
    cut = InputDataError(
        "truncated JPEG: no EOI marker (FF D9) at the end of the file",
        hint="the file was cut short while being written or copied",
    )
    try:
        while True:
            marker, _, end = _jpeg_segment(data, pos, "before the scan data (SOS)")
            pos = end
            if marker == 0xDA:
                break
    except InputDataError:
        raise cut from None
    eoi = data.find(b"\xff\xd9", pos)
    if eoi < 0:
        raise cut
    return len(data) - eoi - 2


def _read_png(data: bytes, want_exif: bool) -> ImageHeader:
    n = len(data)
    if n < 33 or data[12:16] != b"IHDR":
        raise InputDataError("corrupt PNG: the IHDR chunk does not follow the signature")
    if struct.unpack_from(">I", data, 8)[0] != 13:
        raise InputDataError("corrupt PNG: the IHDR chunk is not 13 bytes long")
    if zlib.crc32(data[12:29]) != struct.unpack_from(">I", data, 29)[0]:
        raise InputDataError("corrupt PNG: the IHDR chunk fails its CRC check")
    width, height = struct.unpack_from(">II", data, 16)
    exif_span: tuple[int, int] | None = None
    pos = 33
    while True:
        if pos + 12 > n:
            raise InputDataError(
                "truncated PNG: no IEND chunk (the file ends after "
                f"{n} bytes, inside or between chunks)",
                hint="the file was cut short while being written or copied",
            )
        length = struct.unpack_from(">I", data, pos)[0]
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            name = ctype.decode("latin-1")
            raise InputDataError(
                f"truncated PNG: chunk {name!r} at byte {pos} declares {length} bytes, "
                f"past the end of the file ({n} bytes)"
            )
        if ctype == b"IEND":
            break
        if ctype == b"eXIf" and want_exif and exif_span is None:
            exif_span = (pos + 8, pos + 8 + length)
        pos = end
    if width == 0 or height == 0:
        raise InputDataError(f"corrupt PNG: IHDR declares {width}×{height} pixels")
    tiff = None
    if exif_span:
        tiff = data[exif_span[0] : exif_span[1]]
        tiff = tiff.removeprefix(_EXIF_PREFIX)  # some writers keep JPEG's APP1 prefix
    return ImageHeader("png", width, height, tiff, n - end)


def parse_exif(tiff: bytes) -> ExifInfo:
    """The capture-time fields and orientation from an EXIF TIFF block ("II*" or "MM*")."""
    if tiff[:4] == b"II*\x00":
        end = "<"
    elif tiff[:4] == b"MM\x00*":
        end = ">"
    else:
        raise InputDataError("corrupt EXIF: the block does not start with a TIFF header")
    if len(tiff) < 8:
        raise InputDataError("corrupt EXIF: the TIFF header is cut short")
    ifd0 = _ifd_entries(tiff, struct.unpack_from(end + "I", tiff, 4)[0], end, "IFD0")
    orientation = _int_value(tiff, ifd0.get(_TAG_ORIENTATION), end)
    exif_ptr = _int_value(tiff, ifd0.get(_TAG_EXIF_IFD), end)
    if exif_ptr is None:
        return ExifInfo(orientation=orientation)
    sub = _ifd_entries(tiff, exif_ptr, end, "Exif IFD")
    return ExifInfo(
        datetime_original=_ascii_value(tiff, sub.get(_TAG_DATETIME_ORIGINAL), end),
        subsec_original=_ascii_value(tiff, sub.get(_TAG_SUBSEC_ORIGINAL), end),
        offset_original=_ascii_value(tiff, sub.get(_TAG_OFFSET_ORIGINAL), end),
        orientation=orientation,
    )


def _ifd_entries(tiff: bytes, offset: int, end: str, name: str) -> dict[int, int]:
    """Tag → byte position of its 12-byte entry, for one IFD."""
    if offset < 8 or offset + 2 > len(tiff):
        raise InputDataError(f"corrupt EXIF: {name} offset {offset} is outside the block")
    count = struct.unpack_from(end + "H", tiff, offset)[0]
    if offset + 2 + 12 * count > len(tiff):
        raise InputDataError(f"corrupt EXIF: {name} claims {count} entries past the block's end")
    out: dict[int, int] = {}
    fmt = end + "H"
    for i in range(count):
        pos = offset + 2 + 12 * i
        out.setdefault(struct.unpack_from(fmt, tiff, pos)[0], pos)
    return out


def _field(tiff: bytes, pos: int, end: str) -> tuple[int, int, int]:
    """Type, count and byte position of the values of the entry at ``pos``."""
    ftype, count = struct.unpack_from(end + "HI", tiff, pos + 2)
    size = _TYPE_SIZE.get(ftype, 1) * count
    if size <= 4:
        return ftype, count, pos + 8
    at = struct.unpack_from(end + "I", tiff, pos + 8)[0]
    if at + size > len(tiff):
        raise InputDataError("corrupt EXIF: a value points past the end of the block")
    return ftype, count, at


def _int_value(tiff: bytes, pos: int | None, end: str) -> int | None:
    if pos is None:
        return None
    ftype, count, at = _field(tiff, pos, end)
    if count < 1:
        return None
    if ftype == 3:
        return int(struct.unpack_from(end + "H", tiff, at)[0])
    if ftype in (4, 13):
        return int(struct.unpack_from(end + "I", tiff, at)[0])
    return None


def _ascii_value(tiff: bytes, pos: int | None, end: str) -> str | None:
    if pos is None:
        return None
    _, count, at = _field(tiff, pos, end)
    raw = tiff[at : at + count].split(b"\x00", 1)[0]
    text = raw.decode("ascii", errors="replace").strip()
    return text or None


def exif_time_ns(info: ExifInfo, default_tz: dt.tzinfo | None) -> int:
    """DateTimeOriginal + SubSecTimeOriginal + OffsetTimeOriginal as int ns UTC.

    Without OffsetTimeOriginal, ``default_tz`` applies; if that is None the time is refused
    (EXIF times are local and ambiguous without a zone).

    >>> exif_time_ns(ExifInfo("2026:03:01 17:00:00", "5", "+09:00"), None)
    1772352000500000000
    """
    if info.datetime_original is None:
        raise InputDataError(
            "no EXIF DateTimeOriginal in the file",
            hint="use a file-name timestamp (timestamp: {filename: ...}) for this source",
        )
    m = _EXIF_DATETIME.fullmatch(info.datetime_original)
    if m is None:
        raise InputDataError(
            f"EXIF DateTimeOriginal {info.datetime_original!r} is not 'YYYY:MM:DD HH:MM:SS'"
        )
    subsec = _SUBSEC.match(info.subsec_original or "")
    digits = subsec.group(0)[:9] if subsec else ""
    offset = info.offset_original
    if offset is not None and not _OFFSET.fullmatch(offset):
        raise InputDataError(f"EXIF OffsetTimeOriginal {offset!r} is not '+HH:MM'")
    if offset is None and default_tz is None:
        raise InputDataError(
            "EXIF DateTimeOriginal has no OffsetTimeOriginal and no time zone is configured",
            hint="set the source's timestamp.tz (e.g. 'Asia/Tokyo' or '+09:00')",
        )
    if offset is None:
        y, mo, d, h, mi, s = m.groups()
        iso = f"{y}-{mo}-{d}T{h}:{mi}:{s}" + (f".{digits}" if digits else "")
        return parse_iso_ns(iso, default_tz)
    # The common case (an explicit offset) by plain arithmetic: several times faster than
    # going through datetime and zone objects, and this runs once per frame.
    y, mo, d, h, mi, s = (int(g) for g in m.groups())
    try:
        days = dt.date(y, mo, d).toordinal() - _EPOCH_ORDINAL
    except ValueError as err:
        raise InputDataError(f"EXIF DateTimeOriginal {info.datetime_original!r}: {err}") from err
    if h > 23 or mi > 59 or s > 59:
        raise InputDataError(f"EXIF DateTimeOriginal {info.datetime_original!r} is not a time")
    off_s = 0
    if offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        off_s = sign * (int(offset[1:3]) * 3600 + int(offset[-2:]) * 60)
    secs = days * 86_400 + h * 3600 + mi * 60 + s - off_s
    return secs * NS_PER_S + (int(digits.ljust(9, "0")) if digits else 0)
