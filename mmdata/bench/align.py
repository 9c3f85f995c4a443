"""Bench workloads of the aligner, on a synthetic factory ingested and synced beforehand.

* ``align``: sensor samples aligned per second against a straightforward pandas aligner
  (clock model applied, audio exploded to samples, frames attached with ``merge_asof``,
  ``groupby`` window → lists, written to Parquet) — target ≥ 10x.
* ``align-floor``: against the I/O floor — reading the same input streams and writing the
  same records bytes again with no alignment — target: at most 2x the floor (ratio ≥ 0.5).
* ``align-memory``: peak RSS of aligning one asset of 10 and of 60 minutes, each in a fresh
  process — target: ≤ 1.2x growth (ratio ≥ 0.83).

With ``--engine ray``, ``align`` also aligns the same input on a local Ray cluster started
for it (as many CPUs as the local engine's processes, no dashboard, a small object store,
its files in the scratch folder) and reports a second line, ``align (ray)``: Ray's samples
per second against the local engine's from the same run. Starting the cluster and warming
its workers are timed apart from the steady-state alignment (Ray's workers outlive a stage;
the local engine spawns its processes for every stage run, and its figure includes that —
``seconds_local_pool_start`` times it apart). The records must be byte-identical to the
local engine's.

Sizes: 3 assets × 20 minutes at scale 1 (5 kHz 3-axis vibration, 16 kHz audio, 2 fps).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mmdata.bench import BenchOptions, BenchResult, workload
from mmdata.config import PipelineConfig
from mmdata.engine import Engine

_S = 1_000_000_000
_PREPARED: dict[tuple[int, float], Path] = {}


def _prepared(scratch: Path, assets: int, minutes: float) -> tuple[PipelineConfig, Path]:
    """A factory ingested and synced in ``scratch`` (reused across workloads of one run)."""
    from mmdata.demo import factory_pipeline
    from mmdata.ingest import run_ingest
    from mmdata.rundir import RunDir
    from mmdata.sync import run_sync
    from mmdata.synth import SynthConfig, generate_factory

    if (assets, minutes) not in _PREPARED:  # shared by the align workloads of one bench run
        _PREPARED[(assets, minutes)] = Path(tempfile.mkdtemp(prefix="mmdata-bench-align-"))
        atexit.register(shutil.rmtree, _PREPARED[(assets, minutes)], True)
    key = _PREPARED[(assets, minutes)]
    factory, run_dir = key / "factory", key / "run"
    if not (factory / "ground_truth.json").exists():
        shutil.rmtree(key, ignore_errors=True)
        generate_factory(SynthConfig(assets=assets, minutes=minutes, seed=0), factory)
    cfg = factory_pipeline(factory, run_dir)
    with RunDir.open(run_dir) as run:
        run_ingest(run, cfg)
        run_sync(run, cfg)
    return cfg, run_dir


def _align_once(cfg: PipelineConfig, run_dir: Path) -> tuple[float, int, int]:
    """Seconds, sensor samples in the records, and bytes written."""
    from mmdata.align import run_align
    from mmdata.rundir import RunDir

    with RunDir.open(run_dir) as run:
        t0 = time.perf_counter()
        run_align(run, cfg, force=True)
        elapsed = time.perf_counter() - t0
    files = list((run_dir / "records").rglob("*.parquet"))
    samples = 0
    for f in files:
        col = pq.read_table(f, columns=["sensors"]).column("sensors")
        flat = col.combine_chunks().flatten()
        samples += sum(int(n) * len(ch) for n, ch in zip(
            flat.field("n_samples").to_pylist(), flat.field("channels").to_pylist(),
            strict=True))  # fmt: skip
    return elapsed, samples, sum(f.stat().st_size for f in files)


def _best_align(cfg: PipelineConfig, run_dir: Path, repeat: int) -> tuple[float, int, int]:
    """Best of ``repeat`` alignments: seconds, sensor samples, bytes written."""
    runs = [_align_once(cfg, run_dir) for _ in range(repeat)]
    best = min(r[0] for r in runs)
    return best, runs[-1][1], runs[-1][2]


def _pandas_align(cfg: PipelineConfig, run_dir: Path, out: Path) -> None:
    import pandas as pd

    from mmdata.stream_reader import read_clocks

    clocks = read_clocks(run_dir / "sync")
    index = json.loads((run_dir / "ingest" / "streams.json").read_text())["streams"]
    length = cfg.align.window.length_ms * 1_000_000
    out.mkdir(parents=True, exist_ok=True)
    for asset in sorted({e["asset_id"] for e in index}):
        frames_by_kind: dict[str, Any] = {}
        for e in index:
            if e["asset_id"] != asset:
                continue
            df = pd.read_parquet(run_dir / "ingest" / e["file"])
            m = clocks[e["device_id"]].model
            d = (df["ts_ns"].to_numpy() - m.origin_ns).astype(np.float64)
            df["ref_ns"] = (m.origin_ns + m.offset_ns + d * (1 + m.drift_ppm * 1e-6)).astype(
                np.int64
            )
            if e["modality"] == "audio":
                rate = int(df["sample_rate"].iloc[0])
                df = df[["ref_ns", "samples"]].explode("samples")
                df["ref_ns"] = df["ref_ns"] + df.groupby(level=0).cumcount() * (_S // rate)
            frames_by_kind[e["modality"]] = df.sort_values("ref_ns")
        sensor = frames_by_kind["sensor"]
        sensor = pd.merge_asof(sensor, frames_by_kind["image"][["ref_ns", "uri"]],
                               on="ref_ns", direction="backward",
                               tolerance=cfg.align.window.length_ms * 1_000_000)  # fmt: skip
        sensor["window"] = sensor["ref_ns"] // length
        agg = sensor.groupby("window").agg(
            ax=("ax", list), ay=("ay", list), az=("az", list), image=("uri", "last")
        )
        audio = frames_by_kind["audio"]
        audio["window"] = audio["ref_ns"] // length
        agg = agg.join(audio.groupby("window").agg(audio=("samples", list)), how="left")
        agg.reset_index().to_parquet(out / f"{asset}.parquet")


def _io_floor(run_dir: Path, out: Path) -> float:
    """Read every input stream; write the records' tables again (same bytes, no alignment)."""
    records = [pq.read_table(f) for f in sorted((run_dir / "records").rglob("*.parquet"))]
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for f in sorted((run_dir / "ingest" / "streams").glob("*.parquet")):
        pq.read_table(f)
    for i, table in enumerate(records):
        pq.write_table(table, out / f"r{i}.parquet", compression="zstd")
    return time.perf_counter() - t0


def _sizes(options: BenchOptions) -> tuple[int, float]:
    return 3, max(1.0, 20.0 * options.scale)


@workload("align", "records from synced streams vs a pandas merge_asof + groupby aligner")
def bench_align(options: BenchOptions, scratch: Path) -> BenchResult | list[BenchResult]:
    """Sensor samples aligned per second, mmdata vs pandas (and Ray vs local with ray)."""
    assets, minutes = _sizes(options)
    cfg, run_dir = _prepared(scratch, assets, minutes)
    best, samples, nbytes = _best_align(cfg, run_dir, options.repeat)
    base = math.inf
    for _ in range(options.repeat):
        t0 = time.perf_counter()
        _pandas_align(cfg, run_dir, scratch / "pandas")
        base = min(base, time.perf_counter() - t0)
    local = BenchResult(
        workload="align", metric="sensor samples aligned per second", unit="samples/s",
        mmdata=samples / best, baseline=samples / base,
        baseline_name="pandas: clock model, explode audio, merge_asof frames, groupby lists",
        details={"assets": assets, "minutes": minutes, "seconds_mmdata": best,
                 "seconds_baseline": base, "sensor_samples": samples,
                 "records_mb": round(nbytes / 1e6, 1)},
    )  # fmt: skip
    if options.engine != "ray":
        return local
    return [local, _ray_result(cfg, run_dir, scratch, options.repeat, (best, samples))]


def _warm_up_jobs(cfg: PipelineConfig, run_dir: Path, scratch: Path, n: int) -> list[str]:
    """``n`` alignment jobs of an asset without streams: each loads the aligner, writes nothing.

    (A warm-up function of this module would load the whole bench package: torch, spaCy...)
    """
    job = {"align": cfg.align.model_dump(mode="json"), "clocks": {}, "shaping": "",
           "ingest_dir": str(run_dir / "ingest"), "out_dir": str(scratch / "warm-up"),
           "asset_id": "(warm-up)"}  # fmt: skip
    return [json.dumps(job)] * n


def _warm_up(engine: Engine, jobs: list[str]) -> float:
    """Seconds to run the warm-up jobs, one per worker."""
    from mmdata.align import align_job
    from mmdata.engine import JobFailure

    t0 = time.perf_counter()
    done = engine.map(align_job, jobs, name="warm-up", workers=len(jobs))
    failed = [res for _, res in done if isinstance(res, JobFailure)]
    if failed:
        raise RuntimeError(f"warming up the workers failed: {failed[0]}")
    return time.perf_counter() - t0


def _records_digest(run_dir: Path) -> str:
    """sha256 over every records file's name and bytes."""
    h = hashlib.sha256()
    for f in sorted((run_dir / "records").rglob("*")):
        if f.is_file():
            h.update(f.relative_to(run_dir).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _ray_result(cfg: PipelineConfig, run_dir: Path, scratch: Path, repeat: int,
                local: tuple[float, int]) -> BenchResult:  # fmt: skip
    """The same alignment on a local Ray cluster, against the local engine's best time."""
    import ray

    from mmdata.engine.local import LocalEngine
    from mmdata.engine.ray import RayEngine

    local_s, samples = local
    expected = _records_digest(run_dir)
    cpus = cfg.align.workers  # as many CPUs as the local engine has processes
    jobs = _warm_up_jobs(cfg, run_dir, scratch, cpus)
    pool_s = _warm_up(LocalEngine(), jobs)  # what every local stage run pays: spawn + import
    reused = ray.is_initialized()  # e.g. a test's cluster: used as it is, left running
    engine = RayEngine("local", temp_root=scratch / "ray", num_cpus=cpus, object_store_mb=128)
    try:
        t0 = time.perf_counter()
        engine.connect()
        start_s = time.perf_counter() - t0
        warm_s = _warm_up(engine, jobs)
        ray_cpus = int(ray.cluster_resources().get("CPU", 0))
        ray_cfg = cfg.model_copy(update={"engine": "ray", "ray": cfg.ray.model_copy(
            update={"address": "local", "num_cpus": cpus})})  # fmt: skip
        ray_s, ray_samples, _ = _best_align(ray_cfg, run_dir, repeat)
    finally:
        engine.close()
    if ray_samples != samples or _records_digest(run_dir) != expected:
        raise RuntimeError("the Ray engine's records differ from the local engine's")
    return BenchResult(
        workload="align (ray)", unit="samples/s",
        metric=f"sensor samples aligned per second on Ray (steady state: cluster start "
        f"{start_s:.1f} s and worker warm-up {warm_s:.1f} s not included)",
        mmdata=samples / ray_s, baseline=samples / local_s,
        baseline_name=f"the local engine, same run ({cpus} processes, spawned for each run)",
        details={"seconds_ray": ray_s, "seconds_local": local_s,
                 "seconds_ray_cluster_start": start_s, "seconds_ray_worker_warmup": warm_s,
                 "seconds_local_pool_start": pool_s,
                 "ray_cpus": ray_cpus, "cluster": "reused" if reused else "started",
                 "ray_vs_local": local_s / ray_s, "records_identical": True,
                 "sensor_samples": samples},
    )  # fmt: skip


@workload("align-floor", "aligner vs the I/O floor (read the inputs, write the same bytes)")
def bench_align_floor(options: BenchOptions, scratch: Path) -> BenchResult:
    """Sensor samples per second, mmdata vs reading inputs + writing records bytes only."""
    assets, minutes = _sizes(options)
    cfg, run_dir = _prepared(scratch, assets, minutes)
    best, samples, _ = _best_align(cfg, run_dir, options.repeat)
    floor = min(_io_floor(run_dir, scratch / "floor") for _ in range(options.repeat))
    return BenchResult(
        workload="align-floor", metric="sensor samples aligned per second", unit="samples/s",
        mmdata=samples / best, baseline=samples / floor,
        baseline_name="I/O floor: read the same streams, write the same records bytes",
        details={"seconds_mmdata": best, "seconds_floor": floor,
                 "times_the_floor": best / floor, "target": "<= 2x the floor"},
    )  # fmt: skip


_PEAK = """
import json, sys
from pathlib import Path
from mmdata.align import align_asset, shaping_hash
from mmdata.stream_reader import read_clocks
from mmdata.config import PipelineConfig
cfg = PipelineConfig.model_validate_json(Path(sys.argv[1]).read_text())
run = Path(sys.argv[2])
clocks = {d: {"model": c.model.model_dump(), "uncertain": c.uncertain,
              "exceeds": c.exceeds_tolerance} for d, c in read_clocks(run / "sync").items()}
job = {"asset_id": "press-1", "align": cfg.align.model_dump(mode="json"), "clocks": clocks,
       "ingest_dir": str(run / "ingest"), "out_dir": sys.argv[3], "shaping": shaping_hash(cfg)}
align_asset(job)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_kb": int(hwm.split()[1])}))
"""


def _peak_rss_mb(cfg: PipelineConfig, run_dir: Path, out: Path) -> float:
    cfg_path = out.parent / f"{out.name}.json"
    out.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(cfg.model_dump_json())
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(cfg_path), str(run_dir), str(out)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_kb"]) / 1024


@workload("align-memory", "peak RSS aligning one asset: 10 vs 60 minutes of input")
def bench_align_memory(options: BenchOptions, scratch: Path) -> BenchResult:
    """Peak RSS (MB) of one asset's alignment at 10 and 60 minutes; lower growth is better."""
    short, long_ = 10.0 * options.scale, 60.0 * options.scale
    cfg_s, run_s = _prepared(scratch, 1, short)
    cfg_l, run_l = _prepared(scratch, 1, long_)
    rss_s = _peak_rss_mb(cfg_s, run_s, scratch / "mem_short")
    rss_l = _peak_rss_mb(cfg_l, run_l, scratch / "mem_long")
    return BenchResult(
        workload="align-memory", metric=f"peak RSS, {long_:g} min (vs {short:g} min) of input",
        unit="MB", mmdata=rss_l, baseline=rss_s, higher_is_better=False,
        baseline_name=f"the same aligner on {short:g} minutes",
        details={"growth": rss_l / rss_s, "target": "<= 1.2x"},
    )  # fmt: skip
