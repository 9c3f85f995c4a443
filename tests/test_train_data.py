"""The trainer's inputs: samples + features → examples, tokens and batches.

Also home of :func:`tiny_run`, the small run directory the trainer tests share: a
``dataset`` stage (``samples.parquet``) and a ``features`` stage (real feature cache + index)
where each fault class shows in one modality only, as in the synthetic factory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmdata.build.samples import SAMPLES_SCHEMA
from mmdata.config import PipelineConfig
from mmdata.errors import InputDataError
from mmdata.features.cache import FeatureCache, encoder_key, entry_key
from mmdata.features.stage import INDEX_SCHEMA
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import StageSpec, run_stage
from mmdata.train.data import (
    IGNORE,
    MODALITIES,
    FeatureBank,
    collate,
    encode,
    epoch_order,
    read_examples,
)
from mmdata.train.tokenizer import PromptFormat, load_tokenizer, train_tokenizer

CLASSES = ("normal", "scratch", "rattle", "wear")
#: which modality shows each fault (its first dims carry the signal)
SHOWS = {"scratch": "image", "rattle": "audio", "wear": "sensor"}
DIMS = {"image": 12, "audio": 8, "sensor": 6}
PROMPT = "<image><audio>\nHow is {asset}? One of: " + ", ".join(sorted(CLASSES)) + "."

#: A tiny trainer config: fast on CPU, still learns the tiny dataset.
TINY_TRAIN: dict[str, Any] = {
    "device": "cpu",
    "threads": 1,
    "model": {
        "hidden_size": 128,
        "layers": 2,
        "heads": 4,
        "intermediate_size": 256,
        "vocab_size": 400,
    },
    "tokens_per_medium": 1,
    "projector_hidden": 64,
    "batch_size": 16,
    "epochs": 6,
    "warmup_steps": 4,
    "eval": {"batch_size": 64, "max_new_tokens": 8},
}


def _sha(x: np.ndarray) -> str:
    return hashlib.sha256(x.tobytes()).hexdigest()


def _samples(n_per_class: dict[str, int], seed: int) -> tuple[list[dict], dict]:
    """Rows of samples.parquet and the feature vector of every medium."""
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    feats: dict[str, dict[str, np.ndarray]] = {m: {} for m in MODALITIES}
    i = 0
    for split, n in n_per_class.items():
        for c in CLASSES:
            for _ in range(n):
                vec = {m: rng.normal(0, 1, DIMS[m]).astype(np.float32) for m in MODALITIES}
                vec["sensor"] *= 20  # very different scales, as real features
                if c in SHOWS:
                    vec[SHOWS[c]][:3] += 3.0 * (20 if SHOWS[c] == "sensor" else 1)
                shas = {m: _sha(v) for m, v in vec.items()}
                for m in MODALITIES:
                    feats[m][shas[m]] = vec[m]
                asset = f"press-{i % 3 + 1}"
                rows.append(
                    {
                        "sample_id": f"s{i:04d}",
                        "record_id": f"r{i:04d}",
                        "asset_id": asset,
                        "window_start_ns": i * 2_000_000_000,
                        "window_end_ns": (i + 1) * 2_000_000_000,
                        "split": split,
                        "task": "defect_class",
                        "template": "defect_class/0",
                        "label": c,
                        "target": json.dumps({"class": c}),
                        "prompt": PROMPT.format(asset=asset),
                        "response": c,
                        "images": [shas["image"]],
                        "image_roles": ["frame"],
                        "audios": [shas["audio"]],
                        "sensors": [shas["sensor"]],
                    }
                )
                i += 1
    return rows, feats


def _write_features(out: Path, feats: dict[str, dict[str, np.ndarray]]) -> int:
    rows = []
    for m in MODALITIES:
        ek = encoder_key(f"tiny-{m}", "1", "p")
        shas = sorted(feats[m])
        keys = [entry_key(s, ek) for s in shas]
        with FeatureCache(out / "cache", ek) as cache:
            cache.put(keys, [torch.from_numpy(feats[m][s]) for s in shas])
            cache.flush()
            for s, k in zip(shas, keys, strict=True):
                shard, entry = cache.locate(k)
                rows.append(
                    {
                        "sha256": s,
                        "modality": m,
                        "role": None,
                        "record_id": None,
                        "stream_id": None,
                        "encoder": f"tiny-{m}",
                        "encoder_id": f"tiny-{m}",
                        "encoder_key": ek,
                        "entry_key": k,
                        "dtype": entry.dtype,
                        "shape": list(entry.shape),
                        "dim": DIMS[m],
                        "shard": shard.relative_to(out).as_posix(),
                        "tensor": k,
                        "checksum": entry.checksum,
                    }
                )
    pq.write_table(pa.Table.from_pylist(rows, INDEX_SCHEMA), out / "index.parquet")
    return len(rows)


def tiny_run(
    root: Path,
    n_per_class: dict[str, int] | None = None,
    seed: int = 0,
    extra_rows: list[dict] | None = None,
) -> Path:
    """A run dir with completed ``dataset`` and ``features`` stages (see module docstring)."""
    n_per_class = n_per_class or {"train": 32, "validation": 4, "test": 6}
    rows, feats = _samples(n_per_class, seed)
    rows += extra_rows or []

    def dataset(ctx):
        pq.write_table(pa.Table.from_pylist(rows, SAMPLES_SCHEMA), ctx.out_dir / "samples.parquet")
        return StageCounts(in_=len(rows), out=len(rows))

    def features(ctx):
        n = _write_features(ctx.out_dir, feats)
        return StageCounts(in_=n, out=n)

    with RunDir.open(root) as run:
        run_stage(run, StageSpec(name="dataset", config={"seed": seed}), dataset)
        run_stage(run, StageSpec(name="features", config={"seed": seed}), features)
    return root


def pipeline(root: Path, **train: Any) -> PipelineConfig:
    """A pipeline config for ``root`` with the tiny trainer (``train`` overrides it)."""
    return PipelineConfig.model_validate(
        {
            "run_dir": str(root),
            "assets": {"press-1": {"sources": [{"connector": "notes", "path": "n.jsonl"}]}},
            "build": {"sensors_as": "tensor"},
            "train": {**TINY_TRAIN, **train},
        }
    )


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([PROMPT.format(asset="press-1"), *CLASSES] * 4, 300)


def test_examples_put_sensor_slots_first_and_keep_placeholder_order(tmp_path):
    root = tiny_run(tmp_path / "run", {"train": 1})
    examples, bad = read_examples(root / "dataset", ["defect_class"], ["train"])
    assert len(examples) == 4 and bad == []
    ex = examples[0]
    assert ex.prompt.startswith("<sensor><image><audio>\n")
    assert [(s.source, s.kind) for s in ex.slots] == [
        ("sensor", "sensor"),
        ("image", "image"),
        ("audio", "audio"),
    ]
    assert ex.target == {"class": ex.label}


def test_a_sample_whose_placeholders_and_media_disagree_is_rejected_with_a_reason(tmp_path):
    bad_row = {
        "sample_id": "bad",
        "record_id": "r",
        "asset_id": "a",
        "window_start_ns": 0,
        "window_end_ns": 1,
        "split": "train",
        "task": "defect_class",
        "template": "t/0",
        "label": "normal",
        "target": "{}",
        "prompt": "<image><image>?",
        "response": "normal",
        "images": ["x"],
        "image_roles": ["frame"],
        "audios": [],
        "sensors": [],
    }
    root = tiny_run(tmp_path / "run", {"train": 1}, extra_rows=[bad_row])
    examples, bad = read_examples(root / "dataset", ["defect_class"], ["train"])
    assert len(examples) == 4
    assert [(b.sample_id, b.split) for b in bad] == [("bad", "train")]
    assert "2 <image> / 0 <audio> placeholders but 1 image(s)" in bad[0].message


def test_spectrogram_images_are_sensor_slots_read_by_the_image_projector():
    from mmdata.train.data import prompt_slots

    slots = prompt_slots("<image><image><audio>x", ["frame", "spectrogram"], 1, 0)
    assert [(s.source, s.kind) for s in slots] == [
        ("image", "image"),
        ("sensor", "image"),
        ("audio", "audio"),
    ]


def test_feature_bank_loads_each_medium_once_and_marks_missing_ones(tmp_path):
    root = tiny_run(tmp_path / "run", {"train": 2})
    examples, _ = read_examples(root / "dataset", ["defect_class"], ["train"])
    from mmdata.train.data import Slot

    ghost = Slot("image", "image", "0" * 64)
    bank = FeatureBank(root / "features", [s for e in examples for s in e.slots] + [ghost])
    assert bank.dims == DIMS
    assert bank.row(ghost) == 0 and bank.missing == 1
    assert torch.equal(bank.tables["image"][0], torch.zeros(DIMS["image"]))
    _, std = bank.stats(examples)["sensor"]
    assert float(std.mean()) > 5  # raw sensor features are ~20x larger: projectors standardize


def test_prompt_format_and_left_padded_batches(tmp_path, tokenizer):
    root = tiny_run(tmp_path / "run", {"train": 1})
    examples, _ = read_examples(root / "dataset", ["defect_class"], ["train"])
    fmt = PromptFormat(tokenizer, tokens_per_medium=2)
    enc, bad = encode(examples, fmt, max_length=512)
    assert bad == [] and len(enc) == 4
    bank = FeatureBank(root / "features", [s for e in examples for s in e.slots])
    b = collate(enc, examples, bank, fmt.pad_id, with_response=True)
    assert (
        b.input_ids.shape[0] == 4 and b.attention_mask[:, -1].all()
    )  # left padded: all end together
    # the last ids are the response + eos, and only they are targets
    for row, it in enumerate(enc):
        r = it.response_ids
        assert b.input_ids[row, -len(r) :].tolist() == r
        assert b.targets[row].tolist()[-len(r) :] == r
        assert (b.targets[row, : b.targets.shape[1] - len(r)] == IGNORE).all()
        assert tokenizer.decode(r, skip_special_tokens=True) == examples[it.index].response
    assert b.n_targets == sum(len(it.response_ids) for it in enc)
    # 3 slot groups per sample, each pointing at pad ids inside the attended part
    assert len(b.slot_pos) == 12
    assert (b.input_ids[b.slot_batch, b.slot_pos] == fmt.pad_id).all()
    assert b.attention_mask[b.slot_batch, b.slot_pos].all()
    assert sorted(b.kind_feats) == ["audio", "image", "sensor"]


def test_too_long_samples_are_rejected_not_cut(tmp_path, tokenizer):
    root = tiny_run(tmp_path / "run", {"train": 1})
    examples, _ = read_examples(root / "dataset", ["defect_class"], ["train"])
    enc, bad = encode(examples, PromptFormat(tokenizer, 1), max_length=16)
    assert enc == [] and len(bad) == 4 and "more than train.max_length = 16" in bad[0].message


def test_trained_tokenizer_round_trips_through_save_pretrained(tmp_path, tokenizer):
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    again = load_tokenizer(tmp_path / "tok")
    text = "Which condition does press-9 show? 不在時は連絡"
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert again.decode(again(text, add_special_tokens=False)["input_ids"]) == text
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [
        "chat_template.jinja",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert epoch_order(50, 3, 2) == epoch_order(50, 3, 2)
    assert sorted(epoch_order(50, 3, 2)) == list(range(50))
    assert epoch_order(50, 3, 2) != epoch_order(50, 3, 3)


def test_missing_features_index_is_a_clear_error(tmp_path):
    with pytest.raises(InputDataError, match="no features index"):
        FeatureBank(tmp_path, [])
