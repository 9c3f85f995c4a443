"""Clock sync: a model per device mapping its clock to the reference device's clock.

The stage (:func:`run_sync`, writing ``RUN/sync/clock_models.json``) and its parts:
:mod:`~mmdata.sync.events` (onset and flash detection on arrays),
:mod:`~mmdata.sync.xcorr` (GCC-PHAT delay estimation), :mod:`~mmdata.sync.fit` (event
matching, linear fits with error bounds, model algebra), :mod:`~mmdata.sync.ntp` (NTP/PTP
logs), :mod:`~mmdata.sync.signals` (events from ingested streams),
:mod:`~mmdata.sync.models` (per-device choice and audit entry) and
:mod:`~mmdata.sync.stage` (the stage).
"""

from mmdata.sync.events import Flashes, Onsets, detect_flashes, detect_onsets, select_sync
from mmdata.sync.fit import ClockEstimate, LineFit, Match, Prior, fit_line, match_events
from mmdata.sync.ntp import NtpLog, fit_ntp, parse_ntp_text, read_ntp_logs
from mmdata.sync.stage import (
    CLOCK_MODELS,
    SCHEMA_VERSION,
    load_clock_models,
    resolve_ntp_logs,
    run_sync,
    synchronize,
)
from mmdata.sync.xcorr import Delay, fractional_delay, gcc_phat

__all__ = [
    "CLOCK_MODELS",
    "SCHEMA_VERSION",
    "ClockEstimate",
    "Delay",
    "Flashes",
    "LineFit",
    "Match",
    "NtpLog",
    "Onsets",
    "Prior",
    "detect_flashes",
    "detect_onsets",
    "fit_line",
    "fit_ntp",
    "fractional_delay",
    "gcc_phat",
    "load_clock_models",
    "match_events",
    "parse_ntp_text",
    "read_ntp_logs",
    "resolve_ntp_logs",
    "run_sync",
    "select_sync",
    "synchronize",
]
