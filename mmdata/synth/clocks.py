"""Device clocks, the line-wide sync-event schedule, fault schedules and NTP log lines.

Every device (camera, accelerometer, microphone of each asset) has its own clock, related
to the reference clock (the line's MES server, device ``mes-line``) by
:class:`mmdata.timebase.ClockModel` anchored at the config start (``origin_ns``)::

    reference_ns = origin_ns + (device_ns - origin_ns) * (1 + drift_ppm * 1e-6) + offset_ns

A device samples on a regular grid of its own clock, starting at a whole millisecond
``device_start_ns`` chosen so the recording covers the reference span [start, end).

NTP log format (``<asset>/clock/ntp-<device>.log``), one line about every 30 s of device
time, UTF-8, ``\\n``-terminated::

    2026-03-01T08:00:30.000123456Z ntp sync: device_ns=<int> reference_ns=<int> rtt_us=<int>

The leading timestamp is ``device_ns`` formatted as UTC with nanosecond digits.
``reference_ns`` is the server's time at that instant as measured by NTP: the true
reference time plus an error of a few hundred microseconds, never more than ``rtt_us/2``.

All randomness derives from ``numpy.random.default_rng([seed, asset_index, device_code,
purpose])`` (see :func:`rng_for`), so any piece can be regenerated alone, in any process.

>>> from mmdata.synth.config import SynthConfig
>>> cfg = SynthConfig(minutes=3, seed=1)
>>> m = draw_clock(cfg, 0, "microphone")
>>> abs(m.offset_ns) <= 2_000_000_000 and abs(m.drift_ppm) <= 100
True
>>> events = sync_schedule(cfg)
>>> 5e9 <= events[0] - cfg.start_ns() <= 20e9
True
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmdata.synth.config import SynthConfig
from mmdata.timebase import NS_PER_MS, NS_PER_S, NS_PER_US, ClockModel, ns_to_datetime

DeviceKind = Literal["camera", "accelerometer", "microphone"]

#: The three recording devices of an asset, in a fixed order.
DEVICE_KINDS: tuple[DeviceKind, ...] = ("camera", "accelerometer", "microphone")
#: ``device_code`` used in random seeds; 9 is asset-level, :data:`LINE` the whole line.
DEVICE_CODES: dict[str, int] = {"camera": 0, "accelerometer": 1, "microphone": 2, "asset": 9}
#: Pseudo asset index used for line-wide draws (sync events, notes).
LINE = 1000
#: Device id prefixes per kind.
DEVICE_PREFIX: dict[str, str] = {"camera": "cam", "accelerometer": "acc", "microphone": "mic"}
#: The MES server: the reference clock, and the writer of operator notes.
REFERENCE_DEVICE = "mes-line"
#: Plant local time (Asia/Tokyo has no DST, so a fixed offset is exact).
PLANT_TZ = dt.timezone(dt.timedelta(hours=9), "JST")
#: Fault classes, each visible in exactly one modality.
FAULT_CLASSES: tuple[str, ...] = ("surface_scratch", "bearing_wear", "loose_part_rattle")
#: The modality in which each fault class is visible.
FAULT_MODALITY: dict[str, str] = {
    "surface_scratch": "camera",
    "bearing_wear": "accelerometer",
    "loose_part_rattle": "microphone",
}
#: The clock model, as written into ground_truth.json and README.md.
CLOCK_FORMULA = (
    "reference_ns = origin_ns + (device_ns - origin_ns) * (1 + drift_ppm * 1e-6) + offset_ns"
)
NTP_PERIOD_NS = 30 * NS_PER_S
SYNC_FLASH_NS = 1500 * NS_PER_MS

# purpose codes (last element of the seed sequence)
P_CLOCK, P_SYNC, P_FAULTS, P_NTP, P_SIGNAL, P_FRAME, P_NAMETAG = 1, 2, 3, 4, 5, 6, 7
P_NOTES, P_BEARING, P_RATTLE, P_ASSET, P_SCENE = 8, 9, 10, 11, 12


def rng_for(seed: int, asset_index: int, device_code: int, *purpose: int) -> np.random.Generator:
    """The random generator of one (asset, device, purpose[, chunk]) stream.

    >>> float(rng_for(0, 0, 1, P_CLOCK).random()) == float(rng_for(0, 0, 1, P_CLOCK).random())
    True
    """
    return np.random.default_rng([seed, asset_index, device_code, *purpose])


def device_id(kind: str, asset: str) -> str:
    """Device id of ``kind`` on ``asset``.

    >>> device_id("accelerometer", "press-2")
    'acc-press-2'
    """
    return f"{DEVICE_PREFIX[kind]}-{asset}"


def draw_clock(config: SynthConfig, asset_index: int, kind: str) -> ClockModel:
    """The clock model of one device: offset uniform in ±max_offset_ms (int ns), drift ±ppm.

    >>> from mmdata.synth.config import SynthConfig
    >>> draw_clock(SynthConfig(max_offset_ms=0, max_drift_ppm=0), 0, "camera").offset_ns
    0
    """
    rng = rng_for(config.seed, asset_index, DEVICE_CODES[kind], P_CLOCK)
    max_off = config.max_offset_ms * NS_PER_MS
    offset = int(rng.integers(-max_off, max_off + 1))
    drift = round(float(rng.uniform(-config.max_drift_ppm, config.max_drift_ppm)), 4)
    return ClockModel(offset_ns=offset, drift_ppm=drift, origin_ns=config.start_ns())


@dataclass(frozen=True)
class RecordingSpan:
    """Where a device's recording lies on its own clock.

    ``device_start_ns`` is a whole millisecond at or before the device time of the reference
    start; ``device_end_ns`` (exclusive) is at least 1 ms past the device time of the
    reference end.

    >>> RecordingSpan(0, 2_000_000_000).sample_count(2)
    4
    """

    device_start_ns: int
    device_end_ns: int

    def sample_count(self, rate_num: int, rate_den: int = 1) -> int:
        """Samples ``i`` of a ``rate_num/rate_den`` Hz grid with a device time before the end.

        >>> RecordingSpan(0, 1_000_000_000).sample_count(5000)
        5000
        """
        span = self.device_end_ns - self.device_start_ns
        return -(-(span * rate_num) // (NS_PER_S * rate_den))


def recording_span(
    model: ClockModel, start_ns: int, end_ns: int, granularity_ns: int = NS_PER_MS
) -> RecordingSpan:
    """Device-clock span covering the reference span [start_ns, end_ns).

    The device start is a whole multiple of ``granularity_ns`` (1 ms; 1 s for MP4 cameras,
    whose ``creation_time`` has whole seconds).

    >>> m = ClockModel(offset_ns=1_234_567, drift_ppm=0.0, origin_ns=0)
    >>> recording_span(m, 10_000_000_000, 20_000_000_000)
    RecordingSpan(device_start_ns=9998000000, device_end_ns=20000000000)
    """
    first = int(model.to_device(start_ns)) - 1
    dev_start = (first // granularity_ns) * granularity_ns
    while int(model.to_reference(dev_start)) > start_ns:  # rounding guard
        dev_start -= granularity_ns
    last = int(model.to_device(end_ns))
    dev_end = (-(-last // NS_PER_MS) + 1) * NS_PER_MS
    return RecordingSpan(dev_start, dev_end)


def grid_times(dev_start: int, index: np.ndarray, rate_num: int, rate_den: int = 1) -> np.ndarray:
    """Device times (int64 ns) of samples ``index`` on a ``rate_num/rate_den`` Hz grid.

    Exact integer arithmetic: ``dev_start + floor(i * 1e9 * rate_den / rate_num)``.

    >>> grid_times(0, np.arange(3, dtype=np.int64), 3).tolist()
    [0, 333333333, 666666666]
    """
    i = index.astype(np.int64)
    step = NS_PER_S * rate_den
    whole, rem = np.divmod(i, rate_num)
    return np.int64(dev_start) + whole * np.int64(step) + (rem * np.int64(step)) // rate_num


def sync_schedule(config: SynthConfig) -> list[int]:
    """Reference times (int ns) of the line-wide sync events (hammer tap + LED flash).

    The first falls 5-20 s after the start; the next ones follow at intervals drawn
    uniformly (ms resolution) from ``sync_interval_s``; none within 2 s of the end.

    >>> from mmdata.synth.config import SynthConfig
    >>> ev = sync_schedule(SynthConfig(minutes=5))
    >>> all(45e9 <= b - a <= 75e9 for a, b in zip(ev, ev[1:]))
    True
    """
    rng = rng_for(config.seed, LINE, DEVICE_CODES["asset"], P_SYNC)
    start = config.start_ns()
    last_ok = start + config.duration_ns() - 2 * NS_PER_S
    low, high = config.sync_interval_s
    t = start + int(rng.integers(5_000, 20_001)) * NS_PER_MS + int(rng.integers(0, 1000)) * 1000
    events: list[int] = []
    while t <= last_ok:
        events.append(t)
        t += int(rng.integers(low * 1000, high * 1000 + 1)) * NS_PER_MS
        t += int(rng.integers(0, 1000)) * 1000  # sub-ms part, so onsets are not on a grid
    return events


@dataclass(frozen=True)
class FaultInterval:
    """One fault on one asset, in reference time [start_ns, end_ns).

    >>> FaultInterval("loose_part_rattle", 0, 30_000_000_000).end_ns
    30000000000
    """

    fault_class: str
    start_ns: int
    end_ns: int

    def as_json(self) -> dict[str, object]:
        """The ground-truth form.

        >>> FaultInterval("bearing_wear", 1, 2).as_json()["class"]
        'bearing_wear'
        """
        return {
            "class": self.fault_class,
            "modality": FAULT_MODALITY[self.fault_class],
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
        }


def fault_schedule(config: SynthConfig, asset_index: int) -> list[FaultInterval]:
    """Non-overlapping fault intervals of one asset (20-60 s, >= 20 s of normal between).

    Classes are balanced: each block of three intervals is a permutation of the three
    classes. About 45% of the time is faulty.

    >>> from mmdata.synth.config import SynthConfig
    >>> f = fault_schedule(SynthConfig(minutes=10), 0)
    >>> all(20e9 <= x.end_ns - x.start_ns <= 60e9 for x in f)
    True
    """
    rng = rng_for(config.seed, asset_index, DEVICE_CODES["asset"], P_FAULTS)
    start = config.start_ns()
    end = start + config.duration_ns()
    t = start + int(rng.integers(5_000, 30_001)) * NS_PER_MS
    out: list[FaultInterval] = []
    order: list[str] = []
    while True:
        if not order:
            order = [FAULT_CLASSES[i] for i in rng.permutation(len(FAULT_CLASSES))]
        dur = int(rng.integers(20_000, 60_001)) * NS_PER_MS
        if t + dur > end:
            if end - t < 20 * NS_PER_S:
                break
            dur = end - t
        out.append(FaultInterval(order.pop(0), t, t + dur))
        t += dur + int(rng.integers(20_000, 70_001)) * NS_PER_MS
    return out


def label_at(faults: list[FaultInterval], ref_ns: np.ndarray) -> np.ndarray:
    """Fault class per reference time (``"normal"`` outside every interval), as an array.

    >>> label_at([FaultInterval("bearing_wear", 10, 20)], np.array([5, 10, 19, 20])).tolist()
    ['normal', 'bearing_wear', 'bearing_wear', 'normal']
    """
    out = np.full(ref_ns.shape, "normal", dtype=object)
    for f in faults:
        out[(ref_ns >= f.start_ns) & (ref_ns < f.end_ns)] = f.fault_class
    return out


# -- time formatting ------------------------------------------------------------------


def file_stamp(ns: int) -> str:
    """UTC time for file names, millisecond precision (truncated).

    >>> file_stamp(1772352000500999999)
    '20260301T080000.500Z'
    """
    d = ns_to_datetime(ns)
    return d.strftime("%Y%m%dT%H%M%S") + f".{(ns % NS_PER_S) // NS_PER_MS:03d}Z"


def iso_utc_ns(ns: int) -> str:
    """UTC ISO-8601 with nanosecond digits and a ``Z``.

    >>> iso_utc_ns(1772352030000123456)
    '2026-03-01T08:00:30.000123456Z'
    """
    return ns_to_datetime(ns).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % NS_PER_S:09d}Z"


def iso_plant_ms(ns: int) -> str:
    """Plant local time (+09:00) ISO-8601 with milliseconds, as the MES writes it.

    >>> iso_plant_ms(1772352123120000000)
    '2026-03-01T17:02:03.120+09:00'
    """
    d = ns_to_datetime(ns, PLANT_TZ)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ns % NS_PER_S) // NS_PER_MS:03d}+09:00"


def exif_time(ns: int) -> tuple[str, str]:
    """EXIF ``DateTimeOriginal`` (plant local time) and ``SubSecTimeOriginal`` (ms).

    >>> exif_time(1772352000500000000)
    ('2026:03:01 17:00:00', '500')
    """
    d = ns_to_datetime(ns, PLANT_TZ)
    return d.strftime("%Y:%m:%d %H:%M:%S"), f"{(ns % NS_PER_S) // NS_PER_MS:03d}"


# -- NTP logs -------------------------------------------------------------------------


def ntp_log_text(
    config: SynthConfig, asset_index: int, kind: str, model: ClockModel, span: RecordingSpan
) -> str:
    """The NTP log of one device (format in the module docstring).

    >>> from mmdata.synth.config import SynthConfig
    >>> cfg = SynthConfig(minutes=1)
    >>> m = draw_clock(cfg, 0, "camera")
    >>> text = ntp_log_text(cfg, 0, "camera", m, recording_span(m, cfg.start_ns(),
    ...                     cfg.start_ns() + cfg.duration_ns()))
    >>> " ntp sync: device_ns=" in text.splitlines()[0]
    True
    """
    rng = rng_for(config.seed, asset_index, DEVICE_CODES[kind], P_NTP)
    lines: list[str] = []
    t = span.device_start_ns + int(rng.integers(0, 5_000)) * NS_PER_MS
    while t < span.device_end_ns:
        rtt_us = int(rng.integers(300, 2_500))
        err = rng.normal(0.0, 150.0) + rng.uniform(-0.3, 0.3) * rtt_us
        err_ns = int(np.clip(err, -rtt_us / 2, rtt_us / 2) * NS_PER_US)
        observed = int(model.to_reference(t)) + err_ns
        lines.append(
            f"{iso_utc_ns(t)} ntp sync: device_ns={t} reference_ns={observed} rtt_us={rtt_us}"
        )
        t += NTP_PERIOD_NS + int(rng.integers(-400_000, 400_001)) * NS_PER_US
    return "".join(line + "\n" for line in lines)
