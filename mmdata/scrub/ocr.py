"""Text in camera frames: find text lines, read them with tesseract in one call, map boxes back.

Tesseract on a whole scene frame misses most scene text (page segmentation treats a badge on
a worker's chest as a picture), and every call starts a tesseract process (~0.15 s with
``eng``, ~0.3 s with ``eng+jpn``). So:

1. **Line proposals.** MSER regions of either polarity that look like characters (6 px up
   to 0.6 of the frame tall, at most 2.2x as wide as tall) are chained left to right into
   lines (similar height, centres within half a height, gaps under two heights). Frames with
   no line of two or more characters skip OCR entirely.
2. **One mosaic, one tesseract call.** Each line is cropped with a small margin, scaled so
   its characters are ~28 px tall, turned dark-on-light (Otsu majority = background),
   contrast-stretched (one global threshold cannot suit every crop) and stacked on a white
   canvas; tesseract reads the mosaic as one block (``--psm 6``).
3. **Back to the frame.** Every word lands in one crop's slot; its box is mapped back to
   frame pixels, and words are grouped per (slot, block, paragraph, line) into
   :class:`OcrLine` objects whose ``text`` joins words with a space, except between two
   Japanese characters (tesseract ``jpn`` splits words between characters).

4. **PII.** :func:`text_pii` passes every line to the text detector and maps each PII span
   to the whole words it touches, padded (:func:`padded_box`): Japanese word boxes can be
   off by about a character, so Japanese lines get a character of extra padding.

Vertical Japanese text is not proposed as lines.

>>> import numpy as np
>>> line = OcrLine.from_words([OcrWord("J.", (10, 5, 24, 20), 90.0),
...                            OcrWord("SMITH", (30, 5, 80, 20), 91.0)])
>>> line.text, line.box
('J. SMITH', (10, 5, 80, 20))
>>> [w.text for w in line.words_in(3, 8)]
['SMITH']
>>> find_text_lines(np.full((60, 80), 255, np.uint8))  # a blank frame: nothing to read
[]
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from mmdata.config import ImageScrubConfig
from mmdata.errors import DependencyError, InputDataError
from mmdata.scrub.findings import Finding
from mmdata.scrub.keys import keyed_hash

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive

#: The text detector: ``detect(text, lang)`` returns the text findings in ``text`` (char spans
#: ``start``/``end`` into it, ``entity``, ``score``, ``recognizer``, ``operator``, ``model``);
#: ``lang`` is a hint ("en"/"ja") or None. The scrub stage passes the text scrubber's.
TextDetector = Callable[[str, str | None], list[Finding]]

#: Japanese scripts (kana, CJK ideographs, half-width katakana, CJK punctuation).
_JA = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")
_MIN_CHAR_PX = 6
_MAX_CHAR_ASPECT = 2.2  # width / height of one character region
_MOSAIC_CHAR_PX = 28  # character height tesseract reads best at (measured: 28 > 24, 32, 36)
_MOSAIC_GAP = 24
_CROP_MARGIN = 0.1  # of the line height; more picks up badge borders as "|" or "I"


def has_japanese(text: str) -> bool:
    """True when ``text`` holds kana or kanji.

    >>> has_japanese("担当 山田"), has_japanese("J. SMITH")
    (True, False)
    """
    return _JA.search(text) is not None


@dataclass(frozen=True)
class OcrWord:
    """One word tesseract read: its text, its box in frame pixels and its confidence (0-100)."""

    text: str
    box: Box
    conf: float


@dataclass(frozen=True)
class OcrLine:
    """Words on one line, left to right; ``spans[i]`` is word ``i``'s char span in ``text``."""

    words: tuple[OcrWord, ...]
    text: str
    spans: tuple[tuple[int, int], ...]
    box: Box

    @classmethod
    def from_words(cls, words: list[OcrWord]) -> OcrLine:
        """Join words left to right (no space between two Japanese characters)."""
        ordered = sorted(words, key=lambda w: w.box[0])
        text, spans = "", []
        for w in ordered:
            if text and not (has_japanese(text[-1]) and has_japanese(w.text[0])):
                text += " "
            spans.append((len(text), len(text) + len(w.text)))
            text += w.text
        box = (
            min(w.box[0] for w in ordered),
            min(w.box[1] for w in ordered),
            max(w.box[2] for w in ordered),
            max(w.box[3] for w in ordered),
        )
        return cls(tuple(ordered), text, tuple(spans), box)

    @property
    def height(self) -> int:
        """Line height in pixels."""
        return self.box[3] - self.box[1]

    def words_in(self, start: int, end: int) -> list[OcrWord]:
        """The words that overlap the character span ``[start, end)`` (whole words)."""
        return [
            w for w, (s, e) in zip(self.words, self.spans, strict=True) if s < end and start < e
        ]


def find_text_lines(gray: np.ndarray) -> list[Box]:
    """Boxes of likely text lines in an 8-bit grayscale frame (either polarity).

    >>> img = np.full((40, 120), 230, np.uint8)
    >>> _ = cv2.putText(img, "AB 12", (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 20, 2)
    >>> len(find_text_lines(img))
    1
    """
    h_img, w_img = gray.shape[:2]
    if min(h_img, w_img) < _MIN_CHAR_PX:  # no room for a character (and MSER needs 3x3)
        return []
    mser = cv2.MSER.create(5, 12, max(400, h_img * w_img // 40))
    try:
        regions, boxes = mser.detectRegions(gray)
    except cv2.error as err:
        raise InputDataError(f"text detection failed on this image: {err}") from None
    chars: set[Box] = set()
    for pts, (x, y, w, h) in zip(regions, boxes, strict=True):
        if h < _MIN_CHAR_PX or h > 0.6 * h_img or w > _MAX_CHAR_ASPECT * h:
            continue
        if not 0.1 <= len(pts) / float(w * h) <= 0.95:
            continue
        chars.add((int(x), int(y), int(x + w), int(y + h)))
    return _chain(sorted(chars))


def _chain(chars: list[Box]) -> list[Box]:
    """Chain character boxes (sorted by x0) into lines of at least two characters."""
    active: list[list[int]] = []  # [x0, y0, x1, y1, max char height, count]
    done: list[list[int]] = []
    for x0, y0, x1, y1 in chars:
        h, cy = y1 - y0, (y0 + y1) / 2
        keep: list[list[int]] = []
        for g in active:  # a line can only grow while the next char is within 2 heights
            (keep if x0 - g[2] <= 2 * g[4] else done).append(g)
        active = keep
        best, best_gap = None, None
        for g in active:
            gh = g[4]
            if not 0.5 <= h / gh <= 2.0 or abs(cy - (g[1] + g[3]) / 2) > 0.5 * max(h, gh):
                continue
            gap = x0 - g[2]
            if gap <= 2 * max(h, gh) and (best_gap is None or gap < best_gap):
                best, best_gap = g, gap
        if best is None:
            active.append([x0, y0, x1, y1, h, 1])
        else:
            best[0], best[1] = min(best[0], x0), min(best[1], y0)
            best[2], best[3] = max(best[2], x1), max(best[3], y1)
            best[4], best[5] = max(best[4], h), best[5] + 1
    return _merge([(g[0], g[1], g[2], g[3]) for g in done + active if g[5] >= 2])


def _merge(lines: list[Box]) -> list[Box]:
    """Merge lines on the same baseline that touch (kanji parts make rival chains).

    >>> _merge([(0, 10, 50, 30), (45, 12, 90, 28), (0, 60, 40, 80)])
    [(0, 10, 90, 30), (0, 60, 40, 80)]
    """
    boxes = sorted(lines)
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                ha, hb = a[3] - a[1], b[3] - b[1]
                overlap_y = min(a[3], b[3]) - max(a[1], b[1])
                gap_x = max(a[0], b[0]) - min(a[2], b[2])
                if overlap_y > 0.5 * min(ha, hb) and gap_x <= 0.5 * max(ha, hb):
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes


@dataclass(frozen=True)
class _Slot:
    y0: int  # rows of the mosaic holding this crop
    y1: int
    origin: tuple[int, int]  # crop's top-left in the frame
    scale: float
    frame: int  # index of the frame in the batch


_Crop = tuple[np.ndarray, tuple[int, int], float]  # pixels, top-left in the frame, scale


def _crops(gray: np.ndarray, lines: list[Box]) -> list[_Crop]:
    h_img, w_img = gray.shape[:2]
    crops: list[_Crop] = []
    for x0, y0, x1, y1 in lines:
        m = max(1, int(_CROP_MARGIN * (y1 - y0)))
        cx0, cy0 = max(0, x0 - m), max(0, y0 - m)
        cx1, cy1 = min(w_img, x1 + m), min(h_img, y1 + m)
        scale = _MOSAIC_CHAR_PX / float(y1 - y0)
        crop = cv2.resize(gray[cy0:cy1, cx0:cx1], None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_CUBIC)  # fmt: skip
        _, bw = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        if bw.mean() < 128:  # mostly dark: light text on a dark ground
            crop = 255 - crop
        lo, hi = np.percentile(crop, [2, 98])  # own contrast: the ground white, ink black
        gain = 255.0 / max(1.0, float(hi - lo))
        crop = np.clip((crop.astype(np.float32) - lo) * gain, 0, 255).astype(np.uint8)
        crops.append((crop, (cx0, cy0), scale))
    return crops


def _mosaic(crops: list[tuple[int, _Crop]]) -> tuple[np.ndarray, list[_Slot]]:
    """Stack ``(frame index, crop)`` pairs on one white canvas."""
    gap = _MOSAIC_GAP
    width = max(c.shape[1] for _, (c, _, _) in crops) + 2 * gap
    height = sum(c.shape[0] + gap for _, (c, _, _) in crops) + gap
    canvas = np.full((height, width), 255, np.uint8)
    slots, y = [], gap
    for frame, (crop, origin, scale) in crops:
        canvas[y : y + crop.shape[0], gap : gap + crop.shape[1]] = crop
        slots.append(_Slot(y, y + crop.shape[0], origin, scale, frame))
        y += crop.shape[0] + gap
    return canvas, slots


@functools.lru_cache(maxsize=1)
def tesseract_version() -> str:
    """The tesseract binary's version (``5.3.0``); :class:`DependencyError` if it is missing."""
    import pytesseract

    try:
        return str(pytesseract.get_tesseract_version())
    except pytesseract.TesseractNotFoundError:
        raise DependencyError(
            "tesseract is not installed (OCR of text in camera frames)",
            hint="apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-jpn, "
            "or set scrub.image.ocr: [] to skip OCR",
        ) from None


def ocr_lines(gray: np.ndarray, langs: list[str], timeout_s: float = 30.0) -> list[OcrLine]:
    """Read the text lines of an 8-bit grayscale frame (one tesseract run; none if no text).

    Raises :class:`InputDataError` when tesseract fails or times out on this frame (so the
    frame is quarantined, never passed unchecked) and :class:`DependencyError` when
    tesseract or a language is not installed.

    >>> ocr_lines(np.full((60, 80), 255, np.uint8), ["eng"])
    []
    """
    out = ocr_lines_batch([gray], langs, timeout_s)[0]
    if isinstance(out, InputDataError):
        raise out
    return out


#: Frames whose lines share one tesseract call, and the tallest mosaic (rows) of one call.
BATCH_FRAMES = 48
_BATCH_ROWS = 16_000


def ocr_lines_batch(
    grays: list[np.ndarray], langs: list[str], timeout_s: float = 30.0
) -> list[list[OcrLine] | InputDataError]:
    """:func:`ocr_lines` for many frames: their lines are read in as few tesseract calls as fit.

    Starting tesseract with ``eng+jpn`` costs ~0.14 s, about all of the time a frame's few
    lines take to read, so the lines of up to :data:`BATCH_FRAMES` frames share one mosaic
    (measured on the synthetic factory's frames: 5 → 30+ frames/s in one process). When a
    shared call fails, its frames are retried one by one, so only a bad frame fails: its
    entry is the :class:`InputDataError` (the others are their lines).

    >>> blank = np.full((60, 80), 255, np.uint8)
    >>> ocr_lines_batch([blank, blank], ["eng"])
    [[], []]
    """
    results: list[list[OcrLine] | InputDataError] = [[] for _ in grays]
    if not langs:
        return results
    lang = "+".join(langs)
    pending: list[tuple[int, _Crop]] = []
    frames: set[int] = set()
    rows = 0

    def flush() -> None:
        nonlocal rows
        if pending:
            _read_batch(pending, grays, lang, timeout_s, results)
        pending.clear()
        frames.clear()
        rows = 0

    for i, gray in enumerate(grays):
        boxes = find_text_lines(gray)
        if not boxes:
            continue
        crops = _crops(gray, boxes)
        height = sum(c.shape[0] + _MOSAIC_GAP for c, _, _ in crops)
        if pending and (len(frames) >= BATCH_FRAMES or rows + height > _BATCH_ROWS):
            flush()
        pending.extend((i, c) for c in crops)
        frames.add(i)
        rows += height
    flush()
    return results


_Results = list[list[OcrLine] | InputDataError]


def _read_batch(crops: list[tuple[int, _Crop]], grays: list[np.ndarray], lang: str,
                timeout_s: float, results: _Results) -> None:  # fmt: skip
    frames = sorted({i for i, _ in crops})
    canvas, slots = _mosaic(crops)
    try:
        data = _tesseract_tsv(canvas, lang, timeout_s * len(frames))
    except InputDataError as err:
        if len(frames) == 1:
            results[frames[0]] = err
            return
        for i in frames:  # find the frame that fails; the others still get read
            _read_batch([c for c in crops if c[0] == i], grays, lang, timeout_s, results)
        return
    for i, lines in _lines_from(data, slots, grays).items():
        results[i] = lines


def _tesseract_tsv(canvas: np.ndarray, lang: str, timeout_s: float) -> dict[str, list[str]]:
    """Run tesseract on one image (PNG on stdin, TSV on stdout), single-threaded.

    ``OMP_THREAD_LIMIT=1`` (unless set): tesseract's OpenMP threads cost more than they save
    on frame-sized images (measured: 2.9 → 5.1 images/s in one process), and parallel
    workers should not oversubscribe the cores. ``pytesseract.tesseract_cmd`` is honoured.
    """
    import pytesseract

    ok, png = cv2.imencode(".png", canvas)
    if not ok:
        raise InputDataError("could not encode the OCR mosaic")
    cmd = [
        pytesseract.pytesseract.tesseract_cmd,
        "stdin",
        "stdout",
        "-l",
        lang,
        "--psm",
        "6",
        "tsv",
    ]
    env = {**os.environ}
    env.setdefault("OMP_THREAD_LIMIT", "1")
    try:
        proc = subprocess.run(cmd, input=png.tobytes(), capture_output=True, timeout=timeout_s,
                              env=env, check=False)  # fmt: skip
    except FileNotFoundError:
        raise DependencyError(
            f"tesseract is not installed ({cmd[0]!r} not found; OCR of text in camera frames)",
            hint="apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-jpn, "
            "or set scrub.image.ocr: [] to skip OCR",
        ) from None
    except subprocess.TimeoutExpired:
        raise InputDataError(f"tesseract did not finish this frame in {timeout_s} s",
                             hint="raise scrub.image.ocr_timeout_s") from None  # fmt: skip
    err = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        if "Failed loading language" in err or "Could not initialize tesseract" in err:
            raise DependencyError(
                f"tesseract has no language data for {lang!r}",
                hint="apt-get install tesseract-ocr-<lang>, or change scrub.image.ocr",
            )
        raise InputDataError(f"tesseract failed on this frame: {err[-300:]}")
    rows = proc.stdout.decode("utf-8", "replace").splitlines()
    if not rows:
        raise InputDataError(f"tesseract returned nothing for this frame: {err[-300:]}")
    header = rows[0].split("\t")
    cols: dict[str, list[str]] = {h: [] for h in header}
    for row in rows[1:]:
        cells = row.split("\t")
        if len(cells) == len(header):
            for h, c in zip(header, cells, strict=True):
                cols[h].append(c)
    return cols


def _lines_from(
    data: dict[str, list[str]], slots: list[_Slot], grays: list[np.ndarray]
) -> dict[int, list[OcrLine]]:
    grouped: dict[tuple[int, int, int, int], list[OcrWord]] = {}
    for i, raw in enumerate(data["text"]):
        text = str(raw).strip()
        conf = float(data["conf"][i])
        if not text or conf < 0:
            continue
        left, top = int(data["left"][i]), int(data["top"][i])
        width, height = int(data["width"][i]), int(data["height"][i])
        k = _slot_of(slots, top + height / 2)
        if k is None:
            continue
        s = slots[k]
        h_img, w_img = grays[s.frame].shape[:2]
        ox, oy = s.origin
        x0 = ox + int(np.floor((left - _MOSAIC_GAP) / s.scale))
        y0 = oy + int(np.floor((top - s.y0) / s.scale))
        x1 = ox + int(np.ceil((left + width - _MOSAIC_GAP) / s.scale))
        y1 = oy + int(np.ceil((top + height - s.y0) / s.scale))
        box = (max(0, x0), max(0, y0), min(w_img, max(x1, x0 + 1)), min(h_img, max(y1, y0 + 1)))
        key = (k, int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
        grouped.setdefault(key, []).append(OcrWord(text, box, conf))
    out: dict[int, list[OcrLine]] = {s.frame: [] for s in slots}
    for key, words in sorted(grouped.items()):
        out[slots[key[0]].frame].append(OcrLine.from_words(words))
    return out


def _slot_of(slots: list[_Slot], y: float) -> int | None:
    """The crop whose rows (plus half the gap either side) hold mosaic row ``y``."""
    half = _MOSAIC_GAP / 2
    return next((k for k, s in enumerate(slots) if s.y0 - half <= y < s.y1 + half), None)


# ---------------------------------------------------------------- PII in the lines read


def lang_hint(text: str) -> str:
    """The language hint passed to the detector: ``"ja"`` for kana/kanji, else ``"en"``."""
    return "ja" if has_japanese(text) else "en"


def text_pii(
    gray: np.ndarray, cfg: ImageScrubConfig, detect: TextDetector, key: bytes, field: str
) -> tuple[list[Finding], list[Box]]:
    """OCR ``gray``, run ``detect`` on every line; return image findings and boxes to fill.

    Each finding's ``original_hash`` is the keyed hash of the OCR'd span; spans the detector
    marks ``keep`` are reported with operator ``keep`` and not boxed.

    >>> from mmdata.config import ImageScrubConfig
    >>> text_pii(np.zeros((48, 64), np.uint8), ImageScrubConfig(), lambda t, lang: [],
    ...          b"k" * 32, "image")
    ([], [])
    """
    out = text_pii_batch([gray], cfg, detect, key, [field])[0]
    if isinstance(out, InputDataError):
        raise out
    return out


def text_pii_batch(
    grays: list[np.ndarray],
    cfg: ImageScrubConfig,
    detect: TextDetector,
    key: bytes,
    fields: list[str],
) -> list[tuple[list[Finding], list[Box]] | InputDataError]:
    """:func:`text_pii` for many frames, OCR'd together (:func:`ocr_lines_batch`).

    A frame tesseract fails on gets its :class:`InputDataError` instead of a result.

    >>> from mmdata.config import ImageScrubConfig
    >>> text_pii_batch([np.zeros((48, 64), np.uint8)], ImageScrubConfig(),
    ...                lambda t, lang: [], b"k" * 32, ["image"])
    [([], [])]
    """
    read = ocr_lines_batch(grays, list(cfg.ocr), cfg.ocr_timeout_s)
    out: list[tuple[list[Finding], list[Box]] | InputDataError] = []
    for gray, lines, field in zip(grays, read, fields, strict=True):
        if isinstance(lines, InputDataError) or not lines:
            out.append(lines if isinstance(lines, InputDataError) else ([], []))
            continue
        out.append(_line_findings(gray, lines, cfg, detect, key, field))
    return out


def _line_findings(gray: np.ndarray, lines: list[OcrLine], cfg: ImageScrubConfig,
                   detect: TextDetector, key: bytes, field: str
                   ) -> tuple[list[Finding], list[Box]]:  # fmt: skip
    results = [detect(ln.text, lang_hint(ln.text)) for ln in lines]
    ocr_model = f"tesseract {tesseract_version()} ({'+'.join(cfg.ocr)})"
    h_img, w_img = gray.shape[:2]
    findings: list[Finding] = []
    boxes: list[Box] = []
    for line, found in zip(lines, results, strict=True):
        for f in found:
            start, end = f.start or 0, len(line.text) if f.end is None else f.end
            box = padded_box(line, start, end, cfg, w_img, h_img)
            findings.append(Finding(
                modality="image", entity=f.entity, score=f.score,
                recognizer=f"tesseract+{f.recognizer}",
                operator="keep" if f.operator == "keep" else "redact",
                original_hash=keyed_hash(key, line.text[start:end]), bbox=box, field=field,
                model=f"{ocr_model}; {f.model}" if f.model else ocr_model,
            ))  # fmt: skip
            if f.operator != "keep":
                boxes.append(box)
    return findings, boxes


def padded_box(line: OcrLine, start: int, end: int, cfg: ImageScrubConfig, w: int, h: int) -> Box:
    """The words of ``[start, end)`` (the whole line if none), padded so no character leaks.

    Padding: ``text_pad_px + text_pad_frac * line height`` on every side, plus
    ``cjk_pad_chars * line height`` left and right on lines holding Japanese.

    >>> from mmdata.config import ImageScrubConfig
    >>> line = OcrLine.from_words([OcrWord("J.", (10, 40, 24, 60), 90.0),
    ...                            OcrWord("SMITH", (30, 40, 80, 60), 91.0)])
    >>> padded_box(line, 0, 8, ImageScrubConfig(), 320, 240)
    (2, 32, 88, 68)
    """
    words = line.words_in(start, end)
    boxes = [wd.box for wd in words] or [line.box]
    pad = cfg.text_pad_px + cfg.text_pad_frac * line.height
    pad_x = pad + (cfg.cjk_pad_chars * line.height if has_japanese(line.text) else 0.0)
    x0 = min(b[0] for b in boxes) - pad_x
    y0 = min(b[1] for b in boxes) - pad
    x1 = max(b[2] for b in boxes) + pad_x
    y1 = max(b[3] for b in boxes) + pad
    return (max(0, int(x0)), max(0, int(y0)), min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1))))
