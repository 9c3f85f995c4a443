"""The ``train`` stage: it learns, it checkpoints in safetensors, and a killed run resumes to
exactly the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mmdata.errors import ConfigError, DependencyError, StageError
from mmdata.rundir import RunDir
from mmdata.train import checkpoint as ckpt
from mmdata.train.loop import Hooks
from mmdata.train.model import check_quantize, resolve_device
from mmdata.train.stage import console_lines, run_eval, run_train, train_overrides
from tests.test_train_data import pipeline, tiny_run

ROOT = Path(__file__).resolve().parents[1]
#: short runs with frequent checkpoints, and randomness in every step (dropouts)
RESUME = {
    "max_steps": 10,
    "eval_every": 3,
    "save_every": 3,
    "modality_dropout": 0.3,
    "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
}


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_tensors(path)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One uninterrupted tiny training (the reference of the resume tests)."""
    root = tiny_run(tmp_path_factory.mktemp("ref") / "run")
    with RunDir.open(root) as run:
        outcome = run_train(run, pipeline(root, **RESUME))
    return root, outcome


def test_training_learns_and_writes_model_checkpoints_and_metrics(tmp_path):
    root = tiny_run(tmp_path / "run")
    seen = []
    with RunDir.open(root) as run:
        outcome = run_train(run, pipeline(root), progress=lambda d, n, t: seen.append((d, n, t)))
    out = root / "train"
    assert outcome.counts.in_ == outcome.counts.out == 144  # train + validation samples
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [h["loss"] for h in history]
    assert [h["step"] for h in history] == list(range(1, 49))  # 6 epochs of 8 steps
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4  # the loss falls
    assert any("val_loss" in h for h in history)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 48 and summary["device"] == "cpu"
    assert summary["samples"] == {"train": 128, "validation": 16}
    # the progress bar shows the loss
    assert any(d.startswith("train: loss ") for d, _, _ in seen) and seen[-1][1:] == (48, 48)
    assert sorted(p.name for p in out.iterdir()) == [
        "base",
        "checkpoints",
        "metrics.jsonl",
        "model",
        "summary.json",
        "tokenizer",
    ]
    assert [p.name for p in ckpt.complete(out / "checkpoints")] == ["step-00040", "step-00048"]
    doc = json.loads((out / "model" / "model.json").read_text())
    assert doc["dims"] == {"audio": 8, "image": 12, "sensor": 6} and doc["base_model"] is None
    assert not (root / ".resume").exists()  # checkpoints moved into RUN/train
    assert console_lines(out)[0].startswith("trained 48/48 steps on 128 samples")
    # built-in model: LoRA plus fully trained embeddings and output head
    names = list(tensors(out / "model" / ckpt.TRAINABLE))
    assert any("lora_A" in n for n in names)
    assert any("embed_tokens.modules_to_save" in n for n in names)
    assert any("lm_head.modules_to_save" in n for n in names)
    assert "missing" in names and "projectors.sensor.std" in names
    # unchanged: skipped
    with RunDir.open(root) as run:
        assert run_train(run, pipeline(root)).skipped


def test_checkpoints_hold_only_safetensors_and_json(trained):
    root, _ = trained
    assert ckpt.foreign_files(root / "train") == []
    for d in ckpt.complete(root / "train" / "checkpoints"):
        assert sorted(p.name for p in d.iterdir()) == [
            "optimizer.safetensors",
            "rng.safetensors",
            "state.json",
            "trainable.safetensors",
        ]
        for f in d.glob("*.safetensors"):
            with safe_open(str(f), framework="pt") as fh:  # parses as safetensors
                assert fh.metadata() == {"format": "mmdata.train/1"}
        state = ckpt.read_state(d)
        assert {"step", "best_step", "history", "optimizer_param_groups"} <= set(state)


def test_resume_after_an_error_mid_run_gives_the_uninterrupted_weights(trained, tmp_path):
    ref_root, _ = trained
    root = tiny_run(tmp_path / "run")
    cfg = pipeline(root, **RESUME)

    def fail(step: int) -> None:
        if step == 8:
            raise RuntimeError("interrupted")

    with RunDir.open(root) as run, pytest.raises(StageError, match="interrupted"):
        run_train(run, cfg, hooks=Hooks(on_step=fail))
    left = list((root / ".resume" / "train").glob("*/checkpoints/step-*"))
    assert sorted(p.name for p in left) == ["step-00003", "step-00006"]
    with RunDir.open(root) as run:
        run_train(run, cfg)
    summary = json.loads((root / "train" / "summary.json").read_text())
    assert summary["resumed_from"] == 6
    for rel in (
        "model/trainable.safetensors",
        "checkpoints/step-00010/trainable.safetensors",
        "checkpoints/step-00010/optimizer.safetensors",
    ):
        assert_same(tensors(root / "train" / rel), tensors(ref_root / "train" / rel))
    assert (root / "train" / "metrics.jsonl").read_text() == (
        ref_root / "train" / "metrics.jsonl"
    ).read_text()


def test_gradient_accumulation_behaves_like_one_large_batch(tmp_path):
    """The loss is normalised by the step's response tokens, not per micro-batch."""
    root = tiny_run(tmp_path / "run")
    first = []
    for bs, ga in ((16, 1), (8, 2), (4, 4)):
        cfg = pipeline(root, batch_size=bs, grad_accum=ga, max_steps=1)
        with RunDir.open(root) as run:
            run_train(run, cfg)
        first.append(json.loads((root / "train" / "metrics.jsonl").read_text().splitlines()[0]))
    for rec in first[1:]:
        assert rec["loss"] == pytest.approx(first[0]["loss"], rel=1e-5)
        assert rec["grad_norm"] == pytest.approx(first[0]["grad_norm"], rel=1e-4)


KILLER = """
import json, os, signal, sys
from pathlib import Path
from mmdata.rundir import RunDir
from mmdata.train.loop import Hooks
from mmdata.train.stage import run_train
from tests.test_train_data import pipeline

root, k, over = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])

def on_step(step):
    if step == k:
        os.kill(os.getpid(), signal.SIGKILL)

with RunDir.open(root) as run:
    run_train(run, pipeline(root, **over), hooks=Hooks(on_step=on_step))
"""


def test_resume_after_sigkill_gives_the_uninterrupted_weights(trained, tmp_path):
    ref_root, _ = trained
    root = tiny_run(tmp_path / "run")
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(root), "5", json.dumps(RESUME)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (root / "train").exists()
    with RunDir.open(root) as run:
        run_train(run, pipeline(root, **RESUME))
    assert json.loads((root / "train" / "summary.json").read_text())["resumed_from"] == 3
    assert_same(
        tensors(root / "train" / "model" / ckpt.TRAINABLE),
        tensors(ref_root / "train" / "model" / ckpt.TRAINABLE),
    )
    assert_same(
        tensors(root / "train" / "checkpoints" / "step-00010" / ckpt.TRAINABLE),
        tensors(ref_root / "train" / "checkpoints" / "step-00010" / ckpt.TRAINABLE),
    )


def test_a_pretrained_base_model_with_its_own_tokenizer_trains_with_lora_only(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmdata.train.tokenizer import train_tokenizer
    from tests.test_train_data import CLASSES, PROMPT

    tok = train_tokenizer([PROMPT.format(asset="press-1"), *CLASSES] * 4, 300)
    tok.chat_template = None  # a base model without a chat template: the plain layout
    torch.manual_seed(0)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    )
    lm.save_pretrained(str(tmp_path / "my-llama"))
    tok.save_pretrained(str(tmp_path / "my-llama"))
    root = tiny_run(tmp_path / "run", {"train": 4, "validation": 2, "test": 1})
    cfg = pipeline(root, base_model=str(tmp_path / "my-llama"), max_steps=4)
    with RunDir.open(root) as run:
        outcome = run_train(run, cfg)
    assert outcome.counts.out == 24
    names = list(tensors(root / "train" / "model" / ckpt.TRAINABLE))
    assert not any("modules_to_save" in n for n in names)  # LoRA only on a pretrained LM
    assert any("lora_B" in n for n in names) and not (root / "train" / "base").exists()
    doc = json.loads((root / "train" / "model" / "model.json").read_text())
    assert doc["base_model"] == str(tmp_path / "my-llama") and len(doc["base_revision"]) == 64
    summary = json.loads((root / "train" / "summary.json").read_text())
    assert summary["steps"] == 4
    with RunDir.open(root) as run:  # evaluation loads the same base model back
        assert run_eval(run, cfg, ablation=False).counts.out == 4
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["model"]["base_model"] == str(tmp_path / "my-llama")
    # a base model whose weights changed no longer fits the adapters
    torch.manual_seed(1)
    LlamaForCausalLM(lm.config).save_pretrained(str(tmp_path / "my-llama"))
    with RunDir.open(root) as run, pytest.raises(StageError, match="changed since"):
        run_eval(run, cfg, ablation=False, force=True)


def test_a_base_model_saved_as_pickle_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    root = tiny_run(tmp_path / "run", {"train": 1})
    with RunDir.open(root) as run, pytest.raises(DependencyError, match="never loads pickle"):
        run_train(run, pipeline(root, base_model=str(tmp_path / "m")))


def test_qlora_is_refused_cleanly_without_bitsandbytes_or_gpu(tmp_path):
    cfg = pipeline(tmp_path, quantize="4bit", base_model=str(tmp_path)).train
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DependencyError) as err:
        check_quantize(cfg, torch.device("cpu"))
    assert "QLoRA" in str(err.value) and "a CUDA GPU" in str(err.value)
    assert "bitsandbytes" in str(err.value)
    with pytest.raises(ConfigError, match="built-in model"):
        check_quantize(pipeline(tmp_path, quantize="4bit").train, torch.device("cpu"))


def test_device_auto_picks_what_is_there_and_cuda_without_gpu_is_refused(tmp_path):
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    if not torch.cuda.is_available():
        with pytest.raises(DependencyError, match="no CUDA device"):
            resolve_device("cuda")
    cfg = train_overrides(pipeline(tmp_path), device="auto", epochs=2)
    assert (cfg.train.device, cfg.train.epochs) == ("auto", 2)


def test_train_needs_the_features_stage(tmp_path):
    with RunDir.open(tmp_path / "run") as run, pytest.raises(StageError, match="mmdata build"):
        run_train(run, pipeline(tmp_path / "run"))
