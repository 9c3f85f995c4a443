"""The factory plan: every random decision of a run, made up front from the config alone.

The plan is a pure function of :class:`~mmdata.synth.config.SynthConfig`; workers rebuild it
themselves (:func:`plan_for`, cached per process), so the output never depends on how the
work is split between processes.

>>> from mmdata.synth.config import SynthConfig
>>> p = build_plan(SynthConfig(assets=2, minutes=2))
>>> [a.asset for a in p.assets]
['press-1', 'press-2']
>>> 86.0 <= p.assets[0].bpfo_hz <= 110.0
True
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from mmdata.synth.clocks import (
    DEVICE_CODES,
    DEVICE_KINDS,
    P_ASSET,
    P_BEARING,
    P_NAMETAG,
    P_RATTLE,
    FaultInterval,
    RecordingSpan,
    device_id,
    draw_clock,
    fault_schedule,
    recording_span,
    rng_for,
    sync_schedule,
)
from mmdata.synth.config import SynthConfig
from mmdata.timebase import NS_PER_MS, NS_PER_S, ClockModel

#: Latin-script names worn on operator badges (rendered in camera frames).
BADGE_NAMES: tuple[str, ...] = (
    "K. TANAKA",
    "J. SMITH",
    "M. GARCIA",
    "H. SATO",
    "Y. SUZUKI",
    "A. KUMAR",
    "L. CHEN",
    "T. WATANABE",
    "R. JOHNSON",
    "S. ITO",
    "E. MULLER",
    "N. KOBAYASHI",
    "P. NOVAK",
    "D. NGUYEN",
    "C. ROSSI",
    "M. YAMAMOTO",
)


@dataclass(frozen=True)
class NamePass:
    """An operator walking slowly past the camera, wearing a name badge (reference time).

    >>> NamePass(0, 2_000_000_000, "J. SMITH", 0.5, 0.03).name
    'J. SMITH'
    """

    start_ns: int
    end_ns: int
    name: str
    x_frac: float  # horizontal position of the operator's centre at start, fraction of width
    drift_frac_s: float  # horizontal speed, fraction of the width per second


@dataclass(frozen=True)
class Device:
    """One recording device of an asset.

    >>> from mmdata.synth.config import SynthConfig
    >>> build_plan(SynthConfig(minutes=1)).assets[0].devices["microphone"].device
    'mic-press-1'
    """

    device: str
    kind: str
    clock: ClockModel
    span: RecordingSpan


@dataclass(frozen=True)
class AssetPlan:
    """Everything decided for one asset.

    Impulse-train arrays hold reference times in int64 ns.

    >>> from mmdata.synth.config import SynthConfig
    >>> a = build_plan(SynthConfig(minutes=10)).assets[0]
    >>> a.bearing_ns.dtype.name, a.sensor_format
    ('int64', 'parquet')
    """

    index: int
    asset: str
    sensor_format: str
    devices: dict[str, Device]  # by kind
    faults: list[FaultInterval]
    shaft_hz: float
    n_balls: int
    ball_ratio: float  # ball diameter / pitch diameter
    bpfo_hz: float
    resonance_hz: float
    bearing_ns: np.ndarray  # impulse times of the outer-race fault
    bearing_amp: np.ndarray
    rattle_ns: np.ndarray  # click times of the loose part
    rattle_amp: np.ndarray
    rattle_hz: np.ndarray
    name_passes: list[NamePass]


@dataclass(frozen=True)
class FactoryPlan:
    """The whole line: config, reference span, sync events and the assets.

    >>> from mmdata.synth.config import SynthConfig
    >>> build_plan(SynthConfig(minutes=5)).sync_ns.dtype.name
    'int64'
    """

    config: SynthConfig
    start_ns: int
    end_ns: int
    sync_ns: np.ndarray  # int64 reference times of sync events
    assets: list[AssetPlan]

    @property
    def camera_rate(self) -> Fraction:
        """Camera frame rate as an exact fraction (frames per second).

        >>> from mmdata.synth.config import SynthConfig
        >>> build_plan(SynthConfig(minutes=1, camera_fps=2.5)).camera_rate
        Fraction(5, 2)
        """
        return Fraction(self.config.camera_fps).limit_denominator(1001)


def _bearing_train(
    rng: np.random.Generator, faults: list[FaultInterval], bpfo_hz: float
) -> tuple[np.ndarray, np.ndarray]:
    times: list[np.ndarray] = []
    amps: list[np.ndarray] = []
    period_ns = NS_PER_S / bpfo_hz
    for f in faults:
        if f.fault_class != "bearing_wear":
            continue
        n = int((f.end_ns - f.start_ns) / period_ns)
        k = np.arange(n, dtype=np.float64)
        jitter = rng.normal(0.0, 0.004, n)  # 0.4 % slip jitter of the rolling elements
        t = f.start_ns + np.rint((k + 0.5 + jitter) * period_ns).astype(np.int64)
        times.append(t[t < f.end_ns])
        amps.append(rng.uniform(0.75, 1.25, n)[t < f.end_ns])
    if not times:
        return np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(times), np.concatenate(amps)


def _rattle_train(
    rng: np.random.Generator, faults: list[FaultInterval]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times: list[np.ndarray] = []
    for f in faults:
        if f.fault_class != "loose_part_rattle":
            continue
        n = int((f.end_ns - f.start_ns) / (50 * NS_PER_MS)) + 1
        gaps = rng.integers(50_000, 150_001, n).astype(np.int64) * 1000  # 50-150 ms, µs steps
        t = f.start_ns + np.cumsum(gaps) - gaps[0] + int(rng.integers(0, 50_000)) * 1000
        times.append(t[t < f.end_ns - 20 * NS_PER_MS])
    if not times:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    t_all = np.concatenate(times)
    amp = rng.uniform(0.12, 0.30, t_all.size)
    freq = rng.uniform(3500.0, 5500.0, t_all.size)
    return t_all, amp, freq


def _name_passes(config: SynthConfig, asset_index: int, start: int, end: int) -> list[NamePass]:
    rng = rng_for(config.seed, asset_index, DEVICE_CODES["camera"], P_NAMETAG)
    out: list[NamePass] = []
    minute = 0
    while True:
        t = start + minute * 60 * NS_PER_S + int(rng.integers(3_000, 50_001)) * NS_PER_MS
        dur = int(rng.integers(1_600, 2_601)) * NS_PER_MS
        name = BADGE_NAMES[int(rng.integers(0, len(BADGE_NAMES)))]
        x_frac = float(rng.uniform(0.32, 0.68))
        drift = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.05))
        if t + dur > end:
            break
        out.append(NamePass(t, t + dur, name, round(x_frac, 4), round(drift, 4)))
        minute += 1
    return out


def build_asset(config: SynthConfig, asset_index: int, start: int, end: int) -> AssetPlan:
    """Plan one asset: device clocks and spans, faults, machine geometry, impulse trains.

    >>> from mmdata.synth.config import SynthConfig
    >>> cfg = SynthConfig(minutes=1)
    >>> a = build_asset(cfg, 0, cfg.start_ns(), cfg.start_ns() + cfg.duration_ns())
    >>> sorted(a.devices)
    ['accelerometer', 'camera', 'microphone']
    """
    asset = config.asset_ids()[asset_index]
    devices: dict[str, Device] = {}
    for kind in DEVICE_KINDS:
        clock = draw_clock(config, asset_index, kind)
        grain = NS_PER_S if kind == "camera" and config.camera == "mp4" else NS_PER_MS
        span = recording_span(clock, start, end, grain)
        devices[kind] = Device(device_id(kind, asset), kind, clock, span)
    faults = fault_schedule(config, asset_index)
    rng = rng_for(config.seed, asset_index, DEVICE_CODES["asset"], P_ASSET)
    shaft_hz = round(float(rng.uniform(24.5, 26.0)), 3)
    n_balls = int(rng.choice([9, 10]))
    ratio = round(float(rng.uniform(0.18, 0.22)), 4)
    bpfo = n_balls / 2 * shaft_hz * (1 - ratio)
    base = min(2500.0, 0.4 * config.accel_rate_hz)
    resonance = round(base * float(rng.uniform(0.9, 1.05)), 1)
    b_t, b_a = _bearing_train(
        rng_for(config.seed, asset_index, DEVICE_CODES["accelerometer"], P_BEARING), faults, bpfo
    )
    r_t, r_a, r_f = _rattle_train(
        rng_for(config.seed, asset_index, DEVICE_CODES["microphone"], P_RATTLE), faults
    )
    return AssetPlan(
        index=asset_index,
        asset=asset,
        sensor_format=config.sensor_format_for(asset_index),
        devices=devices,
        faults=faults,
        shaft_hz=shaft_hz,
        n_balls=n_balls,
        ball_ratio=ratio,
        bpfo_hz=bpfo,
        resonance_hz=resonance,
        bearing_ns=b_t,
        bearing_amp=b_a,
        rattle_ns=r_t,
        rattle_amp=r_a,
        rattle_hz=r_f,
        name_passes=_name_passes(config, asset_index, start, end),
    )


def build_plan(config: SynthConfig) -> FactoryPlan:
    """Plan the whole run (pure function of the config).

    >>> from mmdata.synth.config import SynthConfig
    >>> build_plan(SynthConfig(minutes=1)).end_ns - build_plan(SynthConfig(minutes=1)).start_ns
    60000000000
    """
    start = config.start_ns()
    end = start + config.duration_ns()
    sync = np.asarray(sync_schedule(config), dtype=np.int64)
    assets = [build_asset(config, i, start, end) for i in range(config.assets)]
    return FactoryPlan(config, start, end, sync, assets)


@functools.lru_cache(maxsize=4)
def _plan_from_json(config_json: str) -> FactoryPlan:
    return build_plan(SynthConfig.model_validate_json(config_json))


def plan_for(config: SynthConfig) -> FactoryPlan:
    """:func:`build_plan`, memoized per process (workers call it once per job).

    >>> from mmdata.synth.config import SynthConfig
    >>> plan_for(SynthConfig(minutes=1)) is plan_for(SynthConfig(minutes=1))
    True
    """
    return _plan_from_json(config.model_dump_json())
