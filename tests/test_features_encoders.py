"""Encoders: built-in descriptors on generated signals, tiny Hugging Face models, the loader."""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image, ImageDraw

from mmdata.config import EncoderConfig
from mmdata.errors import ConfigError, DependencyError, InputDataError
from mmdata.features.encoders import SPECTRAL_STATS, SensorWindow, build_encoder
from mmdata.features.loader import InlineItems, MediaFiles, iterate_batches


# -- generated media -----------------------------------------------------------------------
def part_image(scratch: bool = False, noise_seed: int = 0, shift: int = 0) -> bytes:
    """A conveyor-like scene: a grey plate on a dark belt, optionally with a thin scratch."""
    img = Image.new("RGB", (320, 240), (70, 72, 75))
    d = ImageDraw.Draw(img)
    cx, cy, s = 160 + shift, 160, 17
    d.rectangle(
        (cx - 1.5 * s, cy - 0.9 * s, cx + 1.5 * s, cy + 0.9 * s),
        fill=(180, 180, 184),
        outline=(120, 120, 124),
    )
    if scratch:
        d.line((cx - 0.9 * s, cy - 0.4 * s, cx + 0.9 * s, cy + 0.3 * s), fill=(22, 22, 24), width=3)
    rng = np.random.default_rng(noise_seed)
    arr = np.asarray(img).astype(float) + rng.normal(0, 2, (240, 320, 3))
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def wav(signal: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, signal.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def tone(freq: float, rate: int = 16000, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return 0.5 * np.sin(2 * math.pi * freq * t) + noise


def vibration(bearing: bool, rate: int = 5000, seconds: float = 2.0) -> np.ndarray:
    """Shaft harmonics + noise; with ``bearing``, BPFO impacts ringing a 1.95 kHz resonance."""
    t = np.arange(int(rate * seconds)) / rate
    x = 0.06 * np.sin(2 * math.pi * 25 * t) + 0.02 * np.sin(2 * math.pi * 50 * t)
    x = x + np.random.default_rng(1).normal(0, 0.01, t.size)
    if bearing:
        for t0 in np.arange(0, seconds, 1 / 88.6):
            dt = t - t0
            m = (dt >= 0) & (dt < 0.018)
            x[m] += 0.3 * np.exp(-dt[m] / 0.0015) * np.sin(2 * math.pi * 1950 * dt[m])
    return x.astype(np.float32)


def enc(name: str, modality, **kw):
    pooling = kw.pop("pooling", "mean")
    return build_encoder(
        EncoderConfig(encoder=name, pooling=pooling, batch_size=4), modality, device="cpu", **kw
    )


# -- thumbnail ------------------------------------------------------------------------------
def test_thumbnail_is_fixed_size_deterministic_and_sees_a_thin_scratch():
    e = enc("thumbnail", "image")
    clean, noisy, scratched, shifted = e.encode_items(
        [part_image(), part_image(noise_seed=1), part_image(scratch=True), part_image(shift=3)]
    )
    assert clean.shape == (e.dim,) == (397,)
    assert torch.equal(clean, e.encode_items([part_image()])[0])
    line = slice(2 + 256 + 64, 2 + 256 + 128)  # the 8x8 line-energy grid
    change = (scratched[line] - clean[line]).norm()
    # A scratch moves the line-energy grid 10x more than sensor noise or a 3-pixel move.
    assert change > 10 * (noisy[line] - clean[line]).norm()
    assert change > 10 * (shifted[line] - clean[line]).norm()


def test_thumbnail_separates_the_synthetic_factorys_scratched_parts():
    from mmdata.synth.camera import frame_times, render_frame
    from mmdata.synth.config import SynthConfig
    from mmdata.synth.plan import build_plan

    plan = build_plan(SynthConfig(assets=1, minutes=3, seed=0))
    asset = plan.assets[0]
    fault = next(f for f in asset.faults if f.fault_class == "surface_scratch")
    _, ref = frame_times(plan, asset, 0, 360)
    inside = [i for i in range(360) if fault.start_ns <= ref[i] < fault.end_ns][::8][:12]
    margin = 10**9
    outside = [
        i for i in range(360) if not fault.start_ns - margin <= ref[i] < fault.end_ns + margin
    ][::15][:12]

    def jpeg(i: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(render_frame(plan, asset, i)[0]).save(buf, "JPEG", quality=85)
        return buf.getvalue()

    e = enc("thumbnail", "image")
    line = slice(2 + 256 + 64, 2 + 256 + 128)

    def belt_band(v: torch.Tensor) -> float:  # grid row 5: where the parts travel
        return float(v[line].view(8, 8)[5].sum())

    clean = [belt_band(v) for v in e.encode_items([jpeg(i) for i in outside])]
    scratched = [belt_band(v) for v in e.encode_items([jpeg(i) for i in inside])]
    assert len(clean) == len(scratched) == 12
    assert min(scratched) > 2 * max(clean)


def test_a_corrupt_image_raises_input_data_error():
    with pytest.raises(InputDataError, match="image cannot be decoded"):
        enc("thumbnail", "image").encode_items([b"\xff\xd8\xff\xe0 truncated jpeg"])


# -- logmel -----------------------------------------------------------------------------------
def test_logmel_pools_to_a_fixed_vector_and_finds_a_tone_in_the_right_band():
    e = enc("logmel", "audio")
    low, high = e.encode_items([wav(tone(300), 16000), wav(tone(5000), 16000)])
    assert low.shape == high.shape == (64 + 64 + 8,)
    means_low, means_high = low[:64], high[:64]
    assert int(means_low.argmax()) < int(means_high.argmax())
    ratios = high[128:]
    assert float(ratios.sum()) == pytest.approx(1.0, abs=1e-4)
    assert int(ratios.argmax()) >= 5  # 5 kHz sits in the upper groups of 0-8 kHz mel bands


def test_logmel_resamples_and_keeps_the_matrix_with_pooling_none():
    e = enc("logmel", "audio", pooling="none")
    (m,) = e.encode_items([wav(tone(440, rate=8000, seconds=0.5), 8000)])
    assert m.shape == (0.5 * 16000 // 160 + 1, 64)
    assert enc("logmel", "audio").key != e.key  # pooling is part of the preprocessing


def test_logmel_batches_clips_of_different_lengths_exactly_like_one_at_a_time():
    e = enc("logmel", "audio")
    clips = [wav(tone(440 + 50 * i, seconds=0.3 + 0.1 * (i % 3), seed=i), 16000) for i in range(7)]
    batched = e.encode_items(clips, batch_size=7)
    single = [e.encode_items([c], batch_size=1)[0] for c in clips]
    for b, s in zip(batched, single, strict=True):
        torch.testing.assert_close(b, s, rtol=1e-5, atol=1e-5)


def test_builtin_encoders_give_the_same_bits_at_any_torch_thread_count():
    # A Ray actor runs one thread, a local run as many as the machine has: the cache must
    # not depend on it (the resampler's and the STFT's reductions split by thread count).
    clips = [wav(tone(440 + 90 * i, rate=22050, seconds=1.5, seed=i), 22050) for i in range(4)]
    sensors = [SensorWindow(vibration(bearing=i % 2 == 1)[None, :], 5000.0) for i in range(3)]
    images = [part_image(scratch=i % 2 == 1, noise_seed=i) for i in range(3)]
    cases = [("logmel", "audio", clips), ("spectral", "sensor", sensors),
             ("thumbnail", "image", images)]  # fmt: skip
    before = torch.get_num_threads()
    try:
        for name, modality, items in cases:
            got = []
            for threads in (1, 4, 8):
                torch.set_num_threads(threads)
                got.append(enc(name, modality).encode_items(items, batch_size=4))
            for other in got[1:]:
                for a, b in zip(got[0], other, strict=True):
                    assert torch.equal(a, b), name
    finally:
        torch.set_num_threads(before)


def test_builtin_preprocessing_options_change_the_key():
    assert enc("logmel", "audio").key != enc("logmel", "audio", options={"n_mels": 32}).key
    with pytest.raises(ConfigError, match="n_melz"):
        enc("logmel", "audio", options={"n_melz": 32})


# -- spectral ----------------------------------------------------------------------------------
def test_spectral_puts_a_120_hz_sine_in_the_band_that_holds_120_hz():
    e = enc("spectral", "sensor", pooling="none")
    rate = 5000.0
    t = np.arange(10000) / rate
    x = np.stack([np.sin(2 * math.pi * 120 * t), 0.1 * np.sin(2 * math.pi * 900 * t)])
    (f,) = e.encode_items([SensorWindow(x.astype(np.float32), rate)])
    assert f.shape == (2, 16 + len(SPECTRAL_STATS))
    nyq = rate / 2
    edges = [0.0, *(nyq * (1 / 256) ** (1 - i / 15) for i in range(16))]
    band = next(i for i in range(16) if edges[i] <= 120 < edges[i + 1])
    assert int(f[0, :16].argmax()) == band
    peak = 16 + SPECTRAL_STATS.index("peak")
    assert float(f[0, peak]) * nyq == pytest.approx(120, abs=1)
    assert float(f[1, peak]) * nyq == pytest.approx(900, abs=1)
    assert float(f[0, 16 + SPECTRAL_STATS.index("log_rms")]) == pytest.approx(
        math.log10(math.sqrt(0.5)), abs=1e-3
    )


def test_a_bpfo_modulated_resonance_raises_the_envelope_features():
    e = enc("spectral", "sensor", pooling="none")
    normal, worn = e.encode_items(
        [SensorWindow(vibration(False)[None], 5000.0), SensorWindow(vibration(True)[None], 5000.0)]
    )
    col = {n: 16 + i for i, n in enumerate(SPECTRAL_STATS)}
    assert worn[0, col["env_peak_ratio"]] > normal[0, col["env_peak_ratio"]] + 1.0
    assert worn[0, col["env_depth"]] > 2 * normal[0, col["env_depth"]]
    assert worn[0, col["kurtosis"]] > 2 * normal[0, col["kurtosis"]]
    assert float(worn[0, col["env_peak"]]) * 2500 == pytest.approx(88.6, abs=1.0)


def test_spectral_mean_pooling_flattens_channels_and_rejects_nan():
    e = enc("spectral", "sensor")
    (f,) = e.encode_items([SensorWindow(np.zeros((3, 256), np.float32), 1000.0)])
    assert f.shape == (3 * 26,)
    bad = np.zeros((1, 256), np.float32)
    bad[0, 5] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        e.encode_items([SensorWindow(bad, 1000.0)])


# -- Hugging Face models ------------------------------------------------------------------
def save_vit(folder: Path, seed: int = 0) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def save_wav2vec2(folder: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=10,
    )
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(folder)
    return folder


def save_whisper(folder: Path) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=64,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=50,
        max_target_positions=16,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
        decoder_start_token_id=2,
    )
    WhisperModel(cfg).save_pretrained(folder)
    WhisperFeatureExtractor(
        feature_size=80, sampling_rate=16000, chunk_length=1, n_samples=16000, nb_max_frames=100
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "vit": save_vit(root / "vit"),
        "w2v": save_wav2vec2(root / "w2v"),
        "whisper": save_whisper(root / "whisper"),
    }


def test_a_tiny_vit_loaded_by_path_is_deterministic_and_batch_equals_one_at_a_time(models):
    e = enc(str(models["vit"]), "image")
    images = [part_image(noise_seed=i, shift=5 * i) for i in range(6)]
    batched = e.encode_items(images, batch_size=6)
    again = enc(str(models["vit"]), "image").encode_items(images, batch_size=6)
    single = [e.encode_items([im], batch_size=1)[0] for im in images]
    assert batched[0].shape == (32,) and e.id == "hf:vit"
    for a, b, s in zip(batched, again, single, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, s, rtol=1e-5, atol=1e-5)
    tokens = enc(str(models["vit"]), "image", pooling="none").encode_items(images[:1])[0]
    assert tokens.shape == (1 + 16, 32)
    torch.testing.assert_close(tokens.mean(0), batched[0], rtol=1e-5, atol=1e-5)


def test_retrained_weights_at_the_same_path_change_the_key(models, tmp_path):
    path = save_vit(tmp_path / "m", seed=0)
    before = enc(str(path), "image")
    assert before.key == enc(str(models["vit"]), "image").key  # same weights, other folder
    save_vit(path, seed=1)
    after = enc(str(path), "image")
    assert after.revision != before.revision and after.key != before.key


def test_bf16_autocast_runs_the_gpu_code_path_on_cpu(models):
    images = [part_image(noise_seed=i) for i in range(3)]
    fp32 = enc(str(models["vit"]), "image")
    bf16 = enc(str(models["vit"]), "image", precision="bf16")
    assert (fp32.dtype, bf16.dtype) == ("float32", "bfloat16-autocast")
    assert fp32.key != bf16.key
    a, b = fp32.encode_items(images), bf16.encode_items(images)
    for x, y in zip(a, b, strict=True):
        assert y.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(x, y, dim=0) > 0.99


def test_a_tiny_wav2vec2_resamples_and_batches_exactly(models):
    e = enc(str(models["w2v"]), "audio")
    clips = [wav(tone(300 * (i + 1), rate=8000, seconds=0.25, seed=i), 8000) for i in range(4)]
    batched = e.encode_items(clips, batch_size=4)
    single = [e.encode_items([c], batch_size=1)[0] for c in clips]
    assert batched[0].shape == (32,) and e.sample_rate == 16000
    for b, s in zip(batched, single, strict=True):
        torch.testing.assert_close(b, s, rtol=1e-4, atol=1e-5)


def test_the_encoder_of_a_tiny_whisper_encodes_audio(models):
    e = enc(str(models["whisper"]), "audio")
    clips = [wav(tone(440, rate=8000, seconds=s), 8000) for s in (0.5, 0.8)]
    batched = e.encode_items(clips)
    assert e.id == "hf:whisper" and batched[0].shape == (32,)
    for b, c in zip(batched, clips, strict=True):
        torch.testing.assert_close(b, e.encode_items([c], batch_size=1)[0], rtol=1e-4, atol=1e-5)


def test_pickle_checkpoints_and_unknown_encoders_are_refused(tmp_path, monkeypatch):
    folder = tmp_path / "bin-only"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "vit"}')
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(DependencyError, match="never loads pickle"):
        enc(str(folder), "image")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DependencyError, match="not a built-in"):
        enc("nobody/no-such-model", "image")
    with pytest.raises(ConfigError, match="spectral"):
        enc("thumbnail", "sensor")


def test_device_cuda_without_cuda_is_a_clear_dependency_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DependencyError, match="'cuda' but torch sees no CUDA device") as err:
        build_encoder(EncoderConfig(encoder="thumbnail"), "image", device="cuda")
    assert "--device cpu" in (err.value.hint or "")
    assert build_encoder(EncoderConfig(encoder="thumbnail"), "image").device.type == "cpu"


# -- the loader --------------------------------------------------------------------------------
def test_loader_workers_give_the_same_features_as_in_process(tmp_path):
    images = [part_image(noise_seed=i, shift=i) for i in range(10)]
    images[3] = b"broken"
    paths = []
    for i, data in enumerate(images):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(data)
        paths.append(str(p))
    shas = [hashlib.sha256(d).hexdigest() for d in images]
    e = enc("thumbnail", "image")  # a Hugging Face processor in workers: test_features_stage

    def run(workers: int) -> tuple[dict[int, torch.Tensor], list]:
        feats: dict[int, torch.Tensor] = {}
        errors = []
        src = MediaFiles(paths, shas, [f"{i}.jpg" for i in range(10)])
        for batch in iterate_batches(src, e.preprocessor, batch_size=3, workers=workers):
            feats.update(e.encode_batch(batch))
            errors += [(pos, cls, batch.refs[pos]) for pos, cls, _ in batch.errors]
        return feats, errors

    zero, errs0 = run(0)
    two, errs2 = run(2)
    assert errs0 == errs2 == [(3, "InputDataError", "3.jpg")]
    assert sorted(zero) == sorted(two) == [i for i in range(10) if i != 3]
    for i in zero:
        assert torch.equal(zero[i], two[i])


def test_a_changed_file_fails_its_sha256_check(tmp_path):
    p = tmp_path / "a.jpg"
    p.write_bytes(part_image())
    src = MediaFiles([str(p)], ["0" * 64], ["a.jpg"])
    with pytest.raises(InputDataError, match="does not match its sha256"):
        src.fetch(0)
    batch = next(
        iterate_batches(InlineItems([b"x"]), enc("logmel", "audio").preprocessor, batch_size=2)
    )
    assert batch.errors[0][2].startswith("audio cannot be decoded")
