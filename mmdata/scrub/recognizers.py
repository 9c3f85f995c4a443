"""Presidio recognizers for what factory notes hold, and the allow-list of look-alikes.

Every pattern uses explicit look-arounds on ASCII letters and digits instead of ``\\b`` (which
never fires between Japanese and ASCII characters), and runs on a width-folded copy of the text
(full-width ``０９０－…`` and ``＠`` read as ASCII; offsets are unchanged), so ``田中さん
(tanaka@example.jp)に連絡`` and ``携帯０９０－１２３４－５６７８`` are found.

=================  ===================================================================
entity             recognizer (pattern names appear in the audit as ``Name/pattern``)
=================  ===================================================================
PERSON             spaCy / GiNZA NER (``SpacyRecognizer``), ``LatinNameRecognizer``
                   (given-name list, Mr./Ms./Dr., ``-san``/さん/様), ``JaNameRecognizer``
                   (Sudachi 人名 tags, surnames before honorifics or after 担当/作業者/…)
EMAIL_ADDRESS      ``EmailRecognizer``
PHONE_NUMBER       ``PhoneRecognizer``: +CC international, JP mobile/landline, NANP
EMPLOYEE_ID, ...   ``IdRecognizer`` per entry of ``scrub.id_patterns``
JP_MY_NUMBER       ``MyNumberRecognizer``: 12 digits, official check digit, not after "lot"
JP_POSTAL_CODE     ``PostalCodeRecognizer``: 〒123-4567, 郵便番号 123-4567
IP_ADDRESS         ``IpRecognizer``: IPv4 only where the nearest context word names a
                   person's device (tablet, laptop, 端末…), never a PLC, HMI or firmware
=================  ===================================================================

>>> rec = email_recognizer("ja")
>>> [(r.start, r.end) for r in rec.analyze("田中さん(tanaka@example.jp)に連絡", ["EMAIL_ADDRESS"])]
[(5, 22)]
>>> is_valid_my_number("6260 1815 9089"), is_valid_my_number("202689078663")
(True, False)
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdata.config import AllowConfig, ScrubConfig
from mmdata.errors import ConfigError

# Before Presidio (and tldextract with it) is imported: never fetch the public suffix list.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
from presidio_analyzer import (
    AnalysisExplanation,
    LocalRecognizer,
    RecognizerResult,
)

RECOGNIZERS_VERSION = "mmdata-recognizers 1"
#: Entities our own recognizers cover (Presidio's versions of them cannot be switched on).
OWN_ENTITIES = frozenset(
    {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "JP_MY_NUMBER", "JP_POSTAL_CODE"}
)
DATA = Path(__file__).parent / "data"

_L = r"(?<![0-9A-Za-z])"  # not glued to an ASCII letter or digit (Japanese is fine)
_R = r"(?![0-9A-Za-z])"
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff々〆ヶ"
KATAKANA = "\u30a1-\u30fa\u30fc-\u30ff"
HONORIFICS = (
    "さん",
    "様",
    "さま",
    "君",
    "くん",
    "氏",
    "殿",
    "課長",
    "部長",
    "係長",
    "主任",
    "班長",
    "所長",
    "工場長",
    "社長",
    "室長",
    "職長",
    "リーダー",
    "先生",
)


@functools.lru_cache(maxsize=16)
def fold_width(text: str) -> str:
    """Full-width ASCII and other 1:1 NFKC compatibility characters folded; same length.

    >>> fold_width("０９０－１２３４ ＡＢ＠") == "090-1234 AB@"
    True
    """
    if text.isascii():
        return text
    out = []
    for ch in text:
        if ord(ch) < 0x80:
            out.append(ch)
            continue
        n = unicodedata.normalize("NFKC", ch)
        out.append(n if len(n) == 1 else ch)
    return "".join(out)


def my_number_check_digit(first11: str) -> int:
    """Check digit of a Japanese Individual Number (My Number) from its first 11 digits.

    >>> my_number_check_digit("62601815908")
    9
    """
    total = sum(
        int(ch) * (n + 1 if n <= 6 else n - 5) for n, ch in enumerate(reversed(first11), start=1)
    )
    r = total % 11
    return 0 if r <= 1 else 11 - r


def is_valid_my_number(number: str) -> bool:
    """12 digits (spaces/hyphens ignored) whose last digit is the official check digit."""
    digits = re.sub(r"[\s-]", "", fold_width(number))
    if len(digits) != 12 or not digits.isdigit() or len(set(digits)) == 1:
        return False
    return my_number_check_digit(digits[:11]) == int(digits[11])


# -- the recognizer base -----------------------------------------------------------------

Check = Callable[[str, int, int], float | None]  # (folded text, start, end) -> score | None


@dataclass(frozen=True)
class Rx:
    """One named pattern: ``group`` is the part of the match that is reported."""

    name: str
    regex: re.Pattern[str]
    score: float
    group: int = 0
    check: Check | None = None  # returns the final score, or None to reject the match


class RegexRecognizer(LocalRecognizer):
    """Runs named patterns on the width-folded text; the pattern name goes into the audit."""

    name: str

    def __init__(self, entity: str, name: str, language: str, patterns: list[Rx]) -> None:
        super().__init__(
            supported_entities=[entity],
            name=name,
            supported_language=language,
            version=RECOGNIZERS_VERSION,
        )
        self.entity = entity
        self.patterns = patterns

    def load(self) -> None:
        """Nothing to load."""

    def spans(self, folded: str) -> Iterable[tuple[int, int, float, Rx]]:
        """(start, end, score, pattern) for every accepted match."""
        for rx in self.patterns:
            for m in rx.regex.finditer(folded):
                s, e = m.span(rx.group)
                if s >= e:
                    continue
                score: float | None = rx.score
                if rx.check is not None:
                    score = rx.check(folded, s, e)
                if score is not None:
                    yield s, e, score, rx

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        """Presidio's recognizer interface."""
        if entities and self.entity not in entities:
            return []
        return [
            self.result(s, e, score, rx.name, rx.regex.pattern)
            for s, e, score, rx in self.spans(fold_width(text))
        ]

    def result(self, start: int, end: int, score: float, pattern_name: str, pattern: str) -> Any:
        """A RecognizerResult with the decision process filled in."""
        expl = AnalysisExplanation(
            recognizer=self.name,
            original_score=score,
            pattern_name=pattern_name,
            pattern=pattern,
            textual_explanation=f"{self.name}/{pattern_name}",
        )
        return RecognizerResult(
            entity_type=self.entity,
            start=start,
            end=end,
            score=score,
            analysis_explanation=expl,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


def _context(folded: str, start: int, end: int, before: int, after: int) -> tuple[str, str]:
    """The text just before and just after a span (same line), lower-cased."""
    lo = max(0, start - before)
    left = folded[lo:start].rsplit("\n", 1)[-1].lower()
    right = folded[end : end + after].split("\n", 1)[0].lower()
    return left, right


# -- pattern recognizers -------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![0-9A-Za-z._%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![0-9A-Za-z-])"
)


def email_recognizer(language: str) -> RegexRecognizer:
    """E-mail addresses, also glued to Japanese text."""
    return RegexRecognizer("EMAIL_ADDRESS", "EmailRecognizer", language, [Rx("email", _EMAIL, 0.9)])


_SEP = r"[-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc ]"  # hyphens, dashes, ー, space
_PL = r"(?<![0-9A-Za-z+/.\-])"  # a phone never continues a code, a date or a version
_PR = r"(?![0-9A-Za-z]|[-./][0-9])"


def _digits_between(lo: int, hi: int) -> Check:
    def check(folded: str, s: int, e: int) -> float | None:
        n = sum(ch.isdigit() for ch in folded[s:e])
        return 1.0 if lo <= n <= hi else None

    return check


def _scored(check: Check, score: float) -> Check:
    def wrapped(folded: str, s: int, e: int) -> float | None:
        return score if check(folded, s, e) is not None else None

    return wrapped


def phone_recognizer(language: str) -> RegexRecognizer:
    """International (+CC), Japanese mobile/landline and North American phone numbers."""
    intl = re.compile(
        _PL + r"\+\d{1,3}(?:" + _SEP + r"?\(0?\d{1,4}\))?(?:" + _SEP + r"?\d{1,5}){2,6}" + _PR
    )
    jp_mobile = re.compile(_PL + r"0[5789]0" + _SEP + r"?\d{4}" + _SEP + r"?\d{4}" + _PR)
    jp_paren = re.compile(_PL + r"0\d{1,4}\(\d{1,4}\)\d{3,4}" + _PR)
    jp_land = re.compile(_PL + r"\(?0\d{1,4}\)?" + _SEP + r"?\d{1,4}" + _SEP + r"\d{3,4}" + _PR)
    nanp = re.compile(_PL + r"(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[-. ])\d{3}[-. ]\d{4}" + _PR)
    return RegexRecognizer(
        "PHONE_NUMBER",
        "PhoneRecognizer",
        language,
        [
            Rx("international", intl, 0.8, check=_scored(_digits_between(8, 15), 0.8)),
            Rx("jp_mobile", jp_mobile, 0.85),
            Rx("jp_parenthesized", jp_paren, 0.75, check=_scored(_digits_between(10, 11), 0.75)),
            Rx("jp_landline", jp_land, 0.75, check=_scored(_digits_between(10, 11), 0.75)),
            Rx("nanp", nanp, 0.7),
        ],
    )


def id_recognizer(entity: str, patterns: list[str], language: str) -> RegexRecognizer:
    """Configured ID patterns (``scrub.id_patterns``), wrapped in explicit look-arounds."""
    rxs = []
    for i, pat in enumerate(patterns):
        try:
            rx = re.compile(_L + "(?:" + pat + ")" + _R)
        except re.error as err:
            raise ConfigError(
                "scrub", f"id_patterns.{entity}[{i}]", pat, f"a valid regular expression ({err})"
            ) from None
        rxs.append(Rx(f"{entity.lower()}_{i}", rx, 0.9))
    name = "".join(w.capitalize() for w in entity.split("_")) + "Recognizer"
    return RegexRecognizer(entity, name, language, rxs)


_LOT_CONTEXT = re.compile(
    r"(lot|ロット|製番|製造番号|s/n|serial|sn|品番|部品|part|po|order|注文|伝票|納品書|"
    r"tracking|追跡|jan|barcode|バーコード|no\.?)\s*[:#：]?\s*$"
)
_MYNUM_CONTEXT = re.compile(r"(my ?number|マイナンバー|個人番号|individual number)")


def _my_number_check(folded: str, s: int, e: int) -> float | None:
    if not is_valid_my_number(folded[s:e]):
        return None
    left, _ = _context(folded, s, e, 24, 0)
    if _MYNUM_CONTEXT.search(left):
        return 1.0
    if _LOT_CONTEXT.search(left[-12:]):
        return None  # a lot/serial/order number that happens to pass the check digit
    return 0.75


def my_number_recognizer(language: str) -> RegexRecognizer:
    """Japanese My Number: 12 digits (4-4-4 groups allowed) with a valid check digit."""
    rx = re.compile(  # not a slice of a longer grouped number (a card number, a tracking number)
        r"(?<![0-9A-Za-z\-.])(?<!\d )\d{4}([ -]?)\d{4}\1\d{4}(?![0-9A-Za-z]|[-.][0-9]|\1\d)"
    )
    return RegexRecognizer(
        "JP_MY_NUMBER",
        "MyNumberRecognizer",
        language,
        [Rx("my_number", rx, 0.75, check=_my_number_check)],
    )


def postal_code_recognizer(language: str) -> RegexRecognizer:
    """Japanese postal codes: 〒123-4567 (〒 inside the span), or after 郵便番号/postal code."""
    mark = re.compile(r"〒 ?\d{3}-?\d{4}" + _R)
    ctx = re.compile(
        r"(?:郵便番号|postal code|zip code|zip)\s*[:：]?\s*(\d{3}-\d{4})" + _R, re.IGNORECASE
    )
    return RegexRecognizer(
        "JP_POSTAL_CODE",
        "PostalCodeRecognizer",
        language,
        [Rx("postal_mark", mark, 0.95), Rx("postal_context", ctx, 0.8, 1)],
    )


_DEVICE_WORDS = re.compile(
    r"(?<![a-z])(?:tablet|laptop|notebook|smartphone|phone|handheld|scanner|pc|desktop|"
    r"workstation|device|terminal|ipad|iphone)s?(?![a-z])|"
    r"タブレット|パソコン|端末|スマホ|スマートフォン|携帯|ハンディ"
)
_MACHINE_WORDS = re.compile(
    r"(?<![a-z])(?:plc|hmi|robot|controller|camera|cam|sensor|gateway|router|switch|server|"
    r"printer|press|cnc|molder|machine|drive|servo|firmware|fw|version|ver|rev|part|lot|"
    r"serial|vlan|subnet|gateway|dns)s?(?![a-z])|"
    r"制御|設備|号機|ロボット|カメラ|センサ|サーバ|プリンタ|ファームウェア|バージョン|部品|品番|製番"
)
_IPV4 = re.compile(
    r"(?<![0-9A-Za-z.\-])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
    r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![0-9A-Za-z\-]|\.[0-9A-Za-z])"
)


def _nearest(words: re.Pattern[str], left: str, right: str) -> int | None:
    best = None
    for m in words.finditer(left):
        d = len(left) - m.end()
        best = d if best is None else min(best, d)
    for m in words.finditer(right):
        best = m.start() if best is None else min(best, m.start())
    return best


def _ip_check(folded: str, s: int, e: int) -> float | None:
    """The nearest context word before the address decides (device → flag, machine → not);
    with none before it, the nearest one after it."""
    left, right = _context(folded, s, e, 60, 30)
    for lft, rgt in ((left, ""), ("", right)):
        device = _nearest(_DEVICE_WORDS, lft, rgt)
        machine = _nearest(_MACHINE_WORDS, lft, rgt)
        if device is not None or machine is not None:
            return 0.8 if machine is None or (device is not None and device < machine) else None
    return None


def ip_recognizer(language: str) -> RegexRecognizer:
    """IPv4 addresses of a person's device: the nearest context word must be a device word."""
    return RegexRecognizer(
        "IP_ADDRESS", "IpRecognizer", language, [Rx("ipv4_device", _IPV4, 0.8, check=_ip_check)]
    )


# -- allow list ------------------------------------------------------------------------------

BUILTIN_ALLOW = (
    r"(?<![0-9A-Za-z\-])[A-Z]{1,4}-\d{1,4}(?![0-9A-Za-z]|-\d)",  # machine codes: CNC-12, R-14
    r"(?<![0-9A-Za-z\-])[A-Z]{2,4}-\d{4}-\d{2,6}(?![0-9A-Za-z])",  # tickets: MT-2026-0312
    r"(?<![0-9A-Za-z])(?:SN|S/N|sn|s/n)[-:# ]?\s?[0-9A-Z][0-9A-Z\-]{3,}",  # serials
    r"(?i)(?<![0-9a-z])(?:fw|firmware|ver\.?|version|rev\.?|v)\s?\d+(?:\.\d+){1,3}(?![0-9a-z])",
    r"(?:ファームウェア|ファーム|バージョン)(?:を|は|が|:|：)?\s?\d+(?:\.\d+){1,3}",
    r"(?<![0-9A-Za-z.\-])\d+(?:\.\d+){2,3}-[0-9A-Za-z]+",  # IP-like part numbers: 10.4.220.17-A
    r"(?i)(?<![0-9a-z])LOT[-#: ]?\d[0-9A-Z\-]*",  # lot codes
)


def _glob_regex(glob: str) -> str:
    body = "".join(
        r"[0-9A-Za-z_\-./]*" if ch == "*" else r"[0-9A-Za-z_\-./]" if ch == "?" else re.escape(ch)
        for ch in glob
    )
    return _L + body + _R


class AllowList:
    """Spans of allowed vocabulary (asset names/globs, patterns, built-in look-alikes).

    >>> allow = AllowList(AllowConfig(assets=["Robot R-14", "CNC-*"], builtin=False))
    >>> allow.spans("Robot R-14 and CNC-12")
    [(0, 10), (15, 21)]
    """

    def __init__(self, config: AllowConfig) -> None:
        regexes: list[re.Pattern[str]] = []
        for where, items, make in (
            ("assets", config.assets, _glob_regex),
            ("patterns", config.patterns, str),
        ):
            for i, item in enumerate(items):
                try:
                    regexes.append(re.compile(make(item)))
                except re.error as err:
                    raise ConfigError(
                        "scrub",
                        f"allow.{where}[{i}]",
                        item,
                        f"a valid glob or regular expression ({err})",
                    ) from None
        if config.builtin:
            regexes.extend(re.compile(p) for p in BUILTIN_ALLOW)
        self.regexes = regexes

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Sorted (start, end) of every allowed token in ``text``."""
        folded = fold_width(text)
        found = {
            m.span() for rx in self.regexes for m in rx.finditer(folded) if m.end() > m.start()
        }
        return sorted(found)


# -- the registry ---------------------------------------------------------------------------


def optional_recognizer_classes() -> dict[str, type]:
    """Presidio's predefined pattern recognizers, by the entity they detect."""
    from presidio_analyzer import PatternRecognizer
    from presidio_analyzer import predefined_recognizers as pre

    out: dict[str, type] = {}
    for name in dir(pre):
        cls = getattr(pre, name)
        if not (isinstance(cls, type) and issubclass(cls, PatternRecognizer)):
            continue
        param = inspect.signature(cls.__init__).parameters.get("supported_entity")
        default = getattr(param, "default", None)
        if isinstance(default, str) and default not in OWN_ENTITIES:
            out.setdefault(default, cls)
    return out


#: Entities coming from the NER models when switched on in ``optional_recognizers``.
NER_OPTIONAL = {
    "LOCATION": ("GPE", "LOC", "City", "Country", "Province", "Domestic_Region"),
    "ORGANIZATION": ("ORG", "Company", "Organization_Other", "Corporation_Other"),
    "NRP": ("NORP", "Nationality"),
    "DATE_TIME": ("DATE", "TIME", "Date", "Time"),
}


def build_recognizers(
    config: ScrubConfig, language: str, words: frozenset[str] = frozenset()
) -> list[Any]:
    """All recognizers for one language except the NER one (the engine adds it).

    >>> from mmdata.config import ScrubConfig
    >>> sorted(r.name for r in build_recognizers(ScrubConfig(), "en"))[:3]
    ['BadgeIdRecognizer', 'EmailRecognizer', 'EmployeeIdRecognizer']
    """
    off = set(config.disabled_entities)
    recs: list[Any] = []
    makers: dict[str, Callable[[str], Any]] = {
        "EMAIL_ADDRESS": email_recognizer,
        "PHONE_NUMBER": phone_recognizer,
        "JP_MY_NUMBER": my_number_recognizer,
        "JP_POSTAL_CODE": postal_code_recognizer,
        "IP_ADDRESS": ip_recognizer,
    }
    for entity, make in makers.items():
        if entity not in off:
            recs.append(make(language))
    if "PERSON" not in off:
        from mmdata.scrub.names import JaNameRecognizer, LatinNameRecognizer

        recs.append(LatinNameRecognizer(language, words))
        if language == "ja":
            recs.append(JaNameRecognizer(language))
    for entity, patterns in config.id_patterns.items():
        if entity not in off and patterns:
            recs.append(id_recognizer(entity, patterns, language))
    if config.optional_recognizers:
        classes = optional_recognizer_classes()
        for entity in config.optional_recognizers:
            if entity in NER_OPTIONAL:
                continue
            if entity not in classes:
                choices = ", ".join(sorted([*classes, *NER_OPTIONAL]))
                raise ConfigError("scrub", "optional_recognizers", entity, f"one of: {choices}")
            recs.append(classes[entity](supported_language=language))
    return recs
