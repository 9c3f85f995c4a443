"""Time is int64 ns end to end; clock models map device time to reference time exactly."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from mmdata.timebase import (
    NS_PER_S,
    ClockModel,
    datetime_to_ns,
    ms_to_ns,
    ns_to_datetime,
    ns_to_iso,
)

T0 = 1_772_352_000_000_000_000  # 2026-03-01T08:00:00Z


def test_datetime_round_trip_keeps_microseconds_and_zone():
    jst = dt.timezone(dt.timedelta(hours=9))
    d = dt.datetime(2026, 3, 1, 17, 0, 0, 123456, tzinfo=jst)
    ns = datetime_to_ns(d)
    assert ns == T0 + 123_456_000
    assert ns_to_datetime(ns, jst) == d


def test_naive_datetime_is_refused():
    with pytest.raises(ValueError, match="no time zone"):
        datetime_to_ns(dt.datetime(2026, 3, 1))


def test_iso_has_nanoseconds():
    assert ns_to_iso(T0 + 5) == "2026-03-01T08:00:00.000000005+00:00"
    assert ms_to_ns(3) == 3_000_000


def test_clock_model_scalar_and_array_agree_and_invert():
    m = ClockModel(offset_ns=-1_234_567_891, drift_ppm=-87.5, origin_ns=T0)
    dev = T0 + np.arange(0, 3600 * NS_PER_S, 997 * 1_000_000, dtype=np.int64)
    ref = m.to_reference(dev)
    assert ref.dtype == np.int64
    assert [m.to_reference(int(d)) for d in dev[:50]] == ref[:50].tolist()
    back = m.to_device(ref)
    assert np.max(np.abs(back - dev)) <= 1
    # one hour at -87.5 ppm loses 315 ms against the reference
    elapsed_dev = int(dev[-1] - T0)
    assert int(ref[-1]) - T0 - elapsed_dev == m.offset_ns + round(elapsed_dev * -87.5e-6)


def test_clock_model_is_exact_far_from_the_epoch():
    m = ClockModel(offset_ns=7, drift_ppm=0.0, origin_ns=T0)
    assert m.to_reference(T0 + 1) == T0 + 8  # no float rounding at 1.7e18
