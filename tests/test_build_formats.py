"""Dataset formats: each written by mmdata and read back the way its own tool reads it.

* LLaVA JSON — read like LLaVA's ``LazySupervisedDataset`` (json.load, PIL from image_folder).
* HF messages Parquet — ``datasets.load_dataset("parquet")`` decodes images and audio, and a
  real ``transformers`` processor (tiny, built here) applies its chat template to ``messages``.
* LLaMA-Factory ShareGPT — LLaMA-Factory 0.9.5's own loader, in its own venv
  (``scripts/setup_llamafactory.sh``), reads our ``dataset_info.json`` unchanged.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PIL import Image

from mmdata.build.formats import FORMATS, LLAVA_AUDIO_REASON, write_formats
from mmdata.build.samples import Media, Sample
from mmdata.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
LF_VENV = Path(os.environ.get("LF_VENV", ROOT / ".venv-llamafactory"))


def png(color: str, size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def jpeg(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, "JPEG")
    return buf.getvalue()


def wav(sr: int = 16000, seconds: float = 0.25, hz: float = 440.0) -> bytes:
    t = np.arange(int(sr * seconds)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), sr, format="WAV")
    return buf.getvalue()


RED = Media("image", png("red"), "png", "frame")
BLUE = Media("image", png("blue"), "png", "spectrogram")
GREEN_JPG = Media("image", jpeg("green"), "jpg", "frame")
TONE = Media("audio", wav(), "wav", "audio")


def corpus() -> list[Sample]:
    """One of each shape: system prompt, two images, image + audio, text only, tensors."""
    return [
        Sample("r1", "describe", "describe/0", "<image>\nWhat do you see?", "A red square.",
               images=[RED], system="You are an inspector.", label="normal",
               target={"class": "normal"}, provenance={"asset_id": "press-1"}),
        Sample("r2", "defect_class", "defect_class/1",
               "<image><image>\nCompare the frame with the spectrogram.", "Scratch.",
               images=[RED, BLUE], label="scratch",
               tensors={"vib": np.arange(6, dtype=np.float32).reshape(2, 3)}),
        Sample("r3", "describe", "describe/1", "<image>\n<audio>\nDescribe the sound.",
               "A 440 Hz tone.", images=[GREEN_JPG], audios=[TONE], split="test"),
        Sample("r4", "notes_qa", "notes_qa/0", "What did the operator write?", "Nothing.",
               split="validation"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    report = write_formats(corpus(), out, list(FORMATS), name="press")
    return out, report


def by_record(samples: list[Sample]) -> dict[str, Sample]:
    return {s.record_id: s for s in samples}


# --- LLaVA -----------------------------------------------------------------------------------


def load_like_llava(data_path: Path, image_folder: Path) -> list[tuple[dict, list[Image.Image]]]:
    """LLaVA's LazySupervisedDataset.__getitem__, minus tokenization (list: LLaVA-NeXT/OV)."""
    with open(data_path) as fh:
        list_data_dict = json.load(fh)
    out = []
    for sources in list_data_dict:
        images = []
        if "image" in sources:
            files = sources["image"] if isinstance(sources["image"], list) else [sources["image"]]
            images = [Image.open(os.path.join(image_folder, f)).convert("RGB") for f in files]
        out.append((sources, images))
    return out


def test_llava_json_loads_like_llava_with_out_dir_as_image_folder(export):
    out, report = export
    train = load_like_llava(out / "llava" / "train.json", image_folder=out)
    val = load_like_llava(out / "llava" / "validation.json", image_folder=out)
    assert report.written["llava"] == {"train": 2, "validation": 1, "test": 0}
    for sources, images in train + val:
        human, gpt = sources["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert human["value"].count("<image>") == len(images)
    (one, [red]), (two, pair) = sorted(train, key=lambda t: len(t[1]))
    assert isinstance(one["image"], str) and red.getpixel((0, 0)) == (255, 0, 0)
    assert one["conversations"][0]["value"].startswith("You are an inspector.\n\n<image>")
    assert isinstance(two["image"], list) and [im.getpixel((0, 0)) for im in pair] == [
        (255, 0, 0), (0, 0, 255)]  # fmt: skip
    (text_only, no_images), = val  # fmt: skip
    assert "image" not in text_only and no_images == []


def test_llava_leaves_out_audio_samples_with_a_reason_but_other_formats_keep_them(export):
    out, report = export
    audio_id = by_record(corpus())["r3"].sample_id
    assert (audio_id, "llava", LLAVA_AUDIO_REASON) in report.rejected
    assert not (out / "llava" / "test.json").exists()  # the only test sample has audio
    assert report.written["llama_factory"]["test"] == report.written["messages"]["test"] == 1
    assert report.quarantined == 0 and report.samples_out == report.samples_in == 4


# --- HF messages Parquet ---------------------------------------------------------------------


def test_messages_parquet_loads_with_datasets_into_decoded_images_and_audio(export, tmp_path):
    import datasets

    out, _ = export
    files = {s: str(out / "messages" / f"{s}.parquet") for s in ("train", "validation", "test")}
    dsd = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))
    feats = dsd["train"].features
    assert isinstance(feats["images"], datasets.List)
    assert isinstance(feats["images"].feature, datasets.Image)
    assert isinstance(feats["audios"].feature, datasets.Audio)

    rows = {r["record_id"]: r for split in dsd.values() for r in split}
    r1, r2, r3, r4 = (rows[k] for k in ("r1", "r2", "r3", "r4"))
    assert [im.getpixel((0, 0)) for im in r2["images"]] == [(255, 0, 0), (0, 0, 255)]
    assert r3["images"][0].size == (40, 30) and r4["images"] == r4["audios"] == []
    samples = r3["audios"][0].get_all_samples()  # torchcodec AudioDecoder
    assert samples.sample_rate == 16000 and samples.data.shape[-1] == 4000

    assert r1["messages"] == [
        {"role": "system", "content": [{"type": "text", "text": "You are an inspector."}]},
        {"role": "user", "content": [{"type": "image", "text": None},
                                     {"type": "text", "text": "\nWhat do you see?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
    ]  # fmt: skip
    assert [p["type"] for p in r3["messages"][0]["content"]] == ["image", "text", "audio", "text"]
    assert json.loads(r1["target"]) == {"class": "normal"}
    assert json.loads(r1["provenance"]) == {"asset_id": "press-1"}
    assert (r1["task"], r1["template"], r1["label"]) == ("describe", "describe/0", "normal")
    vib = r2["tensors"][0]
    assert vib["name"] == "vib" and vib["shape"] == [2, 3]
    assert vib["values"] == [0, 1, 2, 3, 4, 5] and r1["tensors"] == []


CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: "
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'audio' %}<audio>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def tiny_llava_processor(path: Path, corpus_text: list[str]):
    """A real LlavaProcessor: BPE tokenizer trained here + CLIP image processor, saved."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<image>", "<audio>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus_text, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<pad>", extra_special_tokens={"image_token": "<image>"},
    )  # fmt: skip
    images = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    LlavaProcessor(
        image_processor=images, tokenizer=tokenizer, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(path)  # fmt: skip


def test_a_transformers_processor_applies_its_chat_template_to_messages(export, tmp_path):
    import datasets
    from transformers import AutoProcessor

    out, _ = export
    ds = datasets.load_dataset(
        "parquet", data_files=str(out / "messages" / "train.parquet"),
        cache_dir=str(tmp_path / "hf"), split="train",
    )  # fmt: skip
    tiny_llava_processor(tmp_path / "proc", [s.prompt + s.response for s in corpus()])
    processor = AutoProcessor.from_pretrained(tmp_path / "proc")
    assert type(processor).__name__ == "LlavaProcessor"
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    for row in ds:
        text = processor.apply_chat_template(row["messages"], tokenize=False)
        assert text.count("<image>") == len(row["images"]) > 0
        assert "user: " in text and "assistant: " in text
        enc = processor(text=text, images=row["images"], return_tensors="np")
        # (28 / 14)^2 patches + 1 CLS - 1 ("default" strategy) = 4 tokens an image
        assert (enc["input_ids"] == image_id).sum() == 4 * len(row["images"])
        assert enc["pixel_values"].shape == (len(row["images"]), 3, 28, 28)


# --- LLaMA-Factory ---------------------------------------------------------------------------

LF_SCRIPT = r'''
"""Load an mmdata export with LLaMA-Factory's own data loading; print RESULT <json>."""
import json, os, sys
from pathlib import Path

dataset_dir, model_dir = sys.argv[1], Path(sys.argv[2])
info = json.loads((Path(dataset_dir) / "dataset_info.json").read_text())
names = sorted(info)

# A tiny local processor (no downloads): BPE tokenizer + CLIP image processor.
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast,
                          Seq2SeqTrainingArguments)
bpe = Tokenizer(models.BPE(unk_token="<unk>"))
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
texts = [Path(dataset_dir, info[n]["file_name"]).read_text() for n in names]
bpe.train_from_iterator(texts, trainers.BpeTrainer(
    vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<image>", "<audio>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>",
                                    eos_token="</s>", pad_token="<pad>",
                                    extra_special_tokens={"image_token": "<image>"})
LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 28},
                                                  crop_size={"height": 28, "width": 28}),
               tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
               num_additional_image_tokens=1).save_pretrained(model_dir)

from llamafactory.data import get_template_and_fix_tokenizer
from llamafactory.data.loader import _load_single_dataset, get_dataset
from llamafactory.data.mm_plugin import get_mm_plugin
from llamafactory.data.parser import get_dataset_list
from llamafactory.hparams import DataArguments, ModelArguments
from llamafactory.model import load_tokenizer

training_args = Seq2SeqTrainingArguments(output_dir=str(model_dir / "out"), report_to=[])
model_args = ModelArguments(model_name_or_path=str(model_dir))
data_args = DataArguments(dataset_dir=dataset_dir, dataset=names, template="llava")
# The plugin's own placeholder check and media readers (PIL for images, torchaudio for audio).
plugin = get_mm_plugin("base", image_token="<image>", audio_token="<audio>")
aligned = {}
for name, attr in zip(names, get_dataset_list(names, dataset_dir)):
    rows = []
    for ex in _load_single_dataset(attr, model_args, data_args, training_args):
        images, audios = ex["_images"] or [], ex["_audios"] or []
        plugin._validate_messages(ex["_prompt"] + ex["_response"], images, [], audios)
        pics = plugin._regularize_images(images, image_max_pixels=1 << 20, image_min_pixels=0)
        sounds = plugin._regularize_audios(audios, sampling_rate=16000)
        rows.append({**ex, "image_sizes": [list(p.size) for p in pics["images"]],
                     "audio_lengths": [len(a) for a in sounds["audios"]],
                     "media_exist": all(os.path.isfile(p) for p in images + audios)})
    aligned[name] = rows

# The whole SFT preprocessing (LLaVA template + processor) on the datasets without audio.
image_only = [n for n in names if not any(r["_audios"] for r in aligned[n])]
tm = load_tokenizer(model_args)
data_args = DataArguments(dataset_dir=dataset_dir, dataset=image_only, template="llava")
template = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tm)
image_id = tm["tokenizer"].convert_tokens_to_ids("<image>")
train = module["train_dataset"]
tokenized = {"datasets": image_only, "processor": type(tm["processor"]).__name__,
             "image_tokens": sorted(r["input_ids"].count(image_id) for r in train),
             "supervised": all(any(t != -100 for t in r["labels"]) for r in train)}
print("RESULT " + json.dumps({"aligned": aligned, "tokenized": tokenized}))
'''


@pytest.fixture(scope="module")
def lf_python() -> Path:
    """``.venv-llamafactory/bin/python``, installing it once (idempotent; ~75 s when cold)."""
    setup = subprocess.run(
        [str(ROOT / "scripts" / "setup_llamafactory.sh")],
        env={**os.environ, "LF_VENV": str(LF_VENV)},
        capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert setup.returncode == 0, setup.stderr[-4000:]
    return LF_VENV / "bin" / "python"


@pytest.mark.timeout(1800)
def test_llama_factory_reads_dataset_info_and_sharegpt_with_its_own_loader(
    export, lf_python, tmp_path
):
    out, _ = export
    script = tmp_path / "lf_check.py"
    script.write_text(LF_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [str(lf_python), str(script), str(out / "llama_factory"), str(tmp_path / "model")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    aligned = result["aligned"]
    assert sorted(aligned) == ["press_test", "press_train", "press_validation"]

    first, two = sorted(aligned["press_train"], key=lambda r: len(r["_images"]))
    assert first["_system"] == "You are an inspector."
    assert first["_prompt"] == [{"role": "user", "content": "<image>\nWhat do you see?"}]
    assert first["_response"] == [{"role": "assistant", "content": "A red square."}]
    assert first["image_sizes"] == [[32, 24]] and two["image_sizes"] == [[32, 24], [32, 24]]
    (with_audio,) = aligned["press_test"]
    assert with_audio["image_sizes"] == [[40, 30]] and with_audio["audio_lengths"] == [4000]
    assert all(Path(p).resolve().parent == (out / "media").resolve()
               for p in with_audio["_images"] + with_audio["_audios"])  # fmt: skip
    assert all(r["media_exist"] for rows in aligned.values() for r in rows)
    (text_only,) = aligned["press_validation"]
    assert text_only["_images"] is None and text_only["_audios"] is None

    tok = result["tokenized"]
    assert tok["processor"] == "LlavaProcessor" and tok["supervised"]
    assert tok["image_tokens"] == [0, 4, 8]  # text only, 1 image, 2 images (4 tokens each)


# --- Layout, validation, determinism, resume -------------------------------------------------


def test_each_medium_is_stored_once_and_indexed_in_media_parquet(export):
    out, report = export
    index = pq.read_table(out / "media.parquet").to_pylist()
    assert [r["sha256"] for r in index] == sorted(m.sha256 for m in (RED, BLUE, GREEN_JPG, TONE))
    assert report.media == {"distinct": 4, "written": 4, "reused": 0}
    for row in index:
        data = (out / row["path"]).read_bytes()
        assert row["path"] == f"media/{row['sha256']}.{row['ext']}"
        assert Media(row["kind"], data, row["ext"], row["role"]).sha256 == row["sha256"]
    assert {r["kind"] for r in index} == {"image", "audio"}
    assert sorted(p.name for p in (out / "media").iterdir()) == sorted(
        r["path"].split("/")[1] for r in index)  # fmt: skip


def test_placeholder_mismatch_is_rejected_from_every_format_with_the_reason(tmp_path):
    bad = Sample("r9", "describe", "describe/0", "<image><image> two?", "x", images=[RED])
    audio_bad = Sample("r8", "describe", "describe/0", "Listen.", "x", audios=[TONE])
    good = corpus()[0]
    report = write_formats([bad, audio_bad, good], tmp_path, list(FORMATS))
    assert sorted(report.rejected) == sorted([
        (bad.sample_id, "*", "2 <image> placeholder(s) but 1 image(s) attached"),
        (audio_bad.sample_id, "*", "0 <audio> placeholder(s) but 1 audio(s) attached"),
    ])  # fmt: skip
    assert report.samples_in == 3 and report.samples_out == 1 and report.quarantined == 2
    for fmt in FORMATS:
        assert report.written[fmt]["train"] == 1
    written = json.loads((tmp_path / "llama_factory" / "train.json").read_text())
    assert [r["id"] for r in written] == [good.sample_id]
    assert report.media["distinct"] == 1  # the rejected samples' media are not stored


@pytest.mark.parametrize(
    ("medium", "reason"),
    [
        (Media("image", png("red")[:60], "png", "frame"), "image does not decode"),
        (Media("image", jpeg("red"), "png", "frame"), "JPEG data in a file named .png"),
        (Media("image", b"", "png", "frame"), "medium is missing"),
        (Media("image", png("red"), "gif", "frame"), "extension 'gif' is not one of"),
        (Media("audio", png("red"), "png", "frame"), "is a medium of kind 'audio'"),
    ],
)
def test_unusable_image_is_rejected_with_a_reason(tmp_path, medium, reason):
    s = Sample("r1", "describe", "describe/0", "<image>What?", "x", images=[medium])
    report = write_formats([s], tmp_path, list(FORMATS))
    ((sid, fmt, why),) = report.rejected
    assert (sid, fmt) == (s.sample_id, "*") and reason in why
    assert report.written["messages"] == {"train": 0, "validation": 0, "test": 0}
    assert not (tmp_path / "messages" / "train.parquet").exists()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (wav()[:2000], "audio is truncated: its data chunk lacks 6044 bytes"),
        (b"RIFF" + bytes(100), "audio does not decode"),
    ],
)
def test_truncated_or_garbled_audio_is_rejected(tmp_path, data, reason):
    s = Sample("r1", "describe", "describe/0", "<audio>Hear?", "x",
               audios=[Media("audio", data, "wav", "audio")])  # fmt: skip
    ((_, fmt, why),) = write_formats([s], tmp_path, ["messages"]).rejected
    assert fmt == "*" and reason in why


def test_unknown_split_and_duplicate_ids_are_rejected(tmp_path):
    s1, s2 = corpus()[0], corpus()[0]
    s2.split = "test"  # the same record/task/phrasing in two splits would leak
    odd = Sample("r5", "t", "t/0", "Hi", "x", split="holdout")
    report = write_formats([odd, s2, s1], tmp_path, ["llava"])
    reasons = {r for _, _, r in report.rejected}
    assert "duplicate sample_id (already written in split 'train')" in reasons
    assert "split 'holdout' is not one of train, validation, test" in reasons
    assert report.written["llava"] == {"train": 1, "validation": 0, "test": 0}


def test_output_is_byte_identical_whatever_the_input_order(tmp_path):
    shuffled = corpus()
    random.Random(7).shuffle(shuffled)
    a = write_formats(corpus(), tmp_path / "a", list(FORMATS))
    b = write_formats(shuffled, tmp_path / "b", list(FORMATS))
    assert a.to_json() == b.to_json()
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert len(files) == 4 + 1 + 2 + 4 + 3  # media, index, llava, llama_factory, messages
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    lf = (tmp_path / "a" / "llama_factory" / "train.json").read_text()
    assert lf.startswith('[\n{"audios":[],"id":"') and lf.endswith("}\n]\n")


def test_rerun_resumes_without_rewriting_media_and_repairs_a_damaged_one(tmp_path):
    first = write_formats(corpus(), tmp_path, list(FORMATS))
    media = {p: p.stat().st_ino for p in (tmp_path / "media").iterdir()}
    again = write_formats(corpus(), tmp_path, list(FORMATS))
    assert again.media == {"distinct": 4, "written": 0, "reused": 4}
    assert {p: p.stat().st_ino for p in media} == media  # same files, untouched
    assert again.to_json()["files"] == first.to_json()["files"]

    damaged = tmp_path / "media" / RED.filename
    damaged.write_bytes(RED.data[:-1] + b"\0")  # same size, other hash
    third = write_formats(corpus(), tmp_path, list(FORMATS))
    assert third.media == {"distinct": 4, "written": 1, "reused": 3}
    assert damaged.read_bytes() == RED.data


def test_a_split_that_became_empty_loses_its_stale_file(tmp_path):
    write_formats(corpus(), tmp_path, ["messages", "llama_factory"])
    assert (tmp_path / "messages" / "validation.parquet").exists()
    only_train = [s for s in corpus() if s.split == "train"]
    report = write_formats(only_train, tmp_path, ["messages", "llama_factory"])
    assert not (tmp_path / "messages" / "validation.parquet").exists()
    info = json.loads((tmp_path / "llama_factory" / "dataset_info.json").read_text())
    assert sorted(info) == ["mmdata_train"] and "messages/train.parquet" in report.files


def test_messages_without_tensors_have_no_tensors_column_and_can_reference_media(tmp_path):
    plain = [s for s in corpus() if not s.tensors]
    write_formats(plain, tmp_path, ["messages"], embed_media=False)
    table = pq.read_table(tmp_path / "messages" / "train.parquet")
    assert "tensors" not in table.column_names
    (img,) = table.column("images").to_pylist()[0]
    assert img["bytes"] is None and Path(img["path"]) == (tmp_path / "media" / RED.filename)
    meta = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert meta["audios"] == {"_type": "List", "feature": {"_type": "Audio"}}


def test_unknown_format_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="unknown dataset format"):
        write_formats(corpus(), tmp_path, ["alpaca"])
