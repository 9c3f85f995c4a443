"""Sync-event detection on arrays: impulse onsets in vibration/audio, flashes in brightness.

Onsets (hammer taps, claps, knocks), :func:`detect_onsets`:

1. a linear predictor fitted to the block whitens the signal (:func:`whiten`): gravity,
   hum, tones and machine harmonics are predictable and vanish, an impulse is not; the
   filter is causal, so nothing of an onset leaks into the samples before it;
2. the energy of 1 ms frames (all channels summed) is compared with the noise floor (the
   median frame energy of the surrounding ``adapt_ms`` tile, over which the predictor
   was estimated too) and with the mean energy of the preceding ``background_ms``: a
   frame ``min_snr_db`` above the floor and ``rise_db`` above its background starts an
   onset; one onset per ``refractory_ms`` (a tap rings for tens of milliseconds);
3. the onset is refined to the exact sample: the first sample of the two frames before
   it and the two frames from it whose energy rises 13 dB over the background (or to 30 %
   of the onset's peak, for faint onsets).

Which onsets are sync events is decided over a whole stream by :func:`select_sync`: a tap
is isolated (bearing impacts and rattles come in trains) and among the loudest impulses
(within ``relative_db`` of the typical strongest isolated onset).

Flashes (an LED flash seen by a camera), :func:`detect_flashes`: the mean brightness of
each frame is compared with a running median; a frame ``min_rise`` brighter (and clearly
above the frame-to-frame noise) is bright; a flash starts between the last dark frame and
the first bright one, and must end within ``max_duration_ms`` (else it is a lighting
change).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(0, 0.01, 20_000)
>>> x[12_345:12_445] += np.exp(-np.arange(100) / 20.0)
>>> detect_onsets(x, 5000.0).index.tolist()
[12345]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mmdata.config import FlashConfig, OnsetConfig

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_GUARD_FRAMES = 2  # frames between an onset and the background it is compared with
_STRENGTH_MS = 10.0  # an onset's strength: its energy over this span
_REFINE_DB = 13.0  # the onset sample: first one this far above the background power
_REFINE_PEAK = 0.3  # ... or this fraction of the onset's peak sample energy, if lower
_TOP_K = 5  # the typical strong onset: the median of this many strongest ones


@dataclass(frozen=True)
class Onsets:
    """Onsets found in one block of samples.

    ``index``: sample index of each onset (the first sample of the impulse);
    ``energy``: its strength (whitened energy over the first 10 ms, absolute units);
    ``snr_db``: that strength over the noise floor's energy for the same span.
    """

    index: IntArray
    energy: FloatArray
    snr_db: FloatArray
    floor: float

    def __len__(self) -> int:
        return int(self.index.size)


def _levinson(r: FloatArray, order: int) -> FloatArray:
    """Prediction-error filter ``[1, a1 .. ap]`` from autocorrelation ``r[0..p]``."""
    a = np.zeros(order + 1)
    a[0] = 1.0
    if r[0] <= 0.0:
        return a
    r = r.copy()
    r[0] *= 1.0 + 1e-9  # white-noise correction: a noiseless signal still gives a stable filter
    err = r[0]
    for i in range(1, order + 1):
        acc = r[i] + float(np.dot(a[1:i], r[i - 1 : 0 : -1]))
        k = -acc / err
        a[1 : i + 1] = a[1 : i + 1] + k * a[i - 1 :: -1][:i]
        err *= 1.0 - k * k
        if err <= 0.0:
            break
    return a


def lpc(x: npt.ArrayLike, order: int) -> FloatArray:
    """Prediction-error filter ``[1, a1 .. ap]`` of a 1-D signal (autocorrelation method).

    >>> t = np.arange(4000)
    >>> a = lpc(np.sin(2 * np.pi * 0.05 * t), 2)
    >>> bool(np.abs(np.convolve(np.sin(2 * np.pi * 0.05 * t), a)[2:4000]).max() < 1e-2)
    True
    """
    v = np.ascontiguousarray(x, dtype=np.float64)
    p = min(order, max(0, v.size - 1))
    if p == 0:
        return np.ones(1)
    return _levinson(_autocorr(v[None, :], p)[0], p)


def _autocorr(tiles: FloatArray, order: int) -> FloatArray:
    """Autocorrelation lags ``0..order`` of each row (no wrap-around)."""
    w = tiles.shape[1]
    lags = [np.einsum("ij,ij->i", tiles[:, : w - k], tiles[:, k:]) for k in range(order + 1)]
    return np.stack(lags, axis=1)


def whiten(x: npt.ArrayLike, order: int, tile: int | None = None) -> FloatArray:
    """Linear-prediction residual of each channel of ``x`` (``(n,)`` or ``(n, channels)``).

    Tones, hum and machine harmonics are predictable and vanish; an impulse is not, so its
    first sample stands out. The filter is causal: nothing of an onset leaks before it.
    With ``tile`` the predictor is re-estimated every ``tile`` samples (a machine that
    starts or stops changes what is predictable). The first ``order`` samples are zero.

    >>> t = np.arange(2000)
    >>> x = np.sin(2 * np.pi * 0.01 * t); x[1500] += 1.0
    >>> int(np.argmax(np.abs(whiten(x, 4))))
    1500
    """
    a = np.asarray(x, dtype=np.float64)
    a = a - a.mean(axis=0)
    n = a.shape[0]
    if order <= 0 or n <= order:
        return a
    tile = n if tile is None or tile >= n else max(tile, 8 * order)
    n_tiles = n // tile  # the remainder shares the last full tile's filter
    cols = a.reshape(n, -1)
    out = np.zeros_like(cols)
    body = n_tiles * tile
    for c in range(cols.shape[1]):
        padded = np.concatenate([np.zeros(order), cols[:, c]])
        r = _autocorr(padded[order : order + body].reshape(n_tiles, tile), order)
        coefs = np.stack([_levinson(row, order) for row in r])  # (tiles, order + 1)
        # single precision halves the memory traffic; the residual needs no more
        p32 = padded.astype(np.float32)
        c32 = coefs.astype(np.float32)
        acc = np.zeros((n_tiles, tile), np.float32)
        tmp = np.empty((n_tiles, tile), np.float32)
        for k in range(order + 1):  # y[i] = sum_k a_k(tile of i) * x[i - k]
            np.multiply(c32[:, k, None], p32[order - k : order - k + body].reshape(n_tiles, tile),
                        out=tmp)  # fmt: skip
            acc += tmp
        out[:body, c] = acc.ravel()
        if body < n:  # the remainder, with the last tile's filter
            out[body:, c] = np.convolve(padded[body:], coefs[-1], mode="valid")[: n - body]
    out[:order] = 0.0
    return out.reshape(a.shape)


def detect_onsets(x: npt.ArrayLike, rate_hz: float, config: OnsetConfig | None = None) -> Onsets:
    """Onsets of impulses in ``x`` (``(n,)`` or ``(n, channels)``) sampled at ``rate_hz``.

    Every onset that passes the floor and rise thresholds is returned (with its strength);
    choosing the sync events among them is :func:`select_sync`'s job, over a whole stream.
    """
    cfg = config or OnsetConfig()
    f = max(1, round(cfg.frame_ms * rate_hz / 1000.0))
    per_tile = max(1, round(cfg.adapt_ms / cfg.frame_ms))  # frames per adaptation tile
    y = whiten(x, cfg.whiten_order, per_tile * f)
    e = y * y if y.ndim == 1 else np.einsum("ij,ij->i", y, y)
    m = e.size // f
    empty = Onsets(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), 0.0)
    if m < _GUARD_FRAMES + 2:
        return empty
    energy = e[: m * f].reshape(m, f).sum(axis=1)
    floor = _tile_floor(energy, per_tile)
    k = max(1, round(cfg.background_ms / cfg.frame_ms))
    cs = np.concatenate([[0.0], np.cumsum(energy)])
    j = np.arange(m)
    hi = np.maximum(j - _GUARD_FRAMES, 0)
    lo = np.maximum(hi - k, 0)
    count = hi - lo
    background = np.where(count > 0, (cs[hi] - cs[lo]) / np.maximum(count, 1), floor)
    base = np.maximum(background, floor)
    cand = (energy >= floor * 10 ** (cfg.min_snr_db / 10)) & (
        energy >= base * 10 ** (cfg.rise_db / 10)
    )
    frames = np.flatnonzero(cand)
    if frames.size == 0:
        return empty
    s_frames = max(1, round(_STRENGTH_MS / cfg.frame_ms))
    ends = np.minimum(frames + s_frames, m)
    cand_strength = cs[ends] - cs[frames]
    gap = max(1, round(cfg.refractory_ms / cfg.frame_ms))
    rise = 10 ** (cfg.rise_db / 10)
    firsts = _refractory(frames, cand_strength, energy[frames], gap, s_frames, rise)
    keep = np.searchsorted(frames, firsts)
    starts = frames[keep]
    # an onset's strength stops where the next one starts (a tap is not a bearing impact's)
    stop = np.minimum(ends[keep], np.append(starts[1:], m))
    strength = cs[stop] - cs[starts]
    n_str = stop - starts
    snr = 10 * np.log10(strength / (floor[starts] * n_str))
    index = np.array([_refine(e, f, int(s), float(base[s]) / f) for s in starts], np.int64)
    return Onsets(index, strength, snr, float(np.median(floor)))


def _tile_floor(energy: FloatArray, per_tile: int) -> FloatArray:
    """Noise floor per frame: the median frame energy of its tile (a short last tile
    shares the previous one's); digital silence gets the smallest non-zero energy."""
    m = energy.size
    n_tiles = max(1, m // per_tile)
    which = np.minimum(np.arange(m) // per_tile, n_tiles - 1)
    head = energy[: (n_tiles - 1) * per_tile].reshape(n_tiles - 1, per_tile)
    full = np.median(head, axis=1) if n_tiles > 1 else np.zeros(0)
    medians = np.append(full, np.median(energy[(n_tiles - 1) * per_tile :]))
    positive = energy[energy > 0]
    tiny = float(positive.min()) if positive.size else 1e-300
    return np.maximum(medians, tiny)[which]


def _refractory(
    frames: IntArray, strength: FloatArray, energy: FloatArray, gap: int, apart: int, jump: float
) -> IntArray:
    """First frame of each onset: one per ``gap`` frames, unless a frame inside that span is
    much stronger than the onset (a tap right after a rattle click or a bearing impact is
    its own onset): its ``strength`` twice the onset's, at least ``apart`` frames later, or
    its frame ``energy`` ``jump`` times the onset frame's, at least two frames later.
    ``strength`` and ``energy`` are per candidate frame."""
    out = []
    pos = 0
    while pos < frames.size:
        start = int(frames[pos])
        out.append(start)
        end = int(np.searchsorted(frames, start + gap, side="left"))
        idx = np.arange(pos + 1, end)
        dist = frames[idx] - start
        split = ((strength[idx] >= 2.0 * strength[pos]) & (dist >= apart)) | (
            (energy[idx] >= jump * energy[pos]) & (dist >= 2)
        )
        hit = np.flatnonzero(split)
        pos = int(idx[hit[0]]) if hit.size else end
    return np.asarray(out, dtype=np.int64)


def _refine(e: FloatArray, f: int, frame: int, noise_power: float) -> int:
    """Exact sample of an onset detected in frame ``frame`` (see the module docstring)."""
    lo = max(0, (frame - _GUARD_FRAMES) * f)
    hi = min(e.size, (frame + 2) * f)
    seg = e[lo:hi]
    peak = float(seg.max()) if seg.size else 0.0
    thr = min(noise_power * 10 ** (_REFINE_DB / 10), _REFINE_PEAK * peak)
    above = np.flatnonzero(seg >= thr)
    return lo + int(above[0]) if above.size else frame * f


def select_sync(
    ts_ns: npt.ArrayLike, energy: npt.ArrayLike, relative_db: float, isolation_ns: int
) -> npt.NDArray[np.bool_]:
    """Mask of the onsets that look like sync impulses: isolated and among the strongest.

    Isolated: no other onset at least half as strong within ``isolation_ns`` (rattles and
    bearing impacts come in trains). Strong: within ``relative_db`` of the typical
    strongest isolated onset (the median of the five strongest), so one freak impulse
    (a dropped tool) does not hide the taps.

    >>> t = np.array([0, 10, 20, 30, 40]) * 1_000_000_000
    >>> select_sync(t, [1.0, 100.0, 90.0, 0.5, 110.0], 10.0, 2_000_000_000).tolist()
    [False, True, True, False, True]
    >>> t = np.array([0, 100, 200, 30_000]) * 1_000_000  # a train of three, then one
    >>> select_sync(t, [5.0, 4.0, 5.0, 6.0], 10.0, 1_000_000_000).tolist()
    [False, False, False, True]
    """
    t = np.asarray(ts_ns, dtype=np.int64)
    e = np.asarray(energy, dtype=np.float64)
    if e.size == 0:
        return np.zeros(0, bool)
    order = np.argsort(t, kind="stable")
    ts, es = t[order], e[order]
    lo = np.searchsorted(ts, ts - isolation_ns, side="left")
    hi = np.searchsorted(ts, ts + isolation_ns, side="right")
    iso = np.ones(e.size, bool)
    for i in np.flatnonzero(hi - lo > 1):
        near = es[lo[i] : hi[i]]
        iso[i] = int(np.count_nonzero(near >= 0.5 * es[i])) <= 1
    isolated = np.zeros(e.size, bool)
    isolated[order] = iso
    if not isolated.any():
        return isolated
    top = np.sort(e[isolated])[::-1][:_TOP_K]
    ref = float(np.median(top))
    return isolated & (e >= ref * 10 ** (-relative_db / 10))


@dataclass(frozen=True)
class Flashes:
    """Flash onsets in a brightness series: each lies in ``(dark_ns, bright_ns]``.

    ``index`` is the first bright frame of each flash; ``rise`` its brightness rise over
    the baseline, as a fraction.
    """

    index: IntArray
    dark_ns: IntArray
    bright_ns: IntArray
    rise: FloatArray

    def __len__(self) -> int:
        return int(self.index.size)


def running_median(values: npt.ArrayLike, window: int) -> FloatArray:
    """Centred running median (``window`` odd or even; edges use the nearest full window).

    >>> running_median([1.0, 1.0, 9.0, 1.0, 1.0], 3).tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    v = np.asarray(values, dtype=np.float64)
    w = min(window, v.size)
    if w <= 1:
        return v.copy()
    windows = np.lib.stride_tricks.sliding_window_view(v, w)
    med = np.median(windows, axis=1)
    pad_lo = (w - 1) // 2
    pad_hi = v.size - med.size - pad_lo
    return np.concatenate([np.full(pad_lo, med[0]), med, np.full(pad_hi, med[-1])])


def detect_flashes(
    ts_ns: npt.ArrayLike, brightness: npt.ArrayLike, config: FlashConfig | None = None
) -> Flashes:
    """Flashes in a series of frame brightness values taken at device times ``ts_ns``.

    A flash that is already on in the first frame has no dark frame before it and is not
    reported (its onset is unknown); one still on at the last frame is reported.

    >>> ts = np.arange(40, dtype=np.int64) * 500_000_000
    >>> b = np.full(40, 100.0); b[10:13] = 140.0
    >>> f = detect_flashes(ts, b)
    >>> f.index.tolist(), f.dark_ns.tolist(), f.bright_ns.tolist()
    ([10], [4500000000], [5000000000])
    """
    cfg = config or FlashConfig()
    t = np.asarray(ts_ns, dtype=np.int64)
    b = np.asarray(brightness, dtype=np.float64)
    none = Flashes(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                   np.zeros(0))  # fmt: skip
    if b.size < 3:
        return none
    base = running_median(b, cfg.baseline_frames)
    resid = b - base
    mad = float(np.median(np.abs(resid - np.median(resid)))) * 1.4826
    bright = (resid >= cfg.min_rise * np.abs(base)) & (resid >= 6.0 * mad)
    edges = np.flatnonzero(bright[1:] & ~bright[:-1]) + 1
    ends = np.flatnonzero(bright[:-1] & ~bright[1:]) + 1  # first dark frame after a run
    keep = []
    for i in edges:
        after = ends[ends > i]
        last_bright = int(after[0]) - 1 if after.size else b.size - 1
        if t[last_bright] - t[i] <= cfg.max_duration_ms * 1_000_000:
            keep.append(int(i))
    idx = np.asarray(keep, dtype=np.int64)
    if idx.size == 0:
        return none
    return Flashes(idx, t[idx - 1], t[idx], resid[idx] / np.abs(base[idx]))
