"""Sensor time columns to int64 ns, vectorized: epoch numbers, ISO-8601 strings, sample index.

Used by :mod:`connectors.sensor`. A :class:`TimeReader` turns one batch of rows (a polars
DataFrame holding the raw time column, typed by the file reader) into ``ts_ns``. Rows whose
time cannot be converted come back null; :meth:`TimeReader.rescue` then either recovers the
value (the scalar ISO parser is more lenient than the vectorized one) or explains why not,
so the connector can quarantine the row with that reason.

* ``unit`` s / ms / us / ns: CSV text is parsed as an exact decimal (``1772352000.0002``
  keeps every digit down to 1 ns); Parquet integers are scaled (overflow → rejected), floats
  read by their shortest round-trip decimal (what the writer meant, not binary noise),
  Arrow timestamps taken as is (zone-less ones need ``tz``).
* ``unit`` iso: zoned strings in any mix of offsets are converted to UTC; zone-less ones
  use ``tz`` or are rejected.
* sample index: ``ts = start + round(index * 1e9 / rate_hz)``, exact in integer arithmetic
  for rates that are ratios of small integers.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from fractions import Fraction

import numpy as np
import polars as pl

from connectors.timeparse import iso_zone, parse_iso_ns, zone
from mmdata.errors import InputDataError

#: Digits after the decimal point kept for each unit, so that value * scale is whole ns.
DECIMAL_SCALE = {"s": 9, "ms": 6, "us": 3, "ns": 0}
UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_I64_MAX = 2**63 - 1
_ZONE = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")
_ISO_ZONED = "%Y-%m-%dT%H:%M:%S%.f%z"
_ISO_NAIVE = "%Y-%m-%dT%H:%M:%S%.f"


def normalize_zone(z: str) -> str:
    """One spelling per zone.

    >>> normalize_zone("+00:00"), normalize_zone("+0900")
    ('Z', '+09:00')
    """
    if z in ("Z", "+00:00", "+0000", "-00:00", "-0000"):
        return "Z"
    return z if ":" in z else f"{z[:3]}:{z[3:]}"


@dataclass(frozen=True)
class TimeReader:
    """How one file's rows get their ``ts_ns``.

    ``column`` is the time column (None in sample-index mode without an index column);
    ``unit`` is s/ms/us/ns/iso; in sample-index mode ``start_ns`` and ``rate_hz`` are set and
    the index comes from ``column`` or, when it is None, from the row ordinal.
    """

    column: str | None
    unit: str
    tz: dt.tzinfo | None = None
    start_ns: int | None = None
    rate_hz: float | None = None

    @property
    def indexed(self) -> bool:
        """True in sample-index mode (start + rate)."""
        return self.rate_hz is not None

    def csv_dtype(self) -> pl.DataType:
        """The dtype the CSV reader should parse the time column as."""
        if self.indexed:
            return pl.Int64()
        if self.unit == "iso":
            return pl.String()
        if self.unit == "ns":
            return pl.Int64()  # the common case, parsed fastest; odd forms are rescued
        return pl.Decimal(38, DECIMAL_SCALE[self.unit])

    # --- vectorized ----------------------------------------------------------------------
    def to_ns(self, frame: pl.DataFrame, ordinal: str) -> tuple[pl.Series, set[str]]:
        """``ts_ns`` (Int64, null where unconvertible) and the zones seen (ISO only)."""
        if self.indexed:
            col = frame.get_column(ordinal if self.column is None else self.column)
            return self._from_index(col), set()
        assert self.column is not None
        col = frame.get_column(self.column)
        dtype = col.dtype
        if dtype == pl.String:
            if self.unit == "iso":
                return self._from_iso(col)
            col = col.str.strip_chars().str.to_decimal(scale=DECIMAL_SCALE[self.unit])
            dtype = col.dtype
        if isinstance(dtype, pl.Decimal):
            scale = UNIT_NS[self.unit]
            return (col * scale).cast(pl.Int64, strict=False), set()
        if dtype.is_integer():
            return self._from_int(col), set()
        if dtype.is_float():
            return self._from_float(col), set()
        if isinstance(dtype, pl.Datetime):
            return self._from_datetime(col), set()
        raise InputDataError(
            f"time column {self.column!r} has type {dtype}, which is not a time",
            hint="point time.column at epoch numbers, ISO-8601 strings or timestamps",
        )

    def _from_index(self, col: pl.Series) -> pl.Series:
        assert self.start_ns is not None
        assert self.rate_hz is not None
        idx = col.cast(pl.Int64, strict=False)
        valid = idx.is_not_null().to_numpy()
        values = idx.fill_null(0).to_numpy().astype(np.int64)
        rate = Fraction(self.rate_hz).limit_denominator(1_000_000)
        num, den = rate.numerator, rate.denominator
        peak = int(np.abs(values).max()) if values.size else 0
        if peak * 1_000_000_000 * den < 2**62:
            # Exact: index * 1e9 * den / num, rounded half up, all in int64.
            scaled = values * np.int64(1_000_000_000 * den)
            offset = np.floor_divide(scaled + np.int64(num // 2), np.int64(num))
        else:
            offset = np.rint(values.astype(np.float64) * (1e9 / self.rate_hz)).astype(np.int64)
        return _null_where(pl.Series(col.name, offset + np.int64(self.start_ns)), ~valid)

    def _from_int(self, col: pl.Series) -> pl.Series:
        scale = UNIT_NS[self.unit]
        col = col.cast(pl.Int64, strict=False)
        if scale == 1:
            return col
        limit = _I64_MAX // scale
        ok = col.abs() <= limit
        return pl.select(pl.when(ok).then(col * scale).otherwise(None)).to_series()

    def _from_float(self, col: pl.Series) -> pl.Series:
        # The shortest decimal that round-trips is what the writer meant: 1772352000.0002 s
        # is ...000200000 ns, not the binary float's ...000200033.
        text = col.cast(pl.String).str.to_decimal(scale=DECIMAL_SCALE[self.unit])
        return (text * UNIT_NS[self.unit]).cast(pl.Int64, strict=False).alias(col.name)

    def _from_datetime(self, col: pl.Series) -> pl.Series:
        dtype = col.dtype
        assert isinstance(dtype, pl.Datetime)
        if dtype.time_zone is None:
            if self.tz is None:
                raise InputDataError(
                    f"time column {self.column!r} holds timestamps without a time zone",
                    hint="set the source's tz option (e.g. tz: UTC or tz: Asia/Tokyo)",
                )
            col = col.dt.replace_time_zone(_tz_name(self.tz), ambiguous="null",
                                           non_existent="null")  # fmt: skip
        return col.dt.cast_time_unit("ns").dt.convert_time_zone("UTC").cast(pl.Int64)

    def _from_iso(self, col: pl.Series) -> tuple[pl.Series, set[str]]:
        text = col.str.strip_chars()
        norm = (
            text.str.replace(r"Z$", "+00:00")
            .str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
            .str.replace(",", ".", literal=True)
        )
        zoned = norm.str.to_datetime(_ISO_ZONED, time_unit="ns", time_zone="UTC", strict=False)
        zones = {
            normalize_zone(m.group(1))
            for tail in norm.filter(zoned.is_not_null()).str.slice(-6).unique().to_list()
            if tail and (m := _ZONE.search(tail))
        }
        ts = zoned.cast(pl.Int64)
        if self.tz is not None and ts.null_count():
            naive = norm.str.to_datetime(_ISO_NAIVE, time_unit="ns", strict=False)
            local = naive.dt.replace_time_zone(_tz_name(self.tz), ambiguous="null",
                                               non_existent="null")  # fmt: skip
            ts = ts.fill_null(local.dt.convert_time_zone("UTC").cast(pl.Int64))
        return ts.alias(col.name), zones

    # --- one row at a time (the rare path) ---------------------------------------------
    def rescue(self, raw: str | None) -> tuple[int | None, str, str | None]:
        """For a row the vectorized path could not convert: (ts, reason, zone).

        ``ts`` is the recovered time (reason empty) or None (reason says why).
        """
        name = self.column or "row index"
        if raw is None or not raw.strip():
            return None, f"column {name}: missing time", None
        if self.indexed:
            return None, f"column {name}: {raw!r} is not a whole sample index", None
        if self.unit == "iso":
            try:
                ts = parse_iso_ns(raw, self.tz)
            except InputDataError as err:
                reason = err.message
                if "no time zone" in reason:
                    reason += " (set the source's tz option)"
                return None, f"column {name}: {reason}", None
            z = iso_zone(raw)
            return ts, "", normalize_zone(z) if z else None
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            return None, f"column {name}: {raw!r} is not a number", None
        ts = (
            int((value * UNIT_NS[self.unit]).to_integral_value(ROUND_HALF_EVEN))
            if value.is_finite() else 2**63
        )  # fmt: skip
        if not -(2**63) <= ts < 2**63:
            return None, f"column {name}: {raw!r} is out of range for epoch {self.unit}", None
        return ts, "", None


def _null_where(series: pl.Series, invalid: np.ndarray) -> pl.Series:
    if not invalid.any():
        return series
    out = pl.select(pl.when(pl.Series(invalid)).then(None).otherwise(series)).to_series()
    return out.alias(series.name)


def _tz_name(tz: dt.tzinfo) -> str:
    """A zone name polars understands ('UTC', '+09:00', 'Asia/Tokyo')."""
    if tz is dt.UTC:
        return "UTC"
    if isinstance(tz, dt.timezone):
        off = tz.utcoffset(None)
        minutes = int(off.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        minutes = abs(minutes)
        return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return str(getattr(tz, "key", tz))


def make_time_reader(
    *,
    column: str | None,
    unit: str,
    tz: str | None,
    start_ns: int | None = None,
    rate_hz: float | None = None,
) -> TimeReader:
    """A :class:`TimeReader` from option values (``tz`` parsed here)."""
    return TimeReader(column, unit, zone(tz) if tz else None, start_ns, rate_hz)
