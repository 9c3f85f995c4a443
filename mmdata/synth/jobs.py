"""Units of work of the synthetic factory, and the sensor file writers.

A job is a small JSON-able dict (``{"kind": "accelerometer", "asset_index": 0, "chunk": 3}``)
run by :func:`run_job` in any process: the worker rebuilds the plan from the config JSON, so
nothing but plain data crosses process boundaries and the bytes written never depend on
which process ran which job.

Accelerometer files: columns ``ts_ns`` (int64 device time), ``ax``, ``ay``, ``az`` (float32,
g). Parquet (zstd; schema metadata ``device``, ``sample_rate_hz``, ``units``) or CSV (header
``ts_ns,ax,ay,az``, floats with 6 decimals). Microphone files: plain RIFF WAV, 16-bit PCM,
mono. File names carry the device time of the first sample (UTC, ms precision).

>>> from mmdata.synth.config import SynthConfig
>>> jobs = plan_jobs(SynthConfig(assets=1, minutes=0.5, file_seconds=20))
>>> sorted({j["kind"] for j in jobs})
['accelerometer', 'camera', 'microphone']
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mmdata.atomic import atomic_path, write_parquet
from mmdata.synth.camera import frame_count, write_jpeg_frames, write_mp4
from mmdata.synth.clocks import file_stamp
from mmdata.synth.config import SynthConfig
from mmdata.synth.plan import AssetPlan, FactoryPlan, build_plan, plan_for
from mmdata.synth.signals import accel_chunk, file_count, mic_chunk

Job = dict[str, Any]


def jpeg_chunk_range(plan: FactoryPlan, asset: AssetPlan, chunk: int) -> tuple[int, int]:
    """Frame index range of JPEG work chunk ``chunk`` (``file_seconds`` of device time).

    >>> from mmdata.synth.config import SynthConfig
    >>> from mmdata.synth.plan import build_plan
    >>> p = build_plan(SynthConfig(assets=1, minutes=1, file_seconds=10))
    >>> jpeg_chunk_range(p, p.assets[0], 1)
    (20, 40)
    """
    rate = plan.camera_rate
    span = plan.config.file_seconds
    n = frame_count(plan, asset)

    def first(c: int) -> int:
        return min(n, -(-(c * span * rate.numerator) // rate.denominator))

    return first(chunk), first(chunk + 1)


def plan_jobs(config: SynthConfig, plan: FactoryPlan | None = None) -> list[Job]:
    """All jobs of a run, biggest first (better packing on the pool).

    >>> from mmdata.synth.config import SynthConfig
    >>> jobs = plan_jobs(SynthConfig(assets=2, minutes=1, camera="mp4"))
    >>> [j["kind"] for j in jobs[:2]]
    ['camera', 'camera']
    """
    plan = plan or build_plan(config)
    big: list[Job] = []
    small: list[Job] = []
    for asset in plan.assets:
        i = asset.index
        if config.camera == "mp4":
            big.append({"kind": "camera", "asset_index": i, "chunk": 0})
        else:
            c = 0
            while True:
                lo, hi = jpeg_chunk_range(plan, asset, c)
                if lo >= hi:
                    break
                small.append({"kind": "camera", "asset_index": i, "chunk": c})
                c += 1
        for kind in ("accelerometer", "microphone"):
            for k in range(file_count(plan, asset, kind)):
                small.append({"kind": kind, "asset_index": i, "chunk": k})
    return big + small


def describe_job(config: SynthConfig, job: Job) -> str:
    """Human-readable job name for progress reports.

    >>> describe_job(SynthConfig(), {"kind": "microphone", "asset_index": 1, "chunk": 2})
    'press-2 microphone #3'
    """
    asset = config.asset_ids()[job["asset_index"]]
    return f"{asset} {job['kind']} #{job['chunk'] + 1}"


def write_accel_file(
    path: Path, ts: np.ndarray, xyz: np.ndarray, fmt: str, device: str, rate: int
) -> None:
    """Write one accelerometer file as Parquet or CSV (atomically).

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "acc.csv"
    >>> xyz = np.array([[0.1, 0.2, 1.0]], np.float32)
    >>> write_accel_file(p, np.array([5], np.int64), xyz, "csv", "acc-x", 5000)
    >>> p.read_text()
    'ts_ns,ax,ay,az\\n5,0.100000,0.200000,1.000000\\n'
    """
    if fmt == "parquet":
        schema = pa.schema(
            [
                ("ts_ns", pa.int64()),
                ("ax", pa.float32()),
                ("ay", pa.float32()),
                ("az", pa.float32()),
            ],
            metadata={"device": device, "sample_rate_hz": str(rate), "units": "g"},
        )
        table = pa.table(
            [pa.array(ts), pa.array(xyz[:, 0]), pa.array(xyz[:, 1]), pa.array(xyz[:, 2])],
            schema=schema,
        )
        write_parquet(path, table, compression="zstd")
        return
    import polars as pl

    df = pl.DataFrame({"ts_ns": ts, "ax": xyz[:, 0], "ay": xyz[:, 1], "az": xyz[:, 2]})
    with atomic_path(path) as tmp:
        df.write_csv(tmp, float_precision=6, float_scientific=False)


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    """Write mono 16-bit PCM as a plain RIFF WAV (atomically).

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.wav"
    >>> write_wav(p, np.zeros(16, np.int16), 16000)
    >>> p.stat().st_size
    76
    """
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def _sensor_job(
    plan: FactoryPlan, asset: AssetPlan, kind: str, k: int, out: Path
) -> dict[str, Any]:
    dev = asset.devices[kind]
    if kind == "accelerometer":
        ts, xyz = accel_chunk(plan, asset, k)
        ext = "parquet" if asset.sensor_format == "parquet" else "csv"
        rel = f"{asset.asset}/vib/{dev.device}_{file_stamp(int(ts[0]))}.{ext}"
        write_accel_file(out / rel, ts, xyz, ext, dev.device, plan.config.accel_rate_hz)
    else:
        ts, pcm = mic_chunk(plan, asset, k)
        rel = f"{asset.asset}/mic/{dev.device}_{file_stamp(int(ts[0]))}.wav"
        write_wav(out / rel, pcm, plan.config.mic_rate_hz)
    entry = {"path": rel, "first_ts_ns": int(ts[0]), "last_ts_ns": int(ts[-1]), "samples": ts.size}
    return {"files": [entry], "image_pii": [], "bytes": (out / rel).stat().st_size}


def run_job(config_json: str, job: Job, out_dir: str) -> dict[str, Any]:
    """Run one job (in a worker or in-process); return its ground-truth fragment.

    The result has ``job``, ``files`` (path relative to the output dir, first/last device
    ts_ns, samples), ``image_pii`` and ``bytes``.

    >>> import tempfile
    >>> cfg = SynthConfig(assets=1, minutes=0.1)
    >>> r = run_job(cfg.model_dump_json(), {"kind": "microphone", "asset_index": 0, "chunk": 0},
    ...             tempfile.mkdtemp())
    >>> r["files"][0]["path"].startswith("press-1/mic/mic-press-1_")
    True
    """
    config = SynthConfig.model_validate_json(config_json)
    plan = plan_for(config)
    asset = plan.assets[job["asset_index"]]
    out = Path(out_dir)
    kind = job["kind"]
    if kind == "camera":
        if config.camera == "mp4":
            result = write_mp4(plan, asset, out)
        else:
            lo, hi = jpeg_chunk_range(plan, asset, job["chunk"])
            result = write_jpeg_frames(plan, asset, lo, hi, out)
    else:
        result = _sensor_job(plan, asset, kind, job["chunk"], out)
    result["job"] = job
    return result
