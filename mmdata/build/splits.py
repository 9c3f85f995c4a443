"""Leakage-free train / validation / test splits of windows (the audit: :mod:`.leakage`).

A split leaks when evaluation data is, or nearly is, training data: one record in two splits,
overlapping windows of one asset (sliding windows are near-duplicates) in two splits, or one
source file feeding two splits at overlapping times. :func:`assign_splits` puts groups (assets,
lines, shifts, or per-asset time periods) into splits, then drops each window that overlaps —
or comes within ``gap_ms`` of — a kept window of a *later* split (train < validation < test)
on the same asset or source file: the held-out sets stay whole and training gives way, as with
scikit-learn's ``TimeSeriesSplit(gap=)``. Every drop is recorded with its reason. Groups that
share a source file at overlapping times (a camera filming two presses) are placed together.

A near-duplicate cluster (a run of overlapping windows of one asset) lies within one asset or
line. Crossing a shift boundary or a time cut, it goes wholly to one side when that misplaces
no more windows than cutting it would drop: short clusters stay whole, days of continuous
sliding windows (one cluster) are cut, losing only the windows that overlap the other side.

Everything runs on sorted numpy arrays (no pairwise loops) and is deterministic: windows are
sorted by (asset, start, end, record_id), groups ordered by a seeded sha256.

>>> ws = [WindowMeta(f"r{i}", "press-1", None, i * 10**9, (i + 1) * 10**9, None, ("f.parquet",))
...       for i in range(10)]
>>> res = assign_splits(ws, SplitConfig(by="time", fractions=(0.6, 0.2, 0.2), gap_ms=1000))
>>> res.sizes(), sorted(res.dropped)
({'train': 5, 'validation': 1, 'test': 2}, ['r5', 'r7'])
>>> leakage_check(ws, res.assignment, gap_ns=10**9).ok
True
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise, product
from typing import Any

import numpy as np

from mmdata.build.leakage import LEAK_KINDS as LEAK_KINDS  # re-exported: the audit's home
from mmdata.build.leakage import LeakageReport as LeakageReport
from mmdata.build.leakage import _segmented_running_max
from mmdata.build.leakage import leakage_check as leakage_check
from mmdata.config import SplitConfig
from mmdata.errors import ConfigError, InputDataError

SPLITS = ("train", "validation", "test")
UNLABELED = "(unlabeled)"
_SRC = "pipeline config"
_MIN_NS = 60_000_000_000
_EXACT_MAX = 9  # up to 3**9 placements are compared at once
_I64 = np.int64


@dataclass(frozen=True)
class WindowMeta:
    """What a split needs to know about one window (record).

    >>> WindowMeta("r1", "press-1", "L2", 0, 2_000_000_000, "normal", ("cam.mp4",)).line
    'L2'
    """

    record_id: str
    asset_id: str
    line: str | None
    start_ns: int
    end_ns: int
    label: str | None
    sources: tuple[str, ...]


@dataclass
class SplitResult:
    """A split assignment, what was dropped and why, and how it was made.

    ``assignment``: record_id → split (sorted by id); ``dropped``: record_id → reason;
    ``groups``: group key (asset, line, shift, or ``asset/split`` period) → split; ``labels``:
    record_id → label (for the balance in :meth:`to_json`); ``details``: JSON-ready facts
    (config echo, near-duplicate cluster counts, groups linked by shared sources).

    >>> r = SplitResult({"a": "train", "b": "test"}, {"c": "in the guard gap"}, {"p1": "train"})
    >>> r.sizes()
    {'train': 1, 'validation': 0, 'test': 1}
    >>> r.label_balance({"a": "ok", "b": None})["test"]
    {'(unlabeled)': 1, 'ok': 0}
    """

    assignment: dict[str, str]
    dropped: dict[str, str]
    groups: dict[str, str]
    method: str = ""
    labels: dict[str, str | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def _split_names(self) -> list[str]:
        extra = sorted(set(self.assignment.values()) - set(SPLITS))
        return [*SPLITS, *extra]

    def sizes(self) -> dict[str, int]:
        """Windows per split (train, validation, test always present)."""
        c = Counter(self.assignment.values())
        return {s: c.get(s, 0) for s in self._split_names()}

    def label_balance(self, labels: Mapping[str, str | None]) -> dict[str, dict[str, int]]:
        """Windows per label per split; a missing or None label counts as ``(unlabeled)``."""
        keys = {rid: _label_key(labels.get(rid)) for rid in self.assignment}
        names = sorted(set(keys.values()))
        out = {s: dict.fromkeys(names, 0) for s in self._split_names()}
        for rid, split in self.assignment.items():
            out[split][keys[rid]] += 1
        return out

    def label_imbalance(self, labels: Mapping[str, str | None]) -> dict[str, float]:
        """Per split, the total variation distance (0..1) of its label mix from the overall one.

        >>> SplitResult({"a": "train", "b": "test"}, {}, {}).label_imbalance({"a": "x", "b": "y"})
        {'train': 0.5, 'validation': 0.0, 'test': 0.5}
        """
        m = np.array([list(c.values()) for c in self.label_balance(labels).values()], float)
        mix = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        tvd = 0.5 * abs(mix - m.sum(axis=0) / max(m.sum(), 1)).sum(axis=1) * (m.sum(axis=1) > 0)
        return {s: round(float(v), 6) for s, v in zip(self._split_names(), tvd, strict=True)}

    def to_json(self) -> dict[str, Any]:
        """Sizes, label balance, method, groups and drop counts, JSON-ready and deterministic."""
        return {
            "method": self.method,
            "sizes": self.sizes(),
            "label_balance": self.label_balance(self.labels),
            "label_imbalance": self.label_imbalance(self.labels),
            "groups": dict(sorted(self.groups.items())),
            "dropped": dict(sorted(Counter(self.dropped.values()).items())),
            "n_dropped": len(self.dropped),
            "details": self.details,
            "warnings": list(self.warnings),
        }

    def summary(self) -> list[str]:
        """Human-readable lines for the console: sizes, label mix per split, drops, warnings."""
        sizes = self.sizes()
        lines = ["splits: " + ", ".join(f"{s} {n:,}" for s, n in sizes.items())]
        for split, counts in self.label_balance(self.labels).items():
            n = sizes[split]
            mix = ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in counts.items() if v) if n else "-"
            lines.append(f"  {split:<10} {n:>9,}  {mix}")
        for reason, k in sorted(Counter(self.dropped.values()).items()):
            lines.append(f"  dropped {k:,}: {reason}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return lines


def _label_key(label: str | None) -> str:
    return UNLABELED if label is None else label


def _listing(names: Sequence[str], k: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:k]) or "(none)"
    return shown + (f", ... ({len(names) - k} more)" if len(names) > k else "")


def _bad(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(_SRC, f"build.split.{name}", value, allowed)


_Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # (segment, lo, hi) per row


def _hits(p: _Rows, q: _Rows) -> np.ndarray:
    """For each query ``(seg, lo, hi)`` in ``q``: does an interval of ``p`` in the same segment
    cross it (``p_lo < q_hi and q_lo < p_hi``)? Sorted ``p`` starts and a prefix max of ``p``
    ends, on ``segment * n_ranks + rank`` keys: one ``searchsorted`` answers every query."""
    (p_seg, p_lo, p_hi), (q_seg, q_lo, q_hi) = p, q
    if len(p_seg) == 0 or len(q_seg) == 0:
        return np.zeros(len(q_seg), bool)
    vals = np.unique(np.concatenate([p_lo, p_hi, q_lo, q_hi]))
    m = len(vals)
    ps = p_seg * m + np.searchsorted(vals, p_lo)
    order = np.argsort(ps, kind="stable")
    ps, pmax = ps[order], np.maximum.accumulate((p_seg * m + np.searchsorted(vals, p_hi))[order])
    idx = np.searchsorted(ps, q_seg * m + np.searchsorted(vals, q_hi), side="left")
    best = np.where(idx > 0, pmax[np.maximum(idx - 1, 0)], -1)
    return best > q_seg * m + np.searchsorted(vals, q_lo)


def _runs(seg: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Ids of runs of overlapping intervals per segment (rows sorted by segment, start)."""
    new = np.ones(len(seg), bool)
    if len(seg):
        _, run_end = _segmented_running_max(seg, end, new)
        new[1:] = (seg[1:] != seg[:-1]) | (start[1:] >= run_end[:-1])
    return np.cumsum(new) - 1


@dataclass
class _Table:
    """Windows sorted by (asset, start, end, record_id), as arrays."""

    rid: list[str]
    line: list[str | None]
    asset_names: list[str]
    asset: np.ndarray
    start: np.ndarray
    end: np.ndarray
    label_names: list[str]
    label: np.ndarray
    uri_win: np.ndarray  # one row per (window, distinct source uri): the window index ...
    uri_code: np.ndarray  # ... and the uri's code
    cluster: np.ndarray  # near-duplicate cluster id (run of overlapping windows of one asset)

    def uri_rows(self, rank: np.ndarray, r: int, gap: int = 0) -> _Rows:
        """(uri, start - gap, end + gap) of the source rows of windows of split rank ``r``."""
        m = rank[self.uri_win] == r
        w = self.uri_win[m]
        return self.uri_code[m], self.start[w] - gap, self.end[w] + gap


def _table(windows: Sequence[WindowMeta]) -> _Table:
    ws = sorted(windows, key=lambda w: (w.asset_id, w.start_ns, w.end_ns, w.record_id))
    n = len(ws)
    rid = [w.record_id for w in ws]
    if len(set(rid)) != n:
        dup = sorted(k for k, c in Counter(rid).items() if c > 1)
        raise InputDataError(f"record_id {dup[0]!r} is given {rid.count(dup[0])} times "
                             f"({len(dup)} ids repeat)", hint="pass each window once")  # fmt: skip
    assets = sorted({w.asset_id for w in ws})
    labels = sorted({_label_key(w.label) for w in ws})
    acode, lcode = {a: i for i, a in enumerate(assets)}, {k: i for i, k in enumerate(labels)}
    per_win = [sorted(set(w.sources)) for w in ws]
    ucode = {u: i for i, u in enumerate(sorted({u for us in per_win for u in us}))}
    asset = np.fromiter((acode[w.asset_id] for w in ws), _I64, n)
    start = np.fromiter((w.start_ns for w in ws), _I64, n)
    end = np.fromiter((w.end_ns for w in ws), _I64, n)
    return _Table(
        rid=rid, line=[w.line for w in ws], asset_names=assets, asset=asset, start=start, end=end,
        label_names=labels, label=np.fromiter((lcode[_label_key(w.label)] for w in ws), _I64, n),
        uri_win=np.fromiter((i for i, us in enumerate(per_win) for _ in us), _I64),
        uri_code=np.fromiter((ucode[u] for us in per_win for u in us), _I64),
        cluster=_runs(asset, start, end),
    )  # fmt: skip


def _fractions(cfg: SplitConfig) -> np.ndarray:
    f = np.array(cfg.fractions, dtype=float)
    if (f < 0).any() or abs(f.sum() - 1.0) > 1e-6 or f[0] <= 0:
        allowed = "three fractions >= 0 (train > 0) summing to 1, e.g. [0.7, 0.15, 0.15]"
        raise _bad("fractions", list(cfg.fractions), allowed)
    return f


def _shift_calendar(cfg: SplitConfig) -> np.ndarray:
    """Minute of the plant-local day → shift index (-1: no shift); overlaps are errors."""
    if not cfg.shifts:
        raise _bad("shifts", [], "at least one shift for by: shift")
    cal = np.full(1440, -1, _I64)
    for i, s in enumerate(cfg.shifts):
        a, b = (int(x[:2]) * 60 + int(x[3:]) for x in (s.start, s.end))
        for what, text, v in (("start", s.start, a), ("end", s.end, b)):
            if int(text[3:]) > 59 or v > 1440 or (v == 1440 and what == "start"):
                raise _bad(f"shifts.{i}.{what}", text, "a plant-local time 'HH:MM', 00:00-23:59")
        minutes = (a + np.arange((b - a) % 1440 or 1440)) % 1440
        taken = cal[minutes][cal[minutes] >= 0]
        if s.name in [x.name for x in cfg.shifts[:i]]:
            raise _bad(f"shifts.{i}.name", s.name, "a name no other shift has")
        if len(taken):
            o = cfg.shifts[int(taken[0])]
            raise _bad(f"shifts.{i}", f"{s.name} {s.start}-{s.end}",
                       f"a shift not overlapping {o.name!r} ({o.start}-{o.end})")  # fmt: skip
        cal[minutes] = i
    return cal


def _utc_offset_ns(text: str) -> int:
    h, m = int(text[1:3]), int(text[4:6])
    if h > 14 or m > 59:
        raise _bad("utc_offset", text, "an offset from -14:00 to +14:00, e.g. '+09:00'")
    return (-1 if text[0] == "-" else 1) * (h * 60 + m) * _MIN_NS


def _named_ranks(keys: list[str], sizes: np.ndarray, cfg: SplitConfig, unit: str,
                 known: list[str]) -> np.ndarray:  # fmt: skip
    """Split rank (0 train, 1 validation, 2 test) of each group from the named groups."""
    index = {k: i for i, k in enumerate(keys)}
    ranks = np.zeros(len(keys), _I64)
    for name_field, names, r in (("test", cfg.test, 2), ("validation", cfg.validation, 1)):
        for i, name in enumerate(names):
            if name not in known:
                raise _bad(f"{name_field}.{i}", name, f"one of {_listing(known)} (the {unit}s)")
            if r == 1 and name in cfg.test:
                raise _bad(f"validation.{i}", name, "a group not also named in build.split.test")
            if name in index:
                ranks[index[name]] = r
        if names and sizes[ranks == r].sum() == 0:
            raise _bad(name_field, list(names), f"{unit}s that have windows ({_listing(keys)}); "
                       f"{name_field} would be empty")  # fmt: skip
    if len(keys) >= 2 and not (ranks == 0).any():
        raise _bad("test", list(cfg.test), f"fewer named groups: all {len(keys)} {unit}s are "
                   "named test or validation, so train would be empty")  # fmt: skip
    return ranks


def _fraction_ranks(keys: list[str], counts: np.ndarray, cfg: SplitConfig, f: np.ndarray,
                    unit: str) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    """Place groups to minimise ``sum |have - f * total|`` over splits (and labels, when
    stratified; ``counts``: groups × labels): the best of all placements for up to
    ``_EXACT_MAX`` groups, else greedily in seeded hash order. A split with a positive
    fraction gets a group whenever there are enough groups (with too few, train and test
    come first); ties go by the hash order."""
    if not cfg.stratify:
        counts = counts.sum(axis=1, keepdims=True)
    hashes = [hashlib.sha256(f"{cfg.seed}\x1f{k}".encode()).hexdigest() for k in keys]
    order = sorted(range(len(keys)), key=hashes.__getitem__)
    target = np.outer(f, counts.sum(axis=0))
    positive = [s for s in range(3) if f[s] > 0]
    ranks = np.zeros(len(keys), _I64)
    if len(keys) <= _EXACT_MAX:
        combos = np.array(list(product(positive, repeat=len(keys))), _I64)
        need = [s for s in (0, 2, 1) if s in positive][: len(keys)]  # too few groups: test first
        combos = (
            combos[np.all([(combos == s).any(axis=1) for s in need], axis=0)] if need else combos
        )
        onehot = (combos[:, :, None] == np.arange(3)).astype(float)
        got = np.einsum("ags,gl->asl", onehot, counts[order])
        ranks[order] = combos[np.argmin(abs(got - target).sum(axis=(1, 2)))]
    have = np.zeros_like(target)
    for i, g in enumerate(order if len(keys) > _EXACT_MAX else ()):
        delta = (abs(have + counts[g] - target) - abs(have - target)).sum(axis=1)
        empty = [s for s in positive if have[s].sum() == 0]
        pool = empty if empty and len(keys) - i <= len(empty) else positive
        ranks[g] = min(pool, key=lambda s: (delta[s], s))
        have[ranks[g]] += counts[g]
    return ranks, [f"only {len(keys)} {unit}(s) for {len(positive)} splits: {SPLITS[s]} is empty"
                   for s in positive if not (ranks == s).any()]  # fmt: skip


def _linked(t: _Table, gidx: np.ndarray, n_groups: int, gap: int) -> np.ndarray:
    """Groups whose windows share a source file at overlapping (or within-gap) times must share
    a split: the smallest group index of each such connected set, per group."""
    order = np.lexsort((t.start[t.uri_win], t.uri_code))
    u, w = t.uri_code[order], t.uri_win[order]
    run = _runs(u, t.start[w], t.end[w] + gap)  # runs of one file's rows crossing in time
    starts, g = np.flatnonzero(np.diff(run, prepend=-1)), gidx[w]
    rep = np.arange(n_groups)
    while len(g):  # min-label propagation through shared runs, until nothing changes
        new = rep.copy()
        np.minimum.at(new, g, np.minimum.reduceat(rep[g], starts)[run])
        if (new := new[new]).tolist() == rep.tolist():
            break
        rep = new
    return rep


def _group_split(t: _Table, cfg: SplitConfig, f: np.ndarray, gap: int, res: SplitResult
                 ) -> np.ndarray:  # fmt: skip
    """Ranks for by asset | line: named groups, or linked groups placed by fractions."""
    if cfg.by == "asset":
        win_key = [t.asset_names[a] for a in t.asset]
    else:
        win_key = [ln if ln is not None else t.asset_names[a]
                   for a, ln in zip(t.asset, t.line, strict=True)]  # fmt: skip
    keys = sorted(set(win_key))
    kcode = {k: i for i, k in enumerate(keys)}
    gidx = np.fromiter((kcode[k] for k in win_key), _I64, len(win_key))
    counts = np.zeros((len(keys), len(t.label_names)), _I64)
    np.add.at(counts, (gidx, t.label), 1)
    if cfg.test or cfg.validation:
        g_ranks = _named_ranks(keys, counts.sum(axis=1), cfg, cfg.by, keys)
    else:
        rep = _linked(t, gidx, len(keys), gap)
        units = sorted(set(rep.tolist()))
        members = {u: [keys[g] for g in np.flatnonzero(rep == u)] for u in units}
        u_counts = np.stack([counts[rep == u].sum(axis=0) for u in units])
        u_ranks, res.warnings = _fraction_ranks(["+".join(members[u]) for u in units], u_counts,
                                              cfg, f, cfg.by)  # fmt: skip
        g_ranks = u_ranks[np.searchsorted(units, rep)]
        res.details["linked_by_shared_sources"] = [
            members[u] for u in units if len(members[u]) > 1]  # fmt: skip
    res.groups = {k: SPLITS[int(r)] for k, r in zip(keys, g_ranks, strict=True)}
    return g_ranks[gidx]


def _time_split(t: _Table, f: np.ndarray, gap: int) -> np.ndarray:
    """Per asset, cut time-ordered windows where ``|p - target| + windows lost`` is least."""
    rank = np.zeros(len(t.rid), _I64)
    for lo, hi in _segments(t.asset):
        n = hi - lo
        pos = np.arange(n + 1)
        lose = np.zeros(n + 1, _I64)  # windows before cut p that cross (or near) the one after
        lose[:n] = pos[:n] - np.searchsorted(np.sort(t.end[lo:hi] + gap), t.start[lo:hi], "right")
        cuts = [0]
        for frac in (f[0], f[0] + f[1]):
            cand = pos[cuts[-1] :]
            dist = abs(cand - int(np.floor(frac * n + 0.5)))
            cut_lose = lose[cuts[-1] :]  # on ties: fewer drops (between clusters), then nearer
            cuts.append(int(cand[np.lexsort((cand, dist, cut_lose, dist + cut_lose))[0]]))
        rank[lo + cuts[1] : lo + cuts[2]] = 1
        rank[lo + cuts[2] : hi] = 2
    return rank


def _shift_split(t: _Table, cfg: SplitConfig, f: np.ndarray, res: SplitResult,
                 dropped: dict[int, str]) -> np.ndarray:  # fmt: skip
    """Ranks for by shift; a cluster crossing shifts of two splits goes whole to its first
    window's shift, or is cut at the boundary (its overlapping windows dropped): the fewer
    windows misplaced or lost wins."""
    cal, names = _shift_calendar(cfg), [s.name for s in cfg.shifts]
    own = cal[((t.start + _utc_offset_ns(cfg.utc_offset)) // _MIN_NS) % 1440]
    present = sorted(set(own[own >= 0].tolist()))
    counts = np.zeros((len(present), len(t.label_names)), _I64)
    np.add.at(counts, (np.searchsorted(present, own[own >= 0]), t.label[own >= 0]), 1)
    keys = [names[i] for i in present]
    if cfg.test or cfg.validation:
        g_ranks = _named_ranks(keys, counts.sum(axis=1), cfg, "shift", names)
    else:
        g_ranks, res.warnings = _fraction_ranks(keys, counts, cfg, f, "shift")
    shift_rank = np.full(len(names), -1, _I64)
    shift_rank[present] = g_ranks
    res.groups = {names[i]: SPLITS[int(shift_rank[i])] for i in present}
    own_rank = np.where(own >= 0, shift_rank[own], -1)
    cut_rank = own_rank.copy()
    _drop_conflicts(t, cut_rank, 0, {}, sources=False)
    n, n_cl = len(own), int(t.cluster[-1]) + 1
    first = np.minimum.reduceat(np.where(own >= 0, np.arange(n), n),
                                np.flatnonzero(np.diff(t.cluster, prepend=-1)))  # fmt: skip
    c_rank = np.where(first < n, own_rank[np.minimum(first, n - 1)], -1)[t.cluster]
    cost_whole = np.bincount(t.cluster, (own >= 0) & (own_rank != c_rank), n_cl)
    cost_cut = np.bincount(t.cluster, cut_rank < 0, n_cl)
    whole = cost_whole <= cost_cut
    rank = np.where(whole[t.cluster], c_rank, own_rank)
    res.details.update(clusters_moved_whole=int((whole & (cost_whole > 0)).sum()),
                       clusters_cut_at_shift_boundary=int((~whole).sum()))  # fmt: skip
    dropped.update((int(i), "starts outside every shift") for i in np.flatnonzero(rank < 0))
    return rank


def _segments(seg: np.ndarray) -> list[tuple[int, int]]:
    return list(pairwise([0, *(np.flatnonzero(np.diff(seg)) + 1).tolist(), len(seg)]))


def _drop_conflicts(t: _Table, rank: np.ndarray, gap: int, dropped: dict[int, str],
                    sources: bool = True) -> None:  # fmt: skip
    """Drop (rank -1) windows crossing, or within ``gap`` of, a kept window of a higher split
    on the same asset (or source file): validation against test first, then train."""
    for r in (1, 0):
        q = np.flatnonzero(rank == r)
        lost = np.zeros(len(q), bool)
        mine = (t.asset[q], t.start[q] - gap, t.end[q] + gap)
        for other in range(2, r, -1):
            p = np.flatnonzero(rank == other)
            hit = _hits((t.asset[p], t.start[p], t.end[p]), mine)
            why = (f"in the guard gap between {SPLITS[r]} and {SPLITS[other]}" if gap
                   else f"overlaps a {SPLITS[other]} window of the same asset")  # fmt: skip
            dropped.update((int(i), why) for i in q[hit & ~lost])
            lost |= hit
        for other in range(2, r, -1) if sources else ():
            qw = t.uri_win[rank[t.uri_win] == r]
            hit_w = np.unique(qw[_hits(t.uri_rows(rank, other), t.uri_rows(rank, r, gap))])
            near = "within the guard gap" if gap else "at overlapping times"
            for i in hit_w.tolist():
                dropped.setdefault(i, f"shares a source file with a {SPLITS[other]} window {near}")
            lost |= np.isin(q, hit_w)
        rank[q[lost]] = -1


def _method(cfg: SplitConfig, f: np.ndarray, lineless: list[str]) -> str:
    pct = "/".join(f"{100 * x:g}%" for x in f)
    if cfg.by == "time":
        text = (f"by time: per asset, windows in time order are cut into train (earliest), "
                f"validation and test periods of {pct}, each cut where (windows lost to "
                "overlaps and the gap) + (windows from the target) is least")  # fmt: skip
        if cfg.stratify:
            text += "; stratify keeps time order (stratification cannot reorder time)"
    else:
        text = f"by {cfg.by}: all windows of a group go to one split"
        if lineless:
            text += f" (assets without a line are grouped by their asset id: {_listing(lineless)})"
        if cfg.by == "shift":
            text += (f"; a window belongs to the shift holding its start in plant-local time "
                     f"(UTC{cfg.utc_offset}: " + ", ".join(f"{s.name} {s.start}-{s.end}"
                     for s in cfg.shifts) + ")")  # fmt: skip
        if cfg.test or cfg.validation:
            text += f"; named test {cfg.test}, validation {cfg.validation}, the rest train"
        else:
            mixes = " and label mixes" if cfg.stratify else ""
            text += (f"; groups placed where the split sizes{mixes} come closest to {pct} of "
                     f"the windows (best of all placements for up to {_EXACT_MAX} groups, else "
                     f"greedily in a seed-{cfg.seed} hash order)")  # fmt: skip
    near = f"within {cfg.gap_ms} ms of" if cfg.gap_ms else "overlapping"
    return (text + f". Windows {near} a window of a later split (train < validation < test) "
            "on the same asset or source file are dropped.")  # fmt: skip


def assign_splits(windows: Sequence[WindowMeta], cfg: SplitConfig) -> SplitResult:
    """Assign every window to train / validation / test, or drop it with a reason.

    Raises :class:`ConfigError` for bad fractions, unknown or doubly named groups, names with
    ``by: time``, bad or overlapping shifts, or a named split that would be empty;
    :class:`InputDataError` for a repeated record id.

    >>> ws = [WindowMeta(f"{a}-{i}", a, None, i * 10**9, (i + 1) * 10**9, "ok", ())
    ...       for a in ("p1", "p2", "p3") for i in range(4)]
    >>> res = assign_splits(ws, SplitConfig(by="asset", test=["p3"]))
    >>> res.groups, res.sizes()
    ({'p1': 'train', 'p2': 'train', 'p3': 'test'}, {'train': 8, 'validation': 0, 'test': 4})
    """
    f = _fractions(cfg)
    if cfg.by == "time" and (cfg.test or cfg.validation):
        name_field = "test" if cfg.test else "validation"
        allowed = "[] with by: time (periods are cut by `fractions`; name groups with by: asset"
        raise _bad(name_field, list(cfg.test or cfg.validation), allowed + " | line | shift)")
    t = _table(windows)
    gap = cfg.gap_ms * 1_000_000
    res = SplitResult({}, {}, {}, labels=dict(sorted((w.record_id, w.label) for w in windows)))
    res.details = {"by": cfg.by, "fractions": [float(x) for x in f], "gap_ms": cfg.gap_ms,
                   "seed": cfg.seed, "stratify": cfg.stratify,
                   "near_duplicate_clusters": int(t.cluster[-1]) + 1 if t.rid else 0}  # fmt: skip
    lineless = sorted({t.asset_names[a] for a, ln in zip(t.asset, t.line, strict=True)
                       if ln is None and cfg.by == "line"})  # fmt: skip
    res.method = _method(cfg, f, lineless)
    if not t.rid:
        return res
    dropped: dict[int, str] = {}
    if cfg.by == "time":
        rank = _time_split(t, f, gap)
    elif cfg.by == "shift":
        rank = _shift_split(t, cfg, f, res, dropped)
    else:
        rank = _group_split(t, cfg, f, gap, res)
    before = np.bincount(rank[rank >= 0], minlength=3)
    _drop_conflicts(t, rank, gap, dropped)
    after = np.bincount(rank[rank >= 0], minlength=3)
    res.warnings += [f"all {before[s]:,} {SPLITS[s]} windows were dropped (see `dropped`)"
                     for s in range(3) if before[s] and not after[s]]  # fmt: skip
    if cfg.by == "time":
        for lo, hi in _segments(t.asset):
            for r in np.unique(rank[lo:hi][rank[lo:hi] >= 0]).tolist():
                res.groups[f"{t.asset_names[int(t.asset[lo])]}/{SPLITS[r]}"] = SPLITS[r]
    order = sorted(range(len(t.rid)), key=t.rid.__getitem__)
    res.assignment = {t.rid[i]: SPLITS[int(rank[i])] for i in order if rank[i] >= 0}
    res.dropped = {t.rid[i]: dropped[i] for i in order if rank[i] < 0}
    kept = rank >= 0  # clusters cut (overlapping windows dropped) keep parts in two splits
    pairs = np.unique(t.cluster[kept] * 3 + rank[kept]) // 3
    res.details["clusters_in_two_splits"] = int(np.count_nonzero(np.bincount(pairs) > 1))
    return res
