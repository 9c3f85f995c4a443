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
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, JpegImagePlugin

from mmdata.config import ImageScrubConfig
from mmdata.errors import DependencyError, InputDataError
from mmdata.scrub.findings import Finding
from mmdata.scrub.image_meta import metadata_findings, read_exif, strip_jpeg, strip_png
from mmdata.scrub.ocr import Box, TextDetector, text_pii_batch

__all__ = [
    "ImageResult",
    "TextDetector",
    "detect_faces",
    "scrub_image",
    "scrub_images",
    "strip_jpeg",
    "strip_png",
]

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
    pixels_changed: bool = False  # faces/text redacted or orientation applied


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
    out = scrub_images([data], cfg, detect, key, fields=[field])[0]
    if isinstance(out, InputDataError):
        raise out
    return out


def scrub_images(
    datas: list[bytes],
    cfg: ImageScrubConfig,
    detect: TextDetector,
    key: bytes,
    *,
    fields: list[str] | None = None,
) -> list[ImageResult | InputDataError]:
    """:func:`scrub_image` for many images, their text read in shared tesseract calls.

    Each entry is the image's result, or the :class:`InputDataError` that quarantines it
    (one bad image never fails the others). The detectors are the same as one call per
    image; tesseract reads each line in the context of a shared mosaic, so a borderline read
    can differ (measured on 74 factory frames: same name tags found, 5 frames differed — a
    box a pixel off, or a stray read on an ordinary frame).

    >>> import io
    >>> from PIL import Image
    >>> from mmdata.config import ImageScrubConfig
    >>> buf = io.BytesIO()
    >>> Image.new("L", (32, 32), 128).save(buf, "PNG")
    >>> out = scrub_images([buf.getvalue(), b"junk"], ImageScrubConfig(),
    ...                    lambda t, lang: [], b"k" * 32)
    >>> out[0].changed, type(out[1]).__name__
    (False, 'InputDataError')
    """
    fields = fields or ["image"] * len(datas)
    prepared: list[_Prepared | InputDataError] = []
    for data, name in zip(datas, fields, strict=True):
        try:
            prepared.append(_prepare(data, cfg, detect, key, name))
        except InputDataError as err:
            prepared.append(err)
    ok = [p for p in prepared if isinstance(p, _Prepared)]
    texts: list[tuple[list[Finding], list[Box]] | InputDataError] = [([], []) for _ in ok]
    if cfg.ocr and ok:
        texts = text_pii_batch([p.gray for p in ok], cfg, detect, key, [p.field for p in ok])
    done = iter(zip(ok, texts, strict=True))
    out: list[ImageResult | InputDataError] = []
    for p in prepared:
        if isinstance(p, InputDataError):
            out.append(p)
            continue
        _, text = next(done)
        out.append(text if isinstance(text, InputDataError) else _finish(p, cfg, *text))
    return out


@dataclass
class _Prepared:
    """An image decoded, metadata read and stripped, faces found: all but its text."""

    data: bytes
    img: Image.Image
    upright: Image.Image
    fmt: str
    arr: np.ndarray
    gray: np.ndarray
    findings: list[Finding]
    faces: list[tuple[Box, float, str]]
    stripped_data: bytes | None
    kinds: tuple[str, ...]
    field: str


def _prepare(data: bytes, cfg: ImageScrubConfig, detect: TextDetector, key: bytes,
             field: str) -> _Prepared:  # fmt: skip
    img = _open(data, cfg)
    fmt = "JPEG" if img.format in ("JPEG", "MPO") else img.format or "?"
    exif = read_exif(img)
    findings = metadata_findings(img, exif, fmt, detect, key, field)
    stripped_data: bytes | None
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
    return _Prepared(data, img, upright, fmt, arr, gray, findings, faces, stripped_data,
                     kinds, field)  # fmt: skip


def _finish(p: _Prepared, cfg: ImageScrubConfig, text_findings: list[Finding],
            boxes: list[Box]) -> ImageResult:  # fmt: skip
    findings = p.findings + text_findings
    for box, score, name in p.faces:
        findings.append(Finding(
            modality="image", entity="FACE", score=score, recognizer=f"opencv-haar-{name}",
            operator=cfg.faces, original_hash="", bbox=box, field=p.field,
            model=f"opencv {cv2.__version__} haarcascade_{name}.xml",
        ))  # fmt: skip
    arr, fmt = p.arr, p.fmt
    height, width = arr.shape[:2]
    if not p.faces and not boxes and p.upright is p.img and p.stripped_data is not None:
        if not p.kinds:
            return ImageResult(p.data, findings, False, fmt, width, height)
        return ImageResult(p.stripped_data, findings, True, fmt, width, height, p.kinds)
    for box, _, _ in p.faces:
        (_blur if cfg.faces == "blur" else _fill)(arr, box)
    for box in boxes:
        _fill(arr, box)
    out, out_fmt = _encode(arr, p.img, fmt)
    return ImageResult(out, findings, True, out_fmt, width, height, p.kinds, pixels_changed=True)


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
