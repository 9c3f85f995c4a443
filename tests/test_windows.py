"""Window planning: tumbling, sliding, event-anchored; never across a break."""

from __future__ import annotations

import numpy as np

from mmdata.config import WindowConfig
from mmdata.windows import find_breaks, plan_windows

S = 1_000_000_000
T0 = 1_772_352_000 * S


def test_tumbling_windows_sit_on_an_epoch_grid():
    plan = plan_windows((T0 + S // 3, T0 + 7 * S), WindowConfig(length_ms=2000), [])
    assert ((plan.starts - T0) // S).tolist() == [0, 2, 4, 6]
    assert (plan.ends - plan.starts == 2 * S).all()


def test_sliding_windows_overlap_by_length_minus_hop():
    cfg = WindowConfig(mode="sliding", length_ms=2000, hop_ms=500)
    plan = plan_windows((T0, T0 + 4 * S), cfg, [])
    assert ((plan.starts - T0) * 2 // S).tolist()[:5] == [-3, -2, -1, 0, 1]
    assert plan.starts[-1] < T0 + 4 * S and plan.ends[0] > T0


def test_event_windows_surround_each_anchor_once():
    cfg = WindowConfig(mode="event", on="notes", pre_ms=1000, post_ms=500)
    anchors = np.array([T0 + 5 * S, T0 + 5 * S, T0 + 9 * S])
    plan = plan_windows((T0, T0 + 10 * S), cfg, [], anchors)
    assert (plan.starts - T0).tolist() == [4 * S, 8 * S]
    assert (plan.ends - T0).tolist() == [5 * S + S // 2, 9 * S + S // 2]


def test_windows_never_cross_a_break_and_spans_count_breaks():
    gap = (T0 + 3 * S, T0 + 9 * S)
    plan = plan_windows((T0, T0 + 12 * S), WindowConfig(length_ms=2000), [gap])
    assert ((plan.starts - T0) // S).tolist() == [0, 10]
    assert plan.span.tolist() == [0, 1]
    assert plan.dropped_at_breaks == 4  # [2,4) [4,6) [6,8) [8,10) touch the gap


def test_a_single_sample_window():
    plan = plan_windows((T0, T0 + 1), WindowConfig(length_ms=1), [])
    assert plan.starts.tolist() == [T0] and plan.ends.tolist() == [T0 + 1_000_000]


def test_find_breaks_sees_gaps_and_segment_changes():
    ts = np.array([0, 1, 2, 100, 101, 50, 51])
    seg = np.array([0, 0, 0, 0, 0, 1, 1])
    assert find_breaks(ts, seg, 10) == [(2, 100), (50, 101)]
