"""Hostile and broken exports: refused item by item with a reason, good items still land,
and nothing in an export makes mmdata read or write outside the run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mmdata.config import LabelsConfig
from mmdata.errors import InputDataError, RunDirError
from mmdata.labels.mapping import ImportOptions, labels_from_export
from mmdata.labels.safety import MediaPolicy, Refused
from tests.test_labels_mapping import (
    ann,
    audio,
    box,
    choice,
    data,
    make_run,
    rng,
    task,
    write_export,
)

CFG = LabelsConfig()
SRC = "import:hostile.json"


def _hostile(rids: list[str]) -> tuple[list[Any], dict[str, str]]:
    """A JSON export: one good task first and last, and hostile items between them, each
    with the reason it must be refused for (a fragment of it)."""
    r0 = rids[0]
    good = data(r0, 0)
    items: list[Any] = [task(1, good, [ann(1, 1, [choice("normal"), rng(0.5, 1.0)])])]
    want: dict[str, str] = {}

    def add(tid: int, d: Any, results: list[Any], reason: str, **kw: Any) -> None:
        items.append(task(tid, d, [ann(100 + tid, 1, results, **kw)]))
        want[f"task {tid}"] = reason

    add(2, {"record_id": "0" * 32}, [choice("normal")], "unknown record_id")
    add(3, {"record_id": "../../etc/passwd"}, [choice("normal")], "is not a record id")
    add(4, {"record_id": "/etc/passwd"}, [choice("normal")], "is not a record id")
    add(5, {"record_id": r0 + "\x00.json"}, [choice("normal")], "is not a record id")
    add(6, {**good, "audio": "http://evil.example/a.wav"}, [choice("normal")], "points to host")
    add(7, {**good, "audio": "file:///etc/passwd"}, [choice("normal")], "uses scheme 'file'")
    add(8, {**good, "audio": "/data/local-files/?d=run/labels/media/../../../etc/passwd"},
        [choice("normal")], "not a plain relative path")  # fmt: skip
    add(9, {**good, "audio": "/data/local-files/?d=/etc/passwd"}, [choice("normal")],
        "not a plain relative path")  # fmt: skip
    add(10, {**good, "vibration": "/data/local-files/?d=run/records/part.parquet"},
        [choice("normal")], "outside RUN/labels/media/")  # fmt: skip
    add(11, {**good, "image": "data:text/html;base64,PHNjcmlwdD4="}, [choice("normal")],
        "only inline JPEG/PNG/WebP")  # fmt: skip
    add(12, {**good, "audio": f"/data/local-files/?d=run/labels/media/{rids[1]}/a.wav"},
        [choice("normal")], f"outside RUN/labels/media/{r0}/")  # fmt: skip
    add(13, {**good, "image": "/data/upload/1/frame.jpg"}, [choice("normal")],
        "is not a local-files URL")  # fmt: skip
    add(14, good, [rng(1.5, 2.5)], "is outside the window")
    add(15, good, [rng(-0.5, 0.2)], "is outside the window")
    add(16, good, [rng(1.0, 0.5)], "ends before it starts")
    add(17, good, [box(90, 10, 20, 10)], "outside the frame (0-100 %)")
    add(18, good, [box(-5, 10, 20, 10)], "outside the frame (0-100 %)")
    add(19, good, [choice(7)], "is not a string")
    add(20, good, [choice("fire")], "label 'fire' of 'defect' is not in labels.choices")
    add(21, good, [rng(0.1, 0.2, label="explosion")], "label 'explosion' of 'anomaly'")
    add(22, good, [{"from_name": "rm -rf", "type": "textarea", "value": {"text": ["x"]}}],
        "is not one mmdata's labeling config has")  # fmt: skip
    add(23, good, [rng("NaN", 0.2)], "is not a number")
    add(24, good, [rng(float("inf"), 0.2)], "is not a number")
    add(25, good, [rng(int("9" * 60), 0.2)], "is not a number")
    add(
        26,
        good,
        [audio(0.1, 0.2)],
        "without audio_first_ts_ns",
    )
    want["task 26"] = "audio region on a task without audio_first_ts_ns"
    items[-1]["data"] = {k: v for k, v in good.items() if k != "audio_first_ts_ns"}
    add(27, good, [{**box(10, 10, 10, 10), "original_width": 1280}],
        "drawn on a 1280x480 image")  # fmt: skip
    add(28, good, [choice("normal")], "annotator", completed_by="x\x00y")
    add(29, good, [choice("normal")], "lead_time", lead_time=-3)
    # the same annotation id again (first seen in task 1)
    items.append(task(30, good, [ann(1, 2, [choice("normal")])]))
    want["task 30"] = "annotation 1 appears twice"
    # nested absurdly deep
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    items.append(task(31, {**good, "deep": deep}, [ann(131, 1, [choice("normal")])]))
    want["task 31"] = "nested more than"
    items.append("not a task")
    want["item 31"] = "is a str, not a task object"
    items.append({"id": 33, "data": good, "annotations": "lots"})
    want["task 33"] = "annotations is not a list"
    items.append(task(34, good, [{**ann(134, 1, []), "result": "everything"}]))
    want["task 34"] = "result is not a list"
    items.append(task(35, data(rids[2], 2), [ann(135, 1, [choice("bearing_wear")])]))
    return items, want


def test_each_hostile_item_is_refused_with_its_reason_and_good_items_land(tmp_path: Path):
    run, rids = make_run(tmp_path)
    items, want = _hostile(rids)
    res = labels_from_export(write_export(tmp_path, items, "hostile.json"), run, CFG, SRC)
    assert sorted((r["record_id"], r["value"]) for r in res.rows) == sorted([
        (rids[0], "normal"), (rids[0], "anomaly"), (rids[2], "bearing_wear")])  # fmt: skip
    assert res.n_in == res.n_out + res.n_rejected
    assert (res.n_out, res.n_rejected) == (3, len(want))
    got = {where.split(" (")[0].split(" annotations")[0]: reason for where, reason in res.rejected}
    for where, fragment in want.items():
        assert fragment in got[where], (where, got.get(where))
    # the rejection quotes the hostile value, escaped
    assert "'../../etc/passwd'" in got["task 3"]
    assert "\\x00" in got["task 5"] and "\x00" not in got["task 5"]
    assert res.stage_counts().reconciles()
    assert res.ignored == {}  # refused tasks are not also counted as "without annotations"


def test_json_min_hostile_items_are_refused_too(tmp_path: Path):
    run, rids = make_run(tmp_path)
    good = data(rids[0], 0)
    minimal = [
        {**good, "id": 1, "annotator": 1, "annotation_id": 1, "defect": "normal"},
        {**good, "id": 2, "annotator": 1, "annotation_id": 2, "record_id": "../x",
         "defect": "normal"},
        {**good, "id": 3, "annotator": 1, "annotation_id": 3,
         "anomaly": [{"start": 0.1, "end": 0.2, "timeserieslabels": ["anomaly"]},
                     {"start": 5, "end": 6, "timeserieslabels": ["anomaly"]}]},
        {**good, "id": 4, "annotator": 1, "annotation_id": 4,
         "box": [{"x": 0, "y": 0, "width": 101, "height": 5, "rectanglelabels": ["defect"]}]},
        {**good, "id": 5, "annotator": 1, "annotation_id": 5, "defect": ["normal", 3]},
    ]  # fmt: skip
    res = labels_from_export(minimal, run, CFG, SRC)
    assert sorted(r["value"] for r in res.rows) == ["anomaly", "normal", "normal"]
    reasons = [r for _, r in res.rejected]
    assert len(reasons) == 4 and res.n_in == 7
    assert "is not a record id" in reasons[0]
    assert "is outside the window" in reasons[1]
    assert "outside the frame" in reasons[2]
    assert "is not a string" in reasons[3]


def test_unknown_task_ids_are_refused_when_the_project_is_known(tmp_path: Path):
    run, rids = make_run(tmp_path)
    export = [task(1, data(rids[0], 0), [ann(1, 1, [choice("normal")])]),
              task(2, data(rids[1], 1), [ann(2, 1, [choice("normal")])]),
              task(3, data(rids[1], 1), [ann(3, 1, [choice("normal")])])]  # fmt: skip
    opts = ImportOptions(known_tasks={1: rids[0], 3: rids[2]})
    res = labels_from_export(export, run, CFG, SRC, opts)
    assert [r["task_id"] for r in res.rows] == [1]
    assert [r for _, r in res.rejected] == [
        "unknown task id 2: not a task of this project",
        f"task 3 is record {rids[2]!r} in the project, not {rids[1]!r}",
    ]


# -- whole files -------------------------------------------------------------------------


def test_malformed_json_is_refused_whole_with_line_and_column(tmp_path: Path):
    run, _ = make_run(tmp_path)
    p = tmp_path / "broken.json"
    p.write_text('[\n  {"id": 1,\n   "data": {"record_id": "x"},,\n  }\n]')
    with pytest.raises(InputDataError, match=r"broken\.json is not valid JSON: .* line 3, "
                                             r"column 31"):  # fmt: skip
        labels_from_export(p, run, CFG, SRC)
    p.write_bytes(b'[{"id": "\xff"}]')
    with pytest.raises(InputDataError, match="not UTF-8"):
        labels_from_export(p, run, CFG, SRC)
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputDataError, match="absurdly deep"):
        labels_from_export(p, run, CFG, SRC)
    p.write_text('{"not": "a list"}')  # one object is read as one task, and refused
    assert labels_from_export(p, run, CFG, SRC).rejected == []
    p.write_text('"tasks"')
    with pytest.raises(InputDataError, match="list of tasks"):
        labels_from_export(p, run, CFG, SRC)


def test_files_over_the_limit_are_refused_before_reading(tmp_path: Path):
    run, _ = make_run(tmp_path)
    p = tmp_path / "big.json"
    p.write_bytes(b"not json at all " * 100)  # would be a JSON error if it were read
    small = LabelsConfig(max_export_bytes=1000)
    with pytest.raises(InputDataError, match=r"big\.json is 1600 bytes, over "
                                             r"labels\.max_export_bytes = 1000"):  # fmt: skip
        labels_from_export(p, run, small, SRC)
    with pytest.raises(InputDataError, match=r"over labels\.max_export_bytes"):
        labels_from_export(p.read_bytes(), run, small, SRC)
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # reading it would block forever
    with pytest.raises(InputDataError, match="not a regular file"):
        labels_from_export(fifo, run, CFG, SRC)


# -- nothing outside the run -------------------------------------------------------------


def test_nothing_in_an_export_reads_or_writes_outside_the_run(tmp_path: Path):
    run, rids = make_run(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    hostile_ids = ["../../etc/passwd", str(outside / "secret.txt"), "../outside/secret.txt",
                   "a/../../b", "x\x00y", "..", ".", "", "~root", "C:\\windows",
                   "%2e%2e%2f"]  # fmt: skip
    export = [task(i + 1, {"record_id": rid, "audio": f"/data/local-files/?d={rid}/a.wav",
                           "image": str(outside / "secret.txt")},
                   [ann(i + 1, 1, [choice("normal")])])
              for i, rid in enumerate(hostile_ids)]  # fmt: skip
    export.append(task(99, data(rids[0], 0), [ann(99, 1, [choice("normal")])]))
    path = write_export(tmp_path, export, "x.json")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    res = labels_from_export(path, run, CFG, SRC)
    assert res.n_rejected == len(hostile_ids) and [r["task_id"] for r in res.rows] == [99]
    assert all("is not a record id" in r or "unknown record_id" in r for _, r in res.rejected)
    res.write(run)
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    changed = {p for p in after if before.get(p) != after[p]}
    # the run folder itself changed (it gained labels/), and everything in RUN/labels
    assert changed - {run} == {run / "labels", *(run / "labels").iterdir()}
    assert (outside / "secret.txt").read_text() == "secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_media_policy_with_the_servers_document_root(tmp_path: Path):
    run = tmp_path / "runs" / "r1"
    policy = MediaPolicy(run, "http://127.0.0.1:8080", document_root=tmp_path)
    ok = "runs/r1/labels/media/abc/audio.wav"
    policy.check("audio", f"/data/local-files/?d={ok}", "abc")
    policy.check("audio", f"http://127.0.0.1:8080/data/local-files/?d={ok}", "abc")
    for bad, reason in [
        ("r1/labels/media/abc/audio.wav", "outside RUN/labels/media/abc/"),  # wrong root
        ("runs/r1/labels/media/abc", "outside"),  # the folder itself, not a file in it
        ("runs/r1/labels/media/abc/..%2F..%2Fx", "not a plain relative path"),
        ("runs/r1/labels/media/abc/a.wav&d=/etc/passwd", "exactly one d= path"),
    ]:
        with pytest.raises(Refused, match=reason):
            policy.check("audio", f"/data/local-files/?d={bad}", "abc")
    with pytest.raises(Refused, match="points to host"):
        policy.check("audio", f"https://127.0.0.1.evil.example/data/local-files/?d={ok}", "abc")
    with pytest.raises(Refused, match="not a media URL"):
        policy.check("image", {"src": "x"}, "abc")
    policy.check("vibration", {"t": [0.0, 0.1], "ax": [1.0, 2.0]}, "abc")  # inline series


def test_rejections_are_written_with_their_reasons(tmp_path: Path):
    run, rids = make_run(tmp_path)
    items, want = _hostile(rids)
    labels_from_export(items, run, CFG, SRC).write(run)
    doc = json.loads((run / "labels" / "rejected.json").read_text())
    assert doc["counts"]["rejected"] == len(want) == len(doc["rejected"])
    assert doc["counts"]["in"] == doc["counts"]["out"] + doc["counts"]["rejected"]
    assert all(set(r) == {"where", "reason"} and r["reason"] for r in doc["rejected"])


def test_a_labels_folder_linked_outside_the_run_is_refused(tmp_path: Path):
    run, rids = make_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "labels").symlink_to(elsewhere)
    res = labels_from_export([task(1, data(rids[0], 0), [ann(1, 1, [choice("normal")])])], run,
                             CFG, SRC)  # fmt: skip
    with pytest.raises(RunDirError, match="is a link"):
        res.write(run)
    assert list(elsewhere.iterdir()) == []


def test_media_urls_percent_encoded_like_push_writes_them(tmp_path: Path):
    from urllib.parse import quote

    run = tmp_path / "line 2+runs" / "r1"  # a space and a plus sign in the run's path
    rel = "line 2+runs/r1/labels/media/abc/audio.wav"
    url = "/data/local-files/?d=" + quote(rel, safe="/")
    MediaPolicy(run, "http://127.0.0.1:8080", document_root=tmp_path).check("audio", url, "abc")
    MediaPolicy(run, "http://127.0.0.1:8080").check("audio", url, "abc")
    with pytest.raises(Refused, match="outside"):
        MediaPolicy(run, "http://127.0.0.1:8080").check(
            "audio", "/data/local-files/?d=" + quote(rel.replace("+", " "), safe="/"), "abc"
        )
