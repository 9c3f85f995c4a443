"""The leakage audit catches every kind of leak on hand-made assignments — a record in two
splits, a source file feeding two splits at overlapping times, overlapping or too-close windows
of one asset — agrees with a brute-force sweep, and accepts clean splits."""

from __future__ import annotations

import random
from collections import defaultdict

from mmdata.build.leakage import LEAK_KINDS, leakage_check
from mmdata.build.splits import WindowMeta

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z


def run(asset, n, *, length=1.0, hop=1.0, t0=T0, sources=(), tag=""):
    """``n`` windows of ``length`` s every ``hop`` s (hop < length: sliding, overlapping)."""
    return [
        WindowMeta(f"{asset}{tag}-{i:05d}", asset, None, t0 + int(i * hop * S),
                   t0 + int((i * hop + length) * S), None, tuple(sources))
        for i in range(n)
    ]  # fmt: skip


def test_audit_finds_a_record_in_two_splits():
    ws = run("p1", 3)
    pairs = [("p1-00000", "train"), ("p1-00001", "train"), ("p1-00001", "test")]
    report = leakage_check(ws, pairs)
    assert not report.ok and report.counts[LEAK_KINDS[0]] == 1
    assert report.problems == ["record_id 'p1-00001' is in test and train"]


def test_audit_finds_a_source_file_feeding_two_splits_at_overlapping_times():
    cam = "cam-3/2026-01-01.mp4"
    ws = run("p1", 4, sources=[cam]) + run("p2", 4, t0=T0 + S // 2, sources=[cam])
    assignment = {w.record_id: "train" if w.asset_id == "p1" else "test" for w in ws}
    report = leakage_check(ws, assignment)
    assert report.counts == {LEAK_KINDS[0]: 0, LEAK_KINDS[1]: 8, LEAK_KINDS[2]: 0}
    assert report.problems[0].startswith("source 'cam-3/2026-01-01.mp4': 'p1-00000' (train")
    assert report.problems[0].endswith("overlap")
    # one second apart instead: fine without a gap, a leak with a 2 s gap
    later = run("p2", 4, t0=T0 + 5 * S, sources=[cam])
    ws2 = run("p1", 4, sources=[cam]) + later
    assignment2 = {w.record_id: "train" if w.asset_id == "p1" else "test" for w in ws2}
    assert leakage_check(ws2, assignment2).ok
    gapped = leakage_check(ws2, assignment2, gap_ns=2 * S)
    assert gapped.counts[LEAK_KINDS[1]] == 2 and "are 1 s apart (gap 2 s)" in gapped.problems[0]


def test_audit_finds_overlapping_windows_of_one_asset_in_two_splits():
    outer = WindowMeta("outer", "p1", None, T0, T0 + 10 * S, None, ("a.parquet",))
    inner = WindowMeta("inner", "p1", None, T0 + 2 * S, T0 + 3 * S, None, ("b.parquet",))
    other = WindowMeta("other", "p1", None, T0 + 20 * S, T0 + 21 * S, None, ("b.parquet",))
    report = leakage_check([outer, inner, other], {"outer": "train", "inner": "validation",
                                                   "other": "test"})  # fmt: skip
    assert report.counts == {LEAK_KINDS[0]: 0, LEAK_KINDS[1]: 0, LEAK_KINDS[2]: 2}
    assert "asset 'p1': 'outer' (train" in report.problems[0]
    assert "FAILED" in report.summary()


def test_audit_finds_adjacent_windows_closer_than_the_gap():
    ws = run("p1", 10)  # tumbling: touching, not overlapping
    assignment = {w.record_id: "train" if i < 5 else "test" for i, w in enumerate(ws)}
    assert leakage_check(ws, assignment).ok
    report = leakage_check(ws, assignment, gap_ns=1)
    assert report.counts[LEAK_KINDS[2]] == 2 and report.to_json()["ok"] is False


def test_audit_ignores_unassigned_windows_and_accepts_a_clean_split():
    ws = run("p1", 10, sources=["f.parquet"])
    assignment = {w.record_id: "train" for w in ws[:4]} | {w.record_id: "test" for w in ws[7:]}
    report = leakage_check(ws, assignment, gap_ns=3 * S)
    assert report.ok and report.problems == [] and report.summary().startswith("leakage check: ok")
    # a hand-made "split" that is really the same windows again under new ids
    dup = [WindowMeta(w.record_id + "-copy", w.asset_id, None, w.start_ns, w.end_ns, None, ())
           for w in ws[:2]]  # fmt: skip
    leaky = leakage_check(ws + dup, {**assignment, **{d.record_id: "test" for d in dup}})
    assert not leaky.ok and leaky.counts[LEAK_KINDS[2]] == 4


def leaking_windows(windows, assignment, key, gap_ns):
    """Brute force (the spec): windows sharing ``key`` with a window of another split that
    overlaps it or comes closer than the gap."""
    groups = defaultdict(list)
    for w in windows:
        for k in set(key(w)):
            groups[k].append(w)
    bad = set()
    for ws in groups.values():
        for i, a in enumerate(ws):
            for b in ws[i + 1 :]:
                near = a.start_ns < b.end_ns + gap_ns and b.start_ns < a.end_ns + gap_ns
                if near and assignment[a.record_id] != assignment[b.record_id]:
                    bad |= {a.record_id, b.record_id}
    return len(bad)


def test_audit_counts_agree_with_a_brute_force_sweep_on_random_assignments():
    rng = random.Random(5)
    for trial in range(20):
        ws = []
        for a in range(3):
            for part in range(2):
                ws += run(
                    f"a{a}",
                    rng.randrange(5, 30),
                    length=rng.choice([1, 2, 3]),
                    hop=rng.choice([0.5, 1, 2]),
                    t0=T0 + rng.randrange(0, 60) * S,
                    sources=[f"cam{rng.randrange(2)}", f"a{a}.parquet"],
                    tag=f"p{part}",
                )
        assignment = {w.record_id: rng.choice(["train", "validation", "test"]) for w in ws}
        gap = rng.choice([0, S // 2, 3 * S])
        report = leakage_check(ws, assignment, gap_ns=gap)
        assert report.counts == {
            LEAK_KINDS[0]: 0,
            LEAK_KINDS[1]: leaking_windows(ws, assignment, lambda w: w.sources, gap),
            LEAK_KINDS[2]: leaking_windows(ws, assignment, lambda w: [w.asset_id], gap),
        }, trial
