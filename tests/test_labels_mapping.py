"""Label Studio exports (JSON and JSON_MIN) → label rows on a tiny real run's records.

The run has three 2 s windows of ``press-1`` starting at an epoch time with all its
nanosecond digits in use (``T0``), written with the real record schema. Exports are made
by hand in the shapes Label Studio writes (see mmdata/labels/mapping.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mmdata.config import LabelsConfig
from mmdata.errors import ConfigError, StageError
from mmdata.labels.mapping import ImportOptions, labels_from_export, read_windows
from mmdata.records import RECORD_SCHEMA_VERSION, record_id, records_table

S = 1_000_000_000
T0 = 1_700_000_000_123_456_789
WINDOWS = [(T0 + i * 2 * S, T0 + (i + 1) * 2 * S) for i in range(3)]
AUDIO_LAG_NS = 5_000_000  # the window's audio starts 5 ms after the window
CFG = LabelsConfig()
SRC = "import:export.json"


# -- builders (imported by the other test_labels_* files) ----------------------------------


def make_run(root: Path, stage: str = "scrubbed") -> tuple[Path, list[str]]:
    """A run directory with three records of the real schema under RUN/<stage>."""
    run = root / "run"
    recs: list[dict[str, Any]] = []
    for s, e in WINDOWS:
        recs.append({"schema_version": RECORD_SCHEMA_VERSION,
                     "record_id": record_id("press-1", s, e, "test"), "asset_id": "press-1",
                     "date": "2023-11-14", "window_start_ns": s, "window_end_ns": e, "span": 0,
                     "sensors": [], "labels": []})  # fmt: skip
    path = run / stage / "asset_id=press-1" / "date=2023-11-14" / "part-00000.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(records_table(recs), path)
    return run, [r["record_id"] for r in recs]


def data(rid: str, i: int, **extra: Any) -> dict[str, Any]:
    """Task data as `labels push` writes it (media under RUN/labels/media/<record_id>/)."""
    s, e = WINDOWS[i]
    media = f"/data/local-files/?d=run/labels/media/{rid}/"
    return {"record_id": rid, "asset_id": "press-1", "window_start_ns": str(s),
            "window_end_ns": str(e), "window_s": 2.0, "image": "data:image/jpeg;base64,/9j/4A==",
            "image_width": 640, "image_height": 480, "vibration": media + "vibration.csv",
            "audio": media + "audio.wav", "audio_first_ts_ns": str(s + AUDIO_LAG_NS),
            **extra}  # fmt: skip


def choice(v: Any, name: str = "defect") -> dict[str, Any]:
    return {"id": "c", "from_name": name, "to_name": "image", "type": "choices",
            "origin": "manual", "value": {"choices": [v]}}  # fmt: skip


def rng(start: Any, end: Any, label: Any = "anomaly", **kw: Any) -> dict[str, Any]:
    return {"id": "r", "from_name": "anomaly", "to_name": "vib", "type": "timeserieslabels",
            "value": {"start": start, "end": end, "instant": False, "timeserieslabels": [label],
                      **kw}}  # fmt: skip


def audio(start: Any, end: Any, label: Any = "anomaly") -> dict[str, Any]:
    return {"id": "a", "from_name": "audio_region", "to_name": "audio", "type": "labels",
            "value": {"start": start, "end": end, "channel": 0, "labels": [label]}}  # fmt: skip


def box(x: Any, y: Any, w: Any, h: Any, label: Any = "defect", **kw: Any) -> dict[str, Any]:
    return {"id": "b", "from_name": "box", "to_name": "image", "type": "rectanglelabels",
            "original_width": 640, "original_height": 480, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                      "rectanglelabels": [label], **kw}}  # fmt: skip


def ann(aid: int, who: Any, results: list[Any], **kw: Any) -> dict[str, Any]:
    base = {"id": aid, "completed_by": who, "result": results, "was_cancelled": False,
            "ground_truth": False, "lead_time": 12.5, "created_at": "2026-01-05T10:00:00.000Z",
            "updated_at": "2026-01-05T10:00:00.000Z"}  # fmt: skip
    return {**base, **kw}


def task(tid: int, d: Any, anns: list[Any], **kw: Any) -> dict[str, Any]:
    return {"id": tid, "data": d, "annotations": anns, "predictions": [], **kw}


def write_export(root: Path, obj: Any, name: str = "export.json") -> Path:
    p = root / name
    p.write_text(json.dumps(obj, indent=1))
    return p


def by_name(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["name"] == name]


# -- JSON --------------------------------------------------------------------------------


def test_json_export_maps_every_kind_onto_reference_time_and_pixels(tmp_path: Path):
    run, rids = make_run(tmp_path)
    export = [task(11, data(rids[1], 1), [ann(101, {"id": 7, "email": "ann@plant.example"}, [
        choice("bearing_wear"),
        rng(0.25, 1.5),
        audio(0.1, 0.3),
        box(10, 20, 25, 50),
    ], lead_time=42.25, created_at="2026-01-05T10:00:00.000Z",
        updated_at="2026-01-05T10:05:00.000Z")])]  # fmt: skip
    res = labels_from_export(write_export(tmp_path, export), run, CFG, SRC)
    assert res.counts == {"in": 4, "out": 4, "rejected": 0}
    start = WINDOWS[1][0]
    (c,) = by_name(res.rows, "defect")
    assert (c["kind"], c["value"], c["start_ns"], c["end_ns"]) == ("choice", "bearing_wear",
                                                                   None, None)  # fmt: skip
    (r,) = by_name(res.rows, "anomaly")
    assert (r["kind"], r["start_ns"], r["end_ns"]) == ("range", start + S // 4, start + 3 * S // 2)
    (a,) = by_name(res.rows, "audio_region")
    assert (a["start_ns"], a["end_ns"]) == (start + AUDIO_LAG_NS + S // 10,
                                            start + AUDIO_LAG_NS + 3 * S // 10)  # fmt: skip
    (b,) = by_name(res.rows, "box")
    # 10 %..35 % of 640 px, 20 %..70 % of 480 px
    assert (b["bbox_x0"], b["bbox_y0"], b["bbox_x1"], b["bbox_y1"]) == (64, 96, 224, 336)
    for row in res.rows:
        assert row["record_id"] == rids[1]
        who = (row["task_id"], row["annotation_id"], row["annotator"])
        assert who == (11, 101, "ann@plant.example")
        assert row["lead_time_s"] == 42.25
        assert (row["created_at"], row["updated_at"]) == ("2026-01-05T10:00:00.000Z",
                                                          "2026-01-05T10:05:00.000Z")  # fmt: skip
        assert row["source"] == SRC


def test_times_are_exact_integer_ns_from_the_json_text(tmp_path: Path):
    run, rids = make_run(tmp_path)
    # written by hand: digits a float64 could not carry through t * 1e9 + window_start
    text = f"""[{{"id": 1, "data": {{"record_id": "{rids[0]}"}}, "annotations": [
      {{"id": 5, "completed_by": 1, "result": [
        {{"from_name": "anomaly", "type": "timeserieslabels", "value":
          {{"start": 0.000000001, "end": 1.99999999949999999999,
            "timeserieslabels": ["anomaly"]}}}},
        {{"from_name": "anomaly", "type": "timeserieslabels", "value":
          {{"start": 1.2345678905, "end": 1.2345678915, "timeserieslabels": ["anomaly"]}}}}
      ]}}]}}]"""  # fmt: skip
    res = labels_from_export(text.encode(), run, CFG, SRC)
    spans = sorted((r["start_ns"] - T0, r["end_ns"] - T0) for r in res.rows)
    # 1 ns; 1_999_999_999.4999... rounds down; .5 ties go to even (…890, …892)
    assert spans == [(1, 1_999_999_999), (1_234_567_890, 1_234_567_892)]


def test_sdk_floats_map_like_the_json_text(tmp_path: Path):
    run, rids = make_run(tmp_path)
    export = [task(1, data(rids[2], 2), [ann(9, 3, [rng(0.1, 0.3), audio(1.1, 1.7)])])]
    from_objects = labels_from_export(export, run, CFG, SRC)  # Python floats, as the SDK gives
    from_file = labels_from_export(write_export(tmp_path, export), run, CFG, SRC)
    assert from_objects.rows == from_file.rows
    s = WINDOWS[2][0]
    assert sorted((r["start_ns"], r["end_ns"]) for r in from_objects.rows) == [
        (s + 100_000_000, s + 300_000_000),
        (s + AUDIO_LAG_NS + 1_100_000_000, s + AUDIO_LAG_NS + 1_700_000_000),
    ]


def test_instants_sample_indices_and_the_window_edge(tmp_path: Path):
    run, rids = make_run(tmp_path)
    s = WINDOWS[0][0]
    indexed = data(rids[0], 0, vibration_units="index", vibration_sample_rate=1600)
    export = [
        task(1, indexed, [ann(1, 1, [rng(400, 800)])]),  # samples at 1.6 kHz: 0.25 s..0.5 s
        task(2, data(rids[1], 1), [ann(2, 1, [
            {**rng(0.75, 0.75), "value": {"start": 0.75, "end": 0.75, "instant": True,
                                           "timeserieslabels": ["anomaly"]}},
            rng(1.5, 2.0004),  # 0.4 ms past the window end: within tolerance, clipped
        ])]),
    ]  # fmt: skip
    res = labels_from_export(export, run, CFG, SRC)
    assert res.n_rejected == 0
    s1, e1 = WINDOWS[1]
    assert sorted((r["record_id"], r["start_ns"], r["end_ns"]) for r in res.rows) == sorted([
        (rids[0], s + S // 4, s + S // 2),
        (rids[1], s1 + 3 * S // 4, s1 + 3 * S // 4),
        (rids[1], s1 + 3 * S // 2, e1),
    ])  # fmt: skip


def test_box_percent_rounds_to_pixels_of_the_tasks_frame(tmp_path: Path):
    run, rids = make_run(tmp_path)
    d = data(rids[0], 0, image_width=333, image_height=101)
    drawn = {**box(33.3333, 0, 66.6667, 100), "original_width": 333, "original_height": 101}
    export = [task(1, d, [ann(1, 1, [drawn])])]
    (row,) = labels_from_export(export, run, CFG, SRC).rows
    # 33.3333 % of 333 = 110.99989 → 111; 100 % → 333; y 0 %..100 % of 101
    assert (row["bbox_x0"], row["bbox_y0"], row["bbox_x1"], row["bbox_y1"]) == (111, 0, 333, 101)


def test_cancelled_annotations_and_predictions_are_not_labels(tmp_path: Path):
    run, rids = make_run(tmp_path)
    pred = {"id": 77, "model_version": "tiny-v1", "score": 0.9, "result": [choice("normal")]}
    export = [task(1, data(rids[0], 0), [ann(1, 1, [choice("normal")], was_cancelled=True),
                                         ann(2, 2, [choice("bearing_wear")])],
                   predictions=[pred]),
              task(2, data(rids[1], 1), [])]  # fmt: skip
    res = labels_from_export(export, run, CFG, SRC)
    assert [(r["annotator"], r["value"]) for r in res.rows] == [("2", "bearing_wear")]
    assert res.ignored == {"cancelled annotations": 1, "predictions": 1,
                           "tasks without annotations": 1}  # fmt: skip
    with_preds = labels_from_export(export, run, CFG, SRC, ImportOptions(include_predictions=True))
    assert sorted((r["annotator"], r["annotation_id"], r["value"]) for r in with_preds.rows) == [
        ("2", 2, "bearing_wear"), ("prediction:tiny-v1", -78, "normal")]  # fmt: skip


def test_annotator_ids_can_be_named(tmp_path: Path):
    run, rids = make_run(tmp_path)
    export = [task(1, data(rids[0], 0), [ann(1, 7, [choice("normal")])])]
    opts = ImportOptions(annotator_names={"7": "ann@plant.example"})
    (row,) = labels_from_export(export, run, CFG, SRC, opts).rows
    assert row["annotator"] == "ann@plant.example"


# -- JSON_MIN ----------------------------------------------------------------------------


def test_json_min_maps_like_the_full_export(tmp_path: Path):
    run, rids = make_run(tmp_path)
    d = data(rids[1], 1)
    full = [task(11, d, [ann(101, 4, [choice("normal"), rng(0.25, 1.5), audio(0.1, 0.3),
                                      box(10, 20, 25, 50)])])]  # fmt: skip
    minimal = [{**d, "id": 11, "annotator": 4, "annotation_id": 101,
                "created_at": "2026-01-05T10:00:00.000Z",
                "updated_at": "2026-01-05T10:00:00.000Z", "lead_time": 12.5,
                "defect": "normal",
                "anomaly": [{"start": 0.25, "end": 1.5, "instant": False,
                             "timeserieslabels": ["anomaly"]}],
                "audio_region": [{"start": 0.1, "end": 0.3, "channel": 0, "labels": ["anomaly"]}],
                "box": [{"x": 10, "y": 20, "width": 25, "height": 50, "rotation": 0,
                         "rectanglelabels": ["defect"], "original_width": 640,
                         "original_height": 480}]}]  # fmt: skip
    a = labels_from_export(write_export(tmp_path, full, "full.json"), run, CFG, SRC)
    b = labels_from_export(write_export(tmp_path, minimal, "min.json"), run, CFG, SRC)
    assert b.counts == {"in": 4, "out": 4, "rejected": 0}
    assert b.rows == a.rows


def test_json_min_multi_choice_and_an_empty_submission(tmp_path: Path):
    run, rids = make_run(tmp_path)
    d0, d1 = data(rids[0], 0), data(rids[1], 1)
    minimal = [
        {**d0, "id": 1, "annotator": "bob@plant.example", "annotation_id": 3,
         "defect": [{"choices": ["normal", "surface_scratch"]}]},
        {**d1, "id": 2, "annotator": "bob@plant.example", "annotation_id": 4},  # nothing marked
        {**d1, "id": 2, "annotator": None, "annotation_id": None},  # a task nobody annotated
    ]  # fmt: skip
    res = labels_from_export(minimal, run, CFG, SRC)
    assert sorted(r["value"] for r in res.rows) == ["normal", "surface_scratch"]
    assert res.counts == {"in": 2, "out": 2, "rejected": 0}
    assert sorted(a.record_id for a in res.annotations) == sorted([rids[0], rids[1]])
    assert res.ignored == {"tasks without annotations": 1}


# -- the run and the written files -------------------------------------------------------


def test_reads_raw_records_when_the_run_was_not_scrubbed(tmp_path: Path):
    run, rids = make_run(tmp_path, stage="records")
    assert read_windows(run) == dict(zip(rids, WINDOWS, strict=True))
    with pytest.raises(StageError, match="no records"):
        read_windows(tmp_path / "empty")


def test_a_task_from_another_run_is_refused(tmp_path: Path):
    run, rids = make_run(tmp_path)
    stale = data(rids[0], 0, window_start_ns=str(WINDOWS[0][0] + 1))
    res = labels_from_export([task(1, stale, [ann(1, 1, [choice("normal")])])], run, CFG, SRC)
    assert res.rows == []
    assert "from another run" in res.rejected[0][1]


def test_reviewer_rule_needs_a_reviewer(tmp_path: Path):
    run, _ = make_run(tmp_path)
    with pytest.raises(ConfigError, match=r"labels\.reviewer"):
        labels_from_export([], run, LabelsConfig(resolution="reviewer"), SRC)


def test_write_puts_four_files_in_run_labels_and_nothing_else(tmp_path: Path):
    run, rids = make_run(tmp_path)
    export = [task(1, data(rids[0], 0), [ann(1, 1, [choice("normal"), rng(0.5, 1.0)]),
                                         ann(2, 2, [choice("normal"), rng(0.6, 1.2)])]),
              task(2, {"record_id": "nope"}, [ann(3, 1, [choice("normal")])])]  # fmt: skip
    before = {p for p in tmp_path.rglob("*")}
    res = labels_from_export(export, run, CFG, SRC)
    paths = res.write(run)
    new = {p for p in tmp_path.rglob("*")} - before
    assert new == {run / "labels", *paths}
    assert sorted(p.name for p in paths) == ["agreement.json", "labels.parquet", "rejected.json",
                                             "resolved.parquet"]  # fmt: skip
    labels = pq.read_table(run / "labels" / "labels.parquet").to_pylist()
    assert labels == res.rows and len(labels) == 4
    resolved = pq.read_table(run / "labels" / "resolved.parquet").to_pylist()
    assert resolved == [
        {"record_id": rids[0], "name": "anomaly", "value": "anomaly",
         "start_ns": T0 + 600_000_000, "end_ns": T0 + 1_000_000_000, "source": SRC,
         "annotator": "resolved:majority"},
        {"record_id": rids[0], "name": "defect", "value": "normal", "start_ns": None,
         "end_ns": None, "source": SRC, "annotator": "resolved:majority"},
    ]  # fmt: skip
    rejected = json.loads((run / "labels" / "rejected.json").read_text())
    assert rejected["counts"] == {"in": 5, "out": 4, "rejected": 1}
    assert "unknown record_id 'nope'" in rejected["rejected"][0]["reason"]
    agreement = json.loads((run / "labels" / "agreement.json").read_text())
    assert agreement["controls"]["defect"]["percent_agreement"] == 1.0
    # the same export gives byte-identical files
    first = {p.name: p.read_bytes() for p in paths}
    labels_from_export(export, run, CFG, SRC).write(run)
    assert {p.name: p.read_bytes() for p in paths} == first


def test_absent_media_as_push_writes_them(tmp_path: Path):
    # push writes "" / 0 for a modality a window lacks
    run, rids = make_run(tmp_path)
    bare = data(rids[0], 0, image="", image_width=0, image_height=0, vibration="", audio="",
                audio_first_ts_ns="")  # fmt: skip
    export = [task(1, bare, [ann(1, 1, [choice("normal"), audio(0.1, 0.2), box(1, 1, 5, 5)])])]
    res = labels_from_export(export, run, CFG, SRC)
    assert [r["value"] for r in res.rows] == ["normal"]
    assert [r for _, r in res.rejected] == [
        "audio region on a task without audio_first_ts_ns",
        "box on a task without a frame (push left image/image_width empty)",
    ]


def test_a_box_takes_the_frame_size_from_the_result_when_the_task_has_none(tmp_path: Path):
    run, rids = make_run(tmp_path)
    d = {k: v for k, v in data(rids[0], 0).items() if k not in ("image_width", "image_height")}
    (row,) = labels_from_export([task(1, d, [ann(1, 1, [box(50, 50, 50, 50)])])], run, CFG,
                                SRC).rows  # fmt: skip
    assert (row["bbox_x0"], row["bbox_y0"], row["bbox_x1"], row["bbox_y1"]) == (320, 240, 640,
                                                                                480)  # fmt: skip
