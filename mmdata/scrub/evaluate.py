"""``pii-eval``: precision, recall and F2 per entity type on a labeled corpus of notes.

Corpus format (JSONL, one note per line)::

    {"id": "en-001", "text": "...", "lang": "en" | "ja" | null,
     "spans": [{"start": 0, "end": 10, "entity": "PERSON"}],
     "must_not_flag": [{"start": 20, "end": 30, "kind": "machine"}]}

Spans are Python ``str`` indices, end exclusive. Entity labels are normalized through
:data:`ENTITY_ALIASES` (``PER``/``NAME`` → ``PERSON``, ``EMAIL`` → ``EMAIL_ADDRESS``, …).

**Span match rule.** A prediction matches a gold span when both have the same entity type
(after aliasing) and their overlap covers at least half of the gold span *and* at least half of
the prediction (so ``Mr. Tanaka`` for gold ``Tanaka`` matches, a whole sentence does not).
Matching is one-to-one, greedy by overlap. Unmatched gold spans are *misses* (false
negatives), unmatched predictions *false hits* (false positives). Any prediction overlapping a
``must_not_flag`` span by even one character is a *must-not-flag hit* (and also a false hit).
F2 weighs recall twice as much as precision: ``5PR / (4P + R)``.

>>> rows = rows_from_markup("x1\\ten\\tCall [[P:Ana Costa]] near {{machine:CNC-12}}.")
>>> rows[0]["spans"], rows[0]["must_not_flag"]
([{'start': 5, 'end': 14, 'entity': 'PERSON'}], [{'start': 20, 'end': 26, 'kind': 'machine'}])
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mmdata.errors import InputDataError

DATA = Path(__file__).parent / "data"
#: Our labeled factory notes (EN + JA), and the later blind rounds kept apart (see data/README).
DEFAULT_CORPUS = DATA / "pii_corpus.jsonl"
HOLDOUT_CORPUS = DATA / "pii_holdout.jsonl"
#: The hand-written markup each JSONL file is generated from (:func:`write_corpus`).
SOURCES = {
    DEFAULT_CORPUS: DATA / "pii_corpus.src.txt",
    HOLDOUT_CORPUS: DATA / "pii_holdout.src.txt",
}
#: The entity types with goals (recall ≥ 0.98, precision ≥ 0.95 on our corpus).
GOAL_ENTITIES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "EMPLOYEE_ID")
ENTITY_ALIASES = {
    "P": "PERSON",
    "PER": "PERSON",
    "NAME": "PERSON",
    "E": "EMAIL_ADDRESS",
    "EMAIL": "EMAIL_ADDRESS",
    "T": "PHONE_NUMBER",
    "PHONE": "PHONE_NUMBER",
    "TEL": "PHONE_NUMBER",
    "EMP": "EMPLOYEE_ID",
    "EMPLOYEE": "EMPLOYEE_ID",
    "BADGE": "BADGE_ID",
    "MYNUM": "JP_MY_NUMBER",
    "MY_NUMBER": "JP_MY_NUMBER",
    "ZIP": "JP_POSTAL_CODE",
    "POSTAL_CODE": "JP_POSTAL_CODE",
    "IP": "IP_ADDRESS",
}
_MARKUP = re.compile(r"\[\[([A-Za-z_]+):(.+?)\]\]|\{\{([a-z_]+):(.+?)\}\}")


def entity_family(entity: str) -> str:
    """The canonical entity type of a label (``"email"`` → ``"EMAIL_ADDRESS"``)."""
    up = entity.strip().upper()
    return ENTITY_ALIASES.get(up, up)


# -- the corpus ------------------------------------------------------------------------------


def rows_from_markup(source: str) -> list[dict[str, Any]]:
    """Corpus rows from inline markup: ``ID<TAB>LANG<TAB>text`` per line, PII as
    ``[[ENTITY:text]]`` and must-not-flag look-alikes as ``{{kind:text}}``; ``#`` comments."""
    rows = []
    for n, line in enumerate(source.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise InputDataError(f"markup line {n}: want ID<TAB>LANG<TAB>TEXT")
        rid, lang, body = parts
        text, spans, mnf, pos = "", [], [], 0
        for m in _MARKUP.finditer(body):
            text += body[pos : m.start()]
            start = len(text)
            if m.group(1):
                text += m.group(2)
                spans.append(
                    {"start": start, "end": len(text), "entity": entity_family(m.group(1))}
                )
            else:
                text += m.group(4)
                mnf.append({"start": start, "end": len(text), "kind": m.group(3)})
            pos = m.end()
        text += body[pos:]
        if "[[" in text or "{{" in text:
            raise InputDataError(f"markup line {n}: unbalanced [[ ]] or {{{{ }}}}")
        rows.append(
            {"id": rid, "text": text, "lang": lang or None, "spans": spans, "must_not_flag": mnf}
        )
    return rows


def write_corpus(jsonl: Path, source: Path) -> int:
    """(Re)generate a JSONL corpus from its markup source; returns the number of notes."""
    rows = rows_from_markup(source.read_text(encoding="utf-8"))
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return len(rows)


def _check_spans(items: Any, text: str, key: str, where: str) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise InputDataError(f"{where}: {key!r} must be a list")
    out: list[dict[str, Any]] = []
    for s in items:
        try:
            start, end, label = int(s["start"]), int(s["end"]), str(s[key])
        except (KeyError, TypeError, ValueError):
            raise InputDataError(
                f"{where}: each span needs integer start/end and {key!r}"
            ) from None
        if not 0 <= start < end <= len(text) or not text[start:end].strip():
            raise InputDataError(f"{where}: span {start}-{end} is empty or outside the text")
        out.append({"start": start, "end": end, key: label})
    out.sort(key=lambda s: s["start"])
    for a, b in itertools.pairwise(out):
        if b["start"] < a["end"]:
            raise InputDataError(
                f"{where}: spans {a['start']}-{a['end']} and {b['start']}-{b['end']} overlap"
            )
    return out


def load_corpus(path: str | Path = DEFAULT_CORPUS) -> list[dict[str, Any]]:
    """Read and validate a JSONL corpus (spans inside the text, non-empty, not overlapping).

    >>> rows = load_corpus()
    >>> len(rows) >= 150
    True
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputDataError(f"cannot read the PII corpus {str(path)!r}: {err}") from None
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{n}"
        try:
            row = json.loads(line)
            text = row["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputDataError(f"{where}: not a JSON object with a 'text'") from None
        if not isinstance(text, str):
            raise InputDataError(f"{where}: 'text' must be a string")
        spans = _check_spans(row.get("spans", []), text, "entity", where)
        for s in spans:
            s["entity"] = entity_family(s["entity"])
        rows.append(
            {
                "id": str(row.get("id", n)),
                "text": text,
                "lang": row.get("lang"),
                "spans": spans,
                "must_not_flag": _check_spans(row.get("must_not_flag", []), text, "kind", where),
            }
        )
    return rows


def synth_rows(
    notes: Iterable[dict[str, Any]], truth: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Corpus rows from the synthetic factory's notes and ground truth (decoys become
    must-not-flag spans)."""
    by_id = {t["note_id"]: t for t in truth}
    rows = []
    for note in notes:
        t = by_id.get(note["note_id"], {})
        rows.append(
            {
                "id": note["note_id"],
                "text": note["text"],
                "lang": note.get("lang"),
                "spans": [
                    {"start": s["start"], "end": s["end"], "entity": s["entity"]}
                    for s in t.get("spans", [])
                ],
                "must_not_flag": [
                    {"start": d["start"], "end": d["end"], "kind": d["kind"]}
                    for d in t.get("decoys", [])
                ],
            }
        )
    return rows


# -- scoring -------------------------------------------------------------------------------


class _Analyzer(Protocol):
    def analyze(self, texts: Sequence[str], langs: Sequence[str | None]) -> list[list[Any]]: ...


@dataclass
class EntityScore:
    """Counts and scores of one entity type."""

    entity: str
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 1.0 when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 1.0 when there was nothing to find."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f2(self) -> float:
        """F-beta with beta = 2."""
        p, r = self.precision, self.recall
        return 5 * p * r / (4 * p + r) if p + r else 0.0


@dataclass
class Report:
    """The result of :func:`evaluate`."""

    scores: dict[str, EntityScore]
    misses: list[dict[str, Any]] = field(default_factory=list)
    false_hits: list[dict[str, Any]] = field(default_factory=list)
    must_not_flag_hits: list[dict[str, Any]] = field(default_factory=list)
    notes: int = 0
    seconds: float = 0.0

    def meets_goals(self, recall: float = 0.98, precision: float = 0.95) -> bool:
        """The issue's goals on :data:`GOAL_ENTITIES` and zero must-not-flag hits."""
        return not self.must_not_flag_hits and all(
            self.scores[e].recall >= recall and self.scores[e].precision >= precision
            for e in GOAL_ENTITIES
            if e in self.scores
        )

    def table(self) -> str:
        """A printable table: one row per entity type, then the totals."""
        lines = [
            f"{'entity':<16} {'gold':>5} {'pred':>5} {'tp':>5} {'prec':>6} {'recall':>6} {'F2':>6}"
        ]
        total = EntityScore("all")
        for e in sorted(self.scores):
            s = self.scores[e]
            total.tp, total.fp, total.fn = total.tp + s.tp, total.fp + s.fp, total.fn + s.fn
            lines.append(_row(s))
        lines.append(_row(total))
        lines.append(
            f"must-not-flag hits: {len(self.must_not_flag_hits)}   notes: {self.notes}"
            f"   {self.seconds:.1f} s"
        )
        return "\n".join(lines)

    def format(self, limit: int = 50) -> str:
        """The table, then misses, false hits and must-not-flag hits (at most ``limit`` each)."""
        out = [self.table()]
        for title, items in (
            ("misses", self.misses),
            ("false hits", self.false_hits),
            ("must-not-flag hits", self.must_not_flag_hits),
        ):
            if items:
                out.append(f"\n{title} ({len(items)}):")
                out.extend(
                    f"  {i['id']:<10} {i['entity']:<14} {i['text']!r}  … {i['context']}"
                    for i in items[:limit]
                )
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "notes": self.notes,
            "seconds": self.seconds,
            "scores": {
                e: {
                    "tp": s.tp,
                    "fp": s.fp,
                    "fn": s.fn,
                    "precision": s.precision,
                    "recall": s.recall,
                    "f2": s.f2,
                }
                for e, s in self.scores.items()
            },
            "misses": self.misses,
            "false_hits": self.false_hits,
            "must_not_flag_hits": self.must_not_flag_hits,
        }


def _row(s: EntityScore) -> str:
    return (
        f"{s.entity:<16} {s.tp + s.fn:>5} {s.tp + s.fp:>5} {s.tp:>5} {s.precision:>6.3f} "
        f"{s.recall:>6.3f} {s.f2:>6.3f}"
    )


def spans_match(gold: tuple[int, int], pred: tuple[int, int]) -> bool:
    """The overlap rule: at least half of the gold span and half of the prediction.

    >>> spans_match((4, 10), (0, 10)), spans_match((4, 10), (0, 30))
    (True, False)
    """
    overlap = min(gold[1], pred[1]) - max(gold[0], pred[0])
    return overlap > 0 and 2 * overlap >= gold[1] - gold[0] and 2 * overlap >= pred[1] - pred[0]


def _item(row: dict[str, Any], start: int, end: int, entity: str, **extra: Any) -> dict[str, Any]:
    text = row["text"]
    ctx = text[max(0, start - 25) : end + 25].replace("\n", " ")
    return {
        "id": row["id"],
        "entity": entity,
        "start": start,
        "end": end,
        "text": text[start:end],
        "context": ctx,
        **extra,
    }


def score_note(row: dict[str, Any], predicted: list[tuple[int, int, str]], report: Report) -> None:
    """Add one note's predictions (start, end, entity) to ``report``."""
    gold = [(s["start"], s["end"], entity_family(s["entity"])) for s in row["spans"]]
    pred = [(s, e, entity_family(ent)) for s, e, ent in predicted]
    pairs = sorted(
        (
            (min(g[1], p[1]) - max(g[0], p[0]), gi, pi)
            for gi, g in enumerate(gold)
            for pi, p in enumerate(pred)
            if g[2] == p[2] and spans_match(g[:2], p[:2])
        ),
        reverse=True,
    )
    used_g: set[int] = set()
    used_p: set[int] = set()
    for _, gi, pi in pairs:
        if gi not in used_g and pi not in used_p:
            used_g.add(gi)
            used_p.add(pi)
    for gi, (s, e, ent) in enumerate(gold):
        sc = report.scores.setdefault(ent, EntityScore(ent))
        if gi in used_g:
            sc.tp += 1
        else:
            sc.fn += 1
            report.misses.append(_item(row, s, e, ent))
    for pi, (s, e, ent) in enumerate(pred):
        if pi not in used_p:
            report.scores.setdefault(ent, EntityScore(ent)).fp += 1
            report.false_hits.append(_item(row, s, e, ent))
        for m in row.get("must_not_flag", []):
            if m["start"] < e and s < m["end"]:
                report.must_not_flag_hits.append(_item(row, s, e, ent, kind=m["kind"]))
                break


def evaluate(scrubber: _Analyzer, rows: Sequence[dict[str, Any]]) -> Report:
    """Run ``scrubber.analyze`` on every row (one batch) and score it against the gold spans.

    >>> from mmdata.config import ScrubConfig
    >>> from mmdata.scrub.text import TextScrubber
    >>> report = evaluate(TextScrubber(ScrubConfig(), b"k" * 32), load_corpus())  # doctest: +SKIP
    >>> print(report.table())  # doctest: +SKIP
    """
    report = Report(scores={})
    t0 = time.perf_counter()
    findings = scrubber.analyze([r["text"] for r in rows], [r.get("lang") for r in rows])
    report.seconds = time.perf_counter() - t0
    for row, found in zip(rows, findings, strict=True):
        score_note(row, [(f.start, f.end, f.entity) for f in found], report)
    report.notes = len(rows)
    return report


def pii_eval(corpus: str | Path, config: Any = None, key: bytes | None = None) -> Report:
    """Load a corpus and a scrubber from ``config`` (a ScrubConfig; default settings when None)
    and evaluate. The key only affects pseudonyms, not detection: a throwaway key is used
    when none is given."""
    from mmdata.config import ScrubConfig
    from mmdata.scrub.text import TextScrubber

    rows = load_corpus(corpus)
    scrubber = TextScrubber(config or ScrubConfig(), key or b"pii-eval-throwaway-key")
    return evaluate(scrubber, rows)
