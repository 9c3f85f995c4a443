"""The Label Studio round trip against a real server (``tests/labelstudio.py`` starts it).

A tiny synthetic factory run (one press, half a minute, scrubbed) is pushed as tasks, two
annotators label three windows through the API, the labels are pulled back onto the
records at reference time, with agreement figures, and a JSON_MIN export file imports to
the same labels. These tests never skip: a server that cannot be installed fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmdata import atomic
from mmdata.align import run_align
from mmdata.config import LabelsConfig
from mmdata.demo import factory_pipeline
from mmdata.errors import UsageError
from mmdata.ingest import run_ingest
from mmdata.labels import xml as lx
from mmdata.labels.client import LabelStudioClient, LabelStudioError, Token, connect
from mmdata.labels.mapping import ImportResult, labels_from_export
from mmdata.labels.pull import pull_export, pull_labels
from mmdata.labels.push import PushReport, iter_records, push_records, vibration_csv
from mmdata.rundir import RunDir
from mmdata.scrub.stage import run_scrub
from mmdata.sync import run_sync
from mmdata.synth import SynthConfig, generate_factory
from tests import labelstudio
from tests.labelstudio import LabelStudioServer, label_studio, wait_healthy

KEY = "a-test-key-that-is-long-enough-0123456789"
PROJECT = "press-1 windows"
ANN2 = "ann2@example.com"


def make_run(root: Path) -> Path:
    """Synthetic factory (1 asset x 0.5 min) → ingest, sync, align, scrub (no OCR)."""
    os.environ["MMDATA_PII_KEY"] = KEY
    factory = root / "factory"
    generate_factory(SynthConfig(assets=1, minutes=0.5, seed=3, workers=1), factory)
    cfg = factory_pipeline(factory, root / "run")
    image = cfg.scrub.image.model_copy(update={"ocr": [], "profile_faces": False})
    scrub = cfg.scrub.model_copy(update={"image": image, "processes": 1})
    align = cfg.align.model_copy(update={"workers": 1})
    cfg = cfg.model_copy(update={"scrub": scrub, "align": align})
    with RunDir.open(cfg.run_dir) as run:
        for stage in (run_ingest, run_sync, run_align, run_scrub):
            stage(run, cfg)
    return Path(cfg.run_dir)


@dataclass
class World:
    server: LabelStudioServer
    root: Path  # the server's local-files document root; the run lives below it
    run: Path
    config: LabelsConfig
    env: dict[str, str]
    records: list[dict[str, Any]]

    def push(self, **kw: Any) -> PushReport:
        return push_records(self.run, kw.pop("config", self.config), PROJECT,
                            document_root=self.root, environ=self.env, **kw)  # fmt: skip

    def client(self, token: str | None = None) -> LabelStudioClient:
        return LabelStudioClient(self.server.url, Token(token or self.server.token))

    def get(self, url: str) -> bytes:
        req = urllib.request.Request(
            self.server.url + url, headers={"Authorization": f"Token {self.server.token}"}
        )
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req) as resp:
            return bytes(resp.read())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("labelstudio")
    (root / "work").mkdir()
    with label_studio(root, root / "work", wait=False) as server:  # starts while we build
        run = make_run(root)
        wait_healthy(server)
        records = list(iter_records(run / "scrubbed", ["record_id", "window_start_ns",
                                                       "window_end_ns", "audio_info"]))  # fmt: skip
        env = {"LABEL_STUDIO_API_KEY": server.token}
        yield World(server, root, run, LabelsConfig(url=server.url), env, records)


@pytest.fixture(scope="module")
def pushed(world: World) -> PushReport:
    return world.push()


def test_push_makes_one_task_per_window_with_a_config_for_the_modalities_present(world, pushed):
    assert (pushed.config_status, pushed.tasks_created) == ("created", len(world.records))
    assert pushed.skipped == []
    c = world.client()
    project = c.project_by_title(PROJECT)
    assert project is not None and project["id"] == pushed.project_id
    xml = project["label_config"]
    for tag in ('<Image name="image" value="$image"', '<TimeSeries name="vibration"',
                'timeColumn="t"', '<Channel column="accel__ax"', '<Channel column="accel__az"',
                '<Audio name="audio" value="$audio"/>', '<Choices name="defect"',
                '<TimeSeriesLabels name="anomaly" toName="vibration">',
                '<Labels name="audio_region" toName="audio">',
                '<RectangleLabels name="box" toName="image">',
                '<Choice value="bearing_wear"/>'):  # fmt: skip
        assert tag in xml, tag
    tasks = c.tasks(pushed.project_id)
    assert sorted(t["data"]["record_id"] for t in tasks) == sorted(
        r["record_id"] for r in world.records
    )
    rec = world.records[5]
    data = next(t["data"] for t in tasks if t["data"]["record_id"] == rec["record_id"])
    assert data["window_start_ns"] == str(rec["window_start_ns"])  # exact, as a string
    assert data["image"].startswith("data:image/jpeg;base64,")  # small frames are inlined
    assert (data["image_width"], data["image_height"]) == (320, 240)
    # the server serves the media from RUN/labels/media through local-files storage
    csv = world.get(data["vibration"]).decode().splitlines()
    assert csv[0] == "t,accel__ax,accel__ay,accel__az"
    assert float(csv[1].split(",")[0]) >= 0 and len(csv) > 1000
    assert world.get(data["audio"])[:4] == b"RIFF"
    assert data["audio_first_ts_ns"] == str(rec["audio_info"]["first_ts_ns"])
    assert (world.run / "labels" / "media" / rec["record_id"] / "audio.wav").is_file()


def test_a_second_push_updates_tasks_in_place_and_never_duplicates(world, pushed):
    ids = {t["data"]["record_id"]: t["id"] for t in world.client().tasks(pushed.project_id)}
    again = world.push()
    assert (again.config_status, again.tasks_created, again.tasks_updated) == ("unchanged", 0, 0)
    assert again.tasks_unchanged == len(world.records)
    # frames larger than the inline limit are served as files: every task is updated in place
    served = world.config.model_copy(update={"inline_image_max_bytes": 0})
    changed = world.push(config=served)
    assert (changed.tasks_created, changed.tasks_updated) == (0, len(world.records))
    tasks = world.client().tasks(pushed.project_id)
    assert {t["data"]["record_id"]: t["id"] for t in tasks} == ids
    image_url = tasks[0]["data"]["image"]
    assert image_url.startswith("/data/local-files/?d=") and image_url.endswith("/frame.jpg")
    assert world.get(image_url)[:2] == b"\xff\xd8"
    report = json.loads((world.run / "labels" / "push.json").read_text())
    assert report["tasks"] == len(world.records) and report["project_id"] == pushed.project_id


def test_only_scrubbed_records_are_pushed_unless_allowed(world, pushed):
    raw = world.root / "raw-run"
    shutil.copytree(world.run / "records", raw / "records")
    shutil.copy(world.run / "manifest.json", raw / "manifest.json")
    with pytest.raises(UsageError, match="only scrubbed records may be pushed"):
        push_records(raw, world.config, "raw windows", document_root=world.root,
                     environ=world.env)  # fmt: skip
    report = push_records(raw, world.config, "raw windows", allow_unscrubbed=True,
                          document_root=world.root, environ=world.env)  # fmt: skip
    assert (report.source, report.tasks_created) == ("records", len(world.records))


def write_predictions(world: World, rids: list[str]) -> Path:
    """What ``build`` + ``eval`` leave: samples (sample → record) and the model's answers."""
    atomic.write_parquet(world.run / "dataset" / "samples.parquet", pa.table({
        "sample_id": [f"s{i}" for i in range(len(rids))] + ["s-anom"],
        "record_id": [*rids, rids[0]], "task": ["defect_class"] * len(rids) + ["anomaly_time"],
    }))  # fmt: skip
    path = world.run / "eval" / "predictions.parquet"
    atomic.write_parquet(path, pa.table({
        "sample_id": ["s0", "s1", "s-anom"],
        "task": ["defect_class", "defect_class", "anomaly_time"],
        "parsed": [json.dumps("surface_scratch"), json.dumps("rattle"), json.dumps([0.5, 1.0])],
    }))  # fmt: skip
    return path


def test_model_predictions_are_pushed_as_pre_annotations_not_as_labels(world, pushed):
    rids = [r["record_id"] for r in world.records[10:12]]
    report = world.push(predictions=write_predictions(world, rids))
    assert report.predictions_created == 1  # one record: its class and its range together
    assert report.predictions_skipped == [(rids[1], "class 'rattle' is not in labels.choices")]
    c = world.client()
    task = c.tasks_by_record(pushed.project_id)[rids[0]]
    (pred,) = c.predictions(int(task["id"]))
    assert pred["model_version"].startswith("mmdata-eval-")
    assert {r["from_name"] for r in pred["result"]} == {"defect", "anomaly"}
    again = world.push(predictions=world.run / "eval" / "predictions.parquet")
    assert (again.predictions_created, again.predictions_kept) == (0, 1)
    assert len(c.predictions(int(task["id"]))) == 1


# -- two annotators ------------------------------------------------------------------------


def choice(value: str) -> dict[str, Any]:
    return {"from_name": "defect", "to_name": "image", "type": "choices",
            "value": {"choices": [value]}}  # fmt: skip


def span(start: float, end: float) -> dict[str, Any]:
    return {"from_name": "anomaly", "to_name": "vibration", "type": "timeserieslabels",
            "value": {"start": start, "end": end, "instant": False,
                      "timeserieslabels": ["anomaly"]}}  # fmt: skip


BOX = {"from_name": "box", "to_name": "image", "type": "rectanglelabels", "original_width": 320,
       "original_height": 240, "image_rotation": 0,
       "value": {"x": 10, "y": 20, "width": 25, "height": 50, "rotation": 0,
                 "rectanglelabels": ["defect"]}}  # fmt: skip
AUDIO = {"from_name": "audio_region", "to_name": "audio", "type": "labels",
         "value": {"start": 0.5, "end": 1.0, "channel": 0, "labels": ["anomaly"]}}  # fmt: skip


@dataclass
class Annotated:
    a: dict[str, Any]
    b: dict[str, Any]
    c: dict[str, Any]
    pulled: ImportResult
    tokens: list[str]


@pytest.fixture(scope="module")
def annotated(world: World, pushed: PushReport) -> Annotated:
    a, b, c = world.records[4], world.records[7], world.records[9]
    ann2_token = world.server.add_annotator(ANN2, "ann2-Passw0rd-42")
    one, two = world.client(), world.client(ann2_token)
    assert two.whoami()["email"] == ANN2
    tasks = one.tasks_by_record(pushed.project_id)
    tid = {k: int(tasks[r["record_id"]]["id"]) for k, r in zip("abc", (a, b, c), strict=True)}
    one.create_annotation(tid["a"], [choice("bearing_wear"), span(0.25, 1.5), BOX, AUDIO],
                          lead_time=12.5)  # fmt: skip
    two.create_annotation(tid["a"], [choice("bearing_wear"), span(0.5, 1.75)], lead_time=3.0)
    one.create_annotation(tid["b"], [choice("normal")])
    two.create_annotation(tid["b"], [choice("surface_scratch")])
    one.create_annotation(tid["c"], [choice("normal")])
    two.create_annotation(tid["c"], [choice("normal")])
    pulled = pull_labels(world.run, world.config, PROJECT, document_root=world.root,
                         environ=world.env)  # fmt: skip
    return Annotated(a, b, c, pulled, [world.server.token, ann2_token])


def rows_of(result: ImportResult, rid: str, kind: str) -> list[dict[str, Any]]:
    return [r for r in result.rows if r["record_id"] == rid and r["kind"] == kind]


def test_pulled_labels_land_on_the_right_records_at_reference_time(world, annotated):
    res, a = annotated.pulled, annotated.a
    assert res.rejected == [] and res.n_in == res.n_out == 10
    assert res.source == f"labelstudio:{PROJECT}"
    choices = rows_of(res, a["record_id"], "choice")
    assert {(r["annotator"], r["value"]) for r in choices} == {
        ("admin@example.com", "bearing_wear"),
        (ANN2, "bearing_wear"),
    }
    start = a["window_start_ns"]
    ranges = sorted((r["annotator"], r["start_ns"], r["end_ns"])
                    for r in rows_of(res, a["record_id"], "range"))  # fmt: skip
    assert ranges == [("admin@example.com", start + 250_000_000, start + 1_500_000_000),
                      (ANN2, start + 500_000_000, start + 1_750_000_000)]  # fmt: skip
    (box,) = rows_of(res, a["record_id"], "box")
    assert [box[k] for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")] == [32, 48, 112, 168]
    (audio,) = rows_of(res, a["record_id"], "audio_region")
    first = a["audio_info"]["first_ts_ns"]
    assert (audio["start_ns"], audio["end_ns"]) == (first + 500_000_000, first + 1_000_000_000)
    mine = [r for r in choices if r["annotator"] == "admin@example.com"]
    assert mine[0]["lead_time_s"] == 12.5 and mine[0]["created_at"]
    labels = pq.read_table(world.run / "labels" / "labels.parquet").to_pylist()
    assert len(labels) == 10


def test_agreement_figures_and_majority_resolution(world, annotated):
    agreement = json.loads((world.run / "labels" / "agreement.json").read_text())
    defect = agreement["controls"]["defect"]
    assert (defect["records"], defect["annotators"]) == (3, 2)
    # pairs: (wear, wear), (normal, scratch), (normal, normal)
    assert defect["percent_agreement"] == pytest.approx(2 / 3)
    assert defect["cohen_kappa"] == pytest.approx(0.5)  # p_o 2/3, p_e 1/3
    assert defect["fleiss_kappa"] == pytest.approx(5 / 11)  # P 2/3, P_e 7/18
    assert defect["krippendorff_alpha"] == pytest.approx(6 / 11)  # 1 - (1/3)/(22/30)
    resolved = pq.read_table(world.run / "labels" / "resolved.parquet").to_pylist()
    decided = {(r["record_id"], r["name"]): r for r in resolved}
    a, b, c = annotated.a, annotated.b, annotated.c
    assert decided[(a["record_id"], "defect")]["value"] == "bearing_wear"
    assert decided[(c["record_id"], "defect")]["annotator"] == "resolved:majority"
    assert (b["record_id"], "defect") not in decided  # a tie: reported, not guessed
    assert any(u["record_id"] == b["record_id"] for u in agreement["unresolved"])
    # both annotators cover 0.5 s .. 1.5 s of record a with "anomaly"
    rng = decided[(a["record_id"], "anomaly")]
    start = a["window_start_ns"]
    assert (rng["start_ns"], rng["end_ns"]) == (start + 500_000_000, start + 1_500_000_000)


def test_a_json_min_export_file_imports_to_the_same_labels(world, annotated, pushed):
    data = world.client().export(pushed.project_id, "JSON_MIN")
    path = world.root / "exports" / "annotations_min.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    imported = labels_from_export(path, world.run, world.config, "import:annotations_min.json")
    assert imported.rejected == [] and imported.n_out == annotated.pulled.n_out

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(r[k] for k in ("record_id", "task_id", "annotation_id", "kind", "name",
                                    "value", "start_ns", "end_ns", "bbox_x0", "bbox_y1",
                                    "lead_time_s"))  # fmt: skip

    assert sorted(map(key, imported.rows)) == sorted(map(key, annotated.pulled.rows))
    figures = ("percent_agreement", "cohen_kappa", "fleiss_kappa", "krippendorff_alpha")
    for name in ("defect", "anomaly"):
        for f in figures:
            assert imported.agreement["controls"][name][f] == pytest.approx(
                annotated.pulled.agreement["controls"][name][f]
            ), (name, f)
    assert {r["source"] for r in imported.rows} == {"import:annotations_min.json"}


def test_predictions_never_become_labels(world, annotated):
    labelled = {r["record_id"] for r in annotated.pulled.rows}
    assert labelled == {annotated.a["record_id"], annotated.b["record_id"],
                        annotated.c["record_id"]}  # fmt: skip
    assert not any(str(r["annotator"]).startswith("prediction") for r in annotated.pulled.rows)


# -- credentials ---------------------------------------------------------------------------


def test_a_personal_access_token_is_exchanged_and_refreshed(world, pushed):
    pat = world.server.personal_access_token()
    client = world.client(pat)
    assert client.token.kind == "pat" and repr(client.token) == "Token(pat, ***)"
    assert client.whoami()["email"] == "admin@example.com"
    first = client._access
    client._access_exp = 0.0  # as if it had expired: the next call refreshes it
    assert len(client.tasks(pushed.project_id)) == len(world.records)
    assert client._access and client._access != first
    export = pull_export(world.config, PROJECT, environ={"LABEL_STUDIO_API_KEY": pat})
    assert len(export) == len(world.records)


def test_a_token_file_works_and_a_bad_token_is_refused_without_showing_it(world, tmp_path):
    token_file = tmp_path / "ls-token"
    token_file.write_text(world.server.token + "\n")
    cfg = world.config.model_copy(update={"token_file": str(token_file)})
    assert connect(cfg, environ={}).whoami()["email"] == "admin@example.com"
    wrong = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(LabelStudioError) as err:
        connect(world.config, environ={"LABEL_STUDIO_API_KEY": wrong})
    assert err.value.status == 401 and wrong not in str(err.value)
    assert "token" in (err.value.hint or "")


def test_no_token_appears_in_any_run_file(world, annotated):
    secrets = [t.encode() for t in annotated.tokens]
    files = [p for p in world.run.rglob("*") if p.is_file()]
    assert any(p.name == "push.json" for p in files) and any(p.name == "labels.parquet"
                                                             for p in files)  # fmt: skip
    for p in files:
        content = p.read_bytes()
        assert not any(s in content for s in secrets), p


def test_the_labeling_config_follows_the_modalities_and_label_set():
    cfg = LabelsConfig(choices=["ok", "bad <&>"], ranges=[], boxes=["dent"])
    xml = lx.label_config(cfg, lx.Modalities(image=True, audio=True))
    assert "TimeSeries" not in xml and "audio_region" not in xml  # no ranges, no sensors
    assert '<Choice value="bad &lt;&amp;&gt;"/>' in xml and '<Label value="dent"/>' in xml
    only_audio = lx.label_config(LabelsConfig(), lx.Modalities(audio=True))
    assert '<Choices name="defect" toName="audio"' in only_audio and "Image" not in only_audio


def test_vibration_csv_puts_streams_of_different_rates_on_one_exact_time_grid():
    start = 1_772_352_004_000_000_000
    fast = {
        "stream_id": "p.acc.accel",
        "device_id": "acc",
        "channels": ["ax"],
        "sample_rate": 4.0,
        "first_ts_ns": start + 1_000_000_001,
        "values": [[0, 1, 2, 3]],
    }
    slow = {
        "stream_id": "p.tmp.temp",
        "device_id": "tmp",
        "channels": ["c"],
        "sample_rate": 2.0,
        "first_ts_ns": start + 1_000_000_001,
        "values": [[10, 20]],
    }
    csv, own = vibration_csv([slow, fast], start, ["accel__ax", "temp__c", "other__x"])
    assert own == ["temp__c", "accel__ax"]
    assert csv.decode().splitlines() == [
        "t,accel__ax,temp__c,other__x",
        "1.000000001,0,10,",  # ns exact: the mapping back adds round(t * 1e9) to the start
        "1.250000001,1,15,",  # the slower stream is interpolated onto the denser grid
        "1.500000001,2,20,",
        "1.750000001,3,20,",  # and held at its last value, never extrapolated
    ]


# -- the server fixture itself ---------------------------------------------------------------


def test_the_server_is_stopped_whatever_happens(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), label_studio(tmp_path, tmp_path) as s:
        port = int(s.url.rsplit(":", 1)[1])
        pid = s.proc.pid
        raise RuntimeError("boom")
    assert s.proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_server_that_cannot_be_installed_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setattr(labelstudio, "LS_VENV", tmp_path / "venv")
    monkeypatch.setenv("PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(pytest.fail.Exception, match="could not be installed"):
        labelstudio.ensure_venv()


def test_the_cli_imports_an_export_file_onto_the_run(world, annotated, pushed):
    import json
    import subprocess
    import sys

    path = world.root / "exports" / "cli_min.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(world.client().export(pushed.project_id, "JSON_MIN"))
    exe = Path(sys.executable).parent / "mmdata"
    args = [str(exe), "labels", "import", str(world.run), str(path), "--json"]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["in"] == doc["out"] + doc["rejected"] and doc["out"] == annotated.pulled.n_out
    assert (world.run / "labels" / "resolved.parquet").is_file()
    assert world.env["LABEL_STUDIO_API_KEY"] not in proc.stdout + proc.stderr
