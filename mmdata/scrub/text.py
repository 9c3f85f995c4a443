"""The text scrubber: Presidio over spaCy (English) and GiNZA (Japanese), batched.

:class:`TextScrubber` loads the configured spaCy models once (only installed ones — nothing is
ever downloaded), builds a Presidio ``AnalyzerEngine`` from that NLP engine and the
recognizers of :mod:`mmdata.scrub.recognizers`, and processes notes in batches: one
``nlp.pipe`` per language over the *distinct* texts (repeated notes are analyzed once), then
Presidio's recognizers on the precomputed artifacts, then the allow-list and overlap rules,
then the operator per entity type (placeholder ``<PERSON>``, keyed pseudonym, mask, redact,
keep). Findings carry spans in the original text and never the original itself.

Language per note: the note's own ``lang`` when it is a configured language, else detected
from the script (share of kana/kanji among letters). Notes mixing scripts (an English note with
a Japanese name, a Japanese note with English sentences) also get the other language's pass.

>>> from mmdata.config import ScrubConfig
>>> scrubber = TextScrubber(ScrubConfig(), key=b"k" * 32)  # doctest: +SKIP
>>> text, found = scrubber.scrub(["Call Ana Costa on 090-1234-5678"], [None])[0]  # doctest: +SKIP
>>> text  # doctest: +SKIP
'Call <PERSON_...> on <PHONE_NUMBER>'
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mmdata.config import ScrubConfig
from mmdata.errors import InputDataError
from mmdata.scrub.engine import build_analyzer
from mmdata.scrub.findings import Finding
from mmdata.scrub.keys import keyed_hash, pseudonym
from mmdata.scrub.names import plausible_person
from mmdata.scrub.recognizers import RECOGNIZERS_VERSION, AllowList, RegexRecognizer, fold_width

_KANA_HAN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f々]")
_LATIN_WORD = re.compile(r"(?<![A-Za-z@.])[A-Za-z]*[a-z][A-Za-z]+(?![A-Za-z@])")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: Entity priority when spans overlap: IDs and contact data win over names.
_PRIORITY = {"PERSON": 0}


class TextScrubError(InputDataError):
    """One note could not be scrubbed (quarantine it); ``index``: its position, ``reason``: why."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"note {index}: {reason}")
        self.index = index
        self.reason = reason


# -- language ----------------------------------------------------------------------------


def script_counts(text: str) -> tuple[int, int]:
    """(kana/kanji characters, letters of Latin words that have a lower-case letter)."""
    return len(_KANA_HAN.findall(text)), sum(len(w) for w in _LATIN_WORD.findall(text))


def detect_language(text: str, languages: Sequence[str] = ("en", "ja")) -> str:
    """``ja`` when kana/kanji are a fair share of the letters, else ``en`` (among ``languages``).

    >>> detect_language("Shift report: all OK。CNC-12はBakerさんが点検済み。")
    'ja'
    >>> detect_language("Call 田中 about the die"), detect_language("")
    ('en', 'en')
    """
    if len(languages) == 1:
        return languages[0]
    cjk, latin = script_counts(text)
    if "ja" in languages and cjk >= 2 and cjk >= 0.25 * latin:
        return "ja"
    return "en" if "en" in languages else languages[0]


def language_passes(text: str, lang: str, languages: Sequence[str]) -> list[str]:
    """The language passes a note gets: its own, plus the other one for mixed scripts."""
    cjk, latin = script_counts(text)
    other = {"en": "ja", "ja": "en"}.get(lang, "")
    if other in languages and ((lang == "en" and cjk >= 2) or (lang == "ja" and latin >= 12)):
        return [lang, other]
    return [lang]


# -- results → findings ------------------------------------------------------------------


@dataclass
class Hit:
    """One detection before operators: where, what, by which recognizer/pattern."""

    start: int
    end: int
    entity: str
    score: float
    recognizer: str
    model: str | None


@functools.lru_cache(maxsize=1)
def _presidio_version() -> str:
    from importlib.metadata import version

    return f"presidio-analyzer {version('presidio-analyzer')}"


def own_recognizers(analyzer: Any) -> frozenset[str]:
    """Names of the analyzer's recognizers defined in :mod:`mmdata.scrub.recognizers`."""
    return frozenset(
        r.name for r in analyzer.registry.recognizers if isinstance(r, RegexRecognizer)
    )


def hits_from_results(
    results: list[Any], lang: str, model_ids: dict[str, str], ours: frozenset[str]
) -> list[Hit]:
    """Presidio results (with decision process) → :class:`Hit` s; ``ours``: names of our own
    recognizers (the rest are Presidio's, credited to presidio-analyzer and its version)."""
    hits = []
    for r in results:
        expl = r.analysis_explanation
        name = (r.recognition_metadata or {}).get("recognizer_name") or (
            expl.recognizer if expl else "?"
        )
        pattern = getattr(expl, "pattern_name", None)
        if name == "SpacyRecognizer":
            model: str | None = model_ids.get(lang)
            rec = f"SpacyRecognizer/{lang}"
        elif name == "JaNameRecognizer":
            model, rec = f"{model_ids.get(lang)} (Sudachi tags)", f"{name}/{pattern}"
        else:
            model = RECOGNIZERS_VERSION if name in ours else _presidio_version()
            rec = f"{name}/{pattern}" if pattern else name
        hits.append(Hit(r.start, r.end, r.entity_type, float(r.score), rec, model))
    return hits


def resolve(text: str, hits: list[Hit], allow: AllowList) -> list[Hit]:
    """Drop implausible names and allowed vocabulary, then make spans disjoint: overlapping
    spans of one type merge; otherwise IDs and contact data win over names, then score, length.
    Linear in the number of hits apart from the sorts (a 1 MB note holds tens of thousands).
    """
    folded = fold_width(text)
    allowed = allow.spans(text) if hits else []
    starts = [s for s, _ in allowed]
    reach = list(itertools.accumulate((e for _, e in allowed), max))
    kept = []
    for h in hits:
        if h.entity == "PERSON" and not plausible_person(folded, h.start, h.end):
            continue
        k = bisect.bisect_left(starts, h.end) - 1  # allowed spans starting before h ends
        if k >= 0 and reach[k] > h.start:
            continue
        kept.append(h)
    kept.sort(key=lambda h: (h.start, h.end))
    out: list[Hit] = []
    cluster: list[Hit] = []
    cluster_end = -1
    for h in kept:
        if h.start < cluster_end:
            cluster.append(h)
            cluster_end = max(cluster_end, h.end)
        else:
            out.extend(_disjoint(cluster))
            cluster, cluster_end = [h], h.end
    out.extend(_disjoint(cluster))
    return out


def _disjoint(cluster: list[Hit]) -> list[Hit]:
    """One group of overlapping hits → disjoint hits (see :func:`resolve`)."""
    if len(cluster) <= 1:
        return cluster
    ranked = sorted(
        cluster, key=lambda h: (-_PRIORITY.get(h.entity, 1), -h.score, -(h.end - h.start), h.start)
    )
    out: list[Hit] = []
    for h in ranked:
        clash = [o for o in out if o.start < h.end and h.start < o.end]
        if not clash:
            out.append(h)
        elif all(o.entity == h.entity for o in clash):
            for o in clash:  # same type: union of the spans
                o.start, o.end = min(o.start, h.start), max(o.end, h.end)
    merged: list[Hit] = []
    for h in sorted(out, key=lambda h: h.start):
        if merged and merged[-1].entity == h.entity and h.start < merged[-1].end:
            merged[-1].end = max(merged[-1].end, h.end)
        else:
            merged.append(h)
    return merged


# -- operators ---------------------------------------------------------------------------


def operator_fn(operator: str, entity: str, key: bytes) -> Callable[[str], str]:
    """The replacement function of one operator for one entity type.

    >>> operator_fn("placeholder", "PERSON", b"k" * 32)("Ana Costa")
    '<PERSON>'
    >>> operator_fn("mask", "PHONE_NUMBER", b"k" * 32)("090-1")
    '*****'
    """
    if operator == "placeholder":
        return lambda s: f"<{entity}>"
    if operator == "pseudonym":
        return lambda s: pseudonym(key, entity, s)
    if operator == "mask":
        return lambda s: "*" * len(s)
    if operator == "redact":
        return lambda s: ""
    if operator == "keep":
        return lambda s: s
    raise ValueError(f"unknown operator {operator!r}")


def apply_operators(text: str, findings: list[Finding], key: bytes) -> str:
    """``text`` with each finding's span replaced by its operator's output."""
    parts, pos = [], 0
    for f in sorted(findings, key=lambda f: f.start or 0):
        s, e = int(f.start or 0), int(f.end or 0)
        parts.append(text[pos:s])
        parts.append(operator_fn(f.operator, f.entity, key)(text[s:e]))
        pos = e
    parts.append(text[pos:])
    return "".join(parts)


def presidio_operators(config: ScrubConfig, key: bytes, entities: list[str]) -> dict[str, Any]:
    """The same operators as Presidio anonymizer ``OperatorConfig`` s (custom lambdas)."""
    from presidio_anonymizer.entities import OperatorConfig

    ops = {
        e: OperatorConfig(
            "custom",
            {"lambda": operator_fn(config.entities.get(e, config.default_operator), e, key)},
        )
        for e in entities
    }
    ops["DEFAULT"] = OperatorConfig("replace", {})
    return ops


# -- chunking ----------------------------------------------------------------------------


def chunk_bounds(text: str, size: int) -> list[tuple[int, int]]:
    """Cut a long text into pieces of at most ``size`` chars at a line, sentence or word end.

    >>> chunk_bounds("aaaa. bbbb. cccc", 8)
    [(0, 6), (6, 12), (12, 16)]
    """
    bounds, start, n = [], 0, len(text)
    while n - start > size:
        window = text[start : start + size]
        cut = -1
        for sep in ("\n", "。", ". ", "! ", "? ", "、", " "):
            at = window.rfind(sep, size // 2)
            if at >= 0:
                cut = at + len(sep)
                break
        end = start + (cut if cut > 0 else size)
        bounds.append((start, end))
        start = end
    bounds.append((start, n))
    return bounds


# -- the scrubber ------------------------------------------------------------------------

Outcome = list[Hit] | TextScrubError
CACHE_ENTRIES = 20_000  # distinct texts kept per scrubber
CACHE_MAX_CHARS = 2_000  # longer texts are not kept


class TextScrubber:
    """Batched PII detection and replacement for notes in English and Japanese.

    Models load once, in the constructor. ``analyze``/``scrub`` raise :class:`TextScrubError`
    for the first note that cannot be processed; ``analyze_safe``/``scrub_safe`` return the
    error in that note's place instead, so a stage can quarantine it and go on.

    >>> scrubber = TextScrubber(ScrubConfig(), key=b"k" * 32)  # doctest: +SKIP
    >>> [f.entity for f in scrubber.analyze(["Mail ana@example.com"], ["en"])[0]]  # doctest: +SKIP
    ['EMAIL_ADDRESS']
    """

    def __init__(self, config: ScrubConfig, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the PII key must be at least 16 bytes")
        self.config = config
        self.__key = key
        self.languages = list(dict.fromkeys(config.languages))
        self.analyzer, self.nlp_engine = build_analyzer(config, trim=True)
        self.model_ids: dict[str, str] = dict(self.nlp_engine.model_ids)
        self.ours = own_recognizers(self.analyzer)
        self.allow = AllowList(config.allow)
        # Distinct short texts already analyzed, per language: the same note reaches the
        # scrubber once per overlapping window, and shift notes repeat ("All OK").
        self._cache: OrderedDict[tuple[str, str], list[Hit]] = OrderedDict()

    def clear_cache(self) -> None:
        """Forget the analyses kept for repeated notes."""
        self._cache.clear()

    def __repr__(self) -> str:
        return f"TextScrubber(languages={self.languages}, models={self.model_ids})"

    def language_of(self, text: str, lang: str | None) -> str:
        """The note's own language when configured, else the detected one."""
        return lang if lang in self.languages else detect_language(text, self.languages)

    def operator_for(self, entity: str) -> str:
        """Operator configured for ``entity`` (or the default operator)."""
        return self.config.entities.get(entity, self.config.default_operator)

    # -- detection -------------------------------------------------------------------------
    def _hits(self, texts: Sequence[Any], langs: Sequence[str | None] | None) -> list[Outcome]:
        n = len(texts)
        langs = list(langs) if langs is not None else [None] * n
        if len(langs) != n:
            raise ValueError(f"{n} texts but {len(langs)} languages")
        out: list[Outcome] = [[] for _ in range(n)]
        jobs: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                out[i] = TextScrubError(i, f"note text is {type(text).__name__}, not str")
                continue
            if not text.strip():
                continue
            clean = _SURROGATE.sub("\ufffd", text)  # same length; spaCy/Sudachi reject surrogates
            lang = self.language_of(clean, langs[i])
            for pass_lang in language_passes(clean, lang, self.languages):
                for s, e in chunk_bounds(clean, self.config.chunk_chars):
                    jobs.setdefault((pass_lang, clean[s:e]), []).append((i, s))
        for lang in self.languages:
            todo = [t for (lg, t) in jobs if lg == lang and (lg, t) not in self._cache]
            done = [
                (t, self._cache[(lg, t)])
                for (lg, t) in jobs
                if lg == lang and (lg, t) in self._cache
            ]
            fresh = self._analyze_unique(todo, lang)
            for text, hits in fresh:
                if not isinstance(hits, str) and len(text) <= CACHE_MAX_CHARS:
                    self._cache[(lang, text)] = hits
                    if len(self._cache) > CACHE_ENTRIES:
                        self._cache.popitem(last=False)
            for text, hits in [*done, *fresh]:
                for i, offset in jobs[(lang, text)]:
                    slot = out[i]
                    if isinstance(slot, TextScrubError):
                        continue
                    if isinstance(hits, str):
                        out[i] = TextScrubError(i, hits)
                        continue
                    slot.extend(
                        replace(h, start=h.start + offset, end=h.end + offset) for h in hits
                    )
        for i, slot in enumerate(out):
            if not isinstance(slot, TextScrubError) and slot:
                out[i] = resolve(texts[i], slot, self.allow)
        return out

    def _analyze_unique(self, texts: list[str], lang: str) -> list[tuple[str, list[Hit] | str]]:
        """Each distinct text of one language once: nlp.pipe, then Presidio's recognizers."""
        if not texts:
            return []
        try:
            arts = list(
                self.nlp_engine.process_batch(
                    texts, lang, batch_size=self.config.batch_size, n_process=self.config.workers
                )
            )
        except Exception:  # one bad text must not sink the batch: retry one by one
            return [(t, self._analyze_one(t, lang)) for t in texts]
        out: list[tuple[str, list[Hit] | str]] = []
        for text, (_, art) in zip(texts, arts, strict=True):
            try:
                res = self.analyzer.analyze(
                    text, lang, nlp_artifacts=art, return_decision_process=True
                )
                out.append((text, hits_from_results(res, lang, self.model_ids, self.ours)))
            except Exception as err:  # a recognizer failing on odd input: quarantine the note
                out.append((text, f"text analysis failed: {type(err).__name__}: {err}"))
        return out

    def _analyze_one(self, text: str, lang: str) -> list[Hit] | str:
        try:
            res = self.analyzer.analyze(text, lang, return_decision_process=True)
            return hits_from_results(res, lang, self.model_ids, self.ours)
        except Exception as err:
            return f"text analysis failed: {type(err).__name__}: {err}"

    def _findings(self, text: str, hits: list[Hit]) -> list[Finding]:
        return [
            Finding(
                modality="text",
                entity=h.entity,
                score=round(h.score, 4),
                recognizer=h.recognizer,
                operator=self.operator_for(h.entity),
                original_hash=keyed_hash(self.__key, text[h.start : h.end]),
                start=h.start,
                end=h.end,
                model=h.model,
            )
            for h in hits
        ]

    # -- public API --------------------------------------------------------------------------
    def analyze_safe(
        self, texts: Sequence[Any], langs: Sequence[str | None] | None = None
    ) -> list[list[Finding] | TextScrubError]:
        """Findings per note, or the note's :class:`TextScrubError`."""
        return [
            o if isinstance(o, TextScrubError) else self._findings(texts[i], o)
            for i, o in enumerate(self._hits(texts, langs))
        ]

    def analyze(
        self, texts: Sequence[str], langs: Sequence[str | None] | None = None
    ) -> list[list[Finding]]:
        """Findings per note (spans in the original text). Raises :class:`TextScrubError`."""
        out = []
        for o in self.analyze_safe(texts, langs):
            if isinstance(o, TextScrubError):
                raise o
            out.append(o)
        return out

    def scrub_safe(
        self,
        texts: Sequence[Any],
        langs: Sequence[str | None] | None = None,
    ) -> list[tuple[str, list[Finding]] | TextScrubError]:
        """(scrubbed text, findings) per note, or the note's :class:`TextScrubError`."""
        return [
            o if isinstance(o, TextScrubError) else (apply_operators(texts[i], o, self.__key), o)
            for i, o in enumerate(self.analyze_safe(texts, langs))
        ]

    def scrub(
        self,
        texts: Sequence[str],
        langs: Sequence[str | None] | None = None,
    ) -> list[tuple[str, list[Finding]]]:
        """(scrubbed text, findings) per note. Raises :class:`TextScrubError`."""
        out = []
        for o in self.scrub_safe(texts, langs):
            if isinstance(o, TextScrubError):
                raise o
            out.append(o)
        return out
