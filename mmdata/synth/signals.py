"""Vibration and audio waveforms, sampled on each device's own clock.

A device takes sample ``i`` at device time ``device_start + floor(i * 1e9 / rate)`` ns; the
physics is evaluated at that sample's *reference* time (``ClockModel.to_reference``), so the
clock model is baked into the data exactly as a real, drifting device would bake it in.

Vibration (g, float32, axes x/y/z; z carries gravity, +1 g):
  * normal: shaft rotation (1x, 2x, 3x of ~25 Hz, per-axis amplitudes) + white noise;
  * ``bearing_wear`` (vibration only): outer-race fault, one impact per 1/BPFO s (with slip
    jitter) ringing a structural resonance (~2 kHz, 1.5 ms decay), so the envelope spectrum
    shows BPFO and its harmonics;
  * sync tap: a damped 800 Hz ring on all axes (5 ms decay, ~6-9 g) with a sharp onset.

Audio (mono, full scale = 1.0, written as 16-bit PCM):
  * normal: mains hum (50/100/150 Hz), motor whine (24x shaft), a fan tone and white noise;
  * ``loose_part_rattle`` (audio only): metallic clicks at 3.5-5.5 kHz every 50-150 ms;
  * sync tap: a broadband knock (0.6 ms spike, then noise + 1.7 kHz ring, 4 ms decay).

>>> from mmdata.synth.config import SynthConfig
>>> from mmdata.synth.plan import build_plan
>>> plan = build_plan(SynthConfig(assets=1, minutes=0.5))
>>> ts, xyz = accel_chunk(plan, plan.assets[0], 0)
>>> ts.dtype.name, xyz.dtype.name, xyz.shape[1]
('int64', 'float32', 3)
"""

from __future__ import annotations

import numpy as np

from mmdata.synth.clocks import DEVICE_CODES, P_SIGNAL, grid_times, rng_for
from mmdata.synth.plan import AssetPlan, FactoryPlan
from mmdata.timebase import NS_PER_S

TWO_PI = 2.0 * np.pi

# Sync-tap parameters (shared by vibration and audio).
TAP_RING_HZ = 800.0
TAP_TAU_S = 0.005
TAP_G = np.array([6.0, 4.5, 9.0])  # per-axis peak of the ring
KNOCK_AMP = 0.75
KNOCK_TAU_S = 0.004
# Fault parameters.
BEARING_TAU_S = 0.0015
BEARING_G = np.array([0.9, 0.6, 0.3])
RATTLE_TAU_S = 0.0012


def file_index_range(plan: FactoryPlan, asset: AssetPlan, kind: str, k: int) -> tuple[int, int]:
    """Sample index range [lo, hi) of file ``k`` of a sensor (files split by device time).

    >>> from mmdata.synth.config import SynthConfig
    >>> from mmdata.synth.plan import build_plan
    >>> p = build_plan(SynthConfig(assets=1, minutes=0.5, file_seconds=10))
    >>> file_index_range(p, p.assets[0], "accelerometer", 1)
    (50000, 100000)
    """
    rate = _rate(plan, kind)
    per_file = plan.config.file_seconds * rate
    total = asset.devices[kind].span.sample_count(rate)
    return min(k * per_file, total), min((k + 1) * per_file, total)


def file_count(plan: FactoryPlan, asset: AssetPlan, kind: str) -> int:
    """Number of files a sensor writes.

    >>> from mmdata.synth.config import SynthConfig
    >>> from mmdata.synth.plan import build_plan
    >>> p = build_plan(SynthConfig(assets=1, minutes=0.5, file_seconds=10))
    >>> file_count(p, p.assets[0], "microphone") in (3, 4)  # a last, short file may follow
    True
    """
    rate = _rate(plan, kind)
    total = asset.devices[kind].span.sample_count(rate)
    per_file = plan.config.file_seconds * rate
    return -(-total // per_file)


def _rate(plan: FactoryPlan, kind: str) -> int:
    return plan.config.accel_rate_hz if kind == "accelerometer" else plan.config.mic_rate_hz


def _times(plan: FactoryPlan, asset: AssetPlan, kind: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Device times and reference times (both int64 ns) of the samples of file ``k``."""
    lo, hi = file_index_range(plan, asset, kind, k)
    dev = asset.devices[kind]
    ts = grid_times(dev.span.device_start_ns, np.arange(lo, hi, dtype=np.int64), _rate(plan, kind))
    return ts, dev.clock.to_reference(ts)


def latest_event(
    ref_ns: np.ndarray, events_ns: np.ndarray, window_s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each time: the most recent event at or before it, if within ``window_s``.

    Returns ``(mask, event_index, dt_seconds)`` for the masked samples only.

    >>> m, j, dt = latest_event(np.array([0, 5, 12, 40]), np.array([5, 10]), 10e-9)
    >>> m.tolist(), j.tolist(), dt.tolist()
    ([False, True, True, False], [0, 1], [0.0, 2e-09])
    """
    if events_ns.size == 0:
        return np.zeros(ref_ns.shape, bool), np.zeros(0, np.int64), np.zeros(0)
    j = np.searchsorted(events_ns, ref_ns, side="right") - 1
    ok = j >= 0
    dt_ns = np.where(ok, ref_ns - events_ns[np.maximum(j, 0)], -1)
    mask = ok & (dt_ns < int(window_s * NS_PER_S))
    return mask, j[mask], dt_ns[mask].astype(np.float64) * 1e-9


def _phase_s(plan: FactoryPlan, ref_ns: np.ndarray) -> np.ndarray:
    """Seconds since the reference start (for continuous tones; differences of int ns)."""
    return (ref_ns - np.int64(plan.start_ns)).astype(np.float64) * 1e-9


def accel_chunk(plan: FactoryPlan, asset: AssetPlan, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Accelerometer file ``k``: ``(ts_ns int64 device times, xyz float32 (n, 3) in g)``.

    >>> from mmdata.synth.config import SynthConfig
    >>> from mmdata.synth.plan import build_plan
    >>> p = build_plan(SynthConfig(assets=1, minutes=0.2))
    >>> ts, xyz = accel_chunk(p, p.assets[0], 0)
    >>> bool(np.all(np.diff(ts) > 0)), round(float(np.median(xyz[:, 2])))
    (True, 1)
    """
    ts, ref = _times(plan, asset, "accelerometer", k)
    t = _phase_s(plan, ref)
    n = ts.size
    cfg = plan.config
    # per-asset constants (deterministic, independent of the chunk)
    crng = rng_for(cfg.seed, asset.index, DEVICE_CODES["accelerometer"], P_SIGNAL, 0)
    harm_amp = np.array([[0.06, 0.05, 0.02], [0.025, 0.02, 0.01], [0.01, 0.012, 0.005]])
    harm_amp = harm_amp * crng.uniform(0.8, 1.25, (3, 3))
    harm_phase = crng.uniform(0, TWO_PI, (3, 3))
    tilt = crng.uniform(-0.03, 0.03, 2)
    tap_phase = crng.uniform(-0.3, 0.3, 3)
    rng = rng_for(cfg.seed, asset.index, DEVICE_CODES["accelerometer"], P_SIGNAL, k + 1)
    out = rng.normal(0.0, 0.01, (n, 3))
    out[:, 0] += tilt[0]
    out[:, 1] += tilt[1]
    out[:, 2] += 1.0
    for h in range(3):
        base = TWO_PI * (h + 1) * asset.shaft_hz * t
        for axis in range(3):
            out[:, axis] += harm_amp[h, axis] * np.sin(base + harm_phase[h, axis])
    # bearing_wear: impacts at BPFO ringing the structural resonance
    mask, j, dt = latest_event(ref, asset.bearing_ns, 12 * BEARING_TAU_S)
    if j.size:
        ring = asset.bearing_amp[j] * np.exp(-dt / BEARING_TAU_S)
        ring *= np.sin(TWO_PI * asset.resonance_hz * dt)
        out[mask] += ring[:, None] * BEARING_G[None, :]
    # sync tap: damped ring with a sharp onset
    mask, j, dt = latest_event(ref, plan.sync_ns, 20 * TAP_TAU_S)
    if j.size:
        env = np.exp(-dt / TAP_TAU_S)
        spike = 0.5 * np.exp(-dt / 0.0002)
        for axis in range(3):
            ring = np.cos(TWO_PI * TAP_RING_HZ * dt + tap_phase[axis])
            out[mask, axis] += TAP_G[axis] * (env * ring + spike)
    return ts, out.astype(np.float32)


def mic_chunk(plan: FactoryPlan, asset: AssetPlan, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Microphone file ``k``: ``(ts_ns int64 device times, int16 PCM samples)``.

    >>> from mmdata.synth.config import SynthConfig
    >>> from mmdata.synth.plan import build_plan
    >>> p = build_plan(SynthConfig(assets=1, minutes=0.2))
    >>> ts, pcm = mic_chunk(p, p.assets[0], 0)
    >>> pcm.dtype.name, ts.size == pcm.size
    ('int16', True)
    """
    ts, ref = _times(plan, asset, "microphone", k)
    t = _phase_s(plan, ref)
    n = ts.size
    cfg = plan.config
    crng = rng_for(cfg.seed, asset.index, DEVICE_CODES["microphone"], P_SIGNAL, 0)
    phases = crng.uniform(0, TWO_PI, 6)
    fan_hz = float(crng.uniform(1200.0, 1450.0))
    rng = rng_for(cfg.seed, asset.index, DEVICE_CODES["microphone"], P_SIGNAL, k + 1)
    x = rng.normal(0.0, 0.006, n)
    x += 0.05 * np.sin(TWO_PI * 50.0 * t + phases[0])
    x += 0.025 * np.sin(TWO_PI * 100.0 * t + phases[1])
    x += 0.01 * np.sin(TWO_PI * 150.0 * t + phases[2])
    whine = 0.012 * (1.0 + 0.3 * np.sin(TWO_PI * 0.2 * t + phases[3]))
    x += whine * np.sin(TWO_PI * 24.0 * asset.shaft_hz * t + phases[4])
    x += 0.006 * np.sin(TWO_PI * fan_hz * t + phases[5])
    # loose_part_rattle: short metallic clicks
    mask, j, dt = latest_event(ref, asset.rattle_ns, 12 * RATTLE_TAU_S)
    if j.size:
        x[mask] += (
            asset.rattle_amp[j]
            * np.exp(-dt / RATTLE_TAU_S)
            * np.sin(TWO_PI * asset.rattle_hz[j] * dt + 0.3)
        )
    # sync tap: broadband knock with an abrupt onset
    mask, j, dt = latest_event(ref, plan.sync_ns, 25 * KNOCK_TAU_S)
    if j.size:
        env = np.exp(-dt / KNOCK_TAU_S)
        noise = rng.uniform(-1.0, 1.0, j.size)
        attack = np.exp(-dt / 0.0006)  # the impact itself: a spike, then noisy ringing
        knock = env * (
            0.6 * attack + 0.3 * np.cos(TWO_PI * 1700.0 * dt) + 0.3 * noise * (1.0 - attack)
        )
        x[mask] += KNOCK_AMP * knock
    pcm = np.clip(np.rint(x * 32767.0), -32768, 32767).astype(np.int16)
    return ts, pcm
