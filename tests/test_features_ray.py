"""The features stage on a real local Ray cluster (2 CPUs): an actor pool, identical cache.

One cluster and one pair of runs serve the file (starting Ray and an actor pool costs
seconds). The same ``RUN/dataset`` — images with one that is not a JPEG, audio clips and
sensor windows with one too short — is encoded once locally and once with ``engine: ray``
(small batches, so every modality makes several jobs for two actors): every cache file,
``index.parquet`` and the quarantine table are byte-identical. The actor pool itself
survives an actor killed mid-job and reports a deterministic failure once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from transformers import ViTImageProcessor

from mmdata.engine import JobFailure, in_order
from mmdata.engine.ray import RayEngine
from mmdata.errors import DependencyError, InputDataError, StageError
from mmdata.features.stage import run_features
from mmdata.quarantine import read_quarantine
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import StageContext, StageOutcome, StageSpec, run_stage
from tests.test_features_encoders import save_vit
from tests.test_features_stage import pipeline, write_dataset

SMALL_BATCHES = {
    "image": {"encoder": "thumbnail", "batch_size": 2},
    "audio": {"encoder": "logmel", "batch_size": 2},
    "sensor": {"encoder": "spectral", "batch_size": 1},
    "loader_workers": 2,  # locally two decoding processes; on Ray a pool of two actors
}


def kill_once(job: str) -> str:
    """A job that kills its actor process on its first attempt when asked to (the marker
    counts tries)."""
    spec = json.loads(job)
    marker = Path(spec["marker"])
    with marker.open("a") as f:
        f.write("x")
    if spec["kill"] and len(marker.read_text()) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return json.dumps({"job": spec["n"], "attempts": len(marker.read_text())})


def always_fails(job: str) -> str:
    """A job that raises the same error on every attempt (the marker counts tries)."""
    marker = Path(json.loads(job)["marker"])
    with marker.open("a") as f:
        f.write("x")
    raise InputDataError("this chunk is corrupt")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayEngine]:
    eng = RayEngine(
        "local", temp_root=tmp_path_factory.mktemp("ray"), num_cpus=2, object_store_mb=128
    )
    eng.connect()
    yield eng
    eng.close()


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _without_timings(summary: dict) -> dict:
    return {
        **summary,
        "modalities": {
            m: {k: v for k, v in s.items() if k not in ("seconds", "items_per_s")}
            for m, s in summary["modalities"].items()
        },
    }


def _dataset(root: Path) -> Path:
    """A run with a built ``RUN/dataset`` (see tests/test_features_stage.py)."""

    def build(ctx: StageContext) -> StageCounts:
        write_dataset(ctx.out_dir)
        return StageCounts(in_=1, out=1)

    with RunDir.open(root) as run:
        run_stage(run, StageSpec(name="dataset", config={"fixture": 1}), build)
    return root


def _features(root: Path, engine: str, **features: Any) -> StageOutcome:
    cfg = pipeline(root, **features).model_copy(update={"engine": engine})
    with RunDir.open(root) as run:
        return run_features(run, cfg)


def _encode_twice(base: Path, **features: Any) -> dict[str, tuple[Path, StageOutcome]]:
    """The same dataset encoded locally and on Ray: ``{engine: (run dir, outcome)}``."""
    _dataset(base / "run-local")
    shutil.copytree(base / "run-local", base / "run-ray")
    return {
        name: (base / f"run-{name}", _features(base / f"run-{name}", name, **features))
        for name in ("local", "ray")
    }


@pytest.fixture(scope="module")
def runs(
    engine: RayEngine, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, StageOutcome]]:
    return _encode_twice(tmp_path_factory.mktemp("features"), **SMALL_BATCHES)


def test_the_ray_engine_writes_a_byte_identical_feature_cache_and_index(runs) -> None:
    local_out, ray_out = runs["local"][1], runs["ray"][1]
    assert ray_out.counts == local_out.counts == StageCounts(in_=13, out=11, quarantined=2)
    hashes = {name: _file_hashes(root / "features") for name, (root, _) in runs.items()}
    shards = [k for k in hashes["local"] if k.endswith(".safetensors")]
    assert len(shards) == 3  # one shard per encoder: the jobs' features land together
    assert "index.parquet" in hashes["local"]
    assert sum(k.endswith("/index.parquet") for k in hashes["local"]) == 3  # cache indexes
    assert not any(".jobs" in k for k in hashes["ray"])  # the scratch files are gone
    del hashes["local"]["summary.json"], hashes["ray"]["summary.json"]  # it has timings
    assert hashes["ray"] == hashes["local"]
    summaries = [
        json.loads((root / "features" / "summary.json").read_text()) for root, _ in runs.values()
    ]
    assert _without_timings(summaries[1]) == _without_timings(summaries[0])
    assert summaries[1]["modalities"]["image"]["computed"] == 5


def test_a_corrupt_medium_and_a_short_window_are_quarantined_identically(runs) -> None:
    tables = {name: root / "quarantine" / "features.parquet" for name, (root, _) in runs.items()}
    assert tables["ray"].read_bytes() == tables["local"].read_bytes()
    rows = read_quarantine(tables["ray"])
    assert [(r.locator, r.error_class) for r in rows] == [
        ("image:frame", "InputDataError"),
        ("sensor:temp", "InputDataError"),
    ]
    assert "cannot be decoded" in rows[0].message and "too short" in rows[1].message
    index = pq.read_table(runs["ray"][0] / "features" / "index.parquet")
    assert {r.item_id for r in rows}.isdisjoint(index.column("sha256").to_pylist())


def test_a_warm_rerun_on_ray_computes_nothing(runs) -> None:
    root, _ = runs["ray"]
    cfg = pipeline(root, **SMALL_BATCHES).model_copy(update={"engine": "ray"})
    before = (root / "features" / "index.parquet").read_bytes()
    with RunDir.open(root) as run:
        run_features(run, cfg, force=True)
    summary = json.loads((root / "features" / "summary.json").read_text())
    assert summary["warm"] is True
    assert (root / "features" / "index.parquet").read_bytes() == before


def test_an_actor_killed_mid_job_is_restarted_and_its_job_retried(
    engine: RayEngine, tmp_path: Path
) -> None:
    # One actor dies with job 0 (each restart costs ~10 s here); job 1 runs on the other.
    jobs = [json.dumps({"marker": str(tmp_path / f"m{i}"), "n": i, "kill": i == 0})
            for i in range(2)]  # fmt: skip
    results = in_order(engine.map(kill_once, jobs, name="kill-once", actors=2), len(jobs))
    assert [json.loads(r) for r in results if isinstance(r, str)] == [
        {"job": 0, "attempts": 2},
        {"job": 1, "attempts": 1},
    ]


def test_a_job_that_raises_in_the_pool_comes_back_once_as_a_failure(
    engine: RayEngine, tmp_path: Path
) -> None:
    marker = tmp_path / "tries"
    job = json.dumps({"marker": str(marker)})
    [(k, res)] = list(engine.map(always_fails, [job], name="fails", actors=2))
    assert k == 0 and isinstance(res, JobFailure)
    assert (res.error_class, res.kind, res.message) == (
        "InputDataError",
        "input",
        "this chunk is corrupt",
    )
    assert marker.read_text() == "x"  # one attempt: a Python exception is deterministic


def test_a_hugging_face_model_in_the_actors_gives_the_same_cache(
    engine: RayEngine, tmp_path: Path
) -> None:
    vit = save_vit(tmp_path / "vit")
    runs = _encode_twice(
        tmp_path,
        image={"encoder": str(vit), "batch_size": 2},
        audio=None,
        sensor=None,
        loader_workers=2,
    )
    counts = [outcome.counts for _, outcome in runs.values()]
    assert counts == [StageCounts(in_=6, out=5, quarantined=1)] * 2
    hashes = {name: _file_hashes(root / "features") for name, (root, _) in runs.items()}
    del hashes["local"]["summary.json"], hashes["ray"]["summary.json"]
    assert hashes["ray"] == hashes["local"]


def test_a_batch_the_encoder_raises_on_is_quarantined_alike_on_both_engines(
    engine: RayEngine, tmp_path: Path
) -> None:
    vit = save_vit(tmp_path / "vit")  # a processor giving 48 px to a model of 32 px
    ViTImageProcessor(size={"height": 48, "width": 48}).save_pretrained(vit)
    tables = {}
    for name in ("local", "ray"):
        root = _dataset(tmp_path / name)
        out = _features(root, name, image={"encoder": str(vit), "batch_size": 2},
                        audio=None, sensor=None, loader_workers=1)  # fmt: skip
        assert (out.counts.in_, out.counts.out, out.counts.quarantined) == (6, 0, 6)
        tables[name] = (root / "quarantine" / "features.parquet").read_bytes()
        rows = read_quarantine(root / "quarantine" / "features.parquet")
        failed = [r for r in rows if r.error_class == "ValueError"]
        assert len(failed) == 5  # the sixth image does not decode at all
        assert all(r.message.startswith("the encoder failed on this item's batch: ValueError")
                   and "doesn't match model" in r.message for r in failed)  # fmt: skip
    assert tables["ray"] == tables["local"]


def test_an_encoder_that_cannot_load_on_the_workers_fails_the_stage(
    engine: RayEngine, tmp_path: Path
) -> None:
    vit = save_vit(tmp_path / "vit")
    (vit / "model.safetensors").write_bytes(b"not safetensors")  # hashes, but cannot load
    root = _dataset(tmp_path / "run")
    with pytest.raises(StageError, match="cannot be loaded on this worker"):
        _features(root, "ray", image={"encoder": str(vit)}, audio=None, sensor=None)
    with RunDir.open(root) as run:
        assert run.manifest.stages["features"].status == "failed"


def test_cuda_on_a_cluster_without_gpus_is_refused(engine: RayEngine, tmp_path: Path) -> None:
    root = _dataset(tmp_path / "run")
    with pytest.raises(DependencyError, match="the Ray cluster has no GPU"):
        _features(root, "ray", device="cuda")
