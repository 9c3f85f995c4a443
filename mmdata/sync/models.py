"""Per-device clock models from the evidence, and each device's entry in clock_models.json.

:func:`event_models` matches every device segment's sync events to the anchor's (the
reference device, or the device standing in for it) and fits a line, refining matched
audio/vibration pairs of the same modality and rate by GCC-PHAT; :func:`device_entry`
chooses among the candidate models by ``sync.evidence`` order, composes, bounds and flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmdata.config import SyncConfig
from mmdata.sync.fit import (
    ClockEstimate,
    LineFit,
    Prior,
    fit_line,
    match_events,
    tighten_offset,
)
from mmdata.sync.ntp import NtpLog
from mmdata.sync.signals import EventSet
from mmdata.sync.xcorr import gcc_phat
from mmdata.timebase import NS_PER_MS

_MIN_PEAK = 0.2  # cross-correlation refinement: minimum PHAT peak
_SIDELOBE_RATIO = 2.0  # ... and to move a pair more than 2 samples (up to _FAR_MS): this
_FAR_MS = 2.0
_REFINED_RES = 0.25  # resolution of a refined pair, in sample periods
_NTP_DRIFT_FLOOR_PPM = 0.05  # an NTP drift prior is never taken as better than this
_MAX_AUDIT_PAIRS = 2000


@dataclass
class Context:
    """Everything the per-device models are computed from."""

    sync: SyncConfig
    devices: list[str]
    reference: str
    spans: dict[str, tuple[int, int]]
    seg_spans: dict[tuple[str, int], tuple[int, int]]
    events: dict[str, dict[int, EventSet]]
    ntp_logs: dict[str, NtpLog] = field(default_factory=dict)
    plant: dict[str, ClockEstimate] = field(default_factory=dict)  # device -> plant clock
    ntp_fits: dict[str, LineFit] = field(default_factory=dict)
    anchor: str | None = None  # whose events the others are matched to

    def span(self, dev: str, seg: int | None = None) -> tuple[int, int] | None:
        """Device-time span of a device (or one of its segments), if it has data."""
        if seg is not None and (dev, seg) in self.seg_spans:
            return self.seg_spans[(dev, seg)]
        return self.spans.get(dev)


@dataclass
class EventFit:
    """A device segment's events matched and fitted (estimate relative to the reference)."""

    estimate: ClockEstimate
    fit: LineFit
    pairs: list[dict[str, Any]]
    candidates: int
    detected: int


def main_segment(events: dict[int, EventSet]) -> int | None:
    """The segment with the most events (the lowest id on a tie)."""
    if not events:
        return None
    return max(sorted(events), key=lambda s: len(events[s]))


def drift_prior(ctx: Context, dev: str, anchor: str) -> Prior:
    """The drift of ``dev`` relative to ``anchor`` from their NTP models, else 0 +- max."""
    if dev in ctx.plant and anchor in ctx.plant:
        rel = ctx.plant[dev].then(ctx.plant[anchor].invert())
        return Prior(rel.drift_ppm, max(rel.drift_sd_ppm(), _NTP_DRIFT_FLOOR_PPM), "ntp_log")
    return Prior(0.0, ctx.sync.max_drift_ppm / math.sqrt(3.0), "prior")


def event_models(
    ctx: Context, anchor: str, anchor_rel: ClockEstimate | None
) -> dict[str, dict[int, EventFit]]:
    """Event-based models (relative to the reference) per device and segment."""
    a_seg = main_segment(ctx.events[anchor])
    assert a_seg is not None
    ref_ev = ctx.events[anchor][a_seg]
    out: dict[str, dict[int, EventFit]] = {}
    for dev in ctx.devices:
        for seg, ev in sorted(ctx.events.get(dev, {}).items()):
            if (dev == anchor and seg == a_seg) or len(ev) == 0:
                continue
            got = _fit_segment(ctx, dev, seg, ev, anchor, ref_ev)
            if got is None:
                continue
            if anchor_rel is not None:
                got.estimate = got.estimate.then(anchor_rel)
            out.setdefault(dev, {})[seg] = got
    return out


def _fit_segment(
    ctx: Context, dev: str, seg: int, ev: EventSet, anchor: str, ref_ev: EventSet
) -> EventFit | None:
    sync = ctx.sync
    prior = drift_prior(ctx, dev, anchor)
    max_drift = sync.max_drift_ppm if prior.source == "prior" else min(
        sync.max_drift_ppm, 5 * prior.sd_ppm + 1.0)  # fmt: skip
    m = match_events(ev.t_ns, ev.res_ns, ref_ev.t_ns, ref_ev.res_ns,
                     max_offset_ns=sync.max_offset_ms * NS_PER_MS,
                     tolerance_ns=sync.match_tolerance_ms * NS_PER_MS,
                     max_drift_ppm=max_drift, drift_ppm=prior.mean_ppm)  # fmt: skip
    if len(m) == 0:
        return None
    d = ev.t_ns[m.device_index].copy()
    r = ref_ev.t_ns[m.reference_index]
    res_d = ev.res_ns[m.device_index].astype(np.float64)
    res_r = ref_ev.res_ns[m.reference_index].astype(np.float64)
    refined = np.zeros(d.size, bool)
    if sync.refine:
        for k, (i, j) in enumerate(zip(m.device_index, m.reference_index, strict=True)):
            got = _refine_pair(ev, int(i), ref_ev, int(j))
            if got is not None:
                d[k], res_d[k], res_r[k] = got
                refined[k] = True
    sigma = np.sqrt((res_d**2 + res_r**2) / 12.0)
    span = ctx.span(dev, seg)
    origin = span[0] if span is not None else int(d.min())
    fit = fit_line(d, r, sigma, origin_ns=origin, prior=prior)
    flashes = [ev.kind[int(i)] == "flash" or ref_ev.kind[int(j)] == "flash"
               for i, j in zip(m.device_index, m.reference_index, strict=True)]  # fmt: skip
    if all(flashes):  # bounded errors: intersect the intervals
        fit = tighten_offset(fit, d, r, (res_d + res_r) / 2)
    pairs = [
        {"device_ns": int(a), "reference_ns": int(b), "kind": ev.kind[int(i)],
         "stream": ev.stream[int(i)], "refined": bool(f), "used": bool(u)}
        for a, b, i, f, u in zip(d, r, m.device_index, refined, fit.used, strict=True)
    ][:_MAX_AUDIT_PAIRS]  # fmt: skip
    return EventFit(fit.estimate, fit, pairs, m.candidates, len(ev))


def _refine_pair(ev: EventSet, i: int, ref_ev: EventSet, j: int) -> tuple[int, float, float] | None:
    """Device time of reference event ``j`` by GCC-PHAT of the two snippets, if it agrees."""
    a, b = ref_ev.snippets[j], ev.snippets[i]
    if a is None or b is None or a.modality != b.modality or a.rate_hz != b.rate_hz:
        return None
    period = 1e9 / a.rate_hz
    expected = ((int(ev.t_ns[i]) - b.start_ns) - (int(ref_ev.t_ns[j]) - a.start_ns)) / period
    reach = max(3.0, _FAR_MS * a.rate_hz / 1000)
    got = gcc_phat(a.samples, b.samples, a.rate_hz, max_delay_s=(abs(expected) + reach) / a.rate_hz)
    off = abs(got.delay_samples - expected)
    # a soft onset may be found a little later on one device than on the other; the
    # correlation then knows better, if it is clearly the same sound
    clear = got.sidelobe_ratio >= _SIDELOBE_RATIO
    if got.peak < _MIN_PEAK or off > reach or (off > 2.0 and not clear):
        return None
    dev_ns = b.start_ns + (int(ref_ev.t_ns[j]) - a.start_ns) + round(got.delay_samples * period)
    res = _REFINED_RES * period
    return int(dev_ns), res, res


def _flags(entry: dict[str, Any], est: ClockEstimate | None, span: tuple[int, int] | None,
           tolerance_ns: int) -> None:  # fmt: skip
    if est is None or span is None or not math.isfinite(est.sd_at(span[0])):
        entry["error_bound_ns"] = None
        return
    bound = est.bound_ns(*span)
    entry["error_bound_ns"] = bound
    entry["exceeds_tolerance"] = bound > tolerance_ns


def _model_fields(est: ClockEstimate, span: tuple[int, int] | None) -> dict[str, Any]:
    if span is not None:
        est = est.rebase(span[0])
    m = est.model()
    off_sd = est.sd_at(est.origin_ns)
    return {
        "offset_ns": m.offset_ns,
        "drift_ppm": m.drift_ppm,
        "origin_ns": m.origin_ns,
        "offset_sd_ns": round(off_sd, 1) if math.isfinite(off_sd) else None,
        "drift_sd_ppm": round(est.drift_sd_ppm(), 4) if math.isfinite(est.drift_sd_ppm()) else None,
    }


Candidates = dict[str, tuple[ClockEstimate, dict[str, Any]]]


def _candidates(
    ctx: Context,
    dev: str,
    fits: dict[int, EventFit],
    ntp_rel: dict[str, ClockEstimate],
    const: dict[str, ClockEstimate],
) -> Candidates:
    """Every model the evidence gives for ``dev`` (main segment), with its audit fields."""
    sync = ctx.sync
    span = ctx.span(dev)
    seg = main_segment(ctx.events.get(dev, {}))
    cands: Candidates = {}
    if dev == ctx.reference:
        origin = span[0] if span is not None else 0
        cands["reference"] = (ClockEstimate.identity(origin), {"n_used": 0})
    if "events" in sync.evidence and seg is not None and seg in fits:
        f = fits[seg]
        cands["events"] = (f.estimate, {
            "n_used": f.fit.n_used, "n_rejected": int(f.fit.used.size - f.fit.n_used),
            "residual_rms_ns": _rounded(f.fit.residual_rms_ns),
            "drift_evidence": "events" if f.fit.drift_source == "data" else f.fit.drift_source,
            "events_detected": f.detected, "matched": f.pairs,
        })  # fmt: skip
    if "ntp_log" in sync.evidence and dev in ntp_rel and dev != ctx.reference:
        nf = ctx.ntp_fits.get(dev)
        cands["ntp_log"] = (ntp_rel[dev], {
            "n_used": nf.n_used if nf else 0,
            "n_rejected": int(nf.used.size - nf.n_used) if nf else 0,
            "residual_rms_ns": _rounded(nf.residual_rms_ns if nf else None),
            "drift_evidence": "ntp_log",
        })  # fmt: skip
    if "config" in sync.evidence and dev in const and dev != ctx.reference:
        cands["config"] = (const[dev], {"n_used": 0, "drift_evidence": "config"})
    return cands


def _rounded(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _choose(ctx: Context, cands: Candidates, span: tuple[int, int] | None) -> str | None:
    """The evidence whose model a device gets (``sync.choose``; the reference is itself)."""
    order = [k for k in ["reference", *ctx.sync.evidence] if k in cands]
    if not order or order[0] == "reference" or ctx.sync.choose == "first" or span is None:
        return order[0] if order else None

    def bound(k: str) -> float:
        est = cands[k][0]
        if k == "config" or not math.isfinite(est.sd_at(span[0])):
            return math.inf
        return float(est.bound_ns(*span))

    return min(order, key=lambda k: (bound(k), order.index(k)))


def device_entry(
    ctx: Context,
    dev: str,
    fits: dict[int, EventFit],
    ntp_rel: dict[str, ClockEstimate],
    const: dict[str, ClockEstimate],
) -> dict[str, Any]:
    """The clock_models.json entry of one device (see :mod:`mmdata.sync.stage`): the model
    :func:`_choose` picks among the candidates, its bound and flags, and the others."""
    span = ctx.span(dev)
    cands = _candidates(ctx, dev, fits, ntp_rel, const)
    chosen = _choose(ctx, cands, span)
    reasons: list[str] = []
    entry: dict[str, Any] = {"evidence": chosen or "none", "clock_uncertain": False,
                             "exceeds_tolerance": False}  # fmt: skip
    if chosen is None:
        origin = span[0] if span is not None else 0
        entry.update(_model_fields(ClockEstimate.identity(origin), span))
        entry.update({"offset_sd_ns": None, "drift_sd_ppm": None, "n_used": 0,
                      "error_bound_ns": None, "clock_uncertain": True,
                      "exceeds_tolerance": True})  # fmt: skip
        reasons.append(_why_none(ctx, dev, ntp_rel))
    else:
        est, info = cands[chosen]
        entry.update(_model_fields(est, span))
        entry.update(info)
        if chosen == "config":
            entry["error_bound_ns"] = None
            reasons.append("configured constant: its error is not known")
        else:
            _flags(entry, est, span, ctx.sync.tolerance_ns(dev))
        if chosen == "events" and ctx.anchor != ctx.reference:
            entry["via"] = ctx.anchor
    n_events = sum(len(e) for e in ctx.events.get(dev, {}).values())
    if chosen not in ("events", "reference", None) and "events" in ctx.sync.evidence and n_events:
        reasons.append(f"{n_events} sync events found, none matched the reference's "
                       f"({ctx.anchor or 'no events'}): {chosen} used")  # fmt: skip
    entry["span_ns"] = list(span) if span is not None else None
    entry["alternatives"] = {
        k: {**_model_fields(e, span), "error_bound_ns": None if k == "config"
            else (e.bound_ns(*span) if span and math.isfinite(e.sd_at(span[0])) else None)}
        for k, (e, _) in cands.items() if k not in (chosen, "reference")
    }  # fmt: skip
    _segments(ctx, dev, fits, entry, reasons)
    _conflicts(entry, reasons)
    entry["reasons"] = reasons
    return entry


def _why_none(ctx: Context, dev: str, ntp_rel: dict[str, ClockEstimate]) -> str:
    parts = []
    ev = ctx.events.get(dev, {})
    if "events" in ctx.sync.evidence:
        n = sum(len(e) for e in ev.values())
        parts.append("no sync events found" if n == 0 else f"{n} sync events, none matched")
    if "ntp_log" in ctx.sync.evidence:
        if dev not in ctx.plant:
            parts.append("no NTP log")
        elif dev not in ntp_rel:
            parts.append(
                f"its NTP log gives its clock vs the plant clock, but the reference "
                f"{ctx.reference!r} has no NTP log and is not sync.plant_clock"
            )
    if "config" in ctx.sync.evidence:
        parts.append("no configured constant")
    return "; ".join(parts) + ": offset 0 assumed"


def _segments(
    ctx: Context, dev: str, fits: dict[int, EventFit], entry: dict[str, Any], reasons: list[str]
) -> None:
    segs = sorted({s for (d, s) in ctx.seg_spans if d == dev} | set(fits))
    entry["segments"] = max(1, len(segs))
    entry["clock_jump"] = len(segs) > 1
    if len(segs) <= 1:
        return
    out = []
    main = main_segment(ctx.events.get(dev, {}))
    for s in segs:
        if dev == ctx.reference and s == (main if main is not None else segs[0]):
            item = {"segment": s, **_model_fields(ClockEstimate.identity(), ctx.span(dev, s)),
                    "evidence": "reference", "n_used": 0, "error_bound_ns": 0}  # fmt: skip
        elif s in fits:
            f = fits[s]
            span = ctx.span(dev, s)
            item = {"segment": s, **_model_fields(f.estimate, span), "evidence": "events",
                    "n_used": f.fit.n_used}  # fmt: skip
            _flags(item, f.estimate, span, ctx.sync.tolerance_ns(dev))
        else:  # a model of the whole device (NTP, constants) ignores the jump
            item = {"segment": s, "evidence": "none", "clock_uncertain": True,
                    "reason": "no sync events matched in this segment"}  # fmt: skip
        out.append(item)
    entry["segment_models"] = out
    reasons.append(f"{len(segs)} clock segments (clock jumps): one model per segment; the "
                   "main model is that of the segment with the most events")  # fmt: skip


def _conflicts(entry: dict[str, Any], reasons: list[str]) -> None:
    """Say so when another evidence kind disagrees beyond both error bounds."""
    bound = entry.get("error_bound_ns")
    if bound is None or entry.get("evidence") in ("none", "reference"):
        return
    for kind, alt in entry["alternatives"].items():
        if alt.get("error_bound_ns") is None:
            continue
        # compare at the chosen model's origin
        shift = (alt["origin_ns"] - entry["origin_ns"]) * alt["drift_ppm"] * 1e-6
        diff = abs(alt["offset_ns"] - shift - entry["offset_ns"])
        if diff > bound + alt["error_bound_ns"]:
            entry["evidence_conflict"] = True
            reasons.append(f"{kind} disagrees with {entry['evidence']} by {diff / 1e6:.3f} ms "
                           "(more than both error bounds)")  # fmt: skip
