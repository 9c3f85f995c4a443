"""Time in mmdata: int64 nanoseconds since the Unix epoch, and device clock models.

Every timestamp is an ``int`` / ``numpy.int64`` count of nanoseconds (UTC). Float seconds
are never used for timestamps; durations in config are integer milliseconds and are
converted with :func:`ms_to_ns`.

A device clock is related to the reference clock by a linear model anchored at an
``origin_ns`` (so that drift multiplies a small elapsed time, not 1.7e18 ns since 1970)::

    reference_ns = origin_ns + (device_ns - origin_ns) * (1 + drift_ppm * 1e-6) + offset_ns

>>> m = ClockModel(offset_ns=1_000_000, drift_ppm=50.0, origin_ns=0)
>>> int(m.to_reference(10_000_000_000))   # 10 s of device time
10001500000
>>> int(m.to_device(m.to_reference(10_000_000_000)))
10000000000
"""

from __future__ import annotations

import datetime as dt
from typing import overload

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

Int64Array = npt.NDArray[np.int64]


def ms_to_ns(ms: int) -> int:
    """Integer milliseconds to integer nanoseconds.

    >>> ms_to_ns(1500)
    1500000000
    """
    return int(ms) * NS_PER_MS


def datetime_to_ns(value: dt.datetime) -> int:
    """A timezone-aware datetime to int64 ns since the epoch, exact to the microsecond.

    >>> datetime_to_ns(dt.datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=dt.UTC))
    1772352000123456000
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"datetime {value.isoformat()!r} has no time zone; give one (e.g. +00:00)")
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * NS_PER_US


def ns_to_datetime(ns: int, tz: dt.tzinfo = dt.UTC) -> dt.datetime:
    """Int ns since the epoch to an aware datetime (sub-microsecond digits are truncated).

    >>> ns_to_datetime(1772352000123456789).isoformat()
    '2026-03-01T08:00:00.123456+00:00'
    """
    seconds, rem = divmod(int(ns), NS_PER_S)
    base = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
        seconds=seconds, microseconds=rem // NS_PER_US
    )
    return base.astimezone(tz)


def ns_to_iso(ns: int, tz: dt.tzinfo = dt.UTC) -> str:
    """Int ns to ISO-8601 with nanosecond digits and the zone offset.

    >>> ns_to_iso(1772352000123456789)
    '2026-03-01T08:00:00.123456789+00:00'
    """
    d = ns_to_datetime(ns, tz)
    frac = int(ns) % NS_PER_S
    return (
        d.strftime("%Y-%m-%dT%H:%M:%S")
        + f".{frac:09d}"
        + d.strftime("%z")[:3]
        + ":"
        + (d.strftime("%z")[3:])
    )


class ClockModel(BaseModel):
    """A device clock relative to the reference clock (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    offset_ns: int = Field(0, description="Reference minus device time at origin_ns, in ns.")
    drift_ppm: float = Field(
        0.0, description="Rate error: the device clock runs (1 + drift_ppm*1e-6) times slow."
    )
    origin_ns: int = Field(0, description="Anchor of the linear model (device time, ns).")

    @overload
    def to_reference(self, device_ns: int) -> int: ...
    @overload
    def to_reference(self, device_ns: Int64Array) -> Int64Array: ...

    def to_reference(self, device_ns: int | Int64Array) -> int | Int64Array:
        """Map device time(s) to reference time, int64 in, int64 out."""
        if isinstance(device_ns, np.ndarray):
            d = device_ns.astype(np.int64) - np.int64(self.origin_ns)
            corr = np.rint(d.astype(np.float64) * (self.drift_ppm * 1e-6)).astype(np.int64)
            return d + corr + np.int64(self.origin_ns + self.offset_ns)
        d_int = int(device_ns) - self.origin_ns
        return self.origin_ns + d_int + round(d_int * self.drift_ppm * 1e-6) + self.offset_ns

    @overload
    def to_device(self, reference_ns: int) -> int: ...
    @overload
    def to_device(self, reference_ns: Int64Array) -> Int64Array: ...

    def to_device(self, reference_ns: int | Int64Array) -> int | Int64Array:
        """Inverse of :meth:`to_reference` (exact to within 1 ns of rounding)."""
        scale = 1.0 + self.drift_ppm * 1e-6
        if isinstance(reference_ns, np.ndarray):
            r = reference_ns.astype(np.int64) - np.int64(self.origin_ns + self.offset_ns)
            back = np.rint(r.astype(np.float64) / scale).astype(np.int64)
            return back + np.int64(self.origin_ns)
        r_int = int(reference_ns) - self.origin_ns - self.offset_ns
        return self.origin_ns + round(r_int / scale)
