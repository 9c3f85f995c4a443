"""Delay between two recordings of the same sound: GCC-PHAT with sub-sample precision.

The generalized cross-correlation with phase transform whitens the cross-spectrum (keeps
only its phase), so the correlation peak is sharp whatever the sound's colour, and hum or
a strong tone does not dominate it. The integer-lag peak is found by an inverse FFT; the
sub-sample delay by evaluating the band-limited correlation at fractional lags around it
(a fine grid, then a parabola through the best three points), which is exact for
band-limited signals up to the noise.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> a = rng.normal(size=4000)
>>> b = fractional_delay(a, 12.25)
>>> round(float(gcc_phat(a, b, 1000.0).delay_s) * 1000, 2)   # b lags a by 12.25 samples
12.25
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_FINE_STEPS = 8  # fractional-lag grid: 1/8 sample, then 1/64 sample


@dataclass(frozen=True)
class Delay:
    """A delay estimate: ``b(t) ~ a(t - delay_s)``; ``peak`` is the PHAT correlation peak
    (1.0 for identical, noiseless signals; near 0 for unrelated ones); ``sidelobe_ratio``
    the peak over the highest correlation more than three samples from it in the searched
    range (near 1: another delay fits about as well, e.g. one period of a tone away)."""

    delay_s: float
    delay_samples: float
    peak: float
    sidelobe_ratio: float = float("inf")


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def fractional_delay(x: npt.ArrayLike, samples: float) -> FloatArray:
    """``x`` delayed by a (fractional) number of samples, band-limited, same length.

    The signal is zero-padded so the shift does not wrap around.

    >>> (fractional_delay([0.0, 1.0, 0.0, 0.0, 0.0, 0.0], 2.0).round(6) + 0.0).tolist()
    [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    """
    v = np.asarray(x, dtype=np.float64)
    n = v.size
    nfft = _next_pow2(n + int(np.ceil(abs(samples))) + 64)
    spec = np.fft.rfft(v, nfft)
    k = np.arange(spec.size)
    spec *= np.exp(-2j * np.pi * k * samples / nfft)
    if nfft % 2 == 0:  # the Nyquist bin must stay real
        spec[-1] = spec[-1].real * np.cos(np.pi * samples)
    return np.fft.irfft(spec, nfft)[:n]


def gcc_phat(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    rate_hz: float,
    *,
    max_delay_s: float | None = None,
    polarity: bool = False,
) -> Delay:
    """Delay of ``b`` relative to ``a`` (positive: ``b`` is later), both at ``rate_hz``.

    ``max_delay_s`` bounds the search (default: the full overlap). With ``polarity`` an
    inverted copy also matches (the largest absolute correlation wins).
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x = x - x.mean()
    y = y - y.mean()
    nfft = _next_pow2(x.size + y.size)
    cross = np.fft.rfft(y, nfft) * np.conj(np.fft.rfft(x, nfft))
    mag = np.abs(cross)
    cross = cross / np.maximum(mag, 1e-12 * max(float(mag.max()), 1e-300))
    cc = np.fft.irfft(cross, nfft)
    lags = np.arange(nfft)
    lags = np.where(lags < nfft // 2, lags, lags - nfft)
    limit = nfft // 2 if max_delay_s is None else round(max_delay_s * rate_hz)
    ok = np.abs(lags) <= limit
    score = np.abs(cc) if polarity else cc
    best = int(np.argmax(np.where(ok, score, -np.inf)))
    lag0 = int(lags[best])
    sign = 1.0 if cc[best] >= 0 or not polarity else -1.0
    frac, peak = _refine(cross, nfft, lag0, sign)
    away = ok & (np.abs(lags - lag0) > 3)
    side = float(np.max(np.abs(cc[away]))) if away.any() else 0.0
    ratio = peak / side if side > 0 else float("inf")
    return Delay(delay_s=frac / rate_hz, delay_samples=frac, peak=peak, sidelobe_ratio=ratio)


def _refine(
    cross: npt.NDArray[np.complex128], nfft: int, lag0: int, sign: float
) -> tuple[float, float]:
    """Band-limited correlation at fractional lags near ``lag0``: a grid of 1/8 sample over
    +-1 sample, one of 1/64 around its best point, then a parabola through the best three."""
    weight = np.full(cross.size, 2.0)
    weight[0] = 1.0
    if nfft % 2 == 0:
        weight[-1] = 1.0
    wc = weight * cross
    omega = 2j * np.pi * np.arange(cross.size) / nfft

    def corr(tau: float) -> float:
        return sign * float((np.exp(omega * tau) @ wc).real) / nfft

    centre, step = float(lag0), 1.0 / _FINE_STEPS
    for width in (1.0, 1.0 / _FINE_STEPS):
        step = width / _FINE_STEPS
        taus = centre + np.arange(-_FINE_STEPS, _FINE_STEPS + 1) * step
        vals = np.array([corr(float(t)) for t in taus])
        i = int(np.argmax(vals))
        centre = float(taus[i])
    tau, best = centre, float(vals[i])
    if 0 < i < vals.size - 1:
        y0, y1, y2 = vals[i - 1], vals[i], vals[i + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            tau += 0.5 * (y0 - y2) / denom * step
    return tau, best
