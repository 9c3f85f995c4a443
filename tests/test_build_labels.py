"""Window labels: the record's own annotations first, then ground-truth faults by overlap.

Windows are [0, 2 s) unless said otherwise; ``min_label_overlap`` defaults to 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmdata.build.labels import (
    Fault,
    WindowLabels,
    dataset_classes,
    load_ground_truth,
    window_labels,
)
from mmdata.config import BuildConfig
from mmdata.errors import InputDataError
from mmdata.synth import SynthConfig, generate_factory
from mmdata.synth.clocks import FaultInterval, label_at
from mmdata.synth.plan import build_plan

S = 1_000_000_000
CFG = BuildConfig()


def rec(labels=(), start=0, end=2 * S, asset="press-1"):
    return {"record_id": "r", "asset_id": asset, "window_start_ns": start,
            "window_end_ns": end, "labels": list(labels)}  # fmt: skip


def fault(cls, start, end, asset="press-1"):
    return Fault(cls, "accelerometer", start, end, asset)


def ann(name, value, start=None, end=None):
    return {"name": name, "value": value, "start_ns": start, "end_ns": end,
            "source": "labelstudio", "annotator": "a1"}  # fmt: skip


# -- ground truth --------------------------------------------------------------------------


def test_reads_the_ground_truth_the_synthetic_factory_writes(tmp_path: Path):
    cfg = SynthConfig(assets=2, minutes=1.0, seed=3, workers=1)
    generate_factory(cfg, tmp_path / "factory")
    truth = load_ground_truth(tmp_path / "factory" / "ground_truth.json")
    plan = build_plan(cfg)
    assert sorted(truth) == [a.asset for a in plan.assets]
    for a in plan.assets:
        assert [(f.class_name, f.start_ns, f.end_ns) for f in truth[a.asset]] == [
            (f.fault_class, f.start_ns, f.end_ns) for f in a.faults
        ]
        assert all(f.asset_id == a.asset and f.modality for f in truth[a.asset])
    # windows wholly inside or outside a fault get the synthetic factory's own label
    a = plan.assets[0]
    seen = set()
    for k in range(0, 30):
        start = plan.start_ns + k * 2 * S
        lab = window_labels(rec(start=start, end=start + 2 * S, asset=a.asset), truth[a.asset], CFG)
        ends = label_at(a.faults, np.array([start, start + 2 * S - 1]))
        if ends[0] == ends[1]:
            assert lab.defect == ends[0], k
            assert lab.source == "ground_truth"
            seen.add(lab.defect)
    assert "normal" in seen and len(seen) >= 2  # both kinds of window were checked


def test_ground_truth_entries_are_sorted_and_keep_the_writer_format(tmp_path: Path):
    p = tmp_path / "gt.json"
    faults = [FaultInterval("bearing_wear", 50, 60).as_json(),
              FaultInterval("surface_scratch", 10, 20).as_json()]  # fmt: skip
    p.write_text(json.dumps({"schema_version": "mmdata.synth.ground_truth/1",
                             "faults": {"press-2": faults, "press-1": []}}))  # fmt: skip
    truth = load_ground_truth(p)
    assert list(truth) == ["press-1", "press-2"]
    assert truth["press-1"] == []
    assert [f.class_name for f in truth["press-2"]] == ["surface_scratch", "bearing_wear"]
    assert truth["press-2"][0] == Fault("surface_scratch", "camera", 10, 20, "press-2")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such ground-truth file"),
        ("{not json", "not valid JSON (line 1"),
        ("[1, 2]", "expected a JSON object"),
        ('{"schema_version": "mmdata.synth.ground_truth/9", "faults": {}}', "not supported"),
        ('{"assets": []}', "faults"),
        ('{"faults": {"p": [{"class": "x", "start_ns": 5, "end_ns": 5}]}}', "faults.p.0"),
        ('{"faults": {"p": [{"class": "x", "start_ns": 1.5, "end_ns": 9}]}}', "start_ns"),
        ('{"faults": {"p": [{"class": "x", "start_ns": true, "end_ns": 9}]}}', "start_ns"),
        ('{"faults": {"p": [{"start_ns": 1, "end_ns": 9}]}}', "class"),
    ],
)
def test_a_bad_ground_truth_file_is_an_input_error_naming_file_and_field(
    tmp_path: Path, content, expected
):
    p = tmp_path / "ground_truth.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(InputDataError) as err:
        load_ground_truth(p)
    assert str(p) in str(err.value)
    assert expected in str(err.value)
    assert "build.ground_truth" in str(err.value)  # the fix says where the path comes from


# -- overlap thresholds --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "defect"),
    [
        (-10 * S, 10 * S, "bearing_wear"),  # covers the whole window
        (1 * S, 9 * S, "bearing_wear"),  # exactly half of it: >= 0.5 labels it
        (1 * S + 1, 9 * S, None),  # 1 ns short of half: ambiguous
        (-5 * S, 1 * S, "bearing_wear"),  # the first half
        (-5 * S, 1 * S - 1, None),
        (-5 * S, 0, "normal"),  # ends where the window starts: [start, end) do not touch
        (2 * S, 5 * S, "normal"),  # starts where the window ends
    ],
)
def test_a_fault_labels_a_window_it_covers_at_least_min_label_overlap(start, end, defect):
    lab = window_labels(rec(), [fault("bearing_wear", start, end)], CFG)
    assert lab.defect == defect
    assert lab.source == "ground_truth"
    if defect == "normal":
        assert lab.intervals == []
    else:  # ambiguous windows still report the clipped interval
        assert lab.intervals == [("bearing_wear", max(start, 0), min(end, 2 * S))]


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.7, 1.0])
def test_threshold_boundaries_are_exact_for_decimal_thresholds(threshold):
    cfg = BuildConfig(min_label_overlap=threshold)
    covered = round(threshold * 2 * S)  # the exact number of ns the threshold asks for
    at = window_labels(rec(), [fault("x", 2 * S - covered, 5 * S)], cfg)
    short = window_labels(rec(), [fault("x", 2 * S - covered + 1, 5 * S)], cfg)
    assert (at.defect, short.defect) == ("x", None)


def test_the_fault_covering_most_of_the_window_wins_and_ties_are_ambiguous():
    cfg = BuildConfig(min_label_overlap=0.25)
    lab = window_labels(rec(), [fault("a", -S, S // 2), fault("b", S, 3 * S)], cfg)
    assert lab.defect == "b"
    assert lab.intervals == [("a", 0, S // 2), ("b", S, 2 * S)]
    tie = window_labels(rec(), [fault("a", -S, S), fault("b", S, 3 * S)], cfg)
    assert tie.defect is None


def test_faults_of_other_assets_are_ignored_and_no_ground_truth_means_unlabelled():
    lab = window_labels(rec(), [fault("x", 0, 2 * S, asset="press-9")], CFG)
    assert lab == WindowLabels("normal", [], "ground_truth")
    assert window_labels(rec(), None, CFG) == WindowLabels(None, [], None)


def test_the_normal_label_comes_from_the_config():
    lab = window_labels(rec(), [], BuildConfig(normal_label="ok"))
    assert lab.defect == "ok"


# -- the record's own annotations ----------------------------------------------------------


def test_a_defect_choice_in_the_record_takes_precedence_over_ground_truth():
    r = rec([ann("defect", "surface_scratch")])
    lab = window_labels(r, [fault("bearing_wear", 0, 2 * S)], CFG)
    assert lab == WindowLabels("surface_scratch", [], "labels")


def test_interval_annotations_are_clipped_and_decide_the_class_by_overlap():
    r = rec([ann("anomaly", "bearing_wear", S // 2, 5 * S)])  # covers 75%
    lab = window_labels(r, [fault("surface_scratch", 0, 2 * S)], CFG)
    assert lab == WindowLabels("bearing_wear", [("bearing_wear", S // 2, 2 * S)], "labels")
    short = window_labels(rec([ann("anomaly", "bearing_wear", 3 * S // 2, 5 * S)]), [], CFG)
    assert short.defect is None  # 25%: ambiguous, but the interval is kept
    assert short.intervals == [("bearing_wear", 3 * S // 2, 2 * S)]


def test_a_defect_choice_and_intervals_combine():
    r = rec([ann("defect", "bearing_wear"), ann("anomaly", "bearing_wear", S, 3 * S)])
    lab = window_labels(r, None, CFG)
    assert lab == WindowLabels("bearing_wear", [("bearing_wear", S, 2 * S)], "labels")


def test_disagreeing_defect_choices_make_the_window_ambiguous():
    r = rec([ann("defect", "bearing_wear"), ann("defect", "normal")])
    assert window_labels(r, [], CFG) == WindowLabels(None, [], "labels")


def test_an_interval_label_without_a_value_is_named_by_its_control():
    r = rec([ann("rattle", None, 0, 2 * S)])
    assert window_labels(r, None, CFG).defect == "rattle"


def test_annotations_that_say_nothing_about_defects_fall_back_to_ground_truth():
    r = rec([
        ann("quality", "good"),  # window-level, not a defect choice
        ann("anomaly", "bearing_wear", 5 * S, 6 * S),  # outside the window
        ann("defect", "surface_scratch", 7 * S, 8 * S),  # a timed choice elsewhere
    ])  # fmt: skip
    lab = window_labels(r, [fault("bearing_wear", 0, 2 * S)], CFG)
    assert lab == WindowLabels("bearing_wear", [("bearing_wear", 0, 2 * S)], "ground_truth")


def test_dataset_classes_are_sorted_and_include_the_normal_label():
    truth = {"a": [fault("z", 0, 1, "a")], "b": [fault("m", 0, 1, "b"), fault("z", 2, 3, "b")]}
    assert dataset_classes(truth, ["k", ""], "normal") == ["k", "m", "normal", "z"]
    assert dataset_classes(None, [], "ok") == ["ok"]
