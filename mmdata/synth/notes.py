"""Operator notes and maintenance tickets from the line's MES, with PII ground truth.

``notes/operator_notes.jsonl`` holds one JSON object per line, sorted by time::

    {"note_id": "n-000001", "ts": "2026-03-01T17:00:12.345+09:00", "asset": "press-1",
     "kind": "operator_note" | "maintenance_ticket", "lang": "en" | "ja",
     "author": "EMP-123456", "text": "..."}

``ts`` is MES (reference clock) time in plant local time with milliseconds. About one note
every 20-40 s per asset, about half English and half Japanese. Texts are routine (shift
handovers, checks, deliveries, maintenance, calls) and never mention the fault of the moment.

PII in ``text`` (ground truth: character spans, Python ``str`` indices, end exclusive):
``PERSON`` (the name only: honorifics such as さん/様/課長 and titles such as Mr./Ms. are outside
the span), ``EMAIL_ADDRESS``, ``PHONE_NUMBER``, ``EMPLOYEE_ID`` (``EMP-\\d{6}``), ``BADGE_ID``
(``B\\d{5}``), ``JP_POSTAL_CODE`` (``〒\\d{3}-\\d{4}``, 〒 inside the span), ``JP_MY_NUMBER``
(12 digits with a valid check digit, sometimes grouped 4-4-4 with spaces). Japanese texts
glue PII to the surrounding text without spaces (``田中さん(tanaka.t@example-plant.co.jp)に連絡``).

Decoys (not PII, but look-alikes a naive recognizer flags): ``machine`` (``Robot R-14``,
``Press P-3``, ``Injection Molder IM-8``, ``CNC-12``), ``serial`` (``SN-2024-0042-117``),
``firmware`` (``fw 2.10.4.1``), ``part_number`` (IP-like ``10.4.220.17-A``), ``lot``
(``LOT-260301-07`` or 12 digits with an *invalid* My Number check digit).

The ``author`` field is an employee id too (not part of ``text``).

>>> from mmdata.synth.config import SynthConfig
>>> notes, truth = generate_notes(SynthConfig(assets=1, minutes=2))
>>> all(n["text"][s["start"]:s["end"]] == s["text"] for n, t in zip(notes, truth)
...     for s in t["spans"])
True
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from mmdata.synth.clocks import DEVICE_CODES, P_NOTES, iso_plant_ms, rng_for
from mmdata.synth.config import SynthConfig
from mmdata.timebase import NS_PER_MS

EN_PEOPLE: tuple[tuple[str, str], ...] = (
    ("John", "Smith"),
    ("Maria", "Garcia"),
    ("David", "Miller"),
    ("Emily", "Johnson"),
    ("Michael", "Brown"),
    ("Sarah", "Davis"),
    ("James", "Wilson"),
    ("Linda", "Martinez"),
    ("Robert", "Taylor"),
    ("Anna", "Kowalski"),
    ("Carlos", "Rivera"),
    ("Priya", "Sharma"),
)
#: (surname, given name, surname romaji, given romaji)
JA_PEOPLE: tuple[tuple[str, str, str, str], ...] = (
    ("田中", "太郎", "tanaka", "taro"),
    ("佐藤", "花子", "sato", "hanako"),
    ("鈴木", "一郎", "suzuki", "ichiro"),
    ("高橋", "健太", "takahashi", "kenta"),
    ("伊藤", "美咲", "ito", "misaki"),
    ("渡辺", "大輔", "watanabe", "daisuke"),
    ("山本", "直美", "yamamoto", "naomi"),
    ("中村", "翔", "nakamura", "sho"),
    ("小林", "由美", "kobayashi", "yumi"),
    ("加藤", "誠", "kato", "makoto"),
    ("吉田", "愛", "yoshida", "ai"),
    ("山田", "健一", "yamada", "kenichi"),
)

EN_OPERATOR = (
    "Shift handover from {NAME} to {NAME2}: {MACHINE} running normally, {COUNT} parts "
    "inspected. Call {PHONE} if the line stops.",
    "Checked guard interlock on {MACHINE} (serial {SERIAL}). All OK. Inspector: {NAME} ({EMP}).",
    "{NAME} reported the label printer at station 4 is low on ribbon. Contact {EMAIL} for "
    "supplies.",
    "Visitor escorted by {MR} (badge {BADGE}) through the {AREA} area at {TIME}.",
    "Updated HMI on {MACHINE} to {FW}; recipe reloaded, first-article check passed.",
    "Received {COUNT} boxes of part {PART}, lot {LOT}. Stored at rack C-{SMALL}. "
    "Signed {NAME}, {EMP}.",
    "Quality call with {NAME} ({PHONE}) about packaging for the next shipment; no change to "
    "the inspection plan.",
    "Break coverage: {NAME} covers {MACHINE} until {TIME}. Reach them at {PHONE} or {EMAIL}.",
    "Reminder from {MR}: safety walk tomorrow at {TIME}, meet next to {MACHINE}.",
    "New hire {NAME} ({EMP}, badge {BADGE}) starts on the inspection station; mentor {NAME2}.",
    "Forklift route near {MACHINE} blocked until {TIME}; ask {MR} at {PHONE} before moving "
    "pallets.",
)
EN_OPERATOR_RARE = (
    "HR note: {NAME} submitted My Number {MYNUM} for the year-end adjustment; forms kept in "
    "the office safe.",
)
EN_TICKET = (
    "MT-{TICKET}: Replace air filter on {MACHINE} ({SERIAL}). Assigned to {NAME}, {PHONE}. "
    "Parts: {PART}.",
    "MT-{TICKET}: Calibrate light curtain at {MACHINE}, {FW}. Requested by {MR} ({EMP}).",
    "MT-{TICKET}: Belt tracking check on {MACHINE}. Vendor contact {NAME}, {EMAIL}, {PHONE}.",
    "MT-{TICKET}: Lubrication schedule updated for {MACHINE}; grease lot {LOT}. Technician "
    "{NAME} (badge {BADGE}).",
)
JA_OPERATOR = (
    "{SHIFT}から{SHIFT2}へ引き継ぎ。{NAME}より{MACHINE}は正常稼働、検査数{COUNT}個。",
    "{SAN}({EMAIL})に連絡済み。{MACHINE}の段取り替えは{TIME}予定。",
    "{NAME}が{MACHINE}(製番{SERIAL})の安全カバーを点検、異常なし。社員番号{EMP}。",
    "見学者対応：{SAN}が{AREA}を案内、入館証{BADGE}。",
    "{MACHINE}のファームウェアを{FW}に更新。初品確認OK、担当{NAME}。",
    "部品{PART}を{COUNT}箱受入、ロット{LOT}。保管棚C-{SMALL}。受領者{NAME}({EMP})。",
    "不在時は{SAN}の携帯{PHONE}まで連絡してください。",
    "品証の{NAME}さんと出荷梱包について打合せ、検査手順の変更なし。連絡先{PHONE}。",
    "{TIME}から{MACHINE}周辺の清掃、{SAN}と{NAME2}で実施。",
    "{SAN}より：明日{TIME}に安全パトロール、{MACHINE}前に集合。",
)
JA_OPERATOR_RARE = (
    "総務より：{NAME}のマイナンバー{MYNUM}を年末調整用に受領。住所{POSTAL}の変更届も提出済み。",
    "{NAME}({EMP})の住所変更{POSTAL}、緊急連絡先{PHONE}を人事に登録。",
)
JA_TICKET = (
    "保全依頼MT-{TICKET}：{MACHINE}のエアフィルター交換。担当{NAME}、{PHONE}。部品{PART}。",
    "保全依頼MT-{TICKET}：{MACHINE}(S/N {SERIAL})の光電センサー校正、{FW}。依頼者{SAN}({EMP})。",
    "保全依頼MT-{TICKET}：{MACHINE}のベルト蛇行確認。業者担当{NAME}様 {EMAIL} / {PHONE}",
    "保全記録：{MACHINE}給脂、グリースロット{LOT}使用。作業者{NAME}(入館証{BADGE})。",
)

EN_AREAS = ("assembly", "paint shop", "warehouse", "inspection", "shipping")
JA_AREAS = ("組立エリア", "塗装エリア", "倉庫", "検査エリア", "出荷場")
EN_SHIFTS = ("day shift", "night shift", "swing shift")
JA_SHIFTS = ("早番", "遅番", "夜勤")
PLACEHOLDER = re.compile(r"\{([A-Z0-9]+)\}")

Segment = tuple[str, str | None, str | None]  # (text, PII entity, decoy kind)


def my_number_check_digit(first11: str) -> int:
    """Check digit of a Japanese Individual Number (My Number) from its first 11 digits.

    Official algorithm: with P_n the n-th digit counted from the right of the 11 digits and
    Q_n = n + 1 (n <= 6) or n - 5 (n >= 7), r = sum(P_n * Q_n) mod 11; the check digit is 0
    if r <= 1, else 11 - r.

    >>> my_number_check_digit("12345678901")
    8
    """
    if len(first11) != 11 or not first11.isdigit():
        raise ValueError(f"need exactly 11 digits, got {first11!r}")
    total = 0
    for n, ch in enumerate(reversed(first11), start=1):
        q = n + 1 if n <= 6 else n - 5
        total += int(ch) * q
    r = total % 11
    return 0 if r <= 1 else 11 - r


def is_valid_my_number(number: str) -> bool:
    """Whether ``number`` (spaces/hyphens ignored) is 12 digits with a valid check digit.

    >>> is_valid_my_number("1234 5678 9018"), is_valid_my_number("123456789019")
    (True, False)
    """
    digits = re.sub(r"[\s-]", "", number)
    if len(digits) != 12 or not digits.isdigit():
        return False
    return my_number_check_digit(digits[:11]) == int(digits[11])


class _Filler:
    """Fills one template: picks people, numbers and look-alikes, records spans."""

    def __init__(self, rng: np.random.Generator, lang: str) -> None:
        self.rng = rng
        self.lang = lang
        self.people = EN_PEOPLE if lang == "en" else JA_PEOPLE
        order = rng.permutation(len(self.people))
        self.p1 = int(order[0])
        self.p2 = int(order[1])
        self.shifts = EN_SHIFTS if lang == "en" else JA_SHIFTS
        self.shift = int(rng.integers(0, len(self.shifts)))

    def _int(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def _digits(self, n: int) -> str:
        return "".join(str(self._int(0, 9)) for _ in range(n))

    def _pick(self, options: tuple[str, ...]) -> str:
        return options[self._int(0, len(options) - 1)]

    # -- PII ------------------------------------------------------------------------
    def name(self, who: int) -> list[Segment]:
        if self.lang == "en":
            first, last = EN_PEOPLE[who]
            return [(f"{first} {last}", "PERSON", None)]
        sur, given, _, _ = JA_PEOPLE[who]
        sep = " " if self.rng.random() < 0.5 else ""
        return [(f"{sur}{sep}{given}", "PERSON", None)]

    def san(self) -> list[Segment]:
        sur = JA_PEOPLE[self.p1][0]
        return [(sur, "PERSON", None), (self._pick(("さん", "さん", "課長", "様")), None, None)]

    def mr(self) -> list[Segment]:
        first, last = EN_PEOPLE[self.p1]
        title = "Ms." if first in {"Maria", "Emily", "Sarah", "Linda", "Anna", "Priya"} else "Mr."
        return [(f"{title} ", None, None), (last, "PERSON", None)]

    def email(self) -> list[Segment]:
        if self.lang == "en":
            first, last = EN_PEOPLE[self.p1]
            local = f"{first}.{last}" if self.rng.random() < 0.6 else f"{first[0]}{last}"
            return [(f"{local.lower()}@example.com", "EMAIL_ADDRESS", None)]
        _, _, sur, given = JA_PEOPLE[self.p1]
        local = f"{sur}.{given[0]}" if self.rng.random() < 0.6 else f"{given}.{sur}"
        return [(f"{local}@example-plant.co.jp", "EMAIL_ADDRESS", None)]

    def phone(self) -> list[Segment]:
        style = self._int(0, 4)
        if self.lang == "en" and style >= 3:
            return [(f"+1 555 01{self._digits(2)}", "PHONE_NUMBER", None)]
        if style == 0:
            text = f"+81 {self._pick(('90', '80', '70'))}-{self._digits(4)}-{self._digits(4)}"
        elif style in (1, 3):
            text = f"{self._pick(('090', '080', '070'))}-{self._digits(4)}-{self._digits(4)}"
        else:
            text = f"{self._pick(('03', '06', '052'))}-{self._digits(4)}-{self._digits(4)}"
        return [(text, "PHONE_NUMBER", None)]

    def my_number(self) -> list[Segment]:
        first = str(self._int(1, 9)) + self._digits(10)
        full = first + str(my_number_check_digit(first))
        if self.rng.random() < 0.4:
            full = f"{full[:4]} {full[4:8]} {full[8:]}"
        return [(full, "JP_MY_NUMBER", None)]

    # -- look-alikes ---------------------------------------------------------------------
    def machine(self) -> list[Segment]:
        kind = self._int(0, 3)
        text = (
            f"Robot R-{self._int(1, 40)}",
            f"Press P-{self._int(1, 12)}",
            f"Injection Molder IM-{self._int(1, 20)}",
            f"CNC-{self._int(1, 30)}",
        )[kind]
        return [(text, None, "machine")]

    def lot(self) -> list[Segment]:
        if self.rng.random() < 0.5:
            text = f"LOT-26{self._int(1, 3):02d}{self._int(1, 28):02d}-{self._int(1, 20):02d}"
        else:  # 12 digits that fail the My Number check digit
            first = "2026" + self._digits(7)
            bad = (my_number_check_digit(first) + self._int(1, 9)) % 10
            text = first + str(bad)
        return [(text, None, "lot")]

    def fill(self, key: str) -> list[Segment]:
        plain: dict[str, Callable[[], str]] = {
            "COUNT": lambda: f"{self._int(80, 1500):,}",
            "SMALL": lambda: str(self._int(1, 24)),
            "TIME": lambda: f"{self._int(7, 22):02d}:{self._pick(('00', '15', '30', '45'))}",
            "TICKET": lambda: f"2026-{self._int(1, 9999):04d}",
            "AREA": lambda: self._pick(EN_AREAS if self.lang == "en" else JA_AREAS),
            "SHIFT": lambda: self.shifts[self.shift],
            "SHIFT2": lambda: self.shifts[(self.shift + 1) % len(self.shifts)],
        }
        if key in plain:
            return [(plain[key](), None, None)]
        pii: dict[str, Callable[[], list[Segment]]] = {
            "NAME": lambda: self.name(self.p1),
            "NAME2": lambda: self.name(self.p2),
            "SAN": self.san,
            "MR": self.mr,
            "EMAIL": self.email,
            "PHONE": self.phone,
            "EMP": lambda: [(f"EMP-{self._digits(6)}", "EMPLOYEE_ID", None)],
            "BADGE": lambda: [(f"B{self._digits(5)}", "BADGE_ID", None)],
            "POSTAL": lambda: [(f"〒{self._digits(3)}-{self._digits(4)}", "JP_POSTAL_CODE", None)],
            "MYNUM": self.my_number,
            "MACHINE": self.machine,
            "SERIAL": lambda: [
                (f"SN-{self._int(2019, 2026)}-{self._digits(4)}-{self._digits(3)}", None, "serial")
            ],
            "FW": lambda: [
                (
                    f"fw {self._int(1, 4)}.{self._int(0, 12)}.{self._int(0, 9)}.{self._int(0, 9)}",
                    None,
                    "firmware",
                )
            ],
            "PART": lambda: [
                (
                    f"{self._int(10, 99)}.{self._int(0, 9)}.{self._int(100, 250)}."
                    f"{self._int(1, 99)}-{self._pick(('A', 'B', 'C', 'D'))}",
                    None,
                    "part_number",
                )
            ],
            "LOT": self.lot,
        }
        if key not in pii:
            raise KeyError(f"unknown note template placeholder {{{key}}}")
        return pii[key]()


def render_template(
    template: str, rng: np.random.Generator, lang: str
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """Fill ``template``; return ``(text, spans, decoys)`` with exact character offsets.

    >>> import numpy as np
    >>> text, spans, decoys = render_template("Call {NAME} at {PHONE}.",
    ...                                       np.random.default_rng(0), "en")
    >>> [text[s["start"]:s["end"]] == s["text"] for s in spans]
    [True, True]
    """
    filler = _Filler(rng, lang)
    pieces: list[str] = []
    spans: list[dict[str, Any]] = []
    decoys: list[dict[str, Any]] = []
    pos = 0
    last = 0
    segments: list[Segment] = []
    for m in PLACEHOLDER.finditer(template):
        segments.append((template[last : m.start()], None, None))
        segments.extend(filler.fill(m.group(1)))
        last = m.end()
    segments.append((template[last:], None, None))
    for text, entity, decoy in segments:
        if entity is not None:
            spans.append({"start": pos, "end": pos + len(text), "entity": entity, "text": text})
        if decoy is not None:
            decoys.append({"start": pos, "end": pos + len(text), "kind": decoy, "text": text})
        pieces.append(text)
        pos += len(text)
    return "".join(pieces), spans, decoys


def _choose_template(rng: np.random.Generator, lang: str, kind: str) -> str:
    pool: tuple[str, ...]
    if kind == "maintenance_ticket":
        pool = EN_TICKET if lang == "en" else JA_TICKET
    elif rng.random() < 0.06:
        pool = EN_OPERATOR_RARE if lang == "en" else JA_OPERATOR_RARE
    else:
        pool = EN_OPERATOR if lang == "en" else JA_OPERATOR
    return pool[int(rng.integers(0, len(pool)))]


def generate_notes(config: SynthConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All notes of the run (sorted by time, then asset) and their ground-truth entries.

    >>> from mmdata.synth.config import SynthConfig
    >>> notes, truth = generate_notes(SynthConfig(assets=2, minutes=3))
    >>> notes[0]["note_id"], truth[0]["note_id"]
    ('n-000001', 'n-000001')
    """
    start = config.start_ns()
    end = start + config.duration_ns()
    drafts: list[tuple[int, int, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]] = []
    for a, asset in enumerate(config.asset_ids()):
        rng = rng_for(config.seed, a, DEVICE_CODES["asset"], P_NOTES)
        authors = [f"EMP-{int(x):06d}" for x in rng.integers(100_000, 999_999, 6)]
        t = start + int(rng.integers(3_000, 30_001)) * NS_PER_MS
        while t < end:
            lang = "en" if rng.random() < 0.5 else "ja"
            kind = "maintenance_ticket" if rng.random() < 0.25 else "operator_note"
            text, spans, decoys = render_template(_choose_template(rng, lang, kind), rng, lang)
            note = {
                "ts": iso_plant_ms(t),
                "asset": asset,
                "kind": kind,
                "lang": lang,
                "author": authors[int(rng.integers(0, len(authors)))],
                "text": text,
            }
            drafts.append((t, a, note, spans, decoys))
            t += int(rng.integers(20_000, 40_001)) * NS_PER_MS
    drafts.sort(key=lambda d: (d[0], d[1]))
    notes: list[dict[str, Any]] = []
    truth: list[dict[str, Any]] = []
    for n, (t, _, note, spans, decoys) in enumerate(drafts, start=1):
        note_id = f"n-{n:06d}"
        notes.append({"note_id": note_id, **note})
        truth.append(
            {
                "note_id": note_id,
                "asset": note["asset"],
                "reference_ns": t,
                "spans": spans,
                "decoys": decoys,
            }
        )
    return notes, truth
