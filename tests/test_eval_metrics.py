"""Evaluation metrics are exact: hand-made predictions against hand-computed values."""

from __future__ import annotations

import math

import pytest

from mmdata.build.templates import TemplateSet
from mmdata.train.data import Example
from mmdata.train.evaluate import (
    UNPARSEABLE,
    Interval,
    classification_metrics,
    interval_iou,
    localisation_metrics,
    parse_class,
    parse_interval,
    score,
)

TRUTH = ["a", "a", "a", "b", "b", "c", "c", "c"]
PRED = ["a", "a", "b", "b", None, "a", "b", "a"]


def test_classification_metrics_match_hand_computed_values():
    m = classification_metrics(TRUTH, PRED, ["a", "b", "c", "d"])
    assert m["n"] == 8 and m["unparseable"] == 1
    assert m["accuracy"] == 3 / 8
    a, b, c = (m["per_class"][k] for k in "abc")
    # a: 2 right of 3, predicted 4 times
    assert (a["precision"], a["recall"], a["support"]) == (0.5, 2 / 3, 3)
    assert math.isclose(a["f1"], 4 / 7)
    # b: 1 right of 2, predicted 3 times
    assert (b["precision"], b["recall"], b["support"]) == (1 / 3, 0.5, 2)
    assert math.isclose(b["f1"], 2 / 5)
    # c: never predicted → precision 0 (zero_division=0), recall 0, F1 0, still averaged
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 3)
    # d: in the class list, neither in truth nor predicted → not in the macro average
    assert math.isclose(m["macro_f1"], (4 / 7 + 2 / 5 + 0) / 3)
    assert m["confusion"] == {
        "rows": ["a", "b", "c", "d"],
        "columns": ["a", "b", "c", "d", UNPARSEABLE],
        "matrix": [[2, 1, 0, 0, 0], [0, 1, 0, 0, 1], [2, 1, 0, 0, 0], [0, 0, 0, 0, 0]],
    }


def test_perfect_and_empty_predictions():
    m = classification_metrics(["x", "y"], ["x", "y"], ["x", "y"])
    assert (m["accuracy"], m["macro_f1"]) == (1.0, 1.0)
    m = classification_metrics(["x", "y"], [None, None], ["x", "y"])
    assert (m["accuracy"], m["macro_f1"], m["unparseable"]) == (0.0, 0.0, 2)
    assert classification_metrics([], [], ["x"])["accuracy"] == 0.0


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ((0.0, 1.0), (0.5, 1.5), 1 / 3),
        ((0.0, 2.0), (0.5, 1.0), 0.25),
        ((0.0, 1.0), (1.0, 2.0), 0.0),  # touching
        ((0.0, 1.0), (3.0, 4.0), 0.0),
        ((0.4, 1.2), (0.4, 1.2), 1.0),
        ((0.0, 0.0), (0.0, 0.0), 0.0),
    ],
)
def test_interval_iou(a, b, iou):
    assert math.isclose(interval_iou(a, b), iou)
    assert math.isclose(interval_iou(b, a), iou)


def test_localisation_metrics_match_hand_computed_values():
    s = 1_000_000_000
    targets: list[dict] = [
        {"change": True, "start_ns": 0, "end_ns": 1 * s},  # answer 0.5-1.5: IoU 1/3, wrong
        {"change": True, "start_ns": 0, "end_ns": 2 * s},  # exact: IoU 1, right
        {"change": False, "start_ns": None, "end_ns": None},  # "no change": right
        {"change": False, "start_ns": None, "end_ns": None},  # an interval: wrong
        {"change": True, "start_ns": 1 * s, "end_ns": 2 * s},  # unparseable: IoU 0
    ]
    pred = [
        Interval(True, 0.5, 1.5),
        Interval(True, 0.0, 2.0),
        Interval(False),
        Interval(True, 0.2, 0.4),
        None,
    ]
    m = localisation_metrics(targets, pred)
    assert m["n"] == 5 and m["n_change"] == 3 and m["n_no_change"] == 2
    assert math.isclose(m["mean_iou"], (1 / 3 + 1 + 0) / 3)
    assert math.isclose(m["median_iou"], 1 / 3)
    assert math.isclose(m["iou_at_0.5"], 1 / 3)
    assert m["no_change_accuracy"] == 0.5
    assert m["accuracy"] == 2 / 5 and m["unparseable"] == 1


def test_class_answers_are_normalised_then_matched_to_the_class_list():
    classes = ["bearing_wear", "loose_part_rattle", "normal", "surface_scratch"]
    assert parse_class("bearing_wear", classes) == "bearing_wear"
    assert parse_class(" Surface scratch.", classes) == "surface_scratch"
    assert parse_class("The condition is loose-part-rattle", classes) == "loose_part_rattle"
    assert parse_class("abnormal", classes) is None  # 'normal' only as a whole word
    assert parse_class("normal or bearing_wear", classes) is None  # two classes: ambiguous
    assert parse_class("", classes) is None


def _anomaly_response(interval: dict | None) -> str:
    """What the bundled anomaly_time template answers for ``interval``."""
    task = TemplateSet.load().tasks["anomaly_time"]
    text: str = task.responses[0].render(asset_id="press-1", duration_s=2.0, interval=interval)
    return text.strip()


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0.4, 1.2, Interval(True, 0.4, 1.2)),  # starts and ends inside
        (0.4, 2.0, Interval(True, 0.4, 2.0)),  # starts inside, lasts to the end
        (0.0, 1.3, Interval(True, 0.0, 1.3)),  # window opens in the fault
        (0.0, 2.0, Interval(True, 0.0, 2.0)),  # the whole window
    ],
)
def test_bundled_anomaly_answers_parse_back_to_their_interval(start, end, expected):
    interval = {
        "label": "bearing_wear",
        "start_s": start,
        "end_s": end,
        "starts_inside": start > 0,
        "ends_inside": end < 2.0,
    }
    text = _anomaly_response(interval)
    assert parse_interval(text, 2.0) == expected, text


def test_no_change_and_garbage_answers():
    text = _anomaly_response(None)
    assert text.startswith("No change") and parse_interval(text, 2.0) == Interval(False)
    assert parse_interval("bearing", 2.0) is None
    assert parse_interval("", None) is None


def _ex(i: int, task: str, label: str | None, target: dict, response: str) -> Example:
    return Example(f"s{i}", "test", task, label, target, "<sensor>?", response, [])


def test_score_uses_the_metric_of_each_task_and_lists_errors():
    s = 1_000_000_000
    examples = [
        _ex(0, "defect_class", "a", {"class": "a"}, "a"),
        _ex(1, "defect_class", "b", {"class": "b"}, "b"),
        _ex(2, "anomaly_time", "x", {"change": True, "start_ns": 0, "end_ns": 2 * s}, "..."),
        _ex(3, "describe", None, {}, "A press."),
    ]
    answers = ["a", "garbage", "The signals change from 0.0 s to 1.0 s (x).", "a press"]
    tasks, rows = score(examples, answers, {"defect_class": ["a", "b"]}, max_examples=5)
    assert sorted(tasks) == ["anomaly_time", "defect_class", "describe"]
    dc = tasks["defect_class"]
    assert (dc["accuracy"], dc["unparseable"], dc["macro_f1"]) == (0.5, 1, 0.5)  # (1 + 0) / 2
    assert [e["sample_id"] for e in dc["errors"]] == ["s1"]
    assert tasks["anomaly_time"]["mean_iou"] == 0.5
    assert tasks["describe"]["exact_match"] == 1.0  # case and punctuation folded
    assert [r["correct"] for r in rows] == [True, False, True, True]
    assert rows[2]["parsed"] == [0.0, 1.0]
