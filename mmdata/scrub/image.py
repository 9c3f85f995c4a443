"""PII in images: faces blurred or boxed, PII text found by OCR boxed, metadata stripped.

:func:`scrub_image` takes one encoded image (JPEG, PNG, or anything Pillow reads) and returns
an :class:`ImageResult`: the bytes to write, one :class:`~mmdata.scrub.findings.Finding` per
face / PII text span / personal metadata field, and whether the bytes changed.

* **Faces**: OpenCV Haar cascades shipped with ``opencv-python`` (frontal, plus profile in
  both directions unless ``profile_faces: false``; no model download). Each face box, grown
  by ``face_margin``, is pixelated to ~6 blocks across and Gaussian-blurred (``faces: blur``)
  or filled black (``faces: box``). The profile cascade runs at a coarser scale step (1.2
  instead of 1.1: half its cost). Haar gives no probability: ``score`` is
  ``n / (n + face_min_neighbors)`` for ``n`` overlapping detections (0.5 at the threshold).
* **Text**: :mod:`mmdata.scrub.ocr` reads text lines with tesseract (``ocr`` languages);
  every line goes to the ``detect`` callable (the text scrubber, see :data:`TextDetector`)
  with a language hint from its script (``"ja"`` for kana/kanji, else ``"en"``). Each PII
  span is mapped to the *whole* OCR words it touches; their union, padded by
  ``text_pad_px + text_pad_frac * line height`` (plus ``cjk_pad_chars`` character widths
  left and right on Japanese lines, whose boxes tesseract places up to a character off), is
  filled black (operator ``redact``). Spans the detector marks ``keep`` are reported, not
  boxed.
* **Metadata**: removed from every image written. JPEG and PNG are stripped *without
  re-encoding*: APPn segments other than JFIF and Adobe (colour transform), COM, and bytes
  after EOI go (EXIF with its thumbnail, XMP, ICC profile, IPTC, MPF secondary images); for PNG
  every ancillary chunk except tRNS/gAMA/cHRM/sRGB/sBIT/pHYs/bKGD goes (text, eXIf, iCCP,
  tIME). Pixel data stays byte-for-byte. Other formats are re-encoded as PNG (pixels kept).
  Without an ICC profile, colours are read as sRGB.
* **Findings for metadata** (modality ``metadata``, operator ``strip``): GPS (``EXIF_GPS``,
  ``XMP_GPS``), author/owner fields (``EXIF_AUTHOR`` for Artist/Copyright/XPAuthor,
  ``EXIF_OWNER`` for CameraOwnerName, ``XMP_AUTHOR``, ``IPTC_AUTHOR``, ``PNG_AUTHOR``), maker
  notes (``EXIF_MAKERNOTE``: opaque vendor data), an EXIF block Pillow cannot parse
  (``EXIF_UNREADABLE``), and whatever ``detect`` flags in free-text fields
  (ImageDescription, UserComment, XP*, JPEG comments, PNG text, IPTC captions).
  Camera make/model, software and capture times are stripped *silently*: they are not
  personal (the capture time already lives in the record as ``ts_ns``). ``stripped`` lists
  what went (``exif``, ``xmp``, ``icc``, ...) so a stage can count it.
* **When the bytes stay the same**: ``changed`` is False (and ``data is`` the input) only
  for a JPEG or PNG with no face, no PII text, no orientation to apply and no metadata at all.
  A frame carrying only harmless EXIF (the synthetic factory's DateTimeOriginal, Make, ...)
  has no finding, but it is rewritten without its metadata: same pixel data, ``changed``
  True. Redacted JPEGs are re-encoded with the source's quantization tables and subsampling.
* **Orientation** is *applied*: detection needs upright faces and text, and viewers and
  Hugging Face ``datasets`` show the image transposed anyway. An image with EXIF Orientation
  2-8 is re-encoded upright (``width``/``height`` are the upright size; the record's frame
  size must follow). Finding boxes are in the output's pixels.
* **Bad input** (no bytes, not an image, truncated, more than ``max_pixels``, animated or
  multi-page — a multi-picture JPEG keeps its first picture —, metadata hidden inside a
  pixel-data segment, a tesseract failure or timeout) raises :class:`~mmdata.errors.InputDataError`
  for the stage to quarantine; a missing tesseract, language or cascade raises
  :class:`~mmdata.errors.DependencyError`.

>>> import io
>>> from PIL import Image
>>> from mmdata.config import ImageScrubConfig
>>> buf = io.BytesIO()
>>> Image.new("RGB", (64, 48), (200, 200, 200)).save(buf, "PNG")
>>> res = scrub_image(buf.getvalue(), ImageScrubConfig(), lambda t, lang: [], b"k" * 32)
>>> res.changed, res.findings, res.data == buf.getvalue()
(False, [], True)
"""

from __future__ import annotations

import functools
import io
import re
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image, IptcImagePlugin, JpegImagePlugin

from mmdata.config import ImageScrubConfig
from mmdata.errors import DependencyError, InputDataError
from mmdata.scrub.findings import Finding
from mmdata.scrub.keys import keyed_hash
from mmdata.scrub.ocr import Box, TextDetector, lang_hint, text_pii

__all__ = ["ImageResult", "TextDetector", "detect_faces", "scrub_image", "strip_jpeg", "strip_png"]

_T = Image.Transpose
#: EXIF Orientation → the transpose that makes the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE,
              6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90}  # fmt: skip


@dataclass(frozen=True)
class ImageResult:
    """What :func:`scrub_image` decided for one image."""

    data: bytes  # the bytes to write; the input object itself when ``changed`` is False
    findings: list[Finding]
    changed: bool
    format: str  # "JPEG" or "PNG" (the format of ``data``)
    width: int
    height: int
    stripped: tuple[str, ...] = field(default=())  # metadata kinds removed


def scrub_image(
    data: bytes, cfg: ImageScrubConfig, detect: TextDetector, key: bytes, *, field: str = "image"
) -> ImageResult:
    """Scrub one encoded image; ``field`` names it in findings (``"frames[3]"``).

    Raises :class:`InputDataError` for an image to quarantine (see the module docstring).

    >>> import io
    >>> from PIL import Image
    >>> from mmdata.config import ImageScrubConfig
    >>> buf = io.BytesIO()
    >>> exif = Image.Exif()
    >>> exif[0x013B] = "Jane Doe"  # Artist
    >>> Image.new("RGB", (64, 48)).save(buf, "JPEG", exif=exif)
    >>> res = scrub_image(buf.getvalue(), ImageScrubConfig(ocr=[]), lambda t, lang: [],
    ...                   b"k" * 32)
    >>> res.changed, [f.entity for f in res.findings], res.stripped
    (True, ['EXIF_AUTHOR'], ('exif',))
    """
    img = _open(data, cfg)
    fmt = "JPEG" if img.format in ("JPEG", "MPO") else img.format or "?"
    exif = _read_exif(img)
    findings = _metadata_findings(img, exif, fmt, detect, key, field)
    if fmt == "JPEG":
        stripped_data, kinds = strip_jpeg(data)
    elif fmt == "PNG":
        stripped_data, kinds = strip_png(data)
    else:
        stripped_data, kinds = None, tuple(k for k in ("exif", "icc_profile", "xmp", "comment")
                                           if k in img.info)  # fmt: skip
    orientation = exif.get(0x0112) if exif is not None else None
    upright = img.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else img
    arr = _array(upright)
    gray = _gray(arr)
    faces = detect_faces(gray, cfg) if cfg.faces != "off" else []
    boxes: list[Box] = []
    if cfg.ocr:
        text_findings, boxes = text_pii(gray, cfg, detect, key, field)
        findings += text_findings
    for box, score, name in faces:
        findings.append(Finding(
            modality="image", entity="FACE", score=score, recognizer=f"opencv-haar-{name}",
            operator=cfg.faces, original_hash="", bbox=box, field=field,
            model=f"opencv {cv2.__version__} haarcascade_{name}.xml",
        ))  # fmt: skip
    height, width = arr.shape[:2]
    if not faces and not boxes and upright is img and stripped_data is not None:
        if not kinds:
            return ImageResult(data, findings, False, fmt, width, height)
        return ImageResult(stripped_data, findings, True, fmt, width, height, kinds)
    for box, _, _ in faces:
        (_blur if cfg.faces == "blur" else _fill)(arr, box)
    for box in boxes:
        _fill(arr, box)
    out, out_fmt = _encode(arr, img, fmt)
    return ImageResult(out, findings, True, out_fmt, width, height, kinds)


# ---------------------------------------------------------------- decoding and encoding


def _open(data: bytes, cfg: ImageScrubConfig) -> Image.Image:
    if not data:
        raise InputDataError("empty image (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's per-file warnings; errors still raise
        try:
            return _decode(data, cfg)
        except InputDataError:
            raise
        except Image.DecompressionBombError as err:
            raise InputDataError(f"image refused as a decompression bomb: {err}"[:300]) from None
        except Exception as err:  # any decoder failure is this item's problem, not the stage's
            msg = f"image does not decode: {type(err).__name__}: {err}"
            raise InputDataError(msg[:300]) from None


def _decode(data: bytes, cfg: ImageScrubConfig) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if w * h > cfg.max_pixels:
        raise InputDataError(
            f"image claims {w}×{h} = {w * h:,} pixels, over max_pixels={cfg.max_pixels:,} "
            "(a decompression bomb or a corrupt header)",
            hint="raise scrub.image.max_pixels if such images are genuine",
        )
    frames = int(getattr(img, "n_frames", 1))
    if frames > 1 and img.format != "MPO":
        raise InputDataError(
            f"{img.format} image with {frames} frames: only still images are scrubbed"
        )
    img.load()
    return img


def _array(img: Image.Image) -> np.ndarray:
    """Pixels to edit: uint8 L / RGB / RGBA, or uint16 for 16-bit grayscale."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img, dtype=np.uint16).copy()
    if mode in ("L", "RGB", "RGBA"):
        return np.asarray(img).copy()
    has_alpha = mode in ("LA", "PA", "La", "RGBa") or "transparency" in img.info
    target = "RGBA" if has_alpha else "L" if mode in ("1", "I", "F") else "RGB"
    return np.asarray(img.convert(target)).copy()


def _gray(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if arr.ndim == 2:
        return arr
    return cv2.cvtColor(arr, cv2.COLOR_RGBA2GRAY if arr.shape[2] == 4 else cv2.COLOR_RGB2GRAY)


def _encode(arr: np.ndarray, src: Image.Image, fmt: str) -> tuple[bytes, str]:
    """Encode edited pixels with no metadata: JPEG with the source's tables, else PNG."""
    img = Image.fromarray(arr)
    buf = io.BytesIO()
    if fmt == "JPEG" and img.mode in ("L", "RGB"):
        qtables = getattr(src, "quantization", None)
        sampling = JpegImagePlugin.get_sampling(src) if src.mode == "RGB" else -1
        kwargs: dict[str, object] = {"qtables": qtables} if qtables else {"quality": 95}
        if sampling != -1:
            kwargs["subsampling"] = sampling
        img.save(buf, "JPEG", **kwargs)
        return strip_jpeg(buf.getvalue())[0], "JPEG"
    img.save(buf, "PNG")
    return strip_png(buf.getvalue())[0], "PNG"


# ---------------------------------------------------------------- faces


@functools.lru_cache(maxsize=4)
def _cascade(name: str) -> cv2.CascadeClassifier:
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    clf = cv2.CascadeClassifier(f"{folder}haarcascade_{name}.xml") if folder else None
    if clf is None or clf.empty():
        raise DependencyError(
            f"OpenCV's haarcascade_{name}.xml is not available (cv2 {cv2.__version__})",
            hint="install opencv-python(-headless) 4.x, which ships cv2.data.haarcascades",
        )
    return clf


def detect_faces(gray: np.ndarray, cfg: ImageScrubConfig) -> list[tuple[Box, float, str]]:
    """Faces in an 8-bit grayscale image: ``(box grown by face_margin, score, cascade)``.

    >>> from mmdata.config import ImageScrubConfig
    >>> detect_faces(np.full((120, 160), 128, np.uint8), ImageScrubConfig())
    []
    """
    eq = cv2.equalizeHist(gray)
    h_img, w_img = gray.shape[:2]
    runs = [("frontalface_default", False, 1.1)]
    if cfg.profile_faces:  # a coarser scale step halves the profile cascade's cost
        runs += [("profileface", False, 1.2), ("profileface", True, 1.2)]
    found: list[tuple[Box, float, str]] = []
    for name, flip, step in runs:
        view = np.ascontiguousarray(eq[:, ::-1]) if flip else eq
        try:
            rects, counts = _cascade(name).detectMultiScale2(
                view, scaleFactor=step, minNeighbors=cfg.face_min_neighbors,
                minSize=(cfg.face_min_size, cfg.face_min_size),
            )  # fmt: skip
        except cv2.error as err:
            raise InputDataError(f"face detection failed on this image: {err}") from None
        for (x, y, w, h), n in zip(rects, counts, strict=True):
            x = w_img - x - w if flip else x
            m = cfg.face_margin
            box = (max(0, int(x - m * w)), max(0, int(y - m * h)),
                   min(w_img, int(x + w + m * w)), min(h_img, int(y + h + m * h)))  # fmt: skip
            found.append((box, round(float(n) / (float(n) + cfg.face_min_neighbors), 3), name))
    kept: list[tuple[Box, float, str]] = []
    for cand in sorted(found, key=lambda f: -f[1]):  # one finding per face
        cx, cy = (cand[0][0] + cand[0][2]) / 2, (cand[0][1] + cand[0][3]) / 2
        if not any(k[0][0] <= cx < k[0][2] and k[0][1] <= cy < k[0][3] for k in kept):
            kept.append(cand)
    return kept


def _blur(arr: np.ndarray, box: Box) -> None:
    """Pixelate to ~6 blocks across, then blur the block edges: nothing of a face survives."""
    x0, y0, x1, y1 = box
    roi = arr[y0:y1, x0:x1]
    h, w = roi.shape[:2]
    if h < 2 or w < 2:
        return _fill(arr, box)
    block = max(2.0, max(w, h) / 6.0)
    small = cv2.resize(roi, (max(1, round(w / block)), max(1, round(h / block))),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    arr[y0:y1, x0:x1] = cv2.GaussianBlur(big, (0, 0), sigmaX=block / 2).reshape(roi.shape)
    return None


def _fill(arr: np.ndarray, box: Box) -> None:
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = 0
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr[y0:y1, x0:x1, 3] = 255  # an opaque box, not a transparent hole


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


def _read_exif(img: Image.Image) -> Image.Exif | None:
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


def _metadata_findings(
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
