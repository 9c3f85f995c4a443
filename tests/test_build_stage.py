"""The build stage on the synthetic factory: scrubbed records → datasets, splits, card."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmdata.align import run_align
from mmdata.build.stage import SAMPLES_FILE, SENSORS_FILE, run_build, sensor_sha256
from mmdata.config import PipelineConfig
from mmdata.demo import factory_pipeline
from mmdata.errors import ConfigError, StageError
from mmdata.ingest import run_ingest
from mmdata.quarantine import read_quarantine
from mmdata.rundir import RunDir
from mmdata.scrub.stage import run_scrub
from mmdata.sync import run_sync
from mmdata.synth import SynthConfig, generate_factory

KEY = "a-test-key-that-is-long-enough-0123456789"


def with_build(cfg: PipelineConfig, **build: object) -> PipelineConfig:
    return cfg.model_copy(update={"build": cfg.build.model_copy(update=build)})


@pytest.fixture(scope="module")
def scrubbed(tmp_path_factory: pytest.TempPathFactory) -> tuple[PipelineConfig, Path]:
    import os

    os.environ["MMDATA_PII_KEY"] = KEY
    root = tmp_path_factory.mktemp("build")
    factory = root / "factory"
    generate_factory(SynthConfig(assets=2, minutes=1.0, seed=3, workers=1), factory)
    cfg = factory_pipeline(factory, root / "run")
    image = cfg.scrub.image.model_copy(update={"ocr": [], "profile_faces": False})
    scrub = cfg.scrub.model_copy(update={"image": image, "processes": 1})
    cfg = cfg.model_copy(update={"scrub": scrub})
    cfg = with_build(cfg, ground_truth=str(factory / "ground_truth.json"),
                     formats=["llava", "llama_factory", "messages"],
                     audio_as="spectrogram_image")  # fmt: skip
    with RunDir.open(cfg.run_dir) as run:
        run_ingest(run, cfg)
        run_sync(run, cfg)
        run_align(run, cfg)
        run_scrub(run, cfg)
    return cfg, factory


def build(cfg: PipelineConfig, **kw: object):
    with RunDir.open(cfg.run_dir) as run:
        return run_build(run, cfg, **kw)  # type: ignore[arg-type]


def test_every_window_becomes_samples_in_every_format_and_counts_reconcile(scrubbed):
    cfg, _ = scrubbed
    out = build(cfg, force=True)
    c = out.counts
    assert c.in_ == c.out + c.quarantined and c.out > 0
    ds = Path(out.out_dir)
    report = json.loads((ds / "build_report.json").read_text())
    samples = pq.read_table(ds / SAMPLES_FILE).to_pylist()
    assert len(samples) == report["samples"] > c.out  # several tasks per window
    assert {s["task"] for s in samples} == set(cfg.build.tasks)
    written = report["formats"]["written"]
    for fmt in ("llava", "llama_factory", "messages"):
        assert sum(written[fmt].values()) == len(samples), fmt
    ids = {r["sample_id"] for split in ("train", "validation", "test")
           if (ds / "messages" / f"{split}.parquet").exists()
           for r in pq.read_table(ds / "messages" / f"{split}.parquet",
                                  columns=["sample_id"]).to_pylist()}  # fmt: skip
    assert ids == {s["sample_id"] for s in samples}
    media = {r["sha256"] for r in pq.read_table(ds / "media.parquet").to_pylist()}
    assert {h for s in samples for h in s["images"] + s["audios"]} == media
    assert all((ds / "media").glob("*"))


def test_labels_follow_the_ground_truth_faults(scrubbed):
    cfg, factory = scrubbed
    ds = Path(build(cfg).out_dir)
    truth = json.loads((factory / "ground_truth.json").read_text())
    samples = [s for s in pq.read_table(ds / SAMPLES_FILE).to_pylist()
               if s["task"] == "defect_class"]  # fmt: skip
    assert samples
    for s in samples:
        mid = (s["window_start_ns"] + s["window_end_ns"]) // 2
        inside = [
            f["class"]
            for f in truth["faults"][s["asset_id"]]
            if f["start_ns"] <= s["window_start_ns"] and s["window_end_ns"] <= f["end_ns"]
        ]
        outside = all(f["end_ns"] <= s["window_start_ns"] or f["start_ns"] >= s["window_end_ns"]
                      for f in truth["faults"][s["asset_id"]])  # fmt: skip
        if inside:
            assert s["label"] == inside[0] == s["response"].strip(), (s["label"], mid)
        elif outside:
            assert s["label"] == "normal"


def test_split_by_asset_holds_the_named_asset_out_and_the_leakage_check_passes(scrubbed):
    cfg, _ = scrubbed
    split = cfg.build.split.model_copy(update={"by": "asset", "test": ["press-2"]})
    out = build(with_build(cfg, split=split))
    ds = Path(out.out_dir)
    samples = pq.read_table(ds / SAMPLES_FILE).to_pylist()
    assert {s["asset_id"] for s in samples if s["split"] == "test"} == {"press-2"}
    assert "press-2" not in {s["asset_id"] for s in samples if s["split"] != "test"}
    report = json.loads((ds / "build_report.json").read_text())
    assert report["leakage"]["ok"] and report["splits"]["sizes"]["test"] > 0
    assert "leakage check: ok" in " ".join(report["console"])


def test_a_time_split_with_a_guard_gap_quarantines_the_gap_windows_with_their_reason(scrubbed):
    cfg, _ = scrubbed
    split = cfg.build.split.model_copy(update={"by": "time", "gap_ms": 6000})
    with RunDir.open(cfg.run_dir) as run:
        out = run_build(run, with_build(cfg, split=split))
        rows = read_quarantine(run.quarantine_path("dataset"))
    gap = [r for r in rows if r.error_class == "SplitGuardGap"]
    assert gap and out.counts.quarantined >= len(gap)
    ds = Path(out.out_dir)
    samples = pq.read_table(ds / SAMPLES_FILE).to_pylist()
    by_split: dict[str, list[int]] = {}
    for s in samples:
        if s["asset_id"] == "press-1":
            by_split.setdefault(s["split"], []).append(s["window_start_ns"])
    train_end = max(by_split["train"]) + 2_000_000_000
    assert min(by_split["validation"]) - train_end >= 6_000_000_000


def test_the_dataset_card_has_sources_counts_labels_pii_splits_and_config(scrubbed):
    cfg, _ = scrubbed
    card = (Path(build(cfg).out_dir) / "README.md").read_text()
    for heading in ("## Sources", "## Counts", "## Labels", "## PII scrub", "## Splits",
                    "## Build config"):  # fmt: skip
        assert heading in card
    assert "PERSON" in card and "Leakage check passed" in card
    assert KEY not in card


def test_sensor_windows_are_indexed_by_the_hash_of_their_samples(scrubbed):
    import numpy as np

    cfg, _ = scrubbed
    ds = Path(build(cfg).out_dir)
    sensors = pq.read_table(ds / SENSORS_FILE).to_pylist()
    assert sensors
    for row in sensors[:5]:
        assert row["sha256"] == sensor_sha256(np.asarray(row["values"], np.float32))
    used = {h for s in pq.read_table(ds / SAMPLES_FILE).to_pylist() for h in s["sensors"]}
    assert used == {r["sha256"] for r in sensors}


def test_an_unchanged_build_is_skipped(scrubbed):
    cfg, _ = scrubbed
    build(cfg)
    assert build(cfg).skipped


def test_building_from_unscrubbed_records_needs_an_explicit_opt_in(scrubbed):
    cfg, _ = scrubbed
    with pytest.raises(ConfigError, match="allow_unscrubbed"):
        build(with_build(cfg, input="records"))
    out = build(with_build(cfg, input="records", allow_unscrubbed=True))
    assert "NOT scrubbed" in (Path(out.out_dir) / "README.md").read_text()


def test_build_before_scrub_says_what_to_run(tmp_path):
    cfg = PipelineConfig.model_validate({"run_dir": str(tmp_path / "r"), "assets": {
        "a": {"sources": [{"connector": "notes", "path": str(tmp_path)}]}}})  # fmt: skip
    with pytest.raises(StageError, match="mmdata scrub"):
        build(cfg)


def test_annotators_labels_pulled_into_run_labels_override_the_ground_truth(scrubbed, tmp_path):
    import shutil

    import pyarrow as pa

    cfg, _ = scrubbed
    build(cfg)
    run_dir = tmp_path / "run"
    shutil.copytree(cfg.run_dir, run_dir)
    cfg = cfg.model_copy(update={"run_dir": str(run_dir)})
    before = pq.read_table(run_dir / "dataset" / SAMPLES_FILE).to_pylist()
    normal = next(s for s in before if s["task"] == "defect_class" and s["label"] == "normal")
    (run_dir / "labels").mkdir()
    pq.write_table(pa.Table.from_pylist([{
        "record_id": normal["record_id"], "name": "defect", "value": "surface_scratch",
        "start_ns": None, "end_ns": None, "source": "labelstudio:line2",
        "annotator": "resolved:majority"}]), run_dir / "labels" / "resolved.parquet")  # fmt: skip
    out = build(cfg)
    assert not out.skipped  # the pulled labels are an input of the build
    after = pq.read_table(run_dir / "dataset" / SAMPLES_FILE).to_pylist()
    relabeled = [s for s in after if s["record_id"] == normal["record_id"]]
    assert relabeled and {s["label"] for s in relabeled} == {"surface_scratch"}
