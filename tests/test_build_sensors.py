"""Sensors for a language model: text summaries that expose the physics, and PNG renderings
that are deterministic, metadata-free and oriented (time left→right, frequency bottom→top).

Signals are real numpy signals: sines, an amplitude-modulated carrier, and a bearing-fault
impulse train ringing a structural resonance like the synthetic factory's accelerometer.
"""

from __future__ import annotations

import io
import re
import struct

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mmdata.build.sensors import (
    DB_RANGE,
    audio_spectrogram_png,
    decode_wav,
    render_spectrogram,
    render_waveform,
    sensor_tensor,
    stream_stats,
    summarize,
)
from mmdata.errors import InputDataError

RATE = 5000.0
T = np.arange(10_000) / RATE  # a 2 s window


def line_of(summary: str, channel: str) -> str:
    return next(x for x in summary.splitlines() if x.startswith(f"{channel}:"))


def freqs(line: str) -> list[int]:
    m = re.search(r" f=([\d,]+)Hz", line)
    return [int(v) for v in m.group(1).split(",")] if m else []


def envelope(line: str) -> tuple[int, float] | None:
    m = re.search(r" env=(\d+)Hz\(x([\d.e+]+)\)", line)
    return (int(m.group(1)), float(m.group(2))) if m else None


def bearing_signal(bpfo: float | None, seed: int = 0) -> np.ndarray:
    """Shaft harmonics + noise (+ impacts at ``bpfo`` ringing 1.9 kHz, 1.5 ms decay)."""
    rng = np.random.default_rng(seed)
    x = 0.06 * np.sin(2 * np.pi * 25 * T) + 0.025 * np.sin(2 * np.pi * 50 * T + 1)
    x = x + rng.normal(0, 0.01, T.size)
    if bpfo:
        impacts = np.arange(0.003, 2.0, 1.0 / bpfo)
        impacts += rng.normal(0, 1e-4, impacts.size)  # slip jitter
        for t0 in impacts:
            dt = T - t0
            on = (dt >= 0) & (dt < 0.02)
            x[on] += 0.3 * np.exp(-dt[on] / 0.0015) * np.sin(2 * np.pi * 1900 * dt[on])
    return (x + 1.0).astype(np.float32)  # +1 g of gravity, as on a z axis


# -- text summary --------------------------------------------------------------------------


def test_the_summary_finds_a_known_sines_frequency_and_its_statistics():
    # 137.3 Hz falls between FFT bins (0.5 Hz apart): the peak is interpolated
    x = 0.5 * np.sin(2 * np.pi * 137.3 * T) + np.random.default_rng(1).normal(0, 1e-3, T.size)
    text = summarize([x.astype(np.float32)], RATE, ["ax"])
    head, line = text.splitlines()
    assert head == "5000 Hz, 2.00 s, 1 channel(s)"
    assert freqs(line)[0] == 137
    st = stream_stats([x], RATE, ["ax"])[0]
    assert st.freqs_hz[0] == pytest.approx(137.3, abs=0.1)
    assert st.rms == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert st.crest == pytest.approx(np.sqrt(2), rel=0.05)
    assert st.kurtosis == pytest.approx(1.5, rel=0.05)  # a sine's kurtosis


def test_the_top_three_frequencies_are_the_strongest_lines_strongest_first():
    x = (np.sin(2 * np.pi * 25 * T) + 0.4 * np.sin(2 * np.pi * 310 * T)
         + 0.1 * np.sin(2 * np.pi * 1200 * T) + 0.02 * np.sin(2 * np.pi * 700 * T))  # fmt: skip
    assert freqs(line_of(summarize([x], RATE, ["ay"]), "ay")) == [25, 310, 1200]


def test_white_noise_has_no_dominant_frequency_and_a_pure_tone_no_envelope_line():
    noise = line_of(summarize([np.random.default_rng(2).normal(0, 1, T.size)], RATE, ["n"]), "n")
    assert freqs(noise) == []
    tone = line_of(summarize([np.sin(2 * np.pi * 1900 * T)], RATE, ["t"]), "t")
    assert freqs(tone) == [1900]
    assert envelope(tone) is None  # a constant envelope has no line


def test_the_envelope_peak_of_an_amplitude_modulated_carrier_is_the_modulation():
    x = (1 + 0.5 * np.sin(2 * np.pi * 88 * T)) * np.sin(2 * np.pi * 1900 * T)
    line = line_of(summarize([x], RATE, ["az"]), "az")
    assert 1900 in freqs(line) and 88 not in freqs(line)  # the plain spectrum hides it
    env = envelope(line)
    assert env is not None
    assert env[0] == 88
    assert env[1] > 100


def test_a_bearing_fault_shows_in_text_as_an_envelope_line_at_bpfo():
    faulty = summarize([bearing_signal(88.0)], RATE, ["az"])
    normal = summarize([bearing_signal(None)], RATE, ["az"])
    f_line, n_line = line_of(faulty, "az"), line_of(normal, "az")
    f_env, n_env = envelope(f_line), envelope(n_line)
    assert f_env is not None and n_env is not None
    assert abs(f_env[0] - 88) <= 1 and f_env[1] >= 20
    assert n_env[1] < 10  # normal: the envelope spectrum is flat noise
    f_stats, n_stats = (
        stream_stats([bearing_signal(88.0)], RATE, ["az"])[0],
        stream_stats([bearing_signal(None)], RATE, ["az"])[0],
    )
    assert f_stats.kurtosis > 5 > n_stats.kurtosis  # impacts are impulsive
    assert abs(f_stats.mean - 1.0) < 0.01  # gravity stays in the mean, not in the AC figures
    assert "mean=1 " in f_line


def test_a_summary_has_a_line_per_channel_and_counts_non_finite_samples():
    x = np.stack([np.sin(2 * np.pi * 40 * T), np.cos(2 * np.pi * 60 * T), T * 0 + 2.0])
    x[1, 100:110] = np.nan
    text = summarize(list(x), RATE, ["ax", "ay", "az"])
    assert [ln.split(":")[0] for ln in text.splitlines()[1:]] == ["ax", "ay", "az"]
    assert "nan=10" in line_of(text, "ay") and "nan" not in line_of(text, "ax")
    assert freqs(line_of(text, "ay")) == [60]
    assert line_of(text, "az").startswith("az: mean=2 rms=0 ")  # a constant channel


def test_bad_sensor_values_are_input_errors():
    with pytest.raises(InputDataError, match="different lengths"):
        summarize([[1.0, 2.0], [1.0]], RATE, ["a", "b"])
    with pytest.raises(InputDataError, match="no samples"):
        render_spectrogram([[]], RATE)
    with pytest.raises(InputDataError, match="no channels"):
        sensor_tensor([])
    with pytest.raises(InputDataError, match="not > 0"):
        render_waveform([[1.0, 2.0]], 0.0)


def test_the_tensor_is_float32_channels_by_samples():
    t = sensor_tensor([[1, 2, 3], np.array([4.0, 5.0, 6.0], np.float64)])
    assert t.dtype == np.float32 and t.shape == (2, 3)
    assert t[1].tolist() == [4.0, 5.0, 6.0]


def test_null_samples_from_arrow_count_as_missing():
    x: list[float | None] = [float(v) for v in np.sin(2 * np.pi * 50 * T)]
    x[5] = None
    assert np.isnan(sensor_tensor([x])[0, 5])
    assert "nan=1" in summarize([x], RATE, ["ax"])


# -- images --------------------------------------------------------------------------------


def png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, names = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        names.append(data[pos + 4 : pos + 8].decode("ascii"))
        pos += 12 + length
    return names


def wav_bytes(x: np.ndarray, rate: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def three_axes() -> list[np.ndarray]:
    return [bearing_signal(88.0, seed=i) for i in range(3)]


@pytest.mark.parametrize(
    "render",
    [
        lambda: render_spectrogram(three_axes(), RATE),
        lambda: render_waveform(three_axes(), RATE),
        lambda: audio_spectrogram_png(wav_bytes(0.2 * np.sin(2 * np.pi * 440 * T[:8000]))),
    ],
    ids=["spectrogram", "waveform", "audio_spectrogram"],
)
def test_images_decode_are_deterministic_and_carry_no_metadata(render):
    a, b = render(), render()
    assert a == b  # byte for byte
    assert set(png_chunks(a)) <= {"IHDR", "PLTE", "IDAT", "IEND"}  # no tEXt, tIME, pHYs...
    img = Image.open(io.BytesIO(a))
    img.load()
    assert img.size == (256, 256)
    assert img.convert("RGB").getextrema() != ((0, 0), (0, 0), (0, 0))


def test_the_same_samples_as_lists_or_arrays_give_the_same_png():
    x = three_axes()
    assert render_spectrogram(x, RATE) == render_spectrogram([v.tolist() for v in x], RATE)


def test_a_spectrogram_puts_frequency_bottom_to_top_and_time_left_to_right():
    # 1250 Hz (half of Nyquist) in the first second only, on a quiet floor
    x = np.where(T < 1.0, np.sin(2 * np.pi * 1250 * T), 0.0) + np.random.default_rng(3).normal(
        0, 1e-4, T.size
    )
    img = np.asarray(Image.open(io.BytesIO(render_spectrogram([x], RATE))).convert("L"), float)
    row = int(np.argmax(img[:, 60]))  # the brightest row a quarter into the window
    assert abs(row - 128) <= 4  # half way up
    assert img[row, 60] - img[row, 200] > 100  # bright early, dark late
    top = np.asarray(
        Image.open(io.BytesIO(render_spectrogram([np.sin(2 * np.pi * 2200 * T)], RATE)))
        .convert("L"), float
    )  # fmt: skip
    assert int(np.argmax(top[:, 128])) < 40  # high frequencies near the top
    assert DB_RANGE == 80.0


def test_channels_are_stacked_panels_separated_by_background():
    img = np.asarray(Image.open(io.BytesIO(render_waveform(three_axes(), RATE))).convert("RGB"))
    white = np.all(img == 255, axis=(1, 2))
    panel = (256 - 2 * 2) // 3  # three panels, two 2-pixel separators
    assert white[panel] and white[panel + 1] and white[2 * panel + 2]
    for k in range(3):  # every panel holds a trace
        rows = img[k * (panel + 2) : k * (panel + 2) + panel]
        assert np.any(np.all(rows == (31, 80, 160), axis=2))


def test_short_constant_and_many_channel_signals_render():
    assert render_waveform([[0.5] * 10], RATE)[:4] == b"\x89PNG"
    assert render_spectrogram([[0.0, 1.0, 0.0]], RATE)[:4] == b"\x89PNG"
    png = render_spectrogram([np.sin(T * k) for k in range(1, 9)], RATE, size=(128, 96))
    assert Image.open(io.BytesIO(png)).size == (128, 96)
    with pytest.raises(InputDataError, match="do not fit"):
        render_spectrogram([T] * 40, RATE, size=(64, 64))


def test_wav_audio_decodes_and_bad_wav_is_an_input_error():
    x, rate = decode_wav(wav_bytes(np.zeros((800, 2), np.float32), 8000))
    assert x.shape == (2, 800) and rate == 8000
    with pytest.raises(InputDataError, match="not a readable WAV"):
        decode_wav(b"RIFF\x00\x00\x00\x00WAVEjunk")
