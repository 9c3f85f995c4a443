"""Sensors and audio in a language model's world: images, compact text, or tensors.

A language model cannot read 10,000 float samples. ``build.sensors_as`` chooses how a
window's sensor streams reach it:

* ``spectrogram_image`` / ``waveform_image``: one PNG per stream (:func:`render_spectrogram`,
  :func:`render_waveform`), one panel per channel stacked top to bottom, for a vision encoder;
* ``text_summary``: a few lines of text (:func:`summarize`): per channel the mean, the RMS,
  peak and crest factor of the AC part, kurtosis, the three dominant frequencies and the
  strongest line of the envelope spectrum with its prominence — the classic bearing
  diagnostic: impacts at a bearing defect frequency (say 88 Hz BPFO) ringing a structural
  resonance (~1.9 kHz) show as ``env=88Hz`` with a large ``x`` ratio, while the plain spectrum
  only shows the resonance;
* ``tensor``: the raw samples, ``float32 (channels, samples)`` (:func:`sensor_tensor`), for
  models with a time-series encoder.

Audio with ``audio_as: spectrogram_image`` becomes a PNG too (:func:`audio_spectrogram_png`).

Rendering is plain numpy (FFT, a fixed viridis lookup table stored here) + Pillow's PNG
encoder: a few milliseconds per image, and byte-identical for identical input, independent
of the matplotlib version, with no metadata chunks (no tEXt, no tIME).

Non-finite samples (NaN/inf) are replaced by the channel's finite mean (the summary counts
them as ``nan=``); a stream with no samples or ragged channels raises
:class:`~mmdata.errors.InputDataError`.

A record's media as the build config wants them (frames, the WAV or its spectrogram, these
images / summaries / tensors) are gathered by :class:`mmdata.build.media.RecordMedia`.

>>> t = np.arange(5000) / 5000.0
>>> print(summarize([np.sin(2 * np.pi * 50.0 * t)], 5000.0, ["ax"]).splitlines()[1])
ax: mean=0 rms=0.707 peak=1 crest=1.41 kurt=1.5 f=50Hz
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf
from PIL import Image

from mmdata.errors import InputDataError

FloatArray = npt.NDArray[np.float32]

#: Size of rendered images (width, height) in pixels.
IMAGE_SIZE = (256, 256)
#: Dynamic range of spectrograms below each panel's maximum, in dB.
DB_RANGE = 80.0
#: The envelope is taken of the signal above this fraction of the sample rate.
ENVELOPE_HIGHPASS = 0.1
_SEPARATOR = 2  # pixels between channel panels
_PNG_LEVEL = 6

# viridis, 256 RGB entries (matplotlib's, frozen here so images never change with it)
_VIRIDIS_B64 = (
    "RAFURAJWRQRXRQVZRgdaRghcRgpdRgteRw1gRw5hRxBjRxFkRxNlSBRnSBZoSBdpSBhqSBpsSBttSBxuSB1vSB9wSCBx"
    "SCFzSCN0SCR1SCV2SCZ3SCh4SCl5Ryp6Ryx6Ry17Ry58Ry99RjB+RjJ+RjN/RjSARTWBRTeBRTiCRDmDRDqDRDuEQz2E"
    "Qz6FQj+FQkCGQkGGQUKHQUSHQEWIQEaIP0eIP0iJPkmJPkqJPkyKPU2KPU6KPE+KPFCLO1GLO1KLOlOLOlSMOVWMOVaM"
    "OFiMOFmMN1qMN1uNNlyNNl2NNV6NNV+NNGCNNGGNM2KNM2ONMmSOMmWOMWaOMWeOMWiOMGmOMGqOL2uOL2yOLm2OLm6O"
    "Lm+OLXCOLXGOLHGOLHKOLHOOK3SOK3WOKnaOKneOKniOKXmOKXqOKXuOKHyOKH2OJ36OJ3+OJ4COJoGOJoKOJoKOJYOO"
    "JYSOJYWOJIaOJIeOI4iOI4mOI4qNIouNIoyNIo2NIY6NIY+NIZCNIZGMIJKMIJKMIJOMH5SMH5WLH5aLH5eLH5iLH5mK"
    "H5qKHpuKHpyJHp2JH56JH5+IH6CIH6GIH6GHH6KHIKOGIKSGIaWFIaaFIqeFIqiEI6mDJKqDJauCJayCJq2BJ62BKK6A"
    "Ka9/KrB/LLF+LbJ9LrN8L7R8MbV7MrZ6NLZ5Nbd5N7h4OLl3Orp2O7t1Pbx0P7xzQL1yQr5xRL9wRsBvSMFuSsFtTMJs"
    "TsNrUMRqUsVpVMVoVsZnWMdlWshkXMhjXsliYMpgY8tfZcteZ8xcac1bbM1abs5YcM9Xc9BWddBUd9FTetFRfNJQf9NO"
    "gdNNhNRLhtVJidVIi9ZGjtZFkNdDk9dBldhAmNg+m9k8ndk7oNo5oto3pds2qNs0qtwyrdwwsN0vst0ttd4ruN4put4o"
    "vd8mwN8lwt8jxeAhyOAgyuEfzeEd0OEc0uIb1eIa2OIZ2uMZ3eMY3+MY4uQY5eQZ5+QZ6uUa7OUb7+Uc8eUd9OYe9uYg"
    "+OYh++cj/ecl"
)


@lru_cache(maxsize=1)
def _lut() -> npt.NDArray[np.uint8]:
    return np.frombuffer(base64.b64decode(_VIRIDIS_B64), np.uint8).reshape(256, 3)


@dataclass(frozen=True)
class ChannelStats:
    """Statistics of one channel (AC figures are of the signal minus its mean)."""

    channel: str
    n: int
    mean: float
    rms: float
    peak: float  # max |x - mean|
    crest: float  # peak / rms
    kurtosis: float  # Pearson (a Gaussian is 3; impacts push it up)
    freqs_hz: tuple[float, ...]  # dominant spectral peaks, strongest first
    env_hz: float | None  # strongest envelope-spectrum line
    env_ratio: float | None  # its height over the envelope spectrum's median
    non_finite: int = 0

    def line(self) -> str:
        """One compact line of text.

        >>> ChannelStats("ax", 10, 0.0, 1.0, 2.0, 2.0, 3.0, (25.0, 50.2), 88.0, 9.06).line()
        'ax: mean=0 rms=1 peak=2 crest=2 kurt=3 f=25,50Hz env=88Hz(x9.1)'
        """
        mean = self.mean if abs(self.mean) > 0.01 * self.rms else 0.0  # noise, not an offset
        parts = [
            f"{self.channel}: mean={mean:.3g} rms={self.rms:.3g} peak={self.peak:.3g}",
            f"crest={self.crest:.3g} kurt={self.kurtosis:.3g}",
        ]
        if self.freqs_hz:
            parts.append("f=" + ",".join(f"{round(f)}" for f in self.freqs_hz) + "Hz")
        if self.env_hz is not None and self.env_ratio is not None:
            r = self.env_ratio
            parts.append(
                f"env={round(self.env_hz)}Hz(x{r:.0f})"
                if r >= 10
                else f"env={round(self.env_hz)}Hz(x{r:.1f})"
            )
        if self.non_finite:
            parts.append(f"nan={self.non_finite}")
        return " ".join(parts)


def sensor_tensor(values: Sequence[Any]) -> FloatArray:
    """One stream's samples as ``float32 (channels, samples)`` (non-finite values kept).

    >>> sensor_tensor([[1.0, 2.0], [3.0, 4.0]]).shape
    (2, 2)
    """
    if len(values) == 0:
        raise InputDataError("sensor stream has no channels", hint="check the record's sensors")
    rows = [_row(v) for v in values]
    lengths = {r.size for r in rows}
    if len(lengths) != 1:
        raise InputDataError(
            f"sensor channels have different lengths {sorted(lengths)}",
            hint="every channel of a stream must hold the same number of samples",
        )
    return np.stack(rows)


def _row(v: Any) -> FloatArray:
    try:
        return np.asarray(v, dtype=np.float32).ravel()
    except TypeError:  # nulls from Arrow (None): treated as missing (NaN)
        return np.array([np.nan if x is None else x for x in v], dtype=np.float32)


def _clean(values: Sequence[Any]) -> tuple[npt.NDArray[np.float64], list[int]]:
    """(channels, samples) float64 with non-finite values replaced; count per channel."""
    x = sensor_tensor(values).astype(np.float64)
    if x.shape[1] == 0:
        raise InputDataError("sensor stream has no samples", hint="check the record's sensors")
    bad = ~np.isfinite(x)
    counts = bad.sum(axis=1).tolist()
    if any(counts):
        for c in np.flatnonzero(counts):
            ok = x[c][~bad[c]]
            x[c][bad[c]] = float(ok.mean()) if ok.size else 0.0
    return x, [int(c) for c in counts]


def _peaks(mag: npt.NDArray[np.float64], lo: int, hi: int, k: int) -> list[tuple[float, float]]:
    """Up to ``k`` local maxima of ``mag[lo:hi]``: (interpolated bin, height), highest first."""
    hi = min(hi, mag.size - 1)
    if hi - lo < 1 or lo < 1:
        return []
    seg = mag[lo - 1 : hi + 1]
    inner = seg[1:-1]
    is_peak = (inner > seg[:-2]) & (inner >= seg[2:])
    idx = np.flatnonzero(is_peak) + lo
    if idx.size == 0:
        return []
    order = idx[np.argsort(-mag[idx], kind="stable")][:k]
    out = []
    for i in order.tolist():
        a, b, c = np.log(mag[i - 1 : i + 2] + 1e-30)
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom < 0 else 0.0  # parabola through log-magnitudes
        out.append((i + float(np.clip(shift, -0.5, 0.5)), float(mag[i])))
    return out


def _hann(n: int) -> npt.NDArray[np.float64]:
    return np.hanning(n) if n > 1 else np.ones(n)


def _stats(x: npt.NDArray[np.float64], rate: float, channel: str, bad: int) -> ChannelStats:
    n = x.size
    mean = float(x.mean())
    ac = x - mean
    rms = float(np.sqrt(np.mean(ac * ac)))
    peak = float(np.max(np.abs(ac)))
    crest = peak / rms if rms > 0 else 0.0
    kurt = float(np.mean(ac**4) / rms**4) if rms > 0 else 0.0
    freqs: tuple[float, ...] = ()
    env_hz = env_ratio = None
    if n >= 16 and rate > 0 and rms > 0:
        spec = np.abs(np.fft.rfft(ac * _hann(n)))
        df = rate / n
        found = _peaks(spec, 2, spec.size - 1, 3)
        # a line must stand out of the noise floor (8x the median bin: white noise alone
        # stays below ~5x over 10^4 bins) and not be leakage 40 dB under the strongest
        floor = 8.0 * float(np.median(spec[2:]))
        freqs = tuple(b * df for b, h in found if h >= max(floor, 0.01 * found[0][1]))
        env_hz, env_ratio = _envelope_peak(ac, rate)
    return ChannelStats(channel, n, mean, rms, peak, crest, kurt, freqs, env_hz, env_ratio, bad)


def _envelope_peak(ac: npt.NDArray[np.float64], rate: float) -> tuple[float | None, float | None]:
    """Strongest line of the envelope spectrum of the signal above ``ENVELOPE_HIGHPASS *
    rate`` (searched from 2 bins up to that cut), and its height over the median."""
    n = ac.size
    spec = np.fft.fft(ac)
    freqs = np.abs(np.fft.fftfreq(n, 1.0 / rate))
    cut = ENVELOPE_HIGHPASS * rate
    # analytic signal of the high-passed part: positive frequencies doubled, the rest zeroed
    pos = np.fft.fftfreq(n) > 0
    analytic = np.where(pos & (freqs >= cut), 2.0 * spec, 0.0)
    env = np.abs(np.fft.ifft(analytic))
    level = float(env.mean())
    env = env - level
    # nothing above the cut, or a constant envelope (a pure tone): no envelope line
    if level <= 1e-6 * float(np.sqrt(np.mean(ac * ac))) or float(env.std()) <= 1e-6 * level:
        return None, None
    espec = np.abs(np.fft.rfft(env * _hann(n)))
    df = rate / n
    hi = int(cut / df)
    found = _peaks(espec, 2, hi, 1)
    if not found:
        return None, None
    med = float(np.median(espec[2:hi])) if hi > 2 else 0.0
    b, h = found[0]
    return b * df, (h / med if med > 0 else float("inf"))


def stream_stats(values: Sequence[Any], rate: float, channels: Sequence[str]) -> list[ChannelStats]:
    """:class:`ChannelStats` of every channel of one stream (``ch<i>`` for unnamed ones).

    >>> t = np.arange(10_000) / 5000.0
    >>> s = stream_stats([np.sin(2 * np.pi * 120.0 * t)], 5000.0, [])[0]
    >>> s.channel, round(s.freqs_hz[0]), round(s.rms, 3)
    ('ch0', 120, 0.707)
    """
    x, bad = _clean(values)
    names = list(channels) + [f"ch{i}" for i in range(len(channels), x.shape[0])]
    return [_stats(x[i], float(rate), names[i], bad[i]) for i in range(x.shape[0])]


def summarize(values: Sequence[Any], rate: float, channels: Sequence[str]) -> str:
    """Compact text summary of one stream: a header line, then one line per channel.

    >>> t = np.arange(2000) / 1000.0
    >>> print(summarize([np.cos(2 * np.pi * 40 * t)], 1000.0, ["az"]).splitlines()[0])
    1000 Hz, 2.00 s, 1 channel(s)
    """
    return _summary_text(stream_stats(values, rate, channels), rate)


def _summary_text(stats: list[ChannelStats], rate: float) -> str:
    n = stats[0].n
    head = f"{rate:g} Hz, {n / rate:.2f} s, {len(stats)} channel(s)" if rate > 0 else f"{n} samples"
    return "\n".join([head, *(s.line() for s in stats)])


# -- images ---------------------------------------------------------------------------


def _png(index: npt.NDArray[np.uint8], palette: bytes) -> bytes:
    """A palette PNG (one byte per pixel: encodes ~3x faster than RGB); no metadata."""
    img = Image.fromarray(index, "L").convert("P")
    img.putpalette(palette)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=_PNG_LEVEL)
    return buf.getvalue()


def _stack(panels: list[npt.NDArray[np.uint8]], height: int, bg: int) -> npt.NDArray[np.uint8]:
    """Panels top to bottom with background separators, padded to ``height`` rows."""
    width = panels[0].shape[1]
    sep = np.full((_SEPARATOR, width), bg, np.uint8)
    out = np.concatenate([r for i, p in enumerate(panels) for r in ((sep, p) if i else (p,))])
    pad = np.full((max(0, height - out.shape[0]), width), bg, np.uint8)
    return np.concatenate([out, pad])[:height]


Panel = Callable[[npt.NDArray[np.float64], int, int], npt.NDArray[np.uint8]]


def _render(
    values: Sequence[Any], rate: float, size: tuple[int, int], panel: Panel, bg: int, pal: bytes
) -> bytes:
    """One ``panel(channel, width, panel_height)`` per channel, stacked, as a palette PNG."""
    if not rate > 0:
        raise InputDataError(f"sample rate {rate!r} is not > 0", hint="check the stream's rate")
    x, _ = _clean(values)
    width, height = size
    ph = (height - _SEPARATOR * (x.shape[0] - 1)) // x.shape[0]
    if ph < 4:
        raise InputDataError(
            f"{x.shape[0]} channels do not fit in a {height}-pixel image",
            hint="render fewer channels per stream",
        )
    return _png(_stack([panel(c, width, ph) for c in x], height, bg), pal)


@lru_cache(maxsize=1)
def _spectrogram_palette() -> bytes:
    """Entries 0-254: viridis from low to high level; 255: white (separators)."""
    lut = _lut()[np.rint(np.linspace(0, 255, 255)).astype(np.int64)]
    return lut.tobytes() + bytes((255, 255, 255))


_WAVE_BG, _WAVE_AXIS, _WAVE_TRACE = 0, 1, 2
_WAVE_PALETTE = bytes((255, 255, 255, 210, 210, 210, 31, 80, 160))


def _spectrogram_panel(
    x: npt.NDArray[np.float64], width: int, ph: int, n_fft: int = 256
) -> npt.NDArray[np.uint8]:
    n = x.size
    n_fft = max(8, min(n_fft, 1 << max(3, (n.bit_length() - 1))))
    if n < n_fft:
        x = np.concatenate([x, np.zeros(n_fft - n)])
        n = n_fft
    hop = max(1, (n - n_fft) // max(1, width - 1))
    frames = np.lib.stride_tricks.sliding_window_view(x - x.mean(), n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * _hann(n_fft), axis=1)) ** 2
    db = 10.0 * np.log10(power + 1e-20)
    top = float(db.max())
    level = np.clip((db - (top - DB_RANGE)) / DB_RANGE, 0.0, 1.0)
    idx = np.rint(level.T[::-1] * 254).astype(np.uint8)  # low frequencies at the bottom
    img = Image.fromarray(idx, "L").resize((width, ph), Image.Resampling.BILINEAR)
    return np.asarray(img)


def render_spectrogram(
    values: Sequence[Any], rate: float, *, n_fft: int = 256, size: tuple[int, int] = IMAGE_SIZE
) -> bytes:
    """PNG spectrogram of one stream: a panel per channel (time left to right, frequency 0 to
    Nyquist bottom to top, viridis over ``DB_RANGE`` dB below each panel's maximum).

    ``rate`` does not change the picture (the axes are relative); it is checked to be > 0.

    >>> png = render_spectrogram([np.random.default_rng(0).normal(size=4000)], 2000.0)
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n", Image.open(io.BytesIO(png)).size
    (True, (256, 256))
    """
    panel = partial(_spectrogram_panel, n_fft=n_fft)
    return _render(values, rate, size, panel, 255, _spectrogram_palette())


def _waveform_panel(x: npt.NDArray[np.float64], width: int, ph: int) -> npt.NDArray[np.uint8]:
    n = x.size
    edges = (np.arange(width + 1) * n) // width
    starts = np.minimum(edges[:-1], n - 1)
    lo, hi = np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)
    # join neighbouring columns so the trace is continuous
    lo2 = np.minimum(lo, np.concatenate([hi[:1], hi[:-1]]))
    hi2 = np.maximum(hi, np.concatenate([lo[:1], lo[:-1]]))
    center = float(x.mean())
    half = float(np.max(np.abs(x - center))) * 1.05 or 1.0
    scale = (ph - 1) / 2.0

    def row(v: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return np.clip(np.rint((1.0 - (v - center) / half) * scale), 0, ph - 1).astype(np.int64)

    top, bottom = row(hi2), row(lo2)
    rows = np.arange(ph)[:, None]
    panel = np.full((ph, width), _WAVE_BG, np.uint8)
    panel[ph // 2, :] = _WAVE_AXIS  # the mean
    panel[(rows >= top[None, :]) & (rows <= bottom[None, :])] = _WAVE_TRACE
    return panel


def render_waveform(
    values: Sequence[Any], rate: float, *, size: tuple[int, int] = IMAGE_SIZE
) -> bytes:
    """PNG waveform of one stream: a panel per channel, min/max per pixel column, each
    centred on its mean and scaled to its own largest excursion.

    >>> png = render_waveform([np.sin(np.arange(1000) / 20.0)], 1000.0)
    >>> Image.open(io.BytesIO(png)).size
    (256, 256)
    """
    return _render(values, rate, size, _waveform_panel, _WAVE_BG, _WAVE_PALETTE)


def decode_wav(wav_bytes: bytes) -> tuple[npt.NDArray[np.float32], int]:
    """WAV bytes → ``(float32 (channels, frames), sample rate)``.

    >>> buf = io.BytesIO()
    >>> sf.write(buf, np.zeros(160, np.float32), 16000, format="WAV")
    >>> x, rate = decode_wav(buf.getvalue())
    >>> x.shape, rate
    ((1, 160), 16000)
    """
    try:
        data, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise InputDataError(
            f"audio bytes are not a readable WAV ({len(wav_bytes or b'')} bytes): {err}",
            hint="check the record's audio column",
        ) from err
    if data.shape[0] == 0:
        raise InputDataError("audio holds no samples", hint="check the record's audio column")
    return np.ascontiguousarray(data.T), int(rate)


def audio_spectrogram_png(wav_bytes: bytes, *, size: tuple[int, int] = IMAGE_SIZE) -> bytes:
    """PNG spectrogram of a WAV (512-point frames; a panel per audio channel).

    >>> buf = io.BytesIO()
    >>> sf.write(buf, np.random.default_rng(0).normal(0, 0.1, 16000), 16000, format="WAV")
    >>> audio_spectrogram_png(buf.getvalue())[:4]
    b'\\x89PNG'
    """
    x, rate = decode_wav(wav_bytes)
    return render_spectrogram(list(x), float(rate), n_fft=512, size=size)
