"""The aligner: windows of synchronized streams → Parquet records, exact and deterministic."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmdata.align import run_align
from mmdata.config import PipelineConfig
from mmdata.demo import factory_pipeline
from mmdata.ingest import run_ingest
from mmdata.quarantine import read_quarantine
from mmdata.rundir import RunDir
from mmdata.sync import run_sync
from mmdata.synth import SynthConfig, generate_factory
from mmdata.timebase import ClockModel

S = 1_000_000_000


@pytest.fixture(scope="module")
def factory(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("factory") / "f"
    generate_factory(SynthConfig(assets=2, minutes=1.5, seed=3, workers=1), out)
    return out


def run_pipeline(factory: Path, run_dir: Path, **align) -> tuple[PipelineConfig, Path]:
    cfg = factory_pipeline(factory, run_dir)
    if align:
        cfg = cfg.model_copy(update={"align": cfg.align.model_validate(
            {**cfg.align.model_dump(), **align})})  # fmt: skip
    with RunDir.open(run_dir) as run:
        run_ingest(run, cfg)
        run_sync(run, cfg)
        run_align(run, cfg)
    return cfg, run_dir / "records"


def records(path: Path) -> list[dict]:
    rows = []
    for f in sorted(path.glob("asset_id=*/date=*/*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


@pytest.fixture(scope="module")
def tumbling(factory, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "run"
    cfg, rec = run_pipeline(factory, run_dir)
    return cfg, run_dir, records(rec)


def test_records_are_partitioned_by_asset_and_date_and_counts_reconcile(tumbling):
    _, run_dir, rows = tumbling
    parts = sorted(p.relative_to(run_dir / "records").as_posix()
                   for p in (run_dir / "records").rglob("*.parquet"))  # fmt: skip
    # One file per asset × 10-minute partition: the devices start just before 08:00.
    assert parts == [f"asset_id=press-{a}/date=2026-03-01/part-0000{k}.parquet"
                     for a in (1, 2) for k in (0, 1)]  # fmt: skip
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = manifest["stages"]["records"]["counts"]
    assert counts["out"] == len(rows) and counts["in"] == counts["out"] + counts["quarantined"]
    dropped = read_quarantine(run_dir / "quarantine" / "records.parquet")
    assert len(dropped) == counts["quarantined"]


def test_every_modality_keeps_its_own_rate(tumbling):
    _, _, rows = tumbling
    full = [r for r in rows if r["coverage"]["sensors"] == 1.0 and r["coverage"]["audio"] == 1.0]
    assert len(full) > 60
    r = full[10]
    (acc,) = r["sensors"]
    assert acc["channels"] == ["ax", "ay", "az"] and acc["sample_rate"] == pytest.approx(5000, 0.01)
    assert 9990 <= acc["n_samples"] <= 10010  # 2 s at 5 kHz on a drifting device clock
    assert all(len(v) == acc["n_samples"] for v in acc["values"])
    assert r["audio_info"]["sample_rate"] == 16000
    assert 31980 <= r["audio_info"]["n_frames"] <= 32020
    assert r["frames"] and all(f["path"].endswith(".jpg") for f in r["frames"])
    assert r["window_end_ns"] - r["window_start_ns"] == 2 * S
    assert r["record_id"] and len({x["record_id"] for x in rows}) == len(rows)


def test_samples_inside_a_window_are_in_reference_time(tumbling):
    _, _, rows = tumbling
    for r in rows:
        for s in r["sensors"]:
            if s["n_samples"]:
                assert r["window_start_ns"] <= s["first_ts_ns"] < r["window_end_ns"]
        if r["audio_info"]:
            assert r["window_start_ns"] <= r["audio_info"]["first_ts_ns"] < r["window_end_ns"]
        for f in r["frames"]:
            inside = r["window_start_ns"] <= f["ts_ns"] < r["window_end_ns"]
            assert inside == (f["staleness_ns"] == 0)


def test_a_window_across_two_files_stitches_both(tumbling):
    _, _, rows = tumbling
    across = [
        r
        for r in rows
        if len({p["uri"] for p in r["provenance"] if ".accel" in p["stream_id"]}) == 2
    ]
    assert across, "some 2 s window must straddle the one-minute accelerometer files"
    acc = across[0]["sensors"][0]
    assert 9990 <= acc["n_samples"] <= 10010
    ts_ranges = [p["locator"] for p in across[0]["provenance"] if ".accel" in p["stream_id"]]
    assert all(loc.startswith("device ts_ns ") for loc in ts_ranges)


def test_clock_models_are_applied(tumbling, factory):
    """A sync tap lands at the same reference time in the vibration of both assets."""
    _, _, rows = tumbling
    truth = json.loads((factory / "ground_truth.json").read_text())
    ref = truth["devices"]["acc-press-1"]  # the reference device of the factory pipeline
    model = ClockModel(offset_ns=ref["offset_ns"], drift_ppm=ref["drift_ppm"],
                       origin_ns=truth["origin_ns"])  # fmt: skip
    event = int(model.to_device(int(truth["sync_events"][1]["reference_ns"])))
    onsets = {}
    for asset in ("press-1", "press-2"):
        near = sorted((r for r in rows if r["asset_id"] == asset
                       and abs(r["window_start_ns"] - event) < 4 * S),
                      key=lambda r: r["window_start_ns"])  # fmt: skip
        t = np.concatenate([r["sensors"][0]["first_ts_ns"]
                            + np.arange(r["sensors"][0]["n_samples"]) * (S // 5000)
                            for r in near])  # fmt: skip
        v = np.abs(np.concatenate([np.asarray(r["sensors"][0]["values"][0]) for r in near]))
        onsets[asset] = int(t[np.argmax(v > 0.5 * v.max())])
    assert abs(onsets["press-1"] - event) < 2_000_000
    assert abs(onsets["press-1"] - onsets["press-2"]) < 1_000_000  # < 1 ms across assets


def test_same_inputs_give_byte_identical_records(factory, tmp_path):
    _, a = run_pipeline(factory, tmp_path / "a")
    _, b = run_pipeline(factory, tmp_path / "b")

    def digest(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in root.rglob("*.parquet")}  # fmt: skip

    assert digest(a) == digest(b)


def test_sliding_windows_share_samples(factory, tmp_path):
    _, rec = run_pipeline(
        factory, tmp_path / "s", window={"mode": "sliding", "length_ms": 2000, "hop_ms": 500}
    )
    rows = sorted((r for r in records(rec) if r["asset_id"] == "press-1"),
                  key=lambda r: r["window_start_ns"])  # fmt: skip
    a, b = rows[20], rows[21]
    assert b["window_start_ns"] - a["window_start_ns"] == S // 2
    va = np.asarray(a["sensors"][0]["values"][0])
    vb = np.asarray(b["sensors"][0]["values"][0])
    shift = 2500  # 0.5 s at 5 kHz, ±1 sample of drift
    assert any(np.array_equal(va[k:], vb[: va.size - k]) for k in range(shift - 2, shift + 3))


def test_event_windows_around_notes(factory, tmp_path):
    _, rec = run_pipeline(
        factory,
        tmp_path / "e",
        window={"mode": "event", "on": "notes", "pre_ms": 1000, "post_ms": 1000},
    )
    rows = records(rec)
    assert rows
    for r in rows:
        assert r["window_end_ns"] - r["window_start_ns"] == 2 * S
        assert any(n["staleness_ns"] == 0 for n in r["text"])


def test_missing_modality_is_kept_or_dropped_and_counted(factory, tmp_path):
    late = tmp_path / "late"
    shutil.copytree(factory, late)
    first_wav = sorted((late / "press-1" / "mic").glob("*.wav"))[0]
    first_wav.unlink()  # the microphone of press-1 starts a minute late
    cfg, rec = run_pipeline(late, tmp_path / "kept")
    rows = [r for r in records(rec) if r["asset_id"] == "press-1"]
    silent = [r for r in rows if r["coverage"]["audio"] == 0.0]
    assert silent and all(r["audio"] is None and r["flags"]["missing_modality"] for r in silent)
    _, rec2 = run_pipeline(late, tmp_path / "dropped", require=["audio"])
    kept = [r for r in records(rec2) if r["asset_id"] == "press-1"]
    assert len(kept) == len(rows) - len(silent)
    reasons = {q.message for q in read_quarantine(tmp_path / "dropped" / "quarantine" /
                                                  "records.parquet")}  # fmt: skip
    assert "window has no audio (align.require)" in reasons
    _ = cfg


def test_records_load_in_hugging_face_datasets_with_decoded_media(tumbling):
    datasets = pytest.importorskip("datasets")
    _, run_dir, _ = tumbling
    files = sorted(str(p) for p in (run_dir / "records").rglob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    row = next(r for r in ds if r["coverage"]["audio"] > 0.99 and r["image"] is not None)
    assert row["image"].size == (320, 240)  # decoded by PIL
    samples = row["audio"].get_all_samples()
    assert samples.sample_rate == 16000 and samples.data.shape[-1] > 30000
    assert isinstance(row["window_start_ns"], int)


def test_single_sample_windows_of_a_slow_sensor(tmp_path):
    """A 1 Hz sensor cut into 1 s windows: one sample each; no evidence → clock_uncertain."""
    src = tmp_path / "temp"
    src.mkdir()
    t0 = 1_772_352_000 * S
    lines = ["ts_ns,temp_c"] + [f"{t0 + k * S},{20 + k / 10:.1f}" for k in range(10)]
    (src / "temp.csv").write_text("\n".join(lines) + "\n")
    cfg = PipelineConfig.model_validate({
        "run_dir": str(tmp_path / "run"),
        "assets": {"oven": {"sources": [{"connector": "sensor", "path": str(src),
                                         "device": "thermo", "layout": "wide",
                                         "time": {"column": "ts_ns", "unit": "ns"}}]}},
        "align": {"window": {"mode": "tumbling", "length_ms": 1000}},
    })  # fmt: skip
    with RunDir.open(cfg.run_dir) as run:
        run_ingest(run, cfg)
        run_sync(run, cfg)
        run_align(run, cfg)
    rows = records(tmp_path / "run" / "records")
    assert len(rows) == 10
    assert [r["sensors"][0]["values"][0] for r in rows] == [[pytest.approx(20 + k / 10)]
                                                           for k in range(10)]  # fmt: skip
    assert all(r["sensors"][0]["n_samples"] == 1 for r in rows)
    # The only device is the reference: its clock is the reference by definition.
    assert not any(r["flags"]["clock_uncertain"] for r in rows)


def test_windows_never_cross_a_gap_in_a_dense_stream(factory, tmp_path):
    gappy = tmp_path / "gappy"
    shutil.copytree(factory, gappy)
    first = sorted((gappy / "press-1" / "vib").glob("*.parquet"))[0]
    table = pq.read_table(first)
    ts = table.column("ts_ns").to_numpy()
    cut = (ts > ts[0] + 20 * S) & (ts < ts[0] + 30 * S)  # 10 s without vibration
    pq.write_table(table.filter(pa.array(~cut)), first)
    _, rec = run_pipeline(gappy, tmp_path / "run")
    rows = sorted((r for r in records(rec) if r["asset_id"] == "press-1"),
                  key=lambda r: r["window_start_ns"])  # fmt: skip
    spans = [r["span"] for r in rows]
    assert spans == sorted(spans) and set(spans) == {0, 1}
    reasons = [q.message for q in read_quarantine(tmp_path / "run" / "quarantine" /
                                                  "records.parquet")]  # fmt: skip
    assert reasons.count("window crosses a break (gap or clock jump)") >= 5
    starts = [r["window_start_ns"] for r in rows]
    assert max(b - a for a, b in itertools.pairwise(starts)) >= 10 * S
