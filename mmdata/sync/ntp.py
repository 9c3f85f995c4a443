"""NTP/PTP-style clock logs: device-time / reference-time pairs, parsed robustly, and fitted.

A usable line names the device's time and the server's (plant) time at one instant, as
``key=value`` fields in any order, e.g. the synthetic factory's::

    2026-03-01T08:00:30.000123456Z ntp sync: device_ns=1772352030000123456 \
        reference_ns=1772352031871966000 rtt_us=1402

(one line; wrapped here).

Recognised keys (integers, or ISO-8601 times with a zone for the ``*_time`` keys):

* device time: ``device_ns``, ``local_ns``, ``device_time``, ``local_time``; without one,
  a leading ISO-8601 time on the line is the device time;
* reference time: ``reference_ns``, ``ref_ns``, ``server_ns``, ``reference_time``,
  ``server_time``; or instead an offset, reference minus device: ``offset_ns``,
  ``offset_us``, ``offset_ms``;
* round-trip time (optional; the pair's error is at most half of it): ``rtt_ns``,
  ``rtt_us``, ``rtt_ms``, ``delay_ns``, ``delay_us``, ``delay_ms``.

Blank lines and ``#`` comments are skipped; any other line without a usable pair (or with
a negative round trip) is garbage: counted, with the first few kept as examples, never an
error. The fit (:func:`fit_ntp`) weights each pair by ``1/rtt`` and drops outliers.

>>> log = parse_ntp_text("device_ns=1000 reference_ns=3000 rtt_us=2\\nnonsense\\n# note\\n")
>>> log.device_ns.tolist(), log.reference_ns.tolist(), log.rtt_ns.tolist(), log.garbage
([1000], [3000], [2000], 1)
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from connectors.timeparse import parse_iso_ns
from mmdata.errors import MmdataError
from mmdata.sync.fit import LineFit, Prior, fit_line

IntArray = npt.NDArray[np.int64]

_FIELD = re.compile(r"([A-Za-z_]+)=(\S+)")
_LEADING_ISO = re.compile(
    r"^\s*\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:Z|[+-]\d{2}:?\d{2}))"
)
_DEVICE_KEYS = ("device_ns", "local_ns", "device_time", "local_time")
_REF_KEYS = ("reference_ns", "ref_ns", "server_ns", "reference_time", "server_time")
_UNIT = {"ns": 1, "us": 1_000, "ms": 1_000_000}
_EXAMPLES = 3
#: Pairs without a round-trip time are taken as this good (ns).
DEFAULT_RTT_NS = 1_000_000


@dataclass
class NtpLog:
    """Pairs parsed from one or more log files (device ns, reference ns, round trip ns)."""

    device_ns: IntArray
    reference_ns: IntArray
    rtt_ns: IntArray
    lines: int = 0
    garbage: int = 0
    examples: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.device_ns.size)


def _value(key: str, text: str) -> int:
    text = text.rstrip(",;")
    if key.endswith("_time"):
        return parse_iso_ns(text)
    return int(text)


def parse_line(line: str) -> tuple[int, int, int | None] | None:
    """``(device_ns, reference_ns, rtt_ns or None)`` of one line, or None when unusable.

    >>> parse_line("2026-03-01T08:00:00Z offset_us=-250 rtt_us=900")
    (1772352000000000000, 1772351999999750000, 900000)
    >>> parse_line("device_ns=12 reference_ns=abc") is None
    True
    """
    fields = {k.lower(): v for k, v in _FIELD.findall(line)}
    try:
        device = next((_value(k, fields[k]) for k in _DEVICE_KEYS if k in fields), None)
        if device is None:
            lead = _LEADING_ISO.match(line)
            if lead is None:
                return None
            device = parse_iso_ns(lead.group(1).replace(",", "."))
        ref = next((_value(k, fields[k]) for k in _REF_KEYS if k in fields), None)
        if ref is None:
            off = next(
                (int(fields[f"offset_{u}"].rstrip(",;")) * s for u, s in _UNIT.items()
                 if f"offset_{u}" in fields),
                None,
            )  # fmt: skip
            if off is None:
                return None
            ref = device + off
        rtt = next(
            (int(fields[f"{k}_{u}"].rstrip(",;")) * s for k in ("rtt", "delay")
             for u, s in _UNIT.items() if f"{k}_{u}" in fields),
            None,
        )  # fmt: skip
    except (ValueError, MmdataError):
        return None
    if rtt is not None and rtt < 0:
        return None
    return device, ref, rtt


def parse_ntp_text(text: str) -> NtpLog:
    """Parse a log's text (see the module docstring)."""
    dev: list[int] = []
    ref: list[int] = []
    rtt: list[int] = []
    log = NtpLog(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        log.lines += 1
        got = parse_line(line)
        if got is None:
            log.garbage += 1
            if len(log.examples) < _EXAMPLES:
                log.examples.append(line[:200])
            continue
        dev.append(got[0])
        ref.append(got[1])
        rtt.append(DEFAULT_RTT_NS if got[2] is None else max(got[2], 1))
    log.device_ns = np.asarray(dev, dtype=np.int64)
    log.reference_ns = np.asarray(ref, dtype=np.int64)
    log.rtt_ns = np.asarray(rtt, dtype=np.int64)
    return log


def expand(pattern: str) -> list[Path]:
    """Files a configured path or glob names, sorted (a plain missing path gives none).

    >>> expand("/nonexistent/ntp-*.log")
    []
    """
    if glob.has_magic(pattern):
        return [Path(p) for p in sorted(glob.glob(pattern)) if Path(p).is_file()]
    p = Path(pattern)
    return [p] if p.is_file() else []


def read_ntp_logs(paths: Iterable[Path]) -> NtpLog:
    """Parse and concatenate several log files (undecodable bytes are replaced)."""
    parts = []
    files = []
    for p in paths:
        parts.append(parse_ntp_text(Path(p).read_text(encoding="utf-8", errors="replace")))
        files.append(str(p))
    if not parts:
        return NtpLog(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return NtpLog(
        np.concatenate([x.device_ns for x in parts]),
        np.concatenate([x.reference_ns for x in parts]),
        np.concatenate([x.rtt_ns for x in parts]),
        lines=sum(x.lines for x in parts),
        garbage=sum(x.garbage for x in parts),
        examples=[e for x in parts for e in x.examples][:_EXAMPLES],
        files=files,
    )


def fit_ntp(log: NtpLog, origin_ns: int, prior: Prior | None = None) -> LineFit | None:
    """Device -> plant clock model from an NTP log (None without pairs).

    Weights are ``1/rtt``: each pair's standard deviation is taken as
    ``sqrt(rtt * median_rtt) / 2``, i.e. half the round trip at the median, and the
    covariance is scaled to the actual residuals.
    """
    if len(log) == 0:
        return None
    rtt = log.rtt_ns.astype(np.float64)
    sigma = np.sqrt(rtt * float(np.median(rtt))) / 2.0
    return fit_line(log.device_ns, log.reference_ns, sigma, origin_ns=origin_ns,
                    prior=prior, absolute_sigma=False)  # fmt: skip
