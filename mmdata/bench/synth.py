"""Bench workload ``synth``: the synthetic factory against an I/O floor.

Baseline: the same number of files in the same formats (JPEG frames, Parquet/CSV
accelerometer chunks, WAV minutes, a JSONL of notes) filled with white noise and a flat
grey frame: no clock models, sync events, faults or scene rendering. It is the cost of
just writing the bytes with the same libraries, so the ratio (≤ 1) says how close the
generator runs to that floor.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import soundfile as sf
from PIL import Image

from mmdata.bench import BenchOptions, BenchResult, workload
from mmdata.synth import SynthConfig, generate_factory


def _floor_writer(cfg: SynthConfig, out: Path) -> None:
    rng = np.random.default_rng(cfg.seed)
    seconds = cfg.minutes * 60.0
    n_frames = int(seconds * cfg.camera_fps)
    n_files = math.ceil(seconds / cfg.file_seconds)
    buf = io.BytesIO()
    Image.new("RGB", (cfg.image_width, cfg.image_height), (128, 128, 128)).save(
        buf, "JPEG", quality=85
    )
    frame = buf.getvalue()
    for a in range(cfg.assets):
        adir = out / f"press-{a + 1}"
        for sub in ("cam", "vib", "mic"):
            (adir / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n_frames):
            (adir / "cam" / f"{i:06d}.jpg").write_bytes(frame)
        csv = cfg.sensor_format == "csv" or (cfg.sensor_format == "mixed" and a % 2 == 1)
        n_acc = cfg.accel_rate_hz * cfg.file_seconds
        n_mic = cfg.mic_rate_hz * cfg.file_seconds
        for f in range(n_files):
            xyz = rng.standard_normal((n_acc, 3), dtype=np.float32)
            df = pl.DataFrame(
                {"ts_ns": np.arange(n_acc, dtype=np.int64), "ax": xyz[:, 0], "ay": xyz[:, 1],
                 "az": xyz[:, 2]}
            )  # fmt: skip
            if csv:
                df.write_csv(adir / "vib" / f"{f:04d}.csv", float_precision=6)
            else:
                df.write_parquet(adir / "vib" / f"{f:04d}.parquet", compression="zstd")
            noise = (rng.standard_normal(n_mic) * 3000).astype(np.int16)
            sf.write(adir / "mic" / f"{f:04d}.wav", noise, cfg.mic_rate_hz, subtype="PCM_16")
    notes = out / "notes"
    notes.mkdir(parents=True, exist_ok=True)
    n_notes = int(seconds / 30) * cfg.assets
    lines = [json.dumps({"note_id": i, "text": "routine check " * 8}) for i in range(n_notes)]
    (notes / "operator_notes.jsonl").write_text("\n".join(lines) + "\n")


def _best_of(repeat: int, fn: object, *args: object) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


@workload("synth", "synthetic factory generation vs writing the same files as plain noise")
def bench_synth(options: BenchOptions, scratch: Path) -> BenchResult:
    """Time ``generate_factory`` (1 asset × 2 min × scale, 1 worker) and the I/O floor."""
    cfg = SynthConfig(assets=1, minutes=2.0 * options.scale, seed=0, workers=1)
    device_seconds = cfg.assets * 3 * cfg.minutes * 60.0  # camera + accelerometer + microphone

    def ours() -> None:
        out = scratch / "mmdata"
        shutil.rmtree(out, ignore_errors=True)
        generate_factory(cfg, out)

    def floor() -> None:
        out = scratch / "floor"
        shutil.rmtree(out, ignore_errors=True)
        _floor_writer(cfg, out)

    t_ours = _best_of(options.repeat, ours)
    t_floor = _best_of(options.repeat, floor)
    return BenchResult(
        workload="synth",
        metric="device-seconds generated per wall-clock second",
        unit="dev-s/s",
        mmdata=device_seconds / t_ours,
        baseline=device_seconds / t_floor,
        baseline_name="I/O floor: same files and formats filled with noise",
        details={"assets": cfg.assets, "minutes": cfg.minutes, "seconds_mmdata": t_ours,
                 "seconds_baseline": t_floor},
    )  # fmt: skip
