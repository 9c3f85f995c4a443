"""The leakage audit: does any record, source file or asset feed two splits?

Independent of how a split was made (:func:`mmdata.build.splits.assign_splits` or by hand, or
read back from written split files): it sweeps the windows itself. A split leaks when one
record is in two splits, or when windows in two splits of one source file, or of one asset,
overlap or come closer than the guard gap. Everything runs on sorted numpy arrays: one
segmented running max per split finds every window crossing a window of another split.

>>> from mmdata.build.splits import WindowMeta
>>> ws = [WindowMeta("a", "p1", None, 0, 10, None, ("f",)),
...       WindowMeta("b", "p1", None, 20, 30, None, ("f",))]
>>> split = {"a": "train", "b": "test"}
>>> leakage_check(ws, split).ok, leakage_check(ws, split, gap_ns=15).ok
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mmdata.build.splits import WindowMeta

LEAK_KINDS = ("record_id_in_two_splits", "same_source_across_splits", "same_asset_across_splits")
_I64 = np.int64


@dataclass
class LeakageReport:
    """The result of :func:`leakage_check`: ``ok``, the first problems, and counts per kind.

    ``counts``: record ids in two splits; windows sharing a source file with a window of
    another split at overlapping (or closer than the gap) times; windows of one asset
    overlapping (or closer than the gap to) a window of another split.
    """

    ok: bool
    problems: list[str]
    counts: dict[str, int]
    gap_ns: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form, for the build report."""
        return {"ok": self.ok, "gap_ns": self.gap_ns, "counts": dict(self.counts),
                "problems": list(self.problems)}  # fmt: skip

    def summary(self) -> str:
        """One line (plus the problems) for the console."""
        if self.ok:
            return "leakage check: ok (no record, source file time or overlapping window shared)"
        kinds = ", ".join(f"{k.replace('_', ' ')}: {n:,}" for k, n in self.counts.items() if n)
        return "\n".join([f"leakage check: FAILED ({kinds})", *("  " + p for p in self.problems)])


def _iso(ns: int) -> str:
    sec, rem = divmod(int(ns), 1_000_000_000)
    return f"{datetime.fromtimestamp(sec, UTC):%Y-%m-%dT%H:%M:%S}.{rem // 1_000_000:03d}Z"


def _segmented_running_max(seg: np.ndarray, values: np.ndarray, mask: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Running max of ``values[mask]`` within each segment over rows ``<= i`` (``seg`` sorted).

    Returns ``(has, out)``: whether a masked row of the segment was seen yet, and the max.
    Values become ranks, so ``segment * n_ranks + rank`` orders lexicographically and one
    ``np.maximum.accumulate`` serves every segment.

    >>> _segmented_running_max(np.array([0, 0, 1, 1]), np.array([5, 3, 1, 2]), np.ones(4, bool))
    (array([ True,  True,  True,  True]), array([5, 5, 1, 2]))
    """
    if len(values) == 0:
        return np.zeros(0, bool), values.copy()
    uniq, inv = np.unique(values, return_inverse=True)
    base = seg.astype(_I64) * len(uniq)
    cm = np.maximum.accumulate(np.where(mask, base + inv, -1))
    return cm >= base, uniq[np.clip(cm - base, 0, len(uniq) - 1)]


def _cross_split(seg: np.ndarray, lo: np.ndarray, hi: np.ndarray, sp: np.ndarray, gap: int
                 ) -> np.ndarray:  # fmt: skip
    """Rows (sorted by segment, lo) crossing or within ``gap`` of a row of another split."""
    n = len(seg)
    flag = np.zeros(n, bool)
    for s in np.unique(sp):
        mask = sp == s
        has, run_hi = _segmented_running_max(seg, hi, mask)
        flag |= ~mask & has & (run_hi + gap > lo)  # an earlier row of split s reaches this one
        nxt = np.minimum.accumulate(np.where(mask, np.arange(n), n)[::-1])[::-1]
        j = np.minimum(nxt, n - 1)
        flag |= ~mask & (nxt < n) & (seg[j] == seg) & (lo[j] < hi + gap)  # the next one does
    return flag


def _first_pairs(seg: np.ndarray, lo: np.ndarray, hi: np.ndarray, sp: np.ndarray,
                 flag: np.ndarray, gap: int, limit: int) -> list[tuple[int, int]]:  # fmt: skip
    """Up to ``limit`` pairs ``(i, j)``: a flagged row and a later row of another split near it."""
    out: list[tuple[int, int]] = []
    for i in np.flatnonzero(flag).tolist():
        j = i + 1
        while len(out) < limit and j < len(seg) and seg[j] == seg[i] and lo[j] < hi[i] + gap:
            if sp[j] != sp[i]:  # and lo[i] < hi[j] + gap, as lo[i] <= lo[j] < hi[j]
                out.append((i, j))
                break
            j += 1
    return out


def leakage_check(windows: Sequence[WindowMeta],
                  assignment: Mapping[str, str] | Iterable[tuple[str, str]], gap_ns: int = 0,
                  *, max_problems: int = 10) -> LeakageReport:  # fmt: skip
    """Audit any assignment: no record in two splits; no source file, and no asset, whose
    windows in two splits overlap or come closer than ``gap_ns``. Independent of
    :func:`assign_splits` (it sweeps the windows itself).

    ``assignment`` is a mapping or ``(record_id, split)`` pairs (e.g. read back from written
    split files, where an id can appear twice). Unassigned windows are ignored; a record in
    two splits is reported as such and left out of the time checks. Counts are windows
    involved; ``problems`` names up to ``max_problems`` pairs per kind.

    >>> from mmdata.build.splits import WindowMeta
    >>> ws = [WindowMeta("a", "p1", None, 0, 10, None, ("f",)),
    ...       WindowMeta("b", "p1", None, 5, 15, None, ("f",))]
    >>> leakage_check(ws, {"a": "train", "b": "test"}).counts
    {'record_id_in_two_splits': 0, 'same_source_across_splits': 2, 'same_asset_across_splits': 2}
    """
    splits_of: dict[str, list[str]] = {}
    for rid, split in sorted(set(assignment.items() if isinstance(assignment, Mapping)
                                 else assignment)):  # fmt: skip
        splits_of.setdefault(rid, []).append(split)
    multi = [rid for rid, ss in splits_of.items() if len(ss) > 1]
    problems = [f"record_id {r!r} is in {' and '.join(splits_of[r])}" for r in multi[:max_problems]]
    counts = {LEAK_KINDS[0]: len(multi)}
    ws = sorted((w for w in windows if len(splits_of.get(w.record_id, ())) == 1),
                key=lambda w: (w.start_ns, w.end_ns, w.record_id))  # fmt: skip
    n = len(ws)
    start = np.fromiter((w.start_ns for w in ws), _I64, n)
    end = np.fromiter((w.end_ns for w in ws), _I64, n)
    split_names = sorted({splits_of[w.record_id][0] for w in ws})
    sp_code = {s: i for i, s in enumerate(split_names)}
    sp = np.fromiter((sp_code[splits_of[w.record_id][0]] for w in ws), _I64, n)
    for kind, what, pairs in (
        (LEAK_KINDS[1], "source", [(u, i) for i, w in enumerate(ws) for u in set(w.sources)]),
        (LEAK_KINDS[2], "asset", [(w.asset_id, i) for i, w in enumerate(ws)]),
    ):
        names = sorted({k for k, _ in pairs})
        code = {k: c for c, k in enumerate(names)}
        seg = np.fromiter((code[k] for k, _ in pairs), _I64, len(pairs))
        win = np.fromiter((i for _, i in pairs), _I64, len(pairs))
        order = np.lexsort((win, seg))  # windows are in time order already
        seg, win = seg[order], win[order]
        lo, hi, s = start[win], end[win], sp[win]
        flag = _cross_split(seg, lo, hi, s, gap_ns)
        counts[kind] = len(np.unique(win[flag]))
        for i, j in _first_pairs(seg, lo, hi, s, flag, gap_ns, max_problems):
            d = int(lo[j] - hi[i])
            rel = "overlap" if d < 0 else f"are {d / 1e9:g} s apart (gap {gap_ns / 1e9:g} s)"
            a, b = (f"{ws[win[k]].record_id!r} ({split_names[s[k]]}, {_iso(lo[k])})"
                    for k in (i, j))  # fmt: skip
            problems.append(f"{what} {names[seg[i]]!r}: {a} and {b} {rel}")
    return LeakageReport(not any(counts.values()), problems, counts, gap_ns)
