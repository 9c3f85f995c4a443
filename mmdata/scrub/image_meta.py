"""Metadata in images: what personal data it holds (findings), and stripping it losslessly.

JPEG and PNG are stripped *without re-encoding* (:func:`strip_jpeg`, :func:`strip_png`): pixel
data stays byte-for-byte. :func:`metadata_findings` reports GPS, author/owner fields, maker
notes, unreadable EXIF and whatever the text detector flags in free-text fields; see
:mod:`mmdata.scrub.image` for the whole policy.

>>> import io
>>> buf = io.BytesIO()
>>> Image.new("L", (4, 4)).save(buf, "PNG", pnginfo=None)
>>> strip_png(buf.getvalue())[1]
()
"""

from __future__ import annotations

import re
import warnings
import zlib
from typing import Any

from PIL import Image, IptcImagePlugin

from mmdata.errors import InputDataError
from mmdata.scrub.findings import Finding
from mmdata.scrub.keys import keyed_hash
from mmdata.scrub.ocr import TextDetector, lang_hint

__all__ = ["metadata_findings", "read_exif", "strip_jpeg", "strip_png"]


# ---------------------------------------------------------------- metadata: findings

_EXIF_AUTHOR = {0x013B: "Artist", 0x8298: "Copyright", 0x9C9D: "XPAuthor"}
_EXIF_TEXT = {0x010E: "ImageDescription", 0x9C9B: "XPTitle", 0x9C9C: "XPComment",
              0x9C9E: "XPKeywords", 0x9C9F: "XPSubject"}  # fmt: skip
_PNG_AUTHOR = {"author", "artist", "copyright", "creator", "owner"}
_PNG_HARMLESS = {"software", "creation time", "raw profile type exif", "xml:com.adobe.xmp"}
_XMP_AUTHOR = re.compile(
    r"<(dc:creator|dc:rights|xmpRights:Owner|photoshop:Author|aux:OwnerName|"
    r"exifEX:CameraOwnerName|Iptc4xmpCore:CreatorContactInfo)\b[^>]*>(.*?)</\1>|"
    r"\b(aux:OwnerName|exifEX:CameraOwnerName|photoshop:Author|xmpRights:Owner)=\"([^\"]*)\"",
    re.S,
)
_XMP_GPS = re.compile(r"exif:GPS(?:Latitude|Longitude)\b\s*(?:=\"([^\"]*)\"|>([^<]*)<)")
_TAG = re.compile(r"<[^>]+>")


def _text_value(value: object) -> str:
    """EXIF text in any of its encodings (ASCII, UserComment's 8-byte prefix, XP* UTF-16)."""
    if isinstance(value, str):
        return value.strip("\x00 ")
    if isinstance(value, tuple):  # XP* tags as a tuple of byte values
        value = bytes(v for v in value if isinstance(v, int) and 0 <= v < 256)
    if not isinstance(value, bytes):
        return str(value)
    prefix = value[:8]
    if prefix in (b"UNICODE\x00", b"ASCII\x00\x00\x00", b"JIS\x00\x00\x00\x00\x00"):
        body = value[8:]
        enc = {b"U": "utf-16", b"A": "ascii", b"J": "shift_jis"}[prefix[:1]]
        return body.decode(enc, "replace").strip("\x00 ")
    if len(value) >= 2 and value[1::2].count(0) >= len(value) // 4:
        return value.decode("utf-16-le", "replace").strip("\x00 ")
    return value.decode("utf-8", "replace").strip("\x00 ")


def read_exif(img: Image.Image) -> Image.Exif | None:
    """The parsed EXIF (empty when there is none); None when it is there but unreadable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns per corrupt tag
        try:
            exif = img.getexif()
            exif.get_ifd(0x8769)
            exif.get_ifd(0x8825)
        except Exception:  # a corrupt EXIF block: reported as EXIF_UNREADABLE, stripped
            return None
    return exif


def metadata_findings(
    img: Image.Image,
    exif: Image.Exif | None,
    fmt: str,
    detect: TextDetector,
    key: bytes,
    field: str,
) -> list[Finding]:
    """Personal fields in the metadata (all of it is stripped either way)."""
    fixed: list[tuple[str, str, str]] = []  # entity, where, original
    free: list[tuple[str, str]] = []  # where, text for the detector
    if exif is None:
        raw = img.info.get("exif", b"")
        fixed.append(("EXIF_UNREADABLE", "exif", raw.hex() if isinstance(raw, bytes) else ""))
        exif = Image.Exif()
    for tag, name in _EXIF_AUTHOR.items():
        if tag in exif and _text_value(exif[tag]):
            fixed.append(("EXIF_AUTHOR", f"exif.{name}", _text_value(exif[tag])))
    for tag, name in _EXIF_TEXT.items():
        if tag in exif:
            free.append((f"exif.{name}", _text_value(exif[tag])))
    sub = exif.get_ifd(0x8769)
    if sub.get(0xA430):
        fixed.append(("EXIF_OWNER", "exif.CameraOwnerName", _text_value(sub[0xA430])))
    if sub.get(0x927C):
        raw = sub[0x927C]
        fixed.append(("EXIF_MAKERNOTE", "exif.MakerNote",
                      raw.hex() if isinstance(raw, bytes) else str(raw)))  # fmt: skip
    if sub.get(0x9286):
        free.append(("exif.UserComment", _text_value(sub[0x9286])))
    gps = exif.get_ifd(0x8825)
    if gps:
        fixed.append(("EXIF_GPS", "exif.GPSInfo",
                      ";".join(f"{k}={gps[k]}" for k in sorted(gps))))  # fmt: skip
    texts = getattr(img, "text", {}) if fmt == "PNG" else {}
    xmp = img.info.get("xmp") or texts.get("XML:com.adobe.xmp") or b""
    xmp_text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else str(xmp)
    for m in _XMP_AUTHOR.finditer(xmp_text):
        value = _TAG.sub(" ", m.group(2) or m.group(4) or "").strip()
        if value:
            fixed.append(("XMP_AUTHOR", f"xmp.{m.group(1) or m.group(3)}", value))
    for m in _XMP_GPS.finditer(xmp_text):
        fixed.append(("XMP_GPS", "xmp.GPS", m.group(1) or m.group(2) or ""))
    for name, value in texts.items():
        low = name.lower()
        if low in _PNG_AUTHOR:
            fixed.append(("PNG_AUTHOR", f"png.{name}", str(value)))
        elif low not in _PNG_HARMLESS:
            free.append((f"png.{name}", str(value)))
    comment = img.info.get("comment")
    if comment:
        free.append(("comment", _text_value(comment)))
    if fmt == "JPEG":
        fixed_iptc, free_iptc = _iptc(img)
        fixed += fixed_iptc
        free += free_iptc
    findings = [
        Finding(modality="metadata", entity=entity, score=1.0, recognizer=f"metadata:{where}",
                operator="strip", original_hash=keyed_hash(key, value), field=f"{field}.{where}")
        for entity, where, value in fixed
    ]  # fmt: skip
    free = [(w, t) for w, t in free if t.strip()]
    if free:
        results = [detect(t, lang_hint(t)) for _, t in free]
        for (where, text), found in zip(free, results, strict=True):
            findings += [
                Finding(modality="metadata", entity=f.entity, score=f.score,
                        recognizer=f.recognizer, operator="strip",
                        original_hash=keyed_hash(key, text[f.start or 0 : f.end]),
                        start=f.start, end=f.end, field=f"{field}.{where}", model=f.model)
                for f in found
            ]  # fmt: skip
    return findings


def _iptc(img: Any) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    try:
        info = IptcImagePlugin.getiptcinfo(img) or {}
    except Exception:  # malformed IPTC: it is stripped anyway; nothing more to report
        return [], []
    fixed, free = [], []
    for (rec, ds), raw in info.items():
        values = raw if isinstance(raw, list) else [raw]
        text = " ".join(_text_value(v) for v in values).strip()
        if rec == 2 and ds in (80, 116, 122) and text:  # By-line, Copyright, Writer
            fixed.append(("IPTC_AUTHOR", f"iptc.2:{ds}", text))
        elif rec == 2 and ds in (105, 120) and text:  # Headline, Caption
            free.append((f"iptc.2:{ds}", text))
    return fixed, free


# ---------------------------------------------------------------- metadata: stripping

#: APPn segments kept, rebuilt from their fixed-size fields only (so a corrupt length cannot
#: smuggle bytes through): JFIF version/density (thumbnail dropped), Adobe colour transform.
_APP_KEEP = {0xE0: (b"JFIF\x00", 12, b"\x00\x00"), 0xEE: (b"Adobe", 12, b"")}
# fmt: off
_APP_NAMES = ((b"Exif\x00", "exif"), (b"http://ns.adobe.com/xap/1.0/", "xmp"),
              (b"http://ns.adobe.com/xmp/extension/", "xmp"), (b"ICC_PROFILE\x00", "icc"),
              (b"MPF\x00", "mpf"), (b"Photoshop 3.0", "iptc"), (b"JFXX\x00", "jfif-thumbnail"))
# fmt: on
_HIDDEN = tuple(p for p, n in _APP_NAMES if n != "jfif-thumbnail")  # never inside kept segments


def _segment_kind(marker: int, payload: bytes) -> str | None:
    """None to keep the segment, else the name of the metadata it holds."""
    if marker == 0xFE:
        return "comment"
    if not 0xE0 <= marker <= 0xEF:
        return None
    return next((n for p, n in _APP_NAMES if payload.startswith(p)), f"app{marker - 0xE0}")


def _kept_app(marker: int, payload: bytes) -> bytes | None:
    spec = _APP_KEEP.get(marker)
    if spec is None or not payload.startswith(spec[0]) or len(payload) < spec[1]:
        return None
    body = payload[: spec[1]] + spec[2]
    return bytes((0xFF, marker)) + (len(body) + 2).to_bytes(2, "big") + body


def _scan_end(data: bytes, i: int) -> int:
    """Where the entropy-coded data from ``i`` ends: the next marker (FF00, RSTn are data)."""
    while True:
        i = data.find(b"\xff", i)
        if i < 0 or i + 1 >= len(data):
            raise InputDataError("truncated JPEG (no end-of-image marker)")
        nxt = data[i + 1]
        if nxt == 0xFF:
            i += 1
        elif nxt == 0 or 0xD0 <= nxt <= 0xD7:
            i += 2
        else:
            return i


def strip_jpeg(data: bytes) -> tuple[bytes, tuple[str, ...]]:
    """A JPEG without metadata segments or trailing bytes; the scan data is copied as is.

    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO()
    >>> Image.new("RGB", (8, 8)).save(buf, "JPEG", comment=b"J. Smith")
    >>> out, kinds = strip_jpeg(buf.getvalue())
    >>> kinds, b"Smith" in out
    (('comment',), False)
    """
    n = len(data)
    if data[:2] != b"\xff\xd8":
        raise InputDataError("not a JPEG (no SOI marker)")
    out, kinds, i, scanned = [b"\xff\xd8"], [], 2, False
    while True:
        while i < n and data[i] == 0xFF and i + 1 < n and data[i + 1] == 0xFF:
            i += 1  # fill bytes
        if i < n and data[i] != 0xFF:  # junk between segments: decoders skip it, so do we
            j = data.find(b"\xff", i)
            i = n if j < 0 else j
            if "extraneous" not in kinds:
                kinds.append("extraneous")
            continue
        if i + 2 > n:
            raise InputDataError("truncated JPEG (no end-of-image marker)")
        marker = data[i + 1]
        if marker == 0xD9:  # EOI
            out.append(b"\xff\xd9")
            if i + 2 < n:
                kinds.append("trailer")
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out.append(data[i : i + 2])
            i += 2
            continue
        if i + 4 > n:
            raise InputDataError("truncated JPEG (segment header cut off)")
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if end > n:
            raise InputDataError("truncated JPEG (segment cut off)")
        payload = data[i + 4 : end]
        kept = _kept_app(marker, payload)
        kind = _segment_kind(marker, payload) if kept is None else None
        if kept is not None:
            out.append(kept)
            if kept[4:] != payload:
                kind = f"app{marker - 0xE0}-extra"
        elif kind is None:
            out.append(data[i:end])
        if kind is not None and kind not in kinds:
            kinds.append(kind)
        i = end
        if marker == 0xDA and not scanned:
            scanned = True
            header = b"".join(out)
            if any(sig in header for sig in _HIDDEN):
                raise InputDataError("corrupt JPEG: metadata inside a pixel-data segment")
        if marker == 0xDA:
            j = _scan_end(data, i)
            out.append(data[i:j])
            i = j
    return b"".join(out), tuple(kinds)


_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB",
             b"sBIT", b"pHYs", b"bKGD"}  # fmt: skip
_PNG_NAMES = {b"tEXt": "text", b"zTXt": "text", b"iTXt": "text", b"eXIf": "exif",
              b"iCCP": "icc", b"tIME": "time"}  # fmt: skip


def strip_png(data: bytes) -> tuple[bytes, tuple[str, ...]]:
    """A PNG without ancillary metadata chunks or trailing bytes; pixel chunks copied as is.

    >>> import io
    >>> from PIL import Image, PngImagePlugin
    >>> info = PngImagePlugin.PngInfo()
    >>> info.add_text("Author", "J. Smith")
    >>> buf = io.BytesIO()
    >>> Image.new("L", (8, 8)).save(buf, "PNG", pnginfo=info)
    >>> strip_png(buf.getvalue())[1]
    ('text',)
    """
    if not data.startswith(_PNG_SIG):
        raise InputDataError("not a PNG (bad signature)")
    out, kinds, i, n = [_PNG_SIG], [], len(_PNG_SIG), len(data)
    while True:
        if i + 12 > n:
            raise InputDataError("truncated PNG (no IEND chunk)")
        length = int.from_bytes(data[i : i + 4], "big")
        ctype = data[i + 4 : i + 8]
        end = i + 12 + length
        if end > n:
            raise InputDataError(f"truncated PNG (chunk {ctype!r} cut off)")
        if ctype in _PNG_KEEP:
            if zlib.crc32(data[i + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
                raise InputDataError(f"corrupt PNG (bad CRC in chunk {ctype!r})")
            out.append(data[i:end])
        elif ctype[:1].isupper():
            raise InputDataError(f"PNG with an unknown critical chunk {ctype!r}")
        else:
            kind = _PNG_NAMES.get(ctype, ctype.decode("latin-1"))
            if ctype == b"iTXt" and data[i + 8 : end].startswith(b"XML:com.adobe.xmp"):
                kind = "xmp"
            if kind not in kinds:
                kinds.append(kind)
        i = end
        if ctype == b"IEND":
            if i < n:
                kinds.append("trailer")
            break
    return b"".join(out), tuple(kinds)
