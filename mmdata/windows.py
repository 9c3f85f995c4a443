"""Window planning: tumbling, sliding and event-anchored windows in reference time.

Tumbling and sliding windows sit on a grid anchored at the Unix epoch (window ``k`` starts
at ``k * hop``), so the same config gives the same windows for every asset and run.
Event-anchored windows are ``[t - pre, t + post)`` around each anchor time. Windows never
cross a *break* (a clock jump or a gap longer than ``max_gap_ms`` in a dense stream):
those are dropped and counted.

>>> plan = plan_windows((0, 10_000_000_000), WindowConfig(length_ms=2000), breaks=[])
>>> [int(s) // 10**9 for s in plan.starts]
[0, 2, 4, 6, 8]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmdata.config import WindowConfig
from mmdata.timebase import NS_PER_MS


@dataclass
class WindowPlan:
    """Planned windows (reference time) and the ones dropped at breaks."""

    starts: np.ndarray  # int64
    ends: np.ndarray  # int64
    span: np.ndarray  # int32: which continuous span each window lies in
    dropped_at_breaks: int = 0


def plan_windows(
    extent: tuple[int, int],
    cfg: WindowConfig,
    breaks: Sequence[tuple[int, int]],
    anchors: np.ndarray | None = None,
) -> WindowPlan:
    """Windows covering ``extent = (first_ns, end_ns)`` of an asset.

    ``breaks`` are reference-time intervals ``(a, b)`` no window may overlap (a gap from
    ``a`` to ``b``, or a clock jump at ``a == b``). ``anchors`` are the event times of
    event-anchored windows.
    """
    lo, hi = extent
    if cfg.mode == "event":
        if anchors is None:
            anchors = np.zeros(0, np.int64)
        t = np.unique(np.asarray(anchors, np.int64))
        starts = t - cfg.pre_ms * NS_PER_MS
        ends = t + max(cfg.post_ms * NS_PER_MS, 1)
    else:
        length = cfg.length_ms * NS_PER_MS
        hop = (cfg.hop_ms or cfg.length_ms) * NS_PER_MS
        if hi <= lo:
            starts = np.zeros(0, np.int64)
        else:
            k0 = (lo - length) // hop + 1  # first window ending after lo
            k1 = (hi - 1) // hop  # last window starting before hi
            starts = np.arange(k0, k1 + 1, dtype=np.int64) * hop
            starts = starts[(starts + length > lo) & (starts < hi)]
        ends = starts + length
    keep = np.ones(starts.size, bool)
    span = np.zeros(starts.size, np.int32)
    for a, b in sorted(breaks):
        crosses = (starts < max(b, a + 1)) & (ends > a)
        keep &= ~crosses
        span += (starts >= max(b, a + 1)).astype(np.int32)
    return WindowPlan(starts[keep], ends[keep], span[keep], int((~keep).sum()))


def find_breaks(ref_ts: np.ndarray, segments: np.ndarray | None, max_gap_ns: int) -> list[
    tuple[int, int]
]:  # fmt: skip
    """Breaks of one dense stream: gaps longer than ``max_gap_ns`` and segment changes.

    >>> find_breaks(np.array([0, 1, 2, 10, 11]), None, 5)
    [(2, 10)]
    """
    if ref_ts.size < 2:
        return []
    gaps = np.flatnonzero(np.diff(ref_ts) > max_gap_ns)
    out = [(int(ref_ts[i]), int(ref_ts[i + 1])) for i in gaps]
    if segments is not None and segments.size == ref_ts.size:
        for i in np.flatnonzero(np.diff(segments) != 0):
            a, b = int(ref_ts[i]), int(ref_ts[i + 1])
            out.append((min(a, b), max(a, b)))
    return sorted(out)
