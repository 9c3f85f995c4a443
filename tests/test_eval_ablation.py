"""The ``eval`` stage: generation on the test split, metrics, and the per-modality ablation."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from mmdata.errors import ConfigError, StageError
from mmdata.rundir import RunDir
from mmdata.train import checkpoint as ckpt
from mmdata.train.stage import console_lines, run_eval, run_train
from tests.test_train_data import pipeline, tiny_run

ROWS = [
    "fused",
    "fused, image masked",
    "fused, audio masked",
    "fused, sensor masked",
    "image only",
    "audio only",
    "sensor only",
]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tiny_run(tmp_path_factory.mktemp("abl") / "run")
    cfg = pipeline(root)
    with RunDir.open(root) as run:
        run_train(run, cfg)
        outcome = run_eval(run, cfg)
    return root, outcome


def test_eval_scores_the_test_split_with_exact_metrics(evaluated):
    root, outcome = evaluated
    assert (outcome.counts.in_, outcome.counts.out, outcome.counts.quarantined) == (24, 24, 0)
    m = json.loads((root / "eval" / "metrics.json").read_text())
    assert (m["split"], m["task"], m["n"]) == ("test", "defect_class", 24)
    dc = m["tasks"]["defect_class"]
    assert dc["classes"] == ["normal", "rattle", "scratch", "wear"]
    assert sum(map(sum, dc["confusion"]["matrix"])) == 24
    support = {c: pc["support"] for c, pc in dc["per_class"].items()}
    assert support == dict.fromkeys(dc["classes"], 6)
    assert m["accuracy"] == dc["accuracy"] and m["macro_f1"] == dc["macro_f1"]
    assert m["macro_f1"] >= 0.7  # every class is visible when all modalities are read
    preds = pq.read_table(root / "eval" / "predictions.parquet").to_pylist()
    assert len(preds) == 24
    assert sum(p["correct"] for p in preds) == round(dc["accuracy"] * 24)
    assert {p["task"] for p in preds} == {"defect_class"}


def test_ablation_masks_each_modality_and_trains_each_alone(evaluated):
    root, _ = evaluated
    ab = json.loads((root / "eval" / "ablation.json").read_text())
    assert [r["variant"] for r in ab["rows"]] == ROWS
    by = {r["variant"]: r for r in ab["rows"]}
    assert by["image only"]["trained_on"] == ["image"]
    assert by["image only"]["masked"] == ["audio", "sensor"]
    assert by["fused, audio masked"]["masked"] == ["audio"]
    # each fault shows in one modality only: alone, a modality cannot tell the others apart
    fused = by["fused"]["macro_f1"]
    best = max(by[f"{m} only"]["macro_f1"] for m in ("image", "audio", "sensor"))
    assert ab["fused_minus_best_single"] == pytest.approx(fused - best)
    assert fused - best >= 0.15
    for m in ("image", "audio", "sensor"):
        folder = root / "eval" / "ablation" / f"only-{m}"
        assert (folder / "model" / ckpt.TRAINABLE).is_file()
        assert json.loads((folder / "model" / "model.json").read_text())["masked"] != []
        assert (folder / "metrics.jsonl").read_text().count("\n") > 0
    assert ckpt.foreign_files(root / "eval") == []
    lines = console_lines(root / "eval")
    assert any(line.lstrip().startswith("fused - best single-modality model") for line in lines)
    assert not (root / ".resume").exists()


def test_eval_without_ablation_and_the_sensor_text_note(tmp_path):
    root = tiny_run(tmp_path / "run", {"train": 4, "validation": 2, "test": 2})
    cfg = pipeline(root, max_steps=3)
    data = cfg.model_dump()
    data["build"]["sensors_as"] = "text_summary"
    from mmdata.config import PipelineConfig

    text_cfg = PipelineConfig.model_validate(data)
    with RunDir.open(root) as run:
        run_train(run, cfg)
        run_eval(run, text_cfg, ablation=False)
    assert not (root / "eval" / "ablation.json").exists()
    notes = json.loads((root / "eval" / "metrics.json").read_text())["notes"]
    assert any("masking the sensor features does not remove that text" in n for n in notes)


def test_eval_needs_a_trained_model_and_known_tasks(tmp_path):
    root = tiny_run(tmp_path / "run", {"train": 2, "validation": 1, "test": 1})
    cfg = pipeline(root, max_steps=2)
    with RunDir.open(root) as run:
        with pytest.raises(StageError, match="mmdata train"):
            run_eval(run, cfg)
        run_train(run, cfg)
        bad = pipeline(root, max_steps=2, eval={"tasks": ["notes_qa"]})
        with pytest.raises(ConfigError, match=r"train\.eval\.tasks"):
            run_eval(run, bad)
