"""Inter-annotator agreement and resolution of several annotators' labels into one.

**Agreement** is computed exactly (with :class:`~fractions.Fraction`, returned as float) by
small hand-checkable functions over *units*: one unit per item, holding the values the
raters gave it (a missing rating is simply absent from the unit):

* :func:`percent_agreement` — the share of agreeing rater pairs, averaged over the units
  with at least two ratings (for two raters: the share of items they agree on);
* :func:`cohen_kappa` — two raters, items both rated: ``(p_o - p_e) / (1 - p_e)``;
* :func:`fleiss_kappa` — n raters; units with at least two ratings; a unit's agreement is
  ``Σ n_k (n_k - 1) / (n (n - 1))`` so the number of raters may vary per unit;
* :func:`krippendorff_alpha` — nominal alpha from the coincidence matrix; missing data
  allowed (units with fewer than two values are not pairable and drop out).

Each returns ``None`` when the figure is undefined (no pairable unit, or chance agreement
is 1 because only one value ever occurs).

**Per control** (:func:`evaluate`): the unit is a record (window) and a rater is the latest
annotation (by ``updated_at``, then id) of one annotator on it. A rater's value is the
*set of labels* they gave that control on that record, written as one string
(``"a|b"``): for a single-choice ``defect`` that is the class; for ranges, audio regions
and boxes it is which labels they marked at all, ``"(none)"`` when they submitted the
window without marking any — so "annotator A saw an anomaly here, B did not" counts as a
disagreement, while *where* in the window it lies is left to resolution (times and box
geometry are not compared by the agreement figures). A choice control nobody picked on a
record is a missing rating. A rater whose results for that control were refused is
missing for that control (an incomplete set would fake a disagreement). ``by_value`` gives
the same figures per label value (present / absent).

**Resolution** (``labels.resolution``), per record and control:

* ``majority`` — choices and boxes: the label set given by more raters than any other set
  wins; a tie yields no label and is reported. Ranges and audio regions vote on time: a
  time is labelled *L* when more than half of the raters cover it with *L* (instants: when
  more than half cover that instant);
* ``reviewer`` — the ``labels.reviewer``'s own labels win (an empty set too: the reviewer
  saw nothing); where the reviewer did not rate, ``majority`` of the others decides;
* ``drop`` — any disagreement on the label set yields no label (reported); ranges keep only
  the times every rater covers.

Resolved rows follow the record ``labels`` struct: ``annotator`` is the reviewer when the
reviewer decided, else ``"resolved:majority"`` / ``"resolved:drop"``. Boxes resolve to
their label values only (the struct has no geometry; pixel boxes stay in
``labels.parquet``).

>>> cohen_kappa(["y", "y", "n", "n"], ["y", "n", "n", "n"])
0.5
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from mmdata.config import LabelsConfig

NONE_VALUE = "(none)"
#: Label kinds whose per-record value is a set that may be empty (an annotation without
#: any such label is a rating of "(none)"), and kinds resolved by voting on time.
SET_KINDS = frozenset({"range", "audio_region", "box"})
TIME_KINDS = frozenset({"range", "audio_region"})

Unit = Sequence[Hashable]
Interval = tuple[int, int]


# -- the figures ---------------------------------------------------------------------------


def _pairable(units: Iterable[Unit]) -> list[Unit]:
    return [u for u in units if len(u) >= 2]


def percent_agreement(units: Iterable[Unit]) -> float | None:
    """Mean share of agreeing rater pairs over the units with at least two ratings.

    >>> percent_agreement([["a", "a"], ["a", "b"], ["b"]])
    0.5
    >>> percent_agreement([["a", "a", "b"]])  # 1 of 3 pairs agree
    0.3333333333333333
    """
    units = _pairable(units)
    if not units:
        return None
    return float(_mean_unit_agreement(units))


def _mean_unit_agreement(units: list[Unit]) -> Fraction:
    """Mean over units of ``Σ_k n_k (n_k - 1) / (n (n - 1))``, summed in integers per n."""
    by_size: dict[int, int] = defaultdict(int)
    for u in units:
        by_size[len(u)] += sum(c * (c - 1) for c in Counter(u).values())
    total = sum((Fraction(v, n * (n - 1)) for n, v in by_size.items()), Fraction(0))
    return total / len(units)


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters over the same items (``a[i]``, ``b[i]``).

    >>> # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 → p_o 0.7, p_e 0.5
    >>> cohen_kappa(["y"] * 25 + ["n"] * 25, ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15)
    0.4
    """
    if len(a) != len(b):
        raise ValueError("cohen_kappa needs two ratings per item")
    n = len(a)
    if n == 0:
        return None
    p_o = Fraction(sum(x == y for x, y in zip(a, b, strict=True)), n)
    ca, cb = Counter(a), Counter(b)
    p_e = sum((Fraction(ca[k] * cb[k], n * n) for k in ca), Fraction(0))
    return None if p_e == 1 else float((p_o - p_e) / (1 - p_e))


def fleiss_kappa(units: Iterable[Unit]) -> float | None:
    """Fleiss' kappa over units with at least two ratings (raters may vary per unit).

    >>> fleiss_kappa([["a", "a"], ["b", "b"], ["a", "b"]])
    0.3333333333333333
    """
    units = _pairable(units)
    if not units:
        return None
    p_bar = _mean_unit_agreement(units)
    counts = Counter(v for u in units for v in u)
    total = sum(counts.values())
    p_e = sum((Fraction(c, total) ** 2 for c in counts.values()), Fraction(0))
    return None if p_e == 1 else float((p_bar - p_e) / (1 - p_e))


def krippendorff_alpha(units: Iterable[Unit]) -> float | None:
    """Krippendorff's alpha, nominal metric; units are the values each item received.

    ``alpha = 1 - (n - 1) Σ_{c≠k} o_ck / Σ_{c≠k} n_c n_k`` with the coincidence matrix
    ``o_ck = Σ_u (pairs c-k in u) / (m_u - 1)``.

    >>> krippendorff_alpha([["a", "a"], ["b", "b"], ["a", "b"], ["a"]])
    0.4444444444444444
    """
    pairs_by_size: dict[tuple[Hashable, Hashable, int], int] = defaultdict(int)
    for u in _pairable(units):
        cnt = Counter(u)
        for c, nc in cnt.items():
            for k, nk in cnt.items():
                pairs = nc * (nk - 1) if c == k else nc * nk
                if pairs:
                    pairs_by_size[(c, k, len(u))] += pairs
    o: dict[tuple[Hashable, Hashable], Fraction] = defaultdict(Fraction)
    for (c, k, m), pairs in pairs_by_size.items():
        o[(c, k)] += Fraction(pairs, m - 1)
    n_c: dict[Hashable, Fraction] = defaultdict(Fraction)
    for (c, _), v in o.items():
        n_c[c] += v
    n = sum(n_c.values(), Fraction(0))
    disagree = sum((v for (c, k), v in o.items() if c != k), Fraction(0))
    expected = sum((n_c[c] * n_c[k] for c in n_c for k in n_c if c != k), Fraction(0))
    if n == 0 or expected == 0:
        return None
    return float(1 - (n - 1) * disagree / expected)


# -- per control ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotationRef:
    """One accepted annotation of a record (results or not), as agreement sees it.

    ``refused``: control names with at least one refused result in this annotation.
    """

    record_id: str
    annotation_id: int
    annotator: str
    updated_at: str | None = None
    refused: frozenset[str] = frozenset()


@dataclass
class _Rater:
    annotator: str
    values: frozenset[str]
    times: dict[str, list[Interval]]  # label → (start_ns, end_ns), ranges and instants

    @property
    def key(self) -> str:
        return "|".join(sorted(self.values)) or NONE_VALUE


def _latest(annotations: Iterable[AnnotationRef]) -> dict[str, list[AnnotationRef]]:
    best: dict[tuple[str, str], AnnotationRef] = {}
    for a in annotations:
        k = (a.record_id, a.annotator)
        cur = best.get(k)
        if cur is None or (a.updated_at or "", a.annotation_id) > (
            cur.updated_at or "", cur.annotation_id):  # fmt: skip
            best[k] = a
    out: dict[str, list[AnnotationRef]] = {}
    for (rid, _), a in sorted(best.items()):
        out.setdefault(rid, []).append(a)
    return out


def _raters(name: str, kind: str, refs: list[AnnotationRef],
            by_ann: Mapping[tuple[int, str], list[Mapping[str, Any]]]) -> list[_Rater]:  # fmt: skip
    raters = []
    for a in refs:
        if name in a.refused:
            continue
        rows = by_ann.get((a.annotation_id, name), [])
        values = frozenset(str(r["value"]) for r in rows)
        if not values and kind not in SET_KINDS:
            continue
        times: dict[str, list[Interval]] = {}
        for r in rows:
            if r.get("start_ns") is not None and r.get("end_ns") is not None:
                times.setdefault(str(r["value"]), []).append((int(r["start_ns"]),
                                                              int(r["end_ns"])))  # fmt: skip
        raters.append(_Rater(a.annotator, values, times))
    return raters


def _figures(units: list[list[str]], raters_of: list[list[str]]) -> dict[str, Any]:
    annotators = sorted({a for names in raters_of for a in names})
    cohen = None
    if len(annotators) == 2:
        pairs = [dict(zip(names, u, strict=True)) for names, u in zip(raters_of, units,
                                                                       strict=True)]  # fmt: skip
        both = [p for p in pairs if len(p) == 2]
        cohen = cohen_kappa([p[annotators[0]] for p in both], [p[annotators[1]] for p in both])
    return {
        "percent_agreement": percent_agreement(units),
        "cohen_kappa": cohen,
        "fleiss_kappa": fleiss_kappa(units),
        "krippendorff_alpha": krippendorff_alpha(units),
    }


def evaluate(
    rows: Sequence[Mapping[str, Any]],
    annotations: Iterable[AnnotationRef],
    config: LabelsConfig,
    source: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Agreement figures per control and the resolved labels, from accepted label rows.

    Returns ``(agreement, resolved_rows)``; ``agreement["unresolved"]`` lists the records
    and controls resolution left without a label, with the reason.

    >>> from mmdata.config import LabelsConfig
    >>> refs = [AnnotationRef("r1", 1, "ann"), AnnotationRef("r1", 2, "bob")]
    >>> rows = [{"record_id": "r1", "annotation_id": i, "annotator": a, "kind": "choice",
    ...          "name": "defect", "value": "normal", "start_ns": None, "end_ns": None}
    ...         for i, a in [(1, "ann"), (2, "bob")]]
    >>> agreement, resolved = evaluate(rows, refs, LabelsConfig(), "import:x.json")
    >>> agreement["controls"]["defect"]["percent_agreement"], resolved[0]["value"]
    (1.0, 'normal')
    """
    latest = _latest(annotations)
    by_ann: dict[tuple[int, str], list[Mapping[str, Any]]] = {}
    kinds: dict[str, str] = {}
    for r in rows:
        by_ann.setdefault((int(r["annotation_id"]), str(r["name"])), []).append(r)
        kinds.setdefault(str(r["name"]), str(r["kind"]))
    controls: dict[str, Any] = {}
    resolved: list[dict[str, Any]] = []
    unresolved: list[dict[str, str]] = []
    for name in sorted(kinds):
        kind = kinds[name]
        units: list[list[str]] = []
        raters_of: list[list[str]] = []
        label_values: set[str] = set()
        per_record: list[tuple[str, list[_Rater]]] = []
        for rid, refs in latest.items():
            raters = _raters(name, kind, refs, by_ann)
            if not raters:
                continue
            per_record.append((rid, raters))
            units.append([r.key for r in raters])
            raters_of.append([r.annotator for r in raters])
            label_values.update(v for r in raters for v in r.values)
            out, reasons = _resolve(kind, raters, config)
            resolved.extend({"record_id": rid, "name": name, "value": v, "start_ns": s,
                             "end_ns": e, "source": source, "annotator": who}
                            for v, s, e, who in out)  # fmt: skip
            unresolved.extend({"record_id": rid, "name": name, "reason": why}
                              for why in reasons)  # fmt: skip
        entry: dict[str, Any] = {
            "kind": kind,
            "unit": "choice per record" if kind not in SET_KINDS else "label set per record",
            "records": len(units),
            "records_multi": sum(len(u) >= 2 for u in units),
            "annotators": len({a for names in raters_of for a in names}),
            "ratings": sum(len(u) for u in units),
            **_figures(units, raters_of),
        }
        entry["by_value"] = {
            v: _figures([["yes" if v in r.values else "no" for r in rs] for _, rs in per_record],
                        raters_of)
            for v in sorted(label_values)
        }  # fmt: skip
        controls[name] = entry
    resolved.sort(key=lambda r: (r["record_id"], r["name"], -1 if r["start_ns"] is None
                                 else r["start_ns"], r["end_ns"] or -1, r["value"]))  # fmt: skip
    agreement = {
        "schema_version": "mmdata.labels.agreement/1",
        "source": source,
        "resolution": config.resolution,
        "reviewer": config.reviewer,
        "controls": controls,
        "resolved_rows": len(resolved),
        "unresolved": unresolved,
    }
    return agreement, resolved


# -- resolution ----------------------------------------------------------------------------

Decision = tuple[str, int | None, int | None, str]  # value, start_ns, end_ns, annotator


def _resolve(kind: str, raters: Sequence[_Rater], config: LabelsConfig
            ) -> tuple[list[Decision], list[str]]:  # fmt: skip
    """One record's labels of one control → resolved (value, start, end, annotator) + reasons."""
    rule = config.resolution
    if rule == "reviewer":
        own = [r for r in raters if r.annotator == config.reviewer]
        if own:
            return _as_is(kind, own[0], own[0].annotator), []
        rule = "majority"
    who = f"resolved:{rule}"
    if kind in TIME_KINDS:
        return _vote_times(raters, rule, who)
    keys = Counter(r.key for r in raters)
    ranked = keys.most_common()
    if rule == "drop" and len(keys) > 1:
        return [], [f"annotators disagree ({_tally(ranked)}); rule 'drop' keeps no label"]
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return [], [f"tie between {_tally(ranked)}; no label"]
    winner = next(r for r in raters if r.key == ranked[0][0])
    return [(v, None, None, who) for v in sorted(winner.values)], []


def _tally(ranked: list[tuple[str, int]]) -> str:
    return ", ".join(f"{k!r} x{n}" for k, n in sorted(ranked, key=lambda t: (-t[1], t[0])))


def _as_is(kind: str, rater: _Rater, who: str) -> list[Decision]:
    if kind not in TIME_KINDS:
        return [(v, None, None, who) for v in sorted(rater.values)]
    out: list[Decision] = []
    for v in sorted(rater.values):
        spans = rater.times.get(v, [])
        ranges = _merge([iv for iv in spans if iv[1] > iv[0]])
        points = sorted({s for s, e in spans if s == e and not _inside(s, ranges)})
        out.extend((v, s, e, who) for s, e in ranges)
        out.extend((v, p, p, who) for p in points)
    return out


def _merge(spans: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _inside(p: int, ranges: Sequence[Interval]) -> bool:
    return any(s <= p <= e for s, e in ranges)


def _vote_times(raters: Sequence[_Rater], rule: str, who: str
                ) -> tuple[list[Decision], list[str]]:  # fmt: skip
    n = len(raters)
    if rule == "drop" and len({r.key for r in raters}) > 1:
        ranked = Counter(r.key for r in raters).most_common()
        return [], [f"annotators disagree ({_tally(ranked)}); rule 'drop' keeps no label"]
    need = n if rule == "drop" else n // 2 + 1
    out: list[Decision] = []
    reasons: list[str] = []
    for v in sorted({v for r in raters for v in r.values}):
        per = [r.times.get(v, []) for r in raters]
        ranges_of = [_merge([iv for iv in spans if iv[1] > iv[0]]) for spans in per]
        events = sorted([(s, 1) for rs in ranges_of for s, _ in rs]
                        + [(e, -1) for rs in ranges_of for _, e in rs])  # fmt: skip
        won: list[Interval] = []
        depth, opened = 0, 0
        for t, step in events:  # ends (-1) sort before starts at the same time
            before = depth
            depth += step
            if before < need <= depth:
                opened = t
            elif depth < need <= before and t > opened:
                won.append((opened, t))
        won = _merge(won)
        candidates = sorted({s for spans in per for s, e in spans if s == e})
        points = [p for p in candidates if not _inside(p, won) and sum(
            any(s <= p <= e for s, e in spans) for spans in per) >= need]  # fmt: skip
        if not won and not points:
            users = sum(bool(spans) for spans in per)
            word = "every" if rule == "drop" else "a majority of the"
            reasons.append(f"{v!r}: marked by {users} of {n} annotators, but no time is "
                           f"covered by {word} {n} annotators; no label")  # fmt: skip
        out.extend((v, s, e, who) for s, e in won)
        out.extend((v, p, p, who) for p in points)
    return out, reasons
