"""Person names: what spaCy's small English model and GiNZA miss, and what they get wrong.

* :class:`LatinNameRecognizer` (every language: English notes, romaji in Japanese ones): a
  given name from ``data/given_names.txt`` plus the capitalized surname(s) after it; any
  capitalized run after Mr./Ms./Dr. or before -san/さん/様; a capitalized two-word run after a
  role or verb cue ("borrowed by X Y", "operator X Y") unless it ends like a company or is
  plain English; a capitalized word signing off the note ("... - Zbigniew").
* :class:`JaNameRecognizer` (Japanese, from the GiNZA/Sudachi tokens): runs of tokens Sudachi
  tags 人名; surnames from ``data/ja_surnames.txt`` or proper nouns before an honorific
  (さん, 様, 課長…) or after a role word (担当, 作業者…); the given name of ``姓 名``.
* :func:`trim_person` / :func:`plausible_person`: role words trimmed off NER spans, and spans
  that read as machines, codes, companies or plain vocabulary dropped ("Robot R-14",
  "Injection Molder", "Castrol Industrial", "ヤマト運輸", "Wardens").

>>> rec = LatinNameRecognizer("en")
>>> [(r.start, r.end) for r in rec.analyze("Handed over to Aisha Bello at 06:00", ["PERSON"])]
[(15, 26)]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

from mmdata.scrub.recognizers import (
    DATA,
    HAN,
    HONORIFICS,
    KATAKANA,
    RegexRecognizer,
    Rx,
    fold_width,
)

LAT = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
_LAT_TOKEN = re.compile(rf"(?<![{LAT}0-9])[{LAT}]+(?:['’\-][{LAT}]+)*")
_TITLE = re.compile(r"(?:^|[^A-Za-z])(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.? ?$")
#: Words right before a capitalized two-word run that make it a name ("borrowed by X Y").
_LATIN_CUE = re.compile(
    r"(?:^|[^A-Za-z])(?:by|of|for|to|with|per|hire|and|lead|host|owner|operator|inspector|"
    r"technician|contact|visitor|signed|thanks|called|call|ask|told|tell|met|meet|via|cc|mentor|"
    r"covering|trainee|dear|hi|hello)[:,]? $",
    re.IGNORECASE,
)
#: "A. KUMAR", "J. Smith": an initial and a surname, at a line start or after a cue/punctuation
#: (name tags, sign-offs, "per J. Smith") — not "Plan B. Check" (a letter ending a sentence).
_INITIAL_SURNAME = re.compile(
    rf"(?:^|(?<=[\n(\[,;:/]))\s*([A-Z])\. ?([A-Z][{LAT}]*(?:['’\-][{LAT}]+)*)(?![{LAT}0-9])"
    rf"|(?<=[ ])([A-Z])\. ?([A-Z][{LAT}]*(?:['’\-][{LAT}]+)*)(?![{LAT}0-9])",
    re.M,
)
_SIGNATURE = re.compile(r"(?:^|\s)(?:-{1,2}|—|–|/) ?$")  # "... again. - Zbigniew" at the end
_LATIN_HONORIFIC = re.compile(r"^(?:-san|-sama|-sensei|-kun| ?(?:さん|様|さま|氏|君|くん|殿))")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Capitalized words that end a name run (days, months, units, plant vocabulary).
NOT_NAME = _words("""
monday tuesday wednesday thursday friday saturday sunday january february march april may june
july august september october november december today tomorrow yesterday the a an and or of
for from to in on at by with via per re fyi asap hr it qa qc ehs mes ot plc hmi cnc inc ltd
co corp gmbh llc kk motors automation bearings plastics logistics systems electric industries
robot press molder injection compressor conveyor forklift line station cell dock bay gate
team shift plant office lab room area zone warehouse assembly shipping receiving security
maintenance quality engineering tooling safety production purchasing payroll steel metals
works company group tools seiki seiko kogyo denki trading services solutions technologies labs
partners supply supplies chemicals foods holdings international global
""")
#: Capitalized words that start a sentence before a name ("Call Ana Costa", "Thanks Liam").
LEAD_WORDS = _words("""
call called calling ask asked tell told spoke speak contact contacted please thanks thank dear
hi hello cc signed operator inspector technician tech visitor contractor supplier vendor
customer mentor lead host owner covering welcome trainee reminder note email mail phone mobile
voicemail reported requested assigned with new hire temp agency worker guest driver approved
checked cleared verified by ask
""")
#: Last words of company, site and department names ("Castrol Industrial", "Fanuc America").
ORG_HEADS = _words("""
industrial industry transport express logistic freight shipping system solution service motor
electric electronic steel metal plastic chemical robotic automation machinery machine tool
bearing component part supply store resource engineering control facility department
international global holding group partner corporation company america japan europe asia china
korea germany usa uk india mexico canada brazil france italy spain vietnam thailand
""")
#: Words that make a spaCy PERSON span implausible (machines, places, things on the floor).
FACTORY_WORDS = NOT_NAME | _words("""
scrap bin bins warden wardens voicemail kaizen hose hoses die dies tool tools crib pallet mold
machine machines ticket lot serial firmware part parts alarm sensor camera printer label tablet
laptop scanner vlan coolant spindle gearbox encoder servo drive pendant gripper guard valve
pump motor belt chain filter cabinet rack shelf bracket drawing recipe program audit kit
""")


@functools.lru_cache(maxsize=1)
def given_names() -> tuple[frozenset[str], frozenset[str]]:
    """(given names, ambiguous given names) from ``data/given_names.txt``."""
    names: set[str] = set()
    ambiguous: set[str] = set()
    target = names
    for line in (DATA / "given_names.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("## ambiguous"):
            target = ambiguous
        elif line and not line.startswith("#"):
            target.update(line.split())
    return frozenset(names - ambiguous), frozenset(ambiguous)


@functools.lru_cache(maxsize=1)
def ja_surnames() -> frozenset[str]:
    """Common Japanese surnames from ``data/ja_surnames.txt``."""
    text = (DATA / "ja_surnames.txt").read_text(encoding="utf-8")
    return frozenset(
        w for line in text.splitlines() if not line.startswith("#") for w in line.split()
    )


def is_word(token: str, words: frozenset[str]) -> bool:
    """Whether ``token`` (or its singular) is in the English dictionary ``words``.

    >>> is_word("Stores", frozenset({"store"})), is_word("Tierney", frozenset({"store"}))
    (True, False)
    """
    w = token.lower()
    forms = {
        w,
        w[:-1] if w.endswith("s") else w,
        w[:-2] if w.endswith("es") else w,
        w[:-3] + "y" if w.endswith("ies") else w,
    }
    return any(f in words for f in forms)


def common_words_only(span: str, words: frozenset[str]) -> bool:
    """A span made only of dictionary words, none of them a given name ("Blue", "Wardens")."""
    given, ambiguous = given_names()
    toks = re.findall(f"[{LAT}]+", span)
    return bool(toks) and all(
        is_word(t, words) and t not in given and t not in ambiguous for t in toks
    )


def _title_case(tok: str) -> bool:
    return tok[0].isupper() and any(c.islower() for c in tok)


class LatinNameRecognizer(RegexRecognizer):
    """Latin-script names: a given name from the list (+ capitalized surnames), any capitalized
    run after Mr./Ms./Dr., or before -san/さん/様. Runs in every language (romaji in Japanese
    notes, English names in mixed notes)."""

    def __init__(self, language: str, words: frozenset[str] = frozenset()) -> None:
        super().__init__("PERSON", "LatinNameRecognizer", language, [])
        self.given, self.ambiguous = given_names()
        self.words = words  # an English dictionary: "Yamato Transport" is not a name

    def _runs(self, folded: str) -> list[list[tuple[int, int, str]]]:
        runs: list[list[tuple[int, int, str]]] = []
        for m in _LAT_TOKEN.finditer(folded):
            tok, s, e = m.group(), m.start(), m.end()
            if tok.endswith(("'s", "’s")):
                tok, e = tok[:-2], e - 2
            if not _title_case(tok) or tok.lower() in NOT_NAME:
                runs.append([])
                continue
            if runs and runs[-1] and folded[runs[-1][-1][1] : s] == " ":
                runs[-1].append((s, e, tok))
            else:
                runs.append([(s, e, tok)])
        return [r for r in runs if r]

    def spans(self, folded: str) -> Iterable[tuple[int, int, float, Rx]]:
        """Name runs with the rule that fired as the pattern name."""
        yield from self._initials(folded)
        for run in self._runs(folded):
            while run and run[0][2].lower() in LEAD_WORDS:
                run = run[1:]
            if not run:
                continue
            run = run[:4]
            s, e = run[0][0], run[-1][1]
            if _TITLE.search(folded[max(0, s - 6) : s]):
                yield s, e, 0.85, _RULE["title"]
            elif _LATIN_HONORIFIC.match(folded[e : e + 8]):
                yield s, e, 0.85, _RULE["honorific"]
            elif any(t in self.given for _, _, t in run) or (
                len(run) > 1 and run[0][2] in self.ambiguous
            ):
                yield s, e, 0.75, _RULE["given_name"]
            elif (
                len(run) > 1
                and _LATIN_CUE.search(folded[max(0, s - 14) : s])
                and not is_word(run[-1][2], ORG_HEADS)
                and not all(is_word(t, self.words) for _, _, t in run)
            ):
                yield s, e, 0.6, _RULE["cue"]
            elif _SIGNATURE.search(folded[max(0, s - 4) : s]) and not folded[e:].strip(" .!"):
                yield s, e, 0.6, _RULE["signature"]

    def _initials(self, folded: str) -> Iterable[tuple[int, int, float, Rx]]:
        for m in _INITIAL_SURNAME.finditer(folded):
            at_start = m.group(1) is not None
            surname = m.group(2) if at_start else m.group(4)
            s = m.start(1) if at_start else m.start(3)
            if len(surname) < 2 or is_word(surname, FACTORY_WORDS):
                continue
            if not at_start and not _LATIN_CUE.search(folded[max(0, s - 14) : s]):
                continue  # mid-sentence: only after a cue ("per J. Smith")
            yield s, m.end(), 0.7, _RULE["initial"]


_RULES = ("title", "honorific", "given_name", "cue", "signature", "tag", "ner_tokens", "surname",
          "initial")  # fmt: skip
_RULE = {name: Rx(name, re.compile(""), 0.0) for name in _RULES}
_JA_CUE = re.compile(
    r"(?:担当|担当者|作業者|記入者|記録者|確認者|依頼者|受領|受領者|使用者|代理|リーダー|"
    r"通訳|案内|立会者|責任者|連絡者|報告者|点検者|申請者|承認者|作成者|発見者|対応者|班長|"
    r"主任)(?:は|：|:)? ?$"
)
_BOUNDARY_TAGS = ("補助記号", "助詞", "接尾辞", "空白")


class JaNameRecognizer(RegexRecognizer):
    """Japanese names from the GiNZA/Sudachi tokens: runs of 人名 tokens; a surname-list
    token or proper noun before an honorific (さん, 様, 課長…) or after a role word (担当,
    作業者…); the given name after ``姓 名`` spacing; katakana names joined by ・."""

    def __init__(self, language: str) -> None:
        super().__init__("PERSON", "JaNameRecognizer", language, [])
        self.surnames = ja_surnames()

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        """Needs the spaCy Doc of a Japanese pipeline (Sudachi tags in ``token.tag_``)."""
        if (entities and "PERSON" not in entities) or nlp_artifacts is None:
            return []
        doc = nlp_artifacts.tokens
        if doc is None or not len(doc) or not any(t.tag_.startswith("名詞") for t in doc):
            return []
        folded = fold_width(text)
        ner = {t.i for ent in nlp_artifacts.entities or [] if ent.label_ == "PERSON" for t in ent}
        return [
            self.result(s, e, score, rule, "sudachi tags")
            for s, e, score, rule in self._spans(doc, folded, ner)
        ]

    def _seed(self, doc: Any, i: int, folded: str, ner: set[int]) -> tuple[float, str] | None:
        tok = doc[i]
        tag, txt = tok.tag_, tok.text
        nxt = doc[i + 1].text if i + 1 < len(doc) else ""
        proper = tag.startswith("名詞-固有名詞")
        if tag.startswith("名詞-固有名詞-人名"):
            return 0.7, "tag"
        if i in ner:  # inside a GiNZA Person entity
            return 0.7, "ner_tokens"
        if (
            nxt in HONORIFICS
            and not tok.whitespace_
            and (proper or txt in self.surnames or re.fullmatch(f"[{KATAKANA}]+", txt))
        ):
            return 0.8, "honorific"
        cue = _JA_CUE.search(folded[max(0, tok.idx - 8) : tok.idx])
        if (proper or txt in self.surnames) and (cue or txt in self.surnames):
            return 0.75, "surname"
        return None

    def _spans(self, doc: Any, folded: str, ner: set[int]) -> list[tuple[int, int, float, str]]:
        out: list[tuple[int, int, float, str]] = []
        i, n = 0, len(doc)
        while i < n:
            seed = self._seed(doc, i, folded, ner)
            if seed is None:
                i += 1
                continue
            score, rule = seed
            j = i
            while j + 1 < n:  # grow to the right
                cur, nxt = doc[j], doc[j + 1]
                if cur.whitespace_ not in ("", " "):
                    break
                if nxt.tag_.startswith("名詞-固有名詞-人名"):
                    j += 1
                elif (
                    nxt.text == "・"
                    and j + 2 < n
                    and re.fullmatch(f"[{KATAKANA}]+", doc[j + 2].text)
                ):
                    j += 2
                elif (
                    cur.whitespace_ == " "
                    and re.fullmatch(f"[{HAN}]{{1,2}}", nxt.text)
                    and (
                        j + 2 >= n
                        or doc[j + 2].tag_.startswith(_BOUNDARY_TAGS)
                        or doc[j + 2].text in HONORIFICS
                    )
                ):
                    j += 1
                    break
                else:
                    break
            start, end = doc[i].idx, doc[j].idx + len(doc[j].text)
            if i > 0 and doc[i - 1].whitespace_ == " " and doc[i].text not in self.surnames:
                before = doc[i - 1].idx + len(doc[i - 1].text)
                start = self._surname_before(folded, before, start, doc[i].tag_.endswith("人名-名"))
            out.append((start, end, score, rule))
            i = j + 1
        return out

    def _surname_before(self, folded: str, end: int, start: int, given: bool) -> int:
        """Extend a name back over ``姓 ``: to the longest known surname ending the kanji run
        before the space (Sudachi splits 案内中島 as 案内中/島; 甲斐 reads as a common noun), or,
        for a token tagged as a given name, to a short kanji run (品証の左近 愛梨)."""
        run = re.search(f"[{HAN}]+$", folded[max(0, end - 8) : end])
        if run is None:
            return start
        for k in (3, 2, 1):
            cand = folded[max(0, end - k) : end]
            if len(cand) == k and cand in self.surnames:
                return end - k
        if given and len(run.group()) <= 3:  # the whole run (the window holds its start)
            return end - len(run.group())
        return start


_ASSET_CODE_AFTER = re.compile(r"^\s?[A-Z]{1,4}-?\d{1,4}(?![0-9])")
_NAME_CHARS = re.compile(r"[^\W\d_]|[\s'’\-.・ー]")


def trim_person(folded: str, start: int, end: int) -> tuple[int, int]:
    """Drop leading/trailing role words, plant words and codes from a name span, then edge
    punctuation ("Technician John Smith", "Connor Walsh EMP-551902", "-- Olga Ivanova").

    >>> trim_person("Technician John Smith", 0, 21), trim_person("-- Olga Ivanova", 0, 15)
    ((11, 21), (3, 15))
    """

    def junk(word: str) -> bool:
        w = word.lower().strip(":,;()")
        return w in LEAD_WORDS or w in FACTORY_WORDS or any(ch.isdigit() for ch in w)

    words = list(re.finditer(r"\S+", folded[start:end]))
    lo, hi = 0, len(words)
    while lo < hi and junk(words[lo].group()):
        lo += 1
    while hi > lo and junk(words[hi - 1].group()):
        hi -= 1
    if lo == hi:
        return start, start
    end = start + words[hi - 1].end()
    start += words[lo].start()
    while start < end and not folded[start].isalpha():
        start += 1
    while end > start and not (folded[end - 1].isalpha() or folded[end - 1] in ".'’"):
        end -= 1
    return start, end


#: A "name" directly followed by (or ending in) one of these names a company or a site.
JA_ORG_SUFFIXES = tuple(
    _words(
        "運輸 運送 物流 通運 工場 精機 工業 電機 電気 製作所 商事 通商 産業 化学 建設 "
        "興業 重工 機械 鉄鋼 自動車 銀行 病院 大学 会社 株式会社 支店 営業所 本社 支社 "
        "事業所 センター 倉庫 組合 協会 研究所 駅 製薬 食品"
    )
)


def plausible_person(folded: str, start: int, end: int) -> bool:
    """False for a PERSON span that reads as a machine, a code or plant vocabulary.

    >>> plausible_person("Injection Molder IM-8 ran", 0, 16), plausible_person("Ana Costa", 0, 9)
    (False, True)
    """
    span = folded[start:end]
    if not all(_NAME_CHARS.match(ch) for ch in span):
        return False  # digits, "@", "->", brackets: not a name
    if not any(ch.isupper() or ord(ch) > 0x2FFF for ch in span):
        return False  # lower-case Latin only ("hose")
    if _ASSET_CODE_AFTER.match(folded[end : end + 16]):
        return False
    if span.endswith(JA_ORG_SUFFIXES) or folded[end : end + 4].startswith(JA_ORG_SUFFIXES):
        return False
    words = re.findall(f"[{LAT}]+", span.lower())
    if words and is_word(words[-1], ORG_HEADS):
        return False  # "Castrol Industrial", "Fanuc America"
    return not any(w in FACTORY_WORDS for w in words if len(w) > 1)  # "A." is an initial
