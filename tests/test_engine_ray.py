"""The Ray engine on a real local Ray cluster (2 CPUs, no dashboard, temp dir in tmp).

One cluster serves the whole file (starting Ray costs seconds). The stages give
byte-identical records, scrubbed records and audit on Ray and locally; a job whose worker
is killed is retried and completes; a job that raises is reported once, not retried.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmdata.align import AssetResult, run_align, run_assets
from mmdata.build.stage import run_build
from mmdata.config import AlignConfig, PipelineConfig, RayConfig, RunStorageConfig
from mmdata.demo import factory_pipeline
from mmdata.engine import JobFailure, in_order
from mmdata.engine.ray import RayEngine
from mmdata.errors import InputDataError
from mmdata.features.stage import run_features
from mmdata.ingest import run_ingest
from mmdata.rundir import RunDir
from mmdata.rundir_remote import open_run
from mmdata.scrub.stage import run_scrub
from mmdata.sync import run_sync
from mmdata.synth import SynthConfig, generate_factory

KEY = "a-test-key-that-is-long-enough-0123456789"


def kill_once(job: str) -> str:
    """A job whose worker process is killed on its first attempt (the marker counts tries)."""
    marker = Path(json.loads(job)["marker"])
    with marker.open("a") as f:
        f.write("x")
    if len(marker.read_text()) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return json.dumps({"attempts": len(marker.read_text())})


def always_fails(job: str) -> str:
    """A job that raises the same error on every attempt (the marker counts tries)."""
    marker = Path(json.loads(job)["marker"])
    with marker.open("a") as f:
        f.write("x")
    raise InputDataError(f"partition {job!r} is corrupt")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[RayEngine]:
    # Workers load the scrub key and the storage credentials themselves (they never
    # travel): the cluster started here inherits this process's environment, so the key
    # and the S3 server's credentials (set by s3_endpoint) must be there before it starts.
    old = os.environ.get("MMDATA_PII_KEY")
    os.environ["MMDATA_PII_KEY"] = KEY
    eng = RayEngine("local", temp_root=tmp_path_factory.mktemp("ray"), num_cpus=2,
                    object_store_mb=128)  # fmt: skip
    eng.connect()
    yield eng
    eng.close()
    if old is None:
        os.environ.pop("MMDATA_PII_KEY", None)
    else:
        os.environ["MMDATA_PII_KEY"] = old


def _pipeline(root: Path, factory: Path, engine: str) -> PipelineConfig:
    cfg = factory_pipeline(factory, root / f"run-{engine}")
    image = cfg.scrub.image.model_copy(update={"ocr": [], "profile_faces": False})
    scrub = cfg.scrub.model_copy(update={"image": image, "processes": 2})
    align = cfg.align.model_copy(update={"workers": 2})
    return cfg.model_copy(update={"scrub": scrub, "align": align, "engine": engine})


STAGES = ("records", "scrubbed", "audit")


def _hashes(run_dir: Path, stages: tuple[str, ...] = STAGES) -> dict[str, str]:
    # features/summary.json holds timings: everything else must match byte for byte
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for stage in stages for p in sorted((run_dir / stage).rglob("*"))
            if p.is_file() and p.name != "summary.json"}  # fmt: skip


def test_ray_engine_gives_byte_identical_records_scrubbed_records_audit_and_features(
    engine: RayEngine, tmp_path: Path
) -> None:
    factory = tmp_path / "factory"
    generate_factory(SynthConfig(assets=2, minutes=0.5, seed=3, workers=1), factory)
    hashes, counts = {}, {}
    stages = ("ingest", "records", "scrubbed", "audit", "dataset", "features", "quarantine")
    for name in ("local", "ray"):
        cfg = _pipeline(tmp_path, factory, name)
        with RunDir.open(cfg.run_dir) as run:
            counts[name] = [stage(run, cfg).counts for stage in (
                run_ingest, run_sync, run_align, run_scrub, run_build, run_features)]  # fmt: skip
        hashes[name] = _hashes(Path(cfg.run_dir), stages)
    assert counts["ray"] == counts["local"]
    assert counts["local"][3].out > 0 and counts["local"][5].out > 0
    for must in ("scrubbed/asset_id=", "audit/findings.parquet", "features/cache/",
                 "features/index.parquet", "ingest/streams/"):  # fmt: skip
        assert any(k.startswith(must) for k in hashes["local"]), must
    assert hashes["ray"] == hashes["local"]


def test_a_job_whose_worker_is_killed_is_retried_and_completes(
    engine: RayEngine, tmp_path: Path
) -> None:
    jobs = [json.dumps({"marker": str(tmp_path / f"m{i}")}) for i in range(2)]
    results = in_order(engine.map(kill_once, jobs, name="kill-once"), len(jobs))
    assert [json.loads(r) for r in results if isinstance(r, str)] == [{"attempts": 2}] * 2


def test_a_job_that_raises_is_reported_once_not_retried(engine: RayEngine, tmp_path: Path) -> None:
    marker = tmp_path / "tries"
    job = json.dumps({"marker": str(marker)})
    [(k, res)] = list(engine.map(always_fails, [job], name="fails"))
    assert k == 0 and isinstance(res, JobFailure)
    assert (res.error_class, res.kind) == ("InputDataError", "input")
    assert "is corrupt" in res.message
    assert marker.read_text() == "x"  # one attempt: a Python exception is deterministic


def test_a_failing_align_partition_becomes_one_dropped_item_with_its_reason(
    engine: RayEngine, tmp_path: Path
) -> None:
    job = {"align": AlignConfig().model_dump(mode="json"), "clocks": {}, "shaping": "x",
           "ingest_dir": str(tmp_path / "missing"), "out_dir": str(tmp_path / "out"),
           "asset_id": "press-1", "part": [0, 10], "part_index": 0, "breaks": []}  # fmt: skip
    seen: list[AssetResult] = []
    [res] = run_assets([job], 2, seen.append, engine)
    assert seen == [res]
    assert (res.planned, res.written) == (1, 0)
    [(start, end, why)] = res.dropped
    assert (start, end) == (0, 10) and "FileNotFoundError" in why


def test_an_s3_run_dir_on_ray_stages_files_through_the_storage_with_identical_results(
    engine: RayEngine, s3_bucket: tuple[Any, str, dict[str, Any]], tmp_path: Path
) -> None:
    fs, bucket, options = s3_bucket
    factory = tmp_path / "factory"
    generate_factory(SynthConfig(assets=2, minutes=0.3, seed=4, workers=1), factory)
    local = _pipeline(tmp_path, factory, "local")
    with RunDir.open(local.run_dir) as run:
        for stage in (run_ingest, run_sync, run_align, run_scrub):
            stage(run, local)
    url = f"s3://{bucket}/run"
    storage = RunStorageConfig(options=options, cache_dir=str(tmp_path / "cache"))
    # staging "always": workers act as if on another node than the driver (one machine here)
    remote = _pipeline(tmp_path, factory, "ray").model_copy(update={
        "run_dir": url, "run_storage": storage,
        "ray": RayConfig(address="local", staging="always")})  # fmt: skip
    with open_run(url, storage) as run:
        for stage in (run_ingest, run_sync, run_align, run_scrub):
            stage(run, remote)
        driver_mirror = run.root
    fs.invalidate_cache()
    remote_files = {p.removeprefix(f"{bucket}/run/"): hashlib.sha256(fs.cat_file(p)).hexdigest()
                    for p in fs.find(f"{bucket}/run")}  # fmt: skip
    expected = _hashes(Path(local.run_dir))
    assert any(k.startswith("scrubbed/asset_id=") for k in expected)
    assert {k: v for k, v in remote_files.items() if k in expected} == expected
    assert not any(k.startswith(".work/") for k in remote_files)  # collected and deleted
    # The workers read their inputs from their own mirror of the run, not the driver's.
    node = driver_mirror.with_name(driver_mirror.name + ".node")
    assert any((node / "records").rglob("*.parquet")) and any((node / "ingest").rglob("*"))


def test_a_cluster_started_for_a_long_run_path_leaves_no_temp_dir_behind(tmp_path: Path) -> None:
    # Ray's socket paths must be short: a long run path gets a /tmp/mmray-* stand-in, which
    # goes when the process that started the cluster exits (stages never close the engine).
    long_root = tmp_path / ("x" * 60) / ".work" / "ray"
    code = ("import sys; from pathlib import Path; from mmdata.engine.ray import RayEngine, "
            "ray_temp_dir; e = RayEngine('local', temp_root=Path(sys.argv[1]), num_cpus=1, "
            "object_store_mb=80); e.connect(); print(ray_temp_dir(Path(sys.argv[1])))")  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", code, str(long_root)], capture_output=True,
                          text=True, timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    temp = Path(done.stdout.strip().splitlines()[-1])
    assert temp.name.startswith("mmray-") and not temp.exists()
