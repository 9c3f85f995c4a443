"""Word-timed transcripts of audio: a sidecar JSON or WebVTT file, or a connector's field.

Times are int64 ns relative to the start of the audio the transcript belongs to.

Sidecar JSON (``<audio stem>.transcript.json`` next to the audio file), canonical form::

    {"format": "mmdata.transcript/1", "language": "en",
     "words": [{"word": "call", "start_ns": 1200000000, "end_ns": 1450000000}, ...]}

Also accepted when reading: ``start_ms``/``end_ms`` (numbers) or ``start``/``end`` (seconds,
as Whisper writes them), ``text`` instead of ``word``, and Whisper's
``{"segments": [{"start", "end", "text", "words": [...]}]}``; a segment without ``words``
gives its words the whole segment's time range.

WebVTT (``<audio stem>.vtt``): cue times, and word times from inline ``<00:00:01.200>``
timestamps where present; words of a cue without them share the cue's time range (so the
whole cue is muted when one of its words is PII: coarse, never leaky). Voice tags
(``<v Name>``) and styling tags are dropped, entities decoded.

Words are joined with single spaces for detection, except between CJK characters (Japanese
has no spaces between words).

>>> t = parse_webvtt("WEBVTT\\n\\n00:01.000 --> 00:02.500\\ncall <00:01.400>John <00:01.900>now")
>>> [(w.text, w.start_ns // 1_000_000, w.end_ns // 1_000_000) for w in t.words]
[('call', 1000, 1400), ('John', 1400, 1900), ('now', 1900, 2500)]
>>> t.joined()[0]
'call John now'
"""

from __future__ import annotations

import bisect
import html
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdata.errors import InputDataError

TRANSCRIPT_FORMAT = "mmdata.transcript/1"
SIDECAR_SUFFIXES = (".transcript.json", ".vtt")
_MAX_TRANSCRIPT_BYTES = 50_000_000
_NS = 1_000_000_000


@dataclass(frozen=True)
class Word:
    """One transcript word and its time range ``[start_ns, end_ns)`` in the audio."""

    text: str
    start_ns: int
    end_ns: int


def _is_cjk(ch: str) -> bool:
    if not ch:
        return False
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "IDEOGRAPHIC", "FULLWIDTH", "HALFWIDTH"))


def _sep(prev: str, nxt: str) -> str:
    return "" if _is_cjk(prev[-1:]) or _is_cjk(nxt[:1]) else " "


@dataclass(frozen=True)
class Transcript:
    """A word-timed transcript; ``language`` is an ISO code ("en", "ja") or None."""

    words: tuple[Word, ...]
    language: str | None = None

    def joined(self) -> tuple[str, list[tuple[int, int]]]:
        """The words as one text, and each word's character span ``[start, end)`` in it.

        >>> Transcript((Word("田中", 0, 1), Word("さん", 1, 2), Word("OK", 2, 3))).joined()
        ('田中さんOK', [(0, 2), (2, 4), (4, 6)])
        """
        parts: list[str] = []
        spans: list[tuple[int, int]] = []
        pos = 0
        for i, w in enumerate(self.words):
            if i:
                s = _sep(self.words[i - 1].text, w.text)
                parts.append(s)
                pos += len(s)
            parts.append(w.text)
            spans.append((pos, pos + len(w.text)))
            pos += len(w.text)
        return "".join(parts), spans

    def window(self, start_ns: int, end_ns: int) -> Transcript:
        """Words overlapping ``[start_ns, end_ns)``, re-timed relative to ``start_ns`` and
        clipped to the window (use it to cut a file's transcript to a record's audio).

        >>> t = Transcript((Word("a", 0, 10), Word("b", 10, 30), Word("c", 40, 50)))
        >>> t.window(20, 45).words
        (Word(text='b', start_ns=0, end_ns=10), Word(text='c', start_ns=20, end_ns=25))
        """
        out = [
            Word(w.text, max(w.start_ns, start_ns) - start_ns, min(w.end_ns, end_ns) - start_ns)
            for w in self.words
            if w.end_ns > start_ns and w.start_ns < end_ns
        ]
        return Transcript(tuple(out), self.language)

    def to_json(self) -> dict[str, Any]:
        """The canonical sidecar form (``mmdata.transcript/1``, times in ns)."""
        return {
            "format": TRANSCRIPT_FORMAT,
            "language": self.language,
            "words": [
                {"word": w.text, "start_ns": w.start_ns, "end_ns": w.end_ns} for w in self.words
            ],
        }

    def to_words(self) -> list[dict[str, Any]]:
        """The record column form: ``[{"word", "t0_ns", "t1_ns"}, ...]``.

        >>> Transcript((Word("hi", 0, 5),)).to_words()
        [{'word': 'hi', 't0_ns': 0, 't1_ns': 5}]
        """
        return [{"word": w.text, "t0_ns": w.start_ns, "t1_ns": w.end_ns} for w in self.words]

    def dumps(self) -> str:
        """:meth:`to_json` as a compact JSON string (for a record field or a sidecar file)."""
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))


def word_range(
    starts: Sequence[int], ends: Sequence[int], start: int, end: int
) -> tuple[int, int] | None:
    """Indices ``(first, last)`` of the words whose character spans (``starts``, ``ends``,
    from :meth:`Transcript.joined`) overlap ``[start, end)``; None when none does.

    >>> word_range([0, 5, 10], [4, 9, 12], 6, 11)
    (1, 2)
    >>> word_range([0, 5], [4, 9], 4, 5) is None
    True
    """
    first = bisect.bisect_right(ends, start)
    last = bisect.bisect_left(starts, end) - 1
    return (first, last) if first <= last and end > start else None


# --- JSON ---------------------------------------------------------------------------------


def _time_ns(obj: Mapping[str, Any], which: str, where: str) -> int:
    alias = "t0_ns" if which == "start" else "t1_ns"  # the record column's names
    for key, scale in ((f"{which}_ns", 1), (alias, 1), (f"{which}_ms", 1_000_000), (which, _NS)):
        if key in obj and obj[key] is not None:
            value = obj[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputDataError(f"transcript {where}: {key} must be a number, not {value!r}")
            if not math.isfinite(value):
                raise InputDataError(f"transcript {where}: {key} is not finite")
            return int(value) * scale if isinstance(value, int) else round(value * scale)
    raise InputDataError(
        f"transcript {where}: no {which} time",
        hint=f"give {which}_ns, {which}_ms or {which} (seconds)",
    )


def _words_of(item: Mapping[str, Any], where: str, whole: bool) -> list[Word]:
    text = item.get("word", item.get("text"))
    if not isinstance(text, str):
        raise InputDataError(f"transcript {where}: word text must be a string, not {text!r}")
    t0, t1 = _time_ns(item, "start", where), _time_ns(item, "end", where)
    if t1 < t0 or t0 < 0:
        raise InputDataError(f"transcript {where}: times {t0}..{t1} ns are not a valid range")
    if not whole:
        return [Word(text.strip(), t0, t1)] if text.strip() else []
    return [Word(tok, t0, t1) for tok in text.split()]


def parse_transcript_json(data: str | bytes | Mapping[str, Any]) -> Transcript:
    """Parse a sidecar JSON (canonical, ms/seconds variants, or Whisper segments).

    >>> parse_transcript_json('{"language": "en", "words": [{"word": " hi", "start": 0.5, '
    ...                       '"end": 0.75}]}').words
    (Word(text='hi', start_ns=500000000, end_ns=750000000),)
    """
    if isinstance(data, str | bytes):
        if len(data) > _MAX_TRANSCRIPT_BYTES:
            raise InputDataError(f"transcript of {len(data)} bytes is too large")
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as err:
            raise InputDataError(f"transcript is not valid JSON: {err}") from None
    else:
        obj = data
    if not isinstance(obj, Mapping):
        raise InputDataError("transcript JSON must be an object with 'words' or 'segments'")
    language = obj.get("language")
    if language is not None and not isinstance(language, str):
        raise InputDataError(f"transcript language must be a string, not {language!r}")
    words: list[Word] = []
    if isinstance(obj.get("words"), list):
        for i, item in enumerate(obj["words"]):
            if not isinstance(item, Mapping):
                raise InputDataError(f"transcript words[{i}] must be an object")
            words += _words_of(item, f"words[{i}]", whole=False)
    elif isinstance(obj.get("segments"), list):
        for i, seg in enumerate(obj["segments"]):
            if not isinstance(seg, Mapping):
                raise InputDataError(f"transcript segments[{i}] must be an object")
            if isinstance(seg.get("words"), list) and seg["words"]:
                for j, item in enumerate(seg["words"]):
                    if not isinstance(item, Mapping):
                        raise InputDataError(f"transcript segments[{i}].words[{j}] not an object")
                    words += _words_of(item, f"segments[{i}].words[{j}]", whole=False)
            else:
                words += _words_of(seg, f"segments[{i}]", whole=True)
    else:
        raise InputDataError("transcript JSON has neither a 'words' nor a 'segments' list")
    words.sort(key=lambda w: (w.start_ns, w.end_ns))
    return Transcript(tuple(words), language or None)


# --- WebVTT -------------------------------------------------------------------------------

_TS = r"(?:(\d+):)?(\d{2}):(\d{2})\.(\d{3})"
_TIMING = re.compile(rf"^\s*{_TS}\s+-->\s+{_TS}(?:\s.*)?$")
_TAG = re.compile(r"<([^>]*)>")
_INLINE_TS = re.compile(rf"^{_TS}$")


def _ts_ns(h: str | None, m: str, s: str, ms: str) -> int:
    return ((int(h or 0) * 60 + int(m)) * 60 + int(s)) * _NS + int(ms) * 1_000_000


def _cue_words(payload: str, t0: int, t1: int) -> list[Word]:
    pieces: list[tuple[str, int]] = []  # (text, start time)
    current, pos = t0, 0
    for m in _TAG.finditer(payload):
        pieces.append((payload[pos : m.start()], current))
        ts = _INLINE_TS.match(m.group(1).strip())
        if ts:
            current = min(max(_ts_ns(*ts.groups()), t0), t1)
        pos = m.end()
    pieces.append((payload[pos:], current))
    # a piece ends where the next timed piece starts (or at the cue's end)
    words: list[Word] = []
    starts = sorted({start for _, start in pieces} | {t1})
    for text, start in pieces:
        end = next((s for s in starts if s > start), t1)
        for tok in html.unescape(text).split():
            words.append(Word(tok, start, max(end, start)))
    # text glued across a tag (e.g. "<c>Jo</c>hn") stays two tokens; fine for detection
    return words


def parse_webvtt(text: str, language: str | None = None) -> Transcript:
    """Parse WebVTT cues (see the module docstring for what is kept)."""
    if len(text) > _MAX_TRANSCRIPT_BYTES:
        raise InputDataError(f"WebVTT transcript of {len(text)} characters is too large")
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not lines or not lines[0].startswith("WEBVTT"):
        raise InputDataError("WebVTT transcript does not start with 'WEBVTT'")
    words: list[Word] = []
    blocks = "\n".join(lines[1:]).split("\n\n")
    for block in blocks:
        rows = [r for r in block.split("\n") if r.strip()]
        if not rows or rows[0].startswith(("NOTE", "STYLE", "REGION")):
            continue
        k = 0 if "-->" in rows[0] else 1
        if k >= len(rows):
            continue
        m = _TIMING.match(rows[k])
        if not m:
            raise InputDataError(f"WebVTT cue timing line is malformed: {rows[k][:80]!r}")
        g = m.groups()
        t0, t1 = _ts_ns(*g[:4]), _ts_ns(*g[4:])
        if t1 < t0:
            raise InputDataError(f"WebVTT cue ends before it starts: {rows[k][:80]!r}")
        words += _cue_words(" ".join(rows[k + 1 :]), t0, t1)
    words.sort(key=lambda w: (w.start_ns, w.end_ns))
    return Transcript(tuple(words), language)


# --- sidecars -----------------------------------------------------------------------------


def find_sidecar(audio_path: str | Path) -> Path | None:
    """The transcript next to ``audio_path``: ``<stem>.transcript.json``, else ``<stem>.vtt``.

    >>> find_sidecar("/nonexistent/mic.wav") is None
    True
    """
    p = Path(audio_path)
    for suffix in SIDECAR_SUFFIXES:
        candidate = p.with_name(p.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def load_sidecar(audio_path: str | Path, language: str | None = None) -> Transcript | None:
    """Read the sidecar transcript of ``audio_path`` (None when there is none).

    Raises :class:`InputDataError` for an unreadable or malformed sidecar.
    """
    path = find_sidecar(audio_path)
    if path is None:
        return None
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputDataError(f"cannot read transcript {path.name!r}: {err.strerror}") from None
    if path.suffix == ".vtt":
        try:
            return parse_webvtt(raw.decode("utf-8"), language)
        except UnicodeDecodeError:
            raise InputDataError(f"transcript {path.name!r} is not UTF-8") from None
    t = parse_transcript_json(raw)
    return t if t.language or language is None else Transcript(t.words, language)


def transcript_from_field(
    value: str | Mapping[str, Any] | Sequence[Any] | None,
) -> Transcript | None:
    """A transcript field: a JSON string/object in the sidecar format, a list of word
    objects (the record column ``[{"word", "t0_ns", "t1_ns"}]``), or None (also for []).

    >>> transcript_from_field([{"word": "hi", "t0_ns": 0, "t1_ns": 5}]).words
    (Word(text='hi', start_ns=0, end_ns=5),)
    """
    if value is None or (isinstance(value, Sequence) and len(value) == 0):
        return None
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return parse_transcript_json({"words": list(value)})
    return parse_transcript_json(value)
