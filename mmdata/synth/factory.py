"""Orchestration: plan the run, fan jobs out to a process pool, write ground_truth.json.

Output tree (``OUT``)::

    ground_truth.json            written last: its presence marks a complete tree
    README.md
    notes/operator_notes.jsonl
    press-N/cam/   cam-press-N_<YYYYMMDDTHHMMSS.mmm>Z.jpg  (or one .mp4)
    press-N/vib/   acc-press-N_<...>Z.parquet | .csv       (one per file_seconds)
    press-N/mic/   mic-press-N_<...>Z.wav                  (one per file_seconds)
    press-N/clock/ ntp-<device>.log

>>> import tempfile, pathlib
>>> from mmdata.synth.config import SynthConfig
>>> out = pathlib.Path(tempfile.mkdtemp()) / "factory"
>>> s = generate_factory(SynthConfig(assets=1, minutes=0.1, workers=1), out)
>>> (out / "ground_truth.json").exists(), s.assets
(True, ['press-1'])
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from mmdata.atomic import write_json, write_text
from mmdata.errors import UsageError
from mmdata.synth.clocks import (
    CLOCK_FORMULA,
    DEVICE_KINDS,
    REFERENCE_DEVICE,
    SYNC_FLASH_NS,
    ntp_log_text,
)
from mmdata.synth.config import SynthConfig, SynthSummary
from mmdata.synth.jobs import Job, describe_job, plan_jobs, run_job
from mmdata.synth.notes import generate_notes
from mmdata.synth.plan import FactoryPlan, build_plan
from mmdata.synth.signals import KNOCK_TAU_S, TAP_RING_HZ, TAP_TAU_S
from mmdata.timebase import NS_PER_S

SCHEMA_VERSION = "mmdata.synth.ground_truth/1"
README_MARK = "# mmdata synthetic factory"
NOTES_PATH = "notes/operator_notes.jsonl"
KIND_ORDER = {kind: n for n, kind in enumerate(DEVICE_KINDS)}

Progress = Callable[[str, int, int], None]


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"output path {out} exists and is not a directory", hint="pick another")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    readme = out / "README.md"
    ours = (out / "ground_truth.json").exists() or (
        readme.exists() and readme.read_text(encoding="utf-8").startswith(README_MARK)
    )
    if not (overwrite and ours):
        why = "a previous synth output" if ours else "not a synth output"
        raise UsageError(
            f"output directory {out} is not empty ({why})",
            hint="choose a new directory"
            + (
                ", or allow overwriting it (overwrite=True; CLI: --overwrite)"
                if ours
                else ", or empty it first"
            ),
        )
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _run_jobs(
    config: SynthConfig, jobs: list[Job], out: Path, tick: Callable[[str], None]
) -> list[dict[str, Any]]:
    cfg_json = config.model_dump_json()
    results: list[dict[str, Any]] = []
    if config.workers == 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(run_job(cfg_json, job, str(out)))
            tick(describe_job(config, job))
        return results
    # spawn: workers start clean (no inherited thread pools from polars/pyarrow)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=config.workers, mp_context=ctx) as pool:
        pending: set[Future[dict[str, Any]]] = {
            pool.submit(run_job, cfg_json, job, str(out)) for job in jobs
        }
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    result = fut.result()
                    results.append(result)
                    tick(describe_job(config, result["job"]))
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return results


def _device_truth(plan: FactoryPlan, results: list[dict[str, Any]]) -> dict[str, Any]:
    cfg = plan.config
    by_device: dict[str, list[dict[str, Any]]] = {}
    ordered = sorted(
        results,
        key=lambda r: (r["job"]["asset_index"], KIND_ORDER[r["job"]["kind"]], r["job"]["chunk"]),
    )
    for r in ordered:
        asset = plan.assets[r["job"]["asset_index"]]
        by_device.setdefault(asset.devices[r["job"]["kind"]].device, []).extend(r["files"])
    devices: dict[str, Any] = {}
    for asset in plan.assets:
        for kind in DEVICE_KINDS:
            dev = asset.devices[kind]
            files = by_device.get(dev.device, [])
            rate: float | int = {
                "camera": cfg.camera_fps,
                "accelerometer": cfg.accel_rate_hz,
                "microphone": cfg.mic_rate_hz,
            }[kind]
            fmt = {
                "camera": cfg.camera,
                "accelerometer": asset.sensor_format,
                "microphone": "wav",
            }[kind]
            devices[dev.device] = {
                "asset": asset.asset,
                "kind": kind,
                "offset_ns": dev.clock.offset_ns,
                "drift_ppm": dev.clock.drift_ppm,
                "origin_ns": dev.clock.origin_ns,
                "nominal_rate_hz": rate,
                "device_start_ns": dev.span.device_start_ns,
                "device_end_ns": dev.span.device_end_ns,
                "format": fmt,
                "samples": sum(int(f["samples"]) for f in files),
                "ntp_log": f"{asset.asset}/clock/ntp-{dev.device}.log",
                "files": files,
            }
    devices[REFERENCE_DEVICE] = {
        "asset": None,
        "kind": "notes",
        "offset_ns": 0,
        "drift_ppm": 0.0,
        "origin_ns": plan.start_ns,
        "nominal_rate_hz": None,
        "format": "jsonl",
        "files": [{"path": NOTES_PATH}],
    }
    return devices


def _ground_truth(
    plan: FactoryPlan,
    results: list[dict[str, Any]],
    notes_truth: list[dict[str, Any]],
) -> dict[str, Any]:
    image_pii = sorted(
        (t for r in results for t in r["image_pii"]), key=lambda t: (t["device"], t["ts_ns"])
    )
    return {
        "schema_version": SCHEMA_VERSION,
        # workers is how, not what: leaving it out keeps the file independent of it
        "config": plan.config.model_dump(mode="json", exclude={"workers"}),
        "start_ns": plan.start_ns,
        "end_ns": plan.end_ns,
        "origin_ns": plan.start_ns,
        "clock_model": CLOCK_FORMULA,
        "reference_device": REFERENCE_DEVICE,
        "plant_utc_offset": "+09:00",
        "assets": [
            {
                "asset": a.asset,
                "index": a.index,
                "sensor_format": a.sensor_format,
                "devices": [a.devices[k].device for k in DEVICE_KINDS],
                "shaft_hz": a.shaft_hz,
                "bearing": {"n_balls": a.n_balls, "ball_to_pitch_ratio": a.ball_ratio},
                "bpfo_hz": round(a.bpfo_hz, 4),
                "resonance_hz": a.resonance_hz,
            }
            for a in plan.assets
        ],
        "devices": _device_truth(plan, results),
        "sync_events": [
            {
                "index": n,
                "reference_ns": int(t),
                "kind": "hammer_tap+led_flash",
                "tap_ring_hz": TAP_RING_HZ,
                "tap_decay_ns": round(TAP_TAU_S * NS_PER_S),
                "knock_decay_ns": round(KNOCK_TAU_S * NS_PER_S),
                "flash_duration_ns": SYNC_FLASH_NS,
            }
            for n, t in enumerate(plan.sync_ns.tolist())
        ],
        "faults": {a.asset: [f.as_json() for f in a.faults] for a in plan.assets},
        "notes": notes_truth,
        "image_pii": image_pii,
    }


def _readme(plan: FactoryPlan) -> str:
    cfg = plan.config
    return f"""{README_MARK}

Generated by `mmdata synth` (seed {cfg.seed}, {cfg.assets} assets, {cfg.minutes} minutes from
{cfg.start.isoformat()}). Everything here is synthetic; `ground_truth.json` describes it all.

## Contents
- `press-N/cam/`: camera `cam-press-N`, {
        "one JPEG per frame (EXIF DateTimeOriginal in plant time +09:00, SubSecTimeOriginal = ms)"
        if cfg.camera == "jpeg"
        else "one H.264 MP4 (pts = device time since creation_time)"
    }, {cfg.camera_fps} fps.
- `press-N/vib/`: accelerometer `acc-press-N`, columns `ts_ns` (int64) `ax ay az` (float32, g),
  {cfg.accel_rate_hz} Hz, Parquet or CSV, one file per {cfg.file_seconds} s of device time.
- `press-N/mic/`: microphone `mic-press-N`, 16-bit PCM mono WAV, {cfg.mic_rate_hz} Hz,
  one file per {cfg.file_seconds} s of device time.
- `press-N/clock/ntp-<device>.log`: NTP sync evidence per device.
- `{NOTES_PATH}`: operator notes and maintenance tickets (EN/JA) from the MES server
  `{REFERENCE_DEVICE}`, whose clock is the reference; they contain synthetic PII.

File names carry the device time (UTC, ms precision) of the first sample or frame.
All timestamps in data files are device time, int64 nanoseconds since the Unix epoch.

## Clocks
Each device clock relates to the reference clock by (origin_ns = {plan.start_ns}):

    {CLOCK_FORMULA}

Sync events (a hammer tap felt by the accelerometer and heard by the microphone, and an LED
flash seen by the camera for 1.5 s) happen at the same reference time on every asset.

NTP log line format (one about every 30 s of device time):

    2026-03-01T08:00:30.000123456Z ntp sync: device_ns=<int> reference_ns=<int> rtt_us=<int>

The leading time is device_ns in UTC; reference_ns is the server time measured by NTP (error
of a few hundred microseconds, at most rtt_us/2).

## Faults
Per asset, intervals of `surface_scratch` (visible in images only), `bearing_wear`
(vibration only) and `loose_part_rattle` (audio only); see `faults` in ground_truth.json.
"""


def generate_factory(
    config: SynthConfig,
    out_dir: Path,
    progress: Progress | None = None,
    *,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a complete synthetic factory to ``out_dir`` (must be empty or absent).

    ``progress("synth: <task>", done, total)`` is called in this (parent) process after
    every unit of work. With ``overwrite=True`` a directory holding a previous synth
    output is emptied first; any other non-empty directory raises
    :class:`~mmdata.errors.UsageError`.
    The same config gives byte-identical files whatever ``config.workers`` is.

    With ``workers > 1`` jobs run in a ``spawn`` process pool (clean interpreters, no
    inherited polars/pyarrow thread pools): call it from an importable module or under
    ``if __name__ == "__main__":`` in scripts, as usual with multiprocessing. Only plain
    strings and dicts cross process boundaries. On error, partial output stays in
    ``out_dir`` without ``ground_truth.json``; rerun with ``overwrite=True``.

    >>> import tempfile, pathlib
    >>> from mmdata.synth.config import SynthConfig
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> s = generate_factory(SynthConfig(assets=1, minutes=0.1, workers=1), out)
    >>> s.files["accelerometer"] >= 1, s.samples["frames"] >= 12
    (True, True)
    """
    t0 = time.perf_counter_ns()
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    plan = build_plan(config)
    jobs = plan_jobs(config, plan)
    total = len(jobs) + len(plan.assets) + 2
    done = 0

    def tick(task: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(f"synth: {task}", done, total)

    write_text(out / "README.md", _readme(plan))
    notes, notes_truth = generate_notes(config)
    write_text(out / NOTES_PATH, "".join(json.dumps(n, ensure_ascii=False) + "\n" for n in notes))
    tick("notes")
    for asset in plan.assets:
        for kind in DEVICE_KINDS:
            dev = asset.devices[kind]
            text = ntp_log_text(config, asset.index, kind, dev.clock, dev.span)
            write_text(out / asset.asset / "clock" / f"ntp-{dev.device}.log", text)
        tick(f"{asset.asset} ntp logs")
    results = _run_jobs(config, jobs, out, tick)
    truth = _ground_truth(plan, results, notes_truth)
    write_json(out / "ground_truth.json", truth)
    tick("ground_truth.json")
    return _summary(plan, out, truth, len(notes), time.perf_counter_ns() - t0)


def _summary(
    plan: FactoryPlan, out: Path, truth: dict[str, Any], n_notes: int, elapsed: int
) -> SynthSummary:
    files: dict[str, int] = {"camera": 0, "accelerometer": 0, "microphone": 0}
    samples: dict[str, int] = {"accel_samples": 0, "audio_samples": 0, "frames": 0}
    key = {"camera": "frames", "accelerometer": "accel_samples", "microphone": "audio_samples"}
    for dev in truth["devices"].values():
        if dev["kind"] in files:
            files[dev["kind"]] += len(dev["files"])
            samples[key[dev["kind"]]] += dev["samples"]
    files["ntp_log"] = len(plan.assets) * len(DEVICE_KINDS)
    files["notes"] = 1
    files["meta"] = 2
    samples.update(
        notes=n_notes,
        sync_events=len(truth["sync_events"]),
        fault_intervals=sum(len(v) for v in truth["faults"].values()),
        name_tag_frames=len(truth["image_pii"]),
    )
    nbytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return SynthSummary(
        out_dir=out,
        assets=[a.asset for a in plan.assets],
        files=files,
        bytes_written=nbytes,
        samples=samples,
        elapsed_ns=elapsed,
        ground_truth=out / "ground_truth.json",
        workers=plan.config.workers,
        start_ns=plan.start_ns,
        end_ns=plan.end_ns,
    )
