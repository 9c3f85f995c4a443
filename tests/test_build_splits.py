"""Leakage-free splits: each `by`, named groups and fractions, the guard gap, near-duplicate
(overlapping) windows, shifts across midnight, stratification, determinism, config errors,
and every split passing the leakage audit (the audit itself: test_build_leakage.py)."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict

import numpy as np
import pytest

from mmdata.build.splits import (  # leakage_check: re-exported from mmdata.build.leakage
    SPLITS,
    SplitResult,
    WindowMeta,
    assign_splits,
    leakage_check,
)
from mmdata.config import ShiftConfig, SplitConfig
from mmdata.errors import ConfigError, InputDataError

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z
H = 3600 * S


def run(asset, n, *, length=1.0, hop=1.0, t0=T0, label=None, line=None, sources=(), tag=""):
    """``n`` windows of ``length`` s every ``hop`` s (hop < length: sliding, overlapping)."""
    return [
        WindowMeta(f"{asset}{tag}-{i:05d}", asset, line, t0 + int(i * hop * S),
                   t0 + int((i * hop + length) * S), label, tuple(sources))
        for i in range(n)
    ]  # fmt: skip


def by_id(windows):
    return {w.record_id: w for w in windows}


def cross_split_overlaps(windows, assignment, gap_ns=0):
    """Brute force: pairs of one asset in two splits closer than the gap (the spec)."""
    per_asset = defaultdict(list)
    for w in windows:
        if w.record_id in assignment:
            per_asset[w.asset_id].append(w)
    bad = 0
    for ws in per_asset.values():
        for i, a in enumerate(ws):
            for b in ws[i + 1 :]:
                near = a.start_ns < b.end_ns + gap_ns and b.start_ns < a.end_ns + gap_ns
                bad += near and assignment[a.record_id] != assignment[b.record_id]
    return bad


# --- by asset / line ------------------------------------------------------------------------


def test_named_assets_are_held_out_whole_and_the_rest_is_train():
    ws = [w for a in ("p1", "p2", "p3", "p4") for w in run(a, 20, sources=[f"{a}.parquet"])]
    res = assign_splits(ws, SplitConfig(by="asset", test=["p4"], validation=["p3"]))
    assert res.groups == {"p1": "train", "p2": "train", "p3": "validation", "p4": "test"}
    assert res.sizes() == {"train": 40, "validation": 20, "test": 20}
    assert all(res.assignment[w.record_id] == res.groups[w.asset_id] for w in ws)
    assert res.dropped == {}
    assert "named test ['p4']" in res.method
    assert leakage_check(ws, res.assignment).ok


def test_fractions_fill_splits_by_window_count_with_whole_assets():
    ws = [w for a in range(40) for w in run(f"a{a:02d}", 25, sources=[f"a{a}.parquet"])]
    res = assign_splits(ws, SplitConfig(by="asset", fractions=(0.7, 0.15, 0.15), seed=3))
    # Greedy filling of 25-window groups in hash order: train and validation stop less than
    # one group short of their target, test takes the rest (less than two groups over).
    for split, target in zip(SPLITS, (700, 150, 150), strict=True):
        assert abs(res.sizes()[split] - target) <= 2 * 25
    assert {res.assignment[w.record_id] for w in ws if w.asset_id == "a07"} == {
        res.groups["a07"]}  # fmt: skip
    again = assign_splits(ws, SplitConfig(by="asset", seed=3))
    other = assign_splits(ws, SplitConfig(by="asset", seed=4))
    assert again.groups == res.groups and other.groups != res.groups
    assert "seed-3 hash order" in res.method


def test_every_split_gets_a_group_when_there_are_enough_groups():
    ws = run("big", 1000) + run("small1", 5) + run("small2", 5)
    res = assign_splits(ws, SplitConfig(by="asset"))
    assert sorted(res.groups.values()) == ["test", "train", "validation"]
    assert res.groups["big"] == "train"
    two = assign_splits(run("x", 10) + run("y", 10), SplitConfig(by="asset"))
    assert sorted(two.groups.values()) == ["test", "train"]  # too few groups: no validation
    assert two.warnings == ["only 2 asset(s) for 3 splits: validation is empty"]


def test_few_groups_get_the_best_placement_by_fractions():
    ws = (run("p1", 70, t0=T0 + 7 * H, tag="e") + run("p1", 20, t0=T0 + 15 * H, tag="l")
          + run("p1", 10, t0=T0 + 23 * H, tag="n"))  # fmt: skip
    for seed in (0, 1, 2):
        res = assign_splits(ws, SplitConfig(by="shift", fractions=(0.7, 0.2, 0.1), seed=seed))
        assert res.groups == {"early": "train", "late": "validation", "night": "test"}
        assert res.sizes() == {"train": 70, "validation": 20, "test": 10}


def test_groups_linked_through_a_chain_of_shared_files_stay_together():
    ws = run("p1", 20, sources=["camA"]) + run("p2", 20, sources=["camA", "camB"])
    ws += run("p3", 20, sources=["camB"]) + run("p4", 20) + run("p5", 20) + run("p6", 20)
    res = assign_splits(ws, SplitConfig(by="asset", fractions=(0.5, 0.25, 0.25)))
    assert res.details["linked_by_shared_sources"] == [["p1", "p2", "p3"]]
    assert len({res.groups[a] for a in ("p1", "p2", "p3")}) == 1
    assert res.dropped == {} and leakage_check(ws, res.assignment).ok


def test_by_line_groups_lines_and_lineless_assets_by_their_asset_id():
    ws = (run("a1", 10, line="L1") + run("a2", 10, line="L1") + run("a3", 10, line="L2")
          + run("a4", 10, line="L2") + run("a5", 10))  # fmt: skip
    res = assign_splits(ws, SplitConfig(by="line", test=["L2"], validation=["a5"]))
    assert res.groups == {"L1": "train", "L2": "test", "a5": "validation"}
    assert {res.assignment[w.record_id] for w in ws if w.asset_id in ("a3", "a4")} == {"test"}
    assert "assets without a line are grouped by their asset id: 'a5'" in res.method


def test_assets_sharing_a_camera_are_kept_together_or_lose_the_shared_windows():
    cam = "s3://plant/cam-7/2026-01-01T00.mp4"  # one camera films both presses
    ws = run("p1", 50, sources=[cam, "p1.parquet"]) + run("p2", 50, sources=[cam, "p2.parquet"])
    ws += run("p3", 50, sources=["p3.parquet"]) + run("p4", 50, sources=["p4.parquet"])
    ws += run("p1", 10, t0=T0 + H, sources=["p1.parquet"], tag="late")  # camera off
    linked = assign_splits(ws, SplitConfig(by="asset"))
    assert linked.groups["p1"] == linked.groups["p2"]
    assert linked.details["linked_by_shared_sources"] == [["p1", "p2"]]
    assert linked.dropped == {} and leakage_check(ws, linked.assignment).ok
    named = assign_splits(ws, SplitConfig(by="asset", test=["p2"]))
    assert sorted(named.dropped) == sorted(w.record_id for w in ws if w.asset_id == "p1"
                                           and w.start_ns < T0 + H)  # fmt: skip
    assert set(named.dropped.values()) == {
        "shares a source file with a test window at overlapping times"}  # fmt: skip
    assert leakage_check(ws, named.assignment).ok
    assert not leakage_check(ws, {**named.assignment, "p1-00003": "train"}).ok


# --- by time, guard gap, near-duplicates ----------------------------------------------------


def test_time_split_cuts_each_asset_into_train_validation_test_in_time_order():
    ws = run("p1", 100, sources=["p1.parquet"]) + run("p2", 50, t0=T0 + 7 * S)
    res = assign_splits(ws, SplitConfig(by="time", fractions=(0.6, 0.2, 0.2)))
    assert res.sizes() == {"train": 90, "validation": 30, "test": 30}
    for asset in ("p1", "p2"):
        spans = {s: [w.start_ns for w in ws if w.asset_id == asset
                     and res.assignment[w.record_id] == s] for s in SPLITS}  # fmt: skip
        assert max(spans["train"]) < min(spans["validation"])
        assert max(spans["validation"]) < min(spans["test"])
        assert res.groups[f"{asset}/test"] == "test"


@pytest.mark.parametrize(("gap_ms", "n_dropped_per_cut"), [(2500, 3), (3000, 3), (3001, 4)])
def test_guard_gap_drops_exactly_the_windows_within_it(gap_ms, n_dropped_per_cut):
    ws = run("p1", 100, sources=["p1.parquet"])  # 1 s tumbling windows: window i is [i, i+1)
    res = assign_splits(ws, SplitConfig(by="time", fractions=(0.6, 0.2, 0.2), gap_ms=gap_ms))
    # Cuts at 60 s and 80 s; the earlier period gives way: window i is dropped when the first
    # window of the next period starts less than the gap after it ends (60 - (i + 1) < gap).
    k = n_dropped_per_cut
    expect = {f"p1-{i:05d}" for cut in (60, 80) for i in range(cut - k, cut)}
    assert set(res.dropped) == expect
    assert Counter(res.dropped.values()) == {
        "in the guard gap between train and validation": k,
        "in the guard gap between validation and test": k,
    }
    assert res.sizes() == {"train": 60 - k, "validation": 20 - k, "test": 20}
    gap_ns = gap_ms * 1_000_000
    assert leakage_check(ws, res.assignment, gap_ns=gap_ns).ok
    assert cross_split_overlaps(ws, res.assignment, gap_ns) == 0
    bigger = leakage_check(ws, res.assignment, gap_ns=k * S + 1)  # 1 ns more than kept
    assert not bigger.ok and bigger.counts["same_asset_across_splits"] == 4


def test_sliding_windows_never_straddle_a_time_cut():
    # 2 s windows every 0.5 s: each overlaps its 3 neighbours on either side. Two runs of data
    # with a pause between them; the 70 % cut (window 70) falls 2 windows before the pause.
    first = run("p1", 72, length=2, hop=0.5, sources=["p1-a.parquet"])
    second = run("p1", 28, length=2, hop=0.5, t0=T0 + 600 * S, sources=["p1-b.parquet"], tag="b")
    ws = first + second
    res = assign_splits(ws, SplitConfig(by="time", fractions=(0.7, 0.15, 0.15)))
    # Cutting at window 70 drops the 3 windows overlapping it; moving the cut to the pause
    # misplaces 2: the first cut is at the pause. The second (85 %, deep in run 2) can only be
    # inside the run: the 3 windows overlapping the first test window are dropped.
    assert {res.assignment[w.record_id] for w in first} == {"train"}
    assert Counter(res.dropped.values()) == {"overlaps a test window of the same asset": 3}
    assert res.sizes() == {"train": 72, "validation": 10, "test": 15}
    assert res.details["clusters_in_two_splits"] == 1
    assert cross_split_overlaps(ws, res.assignment) == 0
    assert leakage_check(ws, res.assignment).ok


# --- by shift -------------------------------------------------------------------------------


def at(asset, hhmm_utc, *, day=0, length=1.0, tag=""):
    h, m = (int(x) for x in hhmm_utc.split(":"))
    t = T0 + day * 24 * H + (h * 60 + m) * 60 * S
    return WindowMeta(f"{asset}-{day}-{hhmm_utc}{tag}", asset, None, t, t + int(length * S),
                      None, ())  # fmt: skip


def test_shift_is_taken_from_the_window_start_in_plant_local_time_across_midnight():
    cfg = SplitConfig(by="shift", utc_offset="+09:00", test=["night"], validation=["late"])
    cases = {  # UTC -> local (+09:00) -> shift (early 06-14, late 14-22, night 22-06)
        "13:30": "test",  # 22:30 night
        "15:00": "test",  # 00:00 next day, still night
        "20:59": "test",  # 05:59 night
        "21:00": "train",  # 06:00 early
        "04:59": "train",  # 13:59 early
        "05:00": "validation",  # 14:00 late
        "12:59": "validation",  # 21:59 late
    }
    ws = [at("p1", hm, day=d) for hm in cases for d in range(2)]
    res = assign_splits(ws, cfg)
    assert {w.record_id: res.assignment[w.record_id] for w in ws} == {
        w.record_id: cases[w.record_id.split("-")[2]] for w in ws}  # fmt: skip
    west = assign_splits([at("p1", "02:30")], SplitConfig(by="shift", utc_offset="-05:00"))
    assert west.groups == {"late": "train"}  # 02:30 UTC is 21:30 local the day before
    assert "UTC+09:00" in res.method and "night 22:00-06:00" in res.method


def test_windows_outside_every_shift_are_dropped_with_the_reason():
    shifts = [ShiftConfig(name="day", start="08:00", end="17:00")]
    ws = [at("p1", "09:00"), at("p1", "18:00")]
    res = assign_splits(ws, SplitConfig(by="shift", shifts=shifts))
    assert res.dropped == {"p1-0-18:00": "starts outside every shift"}


def test_short_overlapping_cluster_crossing_a_shift_goes_whole_to_its_first_shift():
    # Three 5 s event windows around 14:00 local, overlapping each other: one cluster.
    base = T0 + 14 * H - 2 * S
    ws = [WindowMeta(f"e{i}", "p1", None, base + i * S, base + (i + 5) * S, None, ("cam.mp4",))
          for i in range(3)]  # fmt: skip
    ws += [at("p1", "16:00"), at("p1", "23:00"), at("p1", "08:00")]
    res = assign_splits(ws, SplitConfig(by="shift", test=["late"]))
    assert [res.assignment[f"e{i}"] for i in range(3)] == ["train"] * 3  # e2 starts at 14:00
    assert res.details["clusters_moved_whole"] == 1 and res.dropped == {}
    assert leakage_check(ws, res.assignment).ok


def test_continuous_sliding_windows_are_cut_at_the_shift_boundary():
    # 2 s windows every 1 s from 13:40 to 14:20: one long cluster across early -> late.
    ws = run("p1", 2400, length=2, hop=1, t0=T0 + 13 * H + 40 * 60 * S, sources=["cam.mp4"])
    res = assign_splits(ws, SplitConfig(by="shift", test=["late"]))
    # Moving the cluster whole would misplace 1200 windows; cutting drops one: the window
    # starting 13:59:59 overlaps the first late window.
    assert res.dropped == {"p1-01199": "overlaps a test window of the same asset"}
    assert res.sizes() == {"train": 1199, "validation": 0, "test": 1200}
    assert res.details["clusters_cut_at_shift_boundary"] == 1
    assert leakage_check(ws, res.assignment).ok


# --- stratification -------------------------------------------------------------------------


def _label_table(res, ws):
    labels = {w.record_id: w.label for w in ws}
    return res.label_balance(labels)


def test_stratified_fractions_keep_each_splits_label_mix_close_to_the_overall_one():
    # Worst case for stratification: every asset has a single label (150 assets x 10 windows:
    # 60 % normal, 30 % wear, 10 % crack), so balance can only come from which assets go where.
    ws, rng = [], random.Random(1)
    labels = ["normal"] * 90 + ["wear"] * 45 + ["crack"] * 15
    rng.shuffle(labels)
    for a, label in enumerate(labels):
        ws += run(f"a{a:03d}", 10, label=label)
    f = (0.7, 0.15, 0.15)
    overall = Counter(w.label for w in ws)
    strat = assign_splits(ws, SplitConfig(by="asset", fractions=f, stratify=True))
    plain = assign_splits(ws, SplitConfig(by="asset", fractions=f))
    # With the per-label distance as the greedy cost, each label's assets fill the splits in
    # turn, so a split misses its per-label target by less than two assets (20 windows):
    # train and validation stop short by under one, test takes the rest.
    for split, frac in zip(SPLITS, f, strict=True):
        for label, n in overall.items():
            assert abs(_label_table(strat, ws)[split][label] - frac * n) <= 20
    worst = {name: max(r.label_imbalance({w.record_id: w.label for w in ws}).values())
             for name, r in (("strat", strat), ("plain", plain))}  # fmt: skip
    # 20 windows of 225 in a test split: a total variation distance of at most ~0.09
    assert worst["strat"] <= 20 / 225 + 1e-9
    assert worst["strat"] < worst["plain"]
    assert "label mixes" in strat.method


def test_time_split_with_stratify_keeps_time_order_and_reports_the_imbalance():
    ws = run("p1", 80, label="normal") + run("p1", 20, t0=T0 + 80 * S, label="fault", tag="f")
    cfg = SplitConfig(by="time", fractions=(0.7, 0.1, 0.2), stratify=True)
    res = assign_splits(ws, cfg)
    assert res.assignment == assign_splits(ws, SplitConfig(by="time", fractions=cfg.fractions)
                                           ).assignment  # fmt: skip
    assert "stratification cannot reorder time" in res.method
    out = res.to_json()
    assert out["label_balance"]["test"] == {"fault": 20, "normal": 0}
    assert out["label_imbalance"]["test"] == pytest.approx(0.8)


# --- determinism, invariants, scale ---------------------------------------------------------


def mixed_plant(seed, n_assets=6):
    """Tumbling and sliding windows, event windows, shared cameras, labels, lines, pauses."""
    rng = random.Random(seed)
    ws = []
    for a in range(n_assets):
        t0 = T0 + rng.randrange(0, 48) * H + rng.randrange(0, 3600) * S
        cam = f"cam-{a // 2}.mp4"  # cameras shared by pairs of assets
        line = None if a == n_assets - 1 else f"L{a % 3}"
        for part in range(3):
            hop, length = rng.choice([(2, 2), (1, 2), (0.5, 2)])
            n = rng.randrange(20, 120)
            ws += run(f"a{a}", n, length=length, hop=hop, t0=t0, line=line, tag=f"p{part}",
                      label=rng.choice(["normal", "normal", "wear", None]),
                      sources=[cam, f"a{a}-{part}.parquet"])  # fmt: skip
            t0 += int(n * hop * S) + rng.choice([0, 5, 4 * 3600]) * S
    return ws


@pytest.mark.parametrize("by", ["asset", "line", "shift", "time"])
def test_the_same_windows_in_any_order_give_the_same_split(by):
    ws = mixed_plant(7)
    cfg = SplitConfig(by=by, gap_ms=3000, stratify=True, seed=11)
    res = assign_splits(ws, cfg)
    shuffled = ws[:]
    random.Random(0).shuffle(shuffled)
    again = assign_splits(shuffled, cfg)
    assert again.assignment == res.assignment and again.dropped == res.dropped
    assert json.dumps(again.to_json()) == json.dumps(res.to_json())
    assert list(again.assignment) == sorted(again.assignment)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("by", ["asset", "line", "shift", "time"])
def test_every_window_is_assigned_or_dropped_and_the_audit_passes(by, seed):
    ws = mixed_plant(seed)
    gap_ms = [0, 1500, 60_000, 0][seed]
    res = assign_splits(ws, SplitConfig(by=by, gap_ms=gap_ms, seed=seed))
    assert set(res.assignment) | set(res.dropped) == {w.record_id for w in ws}
    assert not set(res.assignment) & set(res.dropped)
    report = leakage_check(ws, res.assignment, gap_ns=gap_ms * 1_000_000)
    assert report.ok, report.summary()
    assert cross_split_overlaps(ws, res.assignment, gap_ms * 1_000_000) == 0


def test_a_hundred_thousand_sliding_windows_split_and_audit():
    ws = [w for a in range(20) for w in run(f"a{a:02d}", 5000, length=2, hop=1,
          sources=[f"a{a}.parquet", f"cam{a // 2}-{0}.mp4"])]  # fmt: skip
    res = assign_splits(ws, SplitConfig(by="time", gap_ms=5000))
    assert len(res.assignment) + len(res.dropped) == 100_000
    # per asset and cut: 5 s gap + 1 overlapping neighbour = 6 windows of the earlier period
    assert len(res.dropped) == 20 * 2 * 6
    assert leakage_check(ws, res.assignment, gap_ns=5000 * 1_000_000).ok


def test_to_json_is_json_ready_and_describes_the_split():
    ws = mixed_plant(3)
    res = assign_splits(ws, SplitConfig(by="time", gap_ms=1000))
    out = json.loads(json.dumps(res.to_json()))
    assert set(out) >= {"method", "sizes", "label_balance", "groups", "dropped", "details"}
    assert sum(out["sizes"].values()) == len(res.assignment)
    assert sum(out["dropped"].values()) == out["n_dropped"] == len(res.dropped)
    assert set(out["label_balance"]["train"]) == {"normal", "wear", "(unlabeled)"}
    assert res.summary()[0].startswith("splits: train ")


def test_no_windows_give_an_empty_split():
    res = assign_splits([], SplitConfig(by="asset"))
    assert res.sizes() == {"train": 0, "validation": 0, "test": 0}
    assert leakage_check([], {}).ok


# --- bad configs ----------------------------------------------------------------------------

_night = [ShiftConfig(name="night", start="22:00", end="06:00")]


@pytest.mark.parametrize(
    ("cfg", "quoted"),
    [
        ({"by": "asset", "test": ["press-9"]}, "build.split.test.0 = 'press-9'"),
        ({"by": "asset", "test": ["p1"], "validation": ["p1"]}, "validation.0 = 'p1'"),
        ({"by": "asset", "test": ["p1"], "validation": ["p2"]}, "train would be empty"),
        ({"by": "asset", "fractions": (0.5, 0.3, 0.3)}, "fractions = [0.5, 0.3, 0.3]"),
        ({"by": "time", "test": ["p1"]}, "build.split.test = ['p1']"),
        ({"by": "shift", "test": ["evening"]}, "'evening'"),
        ({"by": "shift", "test": ["night"]}, "test would be empty"),
        ({"by": "shift", "utc_offset": "+15:00"}, "utc_offset = '+15:00'"),
        ({"by": "shift", "shifts": [*_night, {"name": "x", "start": "25:00", "end": "08:00"}]},
         "shifts.1.start = '25:00'"),
        ({"by": "shift", "shifts": [*_night, {"name": "day", "start": "05:00", "end": "18:00"}]},
         "'day 05:00-18:00' is not allowed; expected a shift not overlapping 'night'"),
        ({"by": "shift", "shifts": [*_night, {"name": "night", "start": "08:00", "end": "09:00"}]},
         "shifts.1.name = 'night'"),
    ],
)  # fmt: skip
def test_bad_configs_raise_with_the_bad_value_quoted(cfg, quoted):
    ws = run("p1", 5, t0=T0 + 9 * H) + run("p2", 5, t0=T0 + 10 * H)  # daytime (UTC) only
    with pytest.raises(ConfigError) as err:
        assign_splits(ws, SplitConfig.model_validate(cfg))
    assert quoted in str(err.value)


def test_a_repeated_record_id_is_an_input_error():
    ws = run("p1", 3)
    with pytest.raises(InputDataError, match="'p1-00001' is given 2 times"):
        assign_splits([*ws, ws[1]], SplitConfig(by="asset"))


def test_split_result_sizes_and_balance_for_a_hand_made_assignment():
    res = SplitResult({"a": "train", "b": "train", "c": "test"}, {}, {})
    bal = res.label_balance({"a": "x", "b": "y", "c": "x"})
    assert bal == {"train": {"x": 1, "y": 1}, "validation": {"x": 0, "y": 0},
                   "test": {"x": 1, "y": 0}}  # fmt: skip
    assert np.isclose(res.label_imbalance({"a": "x", "b": "y", "c": "x"})["test"], 1 / 3)
