"""Agreement figures (against textbook and hand-computed values) and resolution rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mmdata.config import LabelsConfig
from mmdata.labels.agreement import (
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    percent_agreement,
)
from mmdata.labels.mapping import labels_from_export
from tests.test_labels_mapping import WINDOWS, S, ann, box, choice, data, make_run, rng, task

SRC = "labelstudio:line2"
ANN, BOB, CAT = ({"id": i, "email": f"{n}@plant.example"} for i, n in [(1, "ann"), (2, "bob"),
                                                                        (3, "cat")])  # fmt: skip


# -- the figures, textbook examples ------------------------------------------------------


def test_cohen_kappa_textbook():
    # 50 items; both yes 20, A yes B no 5, A no B yes 10, both no 15: p_o .7, p_e .5
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-15)
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # chance agreement 1: undefined
    assert cohen_kappa([], []) is None


def test_fleiss_kappa_textbook():
    # Fleiss (1971) as in Wikipedia: 10 subjects, 14 raters, 5 categories → κ = 0.210
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
              [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
              [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]  # fmt: skip
    units = [[cat for cat, n in enumerate(row) for _ in range(n)] for row in counts]
    assert fleiss_kappa(units) == pytest.approx(0.20993, abs=1e-5)
    assert percent_agreement(units) == pytest.approx(0.37802, abs=1e-5)  # P̄
    assert fleiss_kappa([["a", "a"], ["b"]]) is None  # one value among pairable units


def test_krippendorff_alpha_textbook_with_missing_data():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers,
    # 12 units, nominal data with missing values → α = 0.743
    rows = ["1 2 3 3 2 1 4 1 2 . . .", "1 2 3 3 2 2 4 1 2 5 . 3",
            ". 3 3 3 2 3 4 2 2 5 1 .", "1 2 3 3 2 4 4 1 2 5 1 ."]  # fmt: skip
    units = [[v for v in col if v != "."] for col in zip(*(r.split() for r in rows),
                                                         strict=True)]  # fmt: skip
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha([["a"], ["b"]]) is None  # nothing pairable


def test_two_raters_by_hand():
    # a/a, b/a, b/b: p_o 2/3, p_e 4/9 → κ 0.4; Fleiss P̄ 2/3, P_e 1/2 → 1/3;
    # α: o_aa 2, o_bb 2, o_ab = o_ba 1, n = 6 → 1 - 5*2/18 = 4/9
    units = [["a", "a"], ["b", "a"], ["b", "b"]]
    assert cohen_kappa([u[0] for u in units], [u[1] for u in units]) == pytest.approx(0.4)
    assert fleiss_kappa(units) == pytest.approx(1 / 3)
    assert krippendorff_alpha(units) == pytest.approx(4 / 9)
    assert percent_agreement(units) == pytest.approx(2 / 3)


# -- per control, from an export ---------------------------------------------------------


def _defect_export(rids: list[str]) -> list[dict[str, Any]]:
    return [
        task(1, data(rids[0], 0), [ann(11, ANN, [choice("normal")]),
                                   ann(12, BOB, [choice("normal")])]),
        task(2, data(rids[1], 1), [ann(21, ANN, [choice("bearing_wear")]),
                                   ann(22, BOB, [choice("normal")])]),
        task(3, data(rids[2], 2), [ann(31, ANN, [choice("bearing_wear")]),
                                   ann(32, BOB, [choice("bearing_wear")])]),
    ]  # fmt: skip


def _resolved(res: Any) -> list[tuple[str, str, str, Any, Any]]:
    return [(r["record_id"], r["name"], r["value"], r["start_ns"], r["annotator"])
            for r in res.resolved]  # fmt: skip


def test_defect_agreement_figures_from_two_annotators(tmp_path: Path):
    run, rids = make_run(tmp_path)
    res = labels_from_export(_defect_export(rids), run, LabelsConfig(), SRC)
    d = res.agreement["controls"]["defect"]
    assert (d["records"], d["records_multi"], d["annotators"], d["ratings"]) == (3, 3, 2, 6)
    assert d["percent_agreement"] == pytest.approx(2 / 3)
    assert d["cohen_kappa"] == pytest.approx(0.4)
    assert d["fleiss_kappa"] == pytest.approx(1 / 3)
    assert d["krippendorff_alpha"] == pytest.approx(4 / 9)
    # per value: "normal" yes/yes, no/yes, no/no — the same table as above
    assert d["by_value"]["normal"]["cohen_kappa"] == pytest.approx(0.4)


def test_majority_resolves_and_reports_ties(tmp_path: Path):
    run, rids = make_run(tmp_path)
    res = labels_from_export(_defect_export(rids), run, LabelsConfig(), SRC)
    assert _resolved(res) == sorted([
        (rids[0], "defect", "normal", None, "resolved:majority"),
        (rids[2], "defect", "bearing_wear", None, "resolved:majority"),
    ])  # fmt: skip
    (tie,) = res.agreement["unresolved"]
    assert tie["record_id"] == rids[1] and tie["name"] == "defect"
    assert tie["reason"] == "tie between 'bearing_wear' x1, 'normal' x1; no label"


def test_the_reviewer_wins_and_majority_decides_where_the_reviewer_did_not_label(
    tmp_path: Path,
):
    run, rids = make_run(tmp_path)
    export = _defect_export(rids)
    export[2]["annotations"] = [ann(31, ANN, [choice("bearing_wear")]),
                                ann(33, CAT, [choice("bearing_wear")]),
                                ann(34, {"id": 4, "email": "dan@plant.example"},
                                    [choice("normal")])]  # fmt: skip
    cfg = LabelsConfig(resolution="reviewer", reviewer="bob@plant.example")
    res = labels_from_export(export, run, cfg, SRC)
    assert _resolved(res) == sorted([
        (rids[0], "defect", "normal", None, "bob@plant.example"),
        (rids[1], "defect", "normal", None, "bob@plant.example"),
        (rids[2], "defect", "bearing_wear", None, "resolved:majority"),  # 2 of 3, no bob
    ])  # fmt: skip
    assert res.agreement["unresolved"] == []


def test_drop_keeps_only_unanimous_labels(tmp_path: Path):
    run, rids = make_run(tmp_path)
    res = labels_from_export(_defect_export(rids), run, LabelsConfig(resolution="drop"), SRC)
    kept = [(r[0], r[2]) for r in _resolved(res)]
    assert kept == sorted([(rids[0], "normal"), (rids[2], "bearing_wear")])
    (why,) = res.agreement["unresolved"]
    assert why["record_id"] == rids[1] and "rule 'drop' keeps no label" in why["reason"]


def test_the_latest_annotation_of_an_annotator_is_their_rating(tmp_path: Path):
    run, rids = make_run(tmp_path)
    export = [task(1, data(rids[0], 0), [
        ann(11, ANN, [choice("bearing_wear")], updated_at="2026-01-05T09:00:00.000Z"),
        ann(12, ANN, [choice("normal")], updated_at="2026-01-05T11:00:00.000Z"),
        ann(13, BOB, [choice("normal")]),
    ])]  # fmt: skip
    res = labels_from_export(export, run, LabelsConfig(), SRC)
    assert len(res.rows) == 3  # every annotation stays in labels.parquet
    assert res.agreement["controls"]["defect"]["percent_agreement"] == 1.0
    assert [r[2] for r in _resolved(res)] == ["normal"]


# -- ranges: agreement on the label set, resolution on time ------------------------------


def _ranges_export(rids: list[str]) -> list[dict[str, Any]]:
    return [
        task(1, data(rids[0], 0), [ann(11, ANN, [rng(0.2, 1.0)]),
                                   ann(12, BOB, [rng(0.5, 1.5)]),
                                   ann(13, CAT, [rng(0.6, 0.8), rng(1.2, 1.8)])]),
        # bob submits the window without marking an anomaly: a rating of "(none)"
        task(2, data(rids[1], 1), [ann(21, ANN, [rng(0.1, 0.4)]),
                                   ann(22, BOB, [choice("normal")])]),
    ]  # fmt: skip


def test_range_agreement_is_on_the_label_set_per_record(tmp_path: Path):
    run, rids = make_run(tmp_path)
    res = labels_from_export(_ranges_export(rids), run, LabelsConfig(), SRC)
    a = res.agreement["controls"]["anomaly"]
    assert a["unit"] == "label set per record"
    # units [anomaly x3], [anomaly, (none)]: pairs agree 1 and 0 → 0.5; Fleiss P_e 17/25
    # → (1/2 - 17/25) / (8/25) = -9/16; α: o_aa 3, o_an = o_na 1, n 5 → 1 - 4*2/8 = 0
    assert (a["records"], a["annotators"], a["ratings"]) == (2, 3, 5)
    assert a["percent_agreement"] == pytest.approx(0.5)
    assert a["fleiss_kappa"] == pytest.approx(-9 / 16)
    assert a["krippendorff_alpha"] == pytest.approx(0.0)
    assert a["cohen_kappa"] is None  # three annotators


def test_majority_votes_ranges_on_time(tmp_path: Path):
    run, rids = make_run(tmp_path)
    res = labels_from_export(_ranges_export(rids), run, LabelsConfig(), SRC)
    t0 = WINDOWS[0][0]
    spans = [(r["start_ns"] - t0, r["end_ns"] - t0) for r in res.resolved
             if r["record_id"] == rids[0]]  # fmt: skip
    # covered by at least 2 of ann [0.2, 1.0], bob [0.5, 1.5], cat [0.6, 0.8] + [1.2, 1.8]
    assert spans == [(S // 2, S), (6 * S // 5, 3 * S // 2)]
    (why,) = [u for u in res.agreement["unresolved"] if u["name"] == "anomaly"]
    assert why["record_id"] == rids[1]
    assert why["reason"].startswith("'anomaly': marked by 1 of 2 annotators")


def test_drop_keeps_the_times_every_annotator_marked(tmp_path: Path):
    run, rids = make_run(tmp_path)
    res = labels_from_export(_ranges_export(rids), run, LabelsConfig(resolution="drop"), SRC)
    t0 = WINDOWS[0][0]
    assert [(r["record_id"], r["start_ns"] - t0, r["end_ns"] - t0) for r in res.resolved
            if r["name"] == "anomaly"] == [(rids[0], 3 * S // 5, 4 * S // 5)]  # fmt: skip


def test_the_reviewers_ranges_win_as_drawn(tmp_path: Path):
    run, rids = make_run(tmp_path)
    cfg = LabelsConfig(resolution="reviewer", reviewer="cat@plant.example")
    res = labels_from_export(_ranges_export(rids), run, cfg, SRC)
    t0 = WINDOWS[0][0]
    assert [(r["start_ns"] - t0, r["end_ns"] - t0, r["annotator"]) for r in res.resolved
            if r["record_id"] == rids[0]] == [
        (3 * S // 5, 4 * S // 5, "cat@plant.example"),
        (6 * S // 5, 9 * S // 5, "cat@plant.example"),
    ]  # fmt: skip


def test_boxes_resolve_to_their_label_set(tmp_path: Path):
    run, rids = make_run(tmp_path)
    export = [task(1, data(rids[0], 0), [ann(11, ANN, [box(10, 10, 20, 20)]),
                                         ann(12, BOB, [box(12, 11, 19, 20)]),
                                         ann(13, CAT, [])])]  # fmt: skip
    res = labels_from_export(export, run, LabelsConfig(), SRC)
    assert [(r["name"], r["value"], r["start_ns"]) for r in res.resolved] == [
        ("box", "defect", None)]  # fmt: skip
    b = res.agreement["controls"]["box"]
    assert b["ratings"] == 3 and b["percent_agreement"] == pytest.approx(1 / 3)
