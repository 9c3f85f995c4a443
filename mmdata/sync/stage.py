"""The sync stage: a clock model per device, from sync events, NTP logs or constants.

``RUN/sync/clock_models.json`` (schema ``mmdata.clock_models/1``) maps each device's clock
to the reference device's (``sync.reference``, default the pipeline's first device)::

    reference_ns = origin_ns + (device_ns - origin_ns) * (1 + drift_ppm * 1e-6) + offset_ns

Evidence, in the order of ``sync.evidence`` (default events, ntp_log, config):

* ``events``: sync taps found in vibration and audio, flashes in camera frames
  (:mod:`mmdata.sync.signals`), matched to the reference device's events and fitted over
  the run (offset + drift; offset only from a single event). When the reference device
  saw no events, a device with events and an NTP (or configured) model relative to the
  reference stands in (the one whose events the others confirm most) and the models are
  composed through it. A drift the events cannot pin (camera flashes resolve one frame
  interval) comes from the NTP logs when there are any (a prior on the drift), else
  stays near 0 and the error bound says so.
* ``ntp_log``: ``sync.ntp_logs`` give each device's clock against the plant clock; it is
  composed with the reference device's own NTP model (or the identity, when the
  reference is ``sync.plant_clock``).
* ``config``: ``sync.constants`` (anchored at the device's first timestamp).

Each device gets the model with the smallest error bound over its span (``sync.choose:
tightest``, the default: a 2 fps camera's flashes place it within a frame, its NTP log
within a millisecond or two); ties, and models without a bound (constants), go by the
order of ``sync.evidence``. ``choose: first`` takes the first evidence in that order that
gives a model. The others are listed under ``alternatives`` with their bounds.

The document: ``schema_version``, ``formula``, ``reference``, ``plant_clock``,
``event_anchor`` (whose events the others were matched to), ``evidence_order``,
``tolerance_ms``, ``streams`` (per scanned stream: samples or frames, onsets, events),
``ntp_logs`` (per device: files, lines, pairs, garbage lines and examples) and
``devices``, each with

* the model: ``offset_ns`` (int), ``drift_ppm``, ``origin_ns`` (the device's first
  timestamp), ``offset_sd_ns``, ``drift_sd_ppm``;
* ``evidence`` (``reference`` | ``events`` | ``ntp_log`` | ``config`` | ``none``),
  ``drift_evidence`` (``events``, ``ntp_log``, ``prior``: not pinned, or ``config``),
  ``via`` (the stand-in anchor), ``n_used`` / ``n_rejected`` (events or NTP pairs),
  ``residual_rms_ns``, ``events_detected``;
* ``error_bound_ns``: three standard deviations of the fitted line at the worse end of
  the device's time span ``span_ns`` (null: unknown, for constants and no evidence);
* flags: ``clock_uncertain`` (no evidence: offset 0 kept), ``exceeds_tolerance`` (error
  bound over ``sync.tolerance_ms``), ``evidence_conflict`` (another evidence kind
  disagrees beyond both bounds), ``clock_jump`` with ``segments`` and ``segment_models``
  (one model per clock segment found at ingest; the main model is that of the segment
  with the most events); ``reasons`` says why, in words;
* ``matched``: the matched events (device and reference time, kind, stream, whether
  cross-correlation refined the pair, whether the fit used it), for audit;
* ``alternatives``: the models the other evidence kinds gave, with their bounds.

Counts: in = devices, out = devices modelled, quarantined = 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mmdata import atomic
from mmdata.config import PipelineConfig, SyncConfig, config_hash
from mmdata.errors import ConfigError, StageError
from mmdata.ingest import read_index
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import ProgressFn, StageContext, StageOutcome, StageSpec, run_stage
from mmdata.sync.fit import ClockEstimate, Prior, match_events
from mmdata.sync.models import Context, device_entry, event_models, main_segment
from mmdata.sync.ntp import expand, fit_ntp, read_ntp_logs
from mmdata.sync.signals import EventSet, StreamScan, scan_flashes, scan_onsets
from mmdata.timebase import NS_PER_MS, ClockModel

SCHEMA_VERSION = "mmdata.clock_models/1"
CLOCK_MODELS = "clock_models.json"
_SCAN_THREADS = 4
FORMULA = "reference_ns = origin_ns + (device_ns - origin_ns) * (1 + drift_ppm * 1e-6) + offset_ns"


def resolve_ntp_logs(sync: SyncConfig, devices: list[str]) -> dict[str, list[Path]]:
    """NTP log files per device from ``sync.ntp_logs`` (key ``*``: every device)."""
    unknown = [d for d in sync.ntp_logs if d != "*" and d not in devices]
    if unknown:
        raise ConfigError("pipeline config", f"sync.ntp_logs.{unknown[0]}", unknown[0],
                          "a declared device id or '*'")  # fmt: skip
    out: dict[str, list[Path]] = {}
    for dev in devices:
        pattern = sync.ntp_logs.get(dev)
        if pattern is None and "*" in sync.ntp_logs:
            pattern = sync.ntp_logs["*"].replace("{device}", dev)
        if pattern is not None:
            files = expand(pattern)
            if files:
                out[dev] = files
    return out


def _files_fingerprint(files: dict[str, list[Path]]) -> str:
    h = hashlib.sha256()
    for dev in sorted(files):
        for p in files[dev]:
            h.update(f"{dev}\0{p}\0".encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def run_sync(
    run: RunDir,
    config: PipelineConfig,
    *,
    progress: ProgressFn | None = None,
    force: bool = False,
) -> StageOutcome:
    """Run the sync stage of ``config`` in ``run`` (after ingest; skipped when unchanged)."""
    rec = run.manifest.stages.get("ingest")
    if rec is None or rec.status != "complete":
        raise StageError("sync needs a completed ingest stage in this run",
                         hint="run `mmdata ingest` first")  # fmt: skip
    devices = config.devices()
    sync = config.sync
    if sync.plant_clock is not None and sync.plant_clock not in devices:
        raise ConfigError("pipeline config", "sync.plant_clock", sync.plant_clock,
                          "a declared device id")  # fmt: skip
    ntp_files = resolve_ntp_logs(sync, devices)
    spec = StageSpec(
        name="sync",
        version="1",
        config={"sync": sync.model_dump(mode="json"), "devices": devices},
        inputs_fingerprint=config_hash({"ingest": rec.fingerprint,
                                        "ntp": _files_fingerprint(ntp_files)}),
    )  # fmt: skip
    ingest_dir = run.stage_path("ingest")

    def stage(ctx: StageContext) -> StageCounts:
        doc = synchronize(ingest_dir, sync, devices, ntp_files, progress=ctx.report)
        atomic.write_json(ctx.out_dir / CLOCK_MODELS, doc)
        return StageCounts(in_=len(devices), out=len(doc["devices"]), quarantined=0)

    return run_stage(run, spec, stage, progress=progress, force=force)


def load_clock_models(path: Path | str) -> dict[str, ClockModel]:
    """Device id -> clock model (main segment) from a ``clock_models.json``."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise StageError(f"{path}: not a {SCHEMA_VERSION} file")
    return {
        dev: ClockModel(
            offset_ns=d["offset_ns"], drift_ppm=d["drift_ppm"], origin_ns=d["origin_ns"]
        )
        for dev, d in doc["devices"].items()
    }


# -- the computation -------------------------------------------------------------------


def synchronize(
    ingest_dir: Path,
    sync: SyncConfig,
    devices: list[str],
    ntp_files: dict[str, list[Path]],
    *,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Model every device's clock (see the module docstring); return the JSON document."""
    reference = sync.reference or devices[0]
    index = read_index(ingest_dir)
    spans, seg_spans = _spans(ingest_dir, index)
    scans = _scan_all(ingest_dir, index, sync, progress) if "events" in sync.evidence else {}
    events: dict[str, dict[int, EventSet]] = {}
    for st in index:
        scan = scans.get(st["stream_id"])
        if scan is None:
            continue
        per_dev = events.setdefault(st["device_id"], {})
        for seg, ev in scan.events.items():
            ev.stream = [st["stream_id"]] * len(ev)
            per_dev[seg] = per_dev[seg].merged(ev) if seg in per_dev else ev
    ctx = Context(sync, devices, reference, spans, seg_spans, events)
    if "ntp_log" in sync.evidence:
        _fit_ntp_all(ctx, ntp_files)
    ntp_rel = _ntp_relative(ctx)
    const = _constants(ctx)
    anchor, anchor_rel = _anchor(ctx, ntp_rel, const)
    ctx.anchor = anchor
    ev_models = event_models(ctx, anchor, anchor_rel) if anchor else {}
    out_devices = {
        dev: device_entry(ctx, dev, ev_models.get(dev, {}), ntp_rel, const) for dev in devices
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "formula": FORMULA,
        "reference": reference,
        "plant_clock": sync.plant_clock,
        "event_anchor": anchor,
        "evidence_order": list(sync.evidence),
        "tolerance_ms": sync.tolerance_ms,
        "devices": out_devices,
        "streams": {sid: {**s.summary} for sid, s in sorted(scans.items())},
        "ntp_logs": {
            dev: {
                "files": log.files,
                "lines": log.lines,
                "pairs": len(log),
                "garbage": log.garbage,
                "garbage_examples": log.examples,
            }
            for dev, log in sorted(ctx.ntp_logs.items())
        },
    }


def _spans(
    ingest_dir: Path, index: list[dict[str, Any]]
) -> tuple[dict[str, tuple[int, int]], dict[tuple[str, int], tuple[int, int]]]:
    spans: dict[str, tuple[int, int]] = {}
    seg_spans: dict[tuple[str, int], tuple[int, int]] = {}
    for st in index:
        if not st.get("rows") or st.get("ts_min_ns") is None:
            continue
        dev = st["device_id"]
        lo, hi = int(st["ts_min_ns"]), int(st["ts_max_ns"])
        old = spans.get(dev)
        spans[dev] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
        if int(st.get("segments", 1)) > 1 and st.get("modality") != "text":
            table = pq.read_table(ingest_dir / st["file"], columns=["ts_ns", "segment"])
            grouped = table.group_by("segment").aggregate([("ts_ns", "min"), ("ts_ns", "max")])
            for seg, a, b in zip(grouped.column("segment").to_pylist(),
                                 grouped.column("ts_ns_min").to_pylist(),
                                 grouped.column("ts_ns_max").to_pylist(), strict=True):  # fmt: skip
                old = seg_spans.get((dev, seg))
                seg_spans[(dev, seg)] = (a, b) if old is None else (min(old[0], a), max(old[1], b))
    return spans, seg_spans


def _scan_all(
    ingest_dir: Path, index: list[dict[str, Any]], sync: SyncConfig, progress: ProgressFn | None
) -> dict[str, StreamScan]:
    """Scan every sensor, audio and image stream for sync events (threads: numpy and
    Pillow release the GIL for the heavy parts)."""
    todo = [st for st in index
            if st.get("modality") in ("sensor", "audio", "image", "video")
            and st.get("rows")]  # fmt: skip

    def scan(st: dict[str, Any]) -> StreamScan:
        path = ingest_dir / st["file"]
        if st["modality"] in ("image", "video"):
            got = scan_flashes(path, sync.flashes)
        else:
            got = scan_onsets(path, st["modality"], sync.onsets, keep_snippets=sync.refine)
        got.summary = {"device": st["device_id"], "modality": st["modality"], **got.summary}
        return got

    out: dict[str, StreamScan] = {}
    workers = max(1, min(_SCAN_THREADS, os.cpu_count() or 1, len(todo)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for n, (st, got) in enumerate(zip(todo, pool.map(scan, todo), strict=True)):
            out[st["stream_id"]] = got
            if progress is not None:
                progress(f"sync: events in {st['stream_id']}", n + 1, len(todo))
    return out


def _fit_ntp_all(ctx: Context, files: dict[str, list[Path]]) -> None:
    for dev, paths in files.items():
        log = read_ntp_logs(paths)
        ctx.ntp_logs[dev] = log
        if len(log) == 0:
            continue
        origin = ctx.spans.get(dev, (int(log.device_ns.min()), 0))[0]
        prior = Prior(0.0, ctx.sync.max_drift_ppm / math.sqrt(3.0))
        fit = fit_ntp(log, origin, prior)
        if fit is not None:
            ctx.plant[dev] = fit.estimate
            ctx.ntp_fits[dev] = fit
    if ctx.sync.plant_clock is not None:
        ctx.plant[ctx.sync.plant_clock] = ClockEstimate.identity(
            ctx.spans.get(ctx.sync.plant_clock, (0, 0))[0]
        )


def _ntp_relative(ctx: Context) -> dict[str, ClockEstimate]:
    """Device -> reference models from NTP (composed through the reference's NTP model)."""
    ref_plant = ctx.plant.get(ctx.reference)
    if ref_plant is None:
        return {}
    to_ref = ref_plant.invert()
    return {dev: est.then(to_ref) for dev, est in ctx.plant.items()}


def _constants(ctx: Context) -> dict[str, ClockEstimate]:
    out = {}
    for dev, c in ctx.sync.constants.items():
        origin = ctx.spans.get(dev, (0, 0))[0]
        out[dev] = ClockEstimate(origin, float(c.offset_ms * NS_PER_MS), float(c.drift_ppm))
    return out


def _anchor(
    ctx: Context, ntp_rel: dict[str, ClockEstimate], const: dict[str, ClockEstimate]
) -> tuple[str | None, ClockEstimate | None]:
    """The device whose events the others are matched to, and its model vs the reference.

    The reference device when it saw events; else, of the devices with events and an NTP
    (or configured) model vs the reference, the one whose events the others confirm most.
    """

    def main(dev: str) -> EventSet | None:
        seg = main_segment(ctx.events.get(dev, {}))
        return None if seg is None else ctx.events[dev][seg]

    ref_ev = main(ctx.reference)
    if ref_ev is not None and len(ref_ev) > 0:
        return ctx.reference, None
    paths = {d: ntp_rel[d] for d in ntp_rel}
    if "config" in ctx.sync.evidence:
        paths.update({d: e for d, e in const.items() if d not in paths})
    best: tuple[int, int, str] | None = None
    for dev in ctx.devices:
        ev = main(dev)
        if ev is None or len(ev) == 0 or dev not in paths:
            continue
        confirmed = 0
        for other in ctx.devices:
            oe = main(other)
            if other == dev or oe is None or len(oe) == 0:
                continue
            confirmed += len(match_events(oe.t_ns, oe.res_ns, ev.t_ns, ev.res_ns,
                                          max_offset_ns=ctx.sync.max_offset_ms * NS_PER_MS,
                                          tolerance_ns=ctx.sync.match_tolerance_ms * NS_PER_MS,
                                          max_drift_ppm=ctx.sync.max_drift_ppm))  # fmt: skip
        score = (confirmed, -int(np.median(ev.res_ns)), dev)
        if best is None or score[:2] > best[:2]:
            best = score
    if best is None:
        return None, None
    return best[2], paths[best[2]]
