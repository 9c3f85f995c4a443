"""Timestamps from file names, ISO-8601 strings and epoch numbers, to int64 ns (UTC).

File-name patterns are strftime-like (``%Y %m %d %H %M %S %f %z %s``, ``*`` matches
anything) or regexes with named groups (``Y m d H M S f z`` or ``epoch_s / epoch_ms /
epoch_us / epoch_ns``). ``%f`` takes 1–9 fractional digits (milliseconds in a name are
fine). Without a zone in the name, ``tz`` (default UTC) applies.

>>> p = FilenameTime.compile("cam-press-1_%Y%m%dT%H%M%S.%fZ")
>>> p.parse("cam-press-1_20260301T080000.500Z.jpg")
1772352000500000000
>>> parse_iso_ns("2026-03-01T17:00:00.5+09:00")
1772352000500000000
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from mmdata.errors import ConfigError, InputDataError
from mmdata.timebase import NS_PER_S

_FIELDS = {
    "%Y": r"(?P<Y>\d{4})",
    "%m": r"(?P<m>\d{2})",
    "%d": r"(?P<d>\d{2})",
    "%H": r"(?P<H>\d{2})",
    "%M": r"(?P<M>\d{2})",
    "%S": r"(?P<S>\d{2})",
    "%f": r"(?P<f>\d{1,9})",
    "%z": r"(?P<z>Z|[+-]\d{2}:?\d{2})",
    "%s": r"(?P<epoch_s>\d{9,11})",
    "%%": "%",
}
_UNIT_NS = {"s": NS_PER_S, "ms": 1_000_000, "us": 1_000, "ns": 1}
_EPOCH_GROUPS = {"epoch_s": NS_PER_S, "epoch_ms": 1_000_000, "epoch_us": 1_000, "epoch_ns": 1}


def zone(name: str) -> dt.tzinfo:
    """A tzinfo from 'UTC', '+09:00' or an IANA name ('Asia/Tokyo')."""
    if name.upper() in ("UTC", "Z"):
        return dt.UTC
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", name)
    if m:
        sign = 1 if m.group(1) == "+" else -1
        return dt.timezone(sign * dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3))))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ConfigError(
            "time zone", "tz", name, "'UTC', an offset like '+09:00', or an IANA name"
        ) from err


def _offset(text: str) -> dt.tzinfo:
    return zone(text)


@dataclass(frozen=True)
class FilenameTime:
    """A compiled file-name time pattern."""

    regex: re.Pattern[str]
    tz: dt.tzinfo
    source: str

    @classmethod
    def compile(cls, pattern: str, tz: str = "UTC", *, is_regex: bool = False) -> FilenameTime:
        """Compile a strftime-like pattern (or a regex with named groups when ``is_regex``)."""
        if is_regex:
            try:
                rx = re.compile(pattern)
            except re.error as err:
                raise ConfigError("timestamp", "regex", pattern, f"a valid regex ({err})") from err
        else:
            out, i = [], 0
            while i < len(pattern):
                two = pattern[i : i + 2]
                if two in _FIELDS:
                    out.append(_FIELDS[two])
                    i += 2
                elif pattern[i] == "%":
                    raise ConfigError(
                        "timestamp", "filename", pattern,
                        "a pattern using only %Y %m %d %H %M %S %f %z %s %% and * wildcards",
                    )  # fmt: skip
                elif pattern[i] == "*":
                    out.append(".*?")
                    i += 1
                else:
                    out.append(re.escape(pattern[i]))
                    i += 1
            rx = re.compile("".join(out))
        groups = set(rx.groupindex)
        if not (groups & set(_EPOCH_GROUPS) or {"Y", "m", "d", "H", "M", "S"} <= groups):
            raise ConfigError(
                "timestamp", "filename", pattern,
                "a pattern with date and time fields (%Y %m %d %H %M %S) or an epoch field",
            )  # fmt: skip
        return cls(rx, zone(tz), pattern)

    def parse(self, name: str) -> int:
        """Time in ``name`` (a file name or path; the last match wins) as int ns UTC."""
        base = name.rsplit("/", 1)[-1]
        m = self.regex.search(base)
        if m is None:
            raise InputDataError(
                f"file name {base!r} does not match the time pattern {self.source!r}",
                hint="fix the pattern in the source's timestamp option, or rename the file",
            )
        g = m.groupdict()
        for key, scale in _EPOCH_GROUPS.items():
            if g.get(key):
                return int(g[key]) * scale
        try:
            tz = _offset(g["z"]) if g.get("z") else self.tz
            base_dt = dt.datetime(
                int(g["Y"]), int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), int(g["S"]),
                tzinfo=tz,
            )  # fmt: skip
        except (ValueError, ConfigError) as err:
            raise InputDataError(f"file name {base!r} holds an impossible time: {err}") from err
        frac = g.get("f") or ""
        frac_ns = int(frac.ljust(9, "0")) if frac else 0
        return _aware_to_ns(base_dt) + frac_ns


def _aware_to_ns(d: dt.datetime) -> int:
    delta = d - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1_000


_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:[.,](?P<f>\d{1,9}))?(?P<z>Z|[+-]\d{2}:?\d{2})?"
)


def parse_iso_ns(text: str, default_tz: dt.tzinfo | None = None) -> int:
    """ISO-8601 date-time with zone (nanosecond digits kept) to int ns UTC.

    Without a zone in the text, ``default_tz`` applies; if that is None the value is
    refused (an unzoned time is ambiguous).
    """
    m = _ISO.fullmatch(text.strip())
    if m is None:
        raise InputDataError(f"{text!r} is not an ISO-8601 date-time")
    if m.group("z"):
        tz = _offset(m.group("z"))
    elif default_tz is not None:
        tz = default_tz
    else:
        raise InputDataError(
            f"{text!r} has no time zone", hint="set the source's `tz` option, or write the offset"
        )
    y, mo, d = (int(x) for x in m.group("date").split("-"))
    try:
        base = dt.datetime(y, mo, d, int(m.group("h")), int(m.group("mi")), int(m.group("s")),
                           tzinfo=tz)  # fmt: skip
    except ValueError as err:
        raise InputDataError(f"{text!r} is not a valid date-time: {err}") from err
    frac = m.group("f") or ""
    return _aware_to_ns(base) + (int(frac.ljust(9, "0")) if frac else 0)


def iso_zone(text: str) -> str | None:
    """The zone suffix of an ISO string ('Z', '+09:00'), or None."""
    m = _ISO.fullmatch(text.strip())
    return m.group("z") if m else None


def epoch_to_ns(values: np.ndarray, unit: str) -> np.ndarray:
    """Epoch numbers in ``unit`` (s, ms, us, ns) to int64 ns; floats are rounded to 1 ns.

    >>> epoch_to_ns(np.array([1.5]), "s").tolist()
    [1500000000]
    """
    if unit not in _UNIT_NS:
        raise ConfigError("time", "unit", unit, "one of s, ms, us, ns")
    scale = _UNIT_NS[unit]
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64) * np.int64(scale)
    # Split whole and fractional parts so float64 epoch seconds keep sub-µs precision.
    whole = np.floor(values)
    frac = values - whole
    return whole.astype(np.int64) * np.int64(scale) + np.rint(frac * scale).astype(np.int64)
