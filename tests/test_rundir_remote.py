"""Run directories on shared storage: ``run_dir: s3://...`` against a real local S3 server.

The stages run on a local mirror and push after every manifest save; the objects on the
server are byte-identical to a local run's files, another machine (another mirror) resumes
the run where it stands, the lock object keeps a second process out, a failed stage
publishes nothing, and a re-run stage's old files are deleted from the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmdata.align import run_align
from mmdata.config import PipelineConfig, RunStorageConfig
from mmdata.demo import factory_pipeline
from mmdata.errors import RunDirError, StageError
from mmdata.ingest import run_ingest
from mmdata.rundir import RunDir, StageCounts
from mmdata.rundir_remote import INDEX_NAME, RunMirror, is_remote, open_run
from mmdata.runner import StageContext, StageSpec, run_stage
from mmdata.scrub.stage import run_scrub
from mmdata.sync import run_sync
from mmdata.synth import SynthConfig, generate_factory

KEY = "a-test-key-that-is-long-enough-0123456789"
STAGES = ("ingest", "sync", "records", "quarantine")


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("factory") / "f"
    generate_factory(SynthConfig(assets=2, minutes=0.3, seed=5, workers=1), out)
    return out


def _config(factory: Path, run_dir: str, options: dict[str, Any], cache: Path) -> PipelineConfig:
    cfg = factory_pipeline(factory, Path("/unused"))
    image = cfg.scrub.image.model_copy(update={"ocr": [], "profile_faces": False})
    return cfg.model_copy(update={
        "run_dir": run_dir, "scrub": cfg.scrub.model_copy(update={"image": image}),
        "run_storage": RunStorageConfig(options=options, cache_dir=str(cache)),
    })  # fmt: skip


def _local_hashes(root: Path) -> dict[str, str]:
    files = [p for stage in STAGES for p in sorted((root / stage).rglob("*")) if p.is_file()]
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}  # fmt: skip


def _remote_hashes(fs: Any, root: str) -> dict[str, str]:
    fs.invalidate_cache()
    return {path[len(root) + 1:]: hashlib.sha256(fs.cat_file(path)).hexdigest()
            for stage in STAGES for path in sorted(fs.find(f"{root}/{stage}"))}  # fmt: skip


def _run_three(run: RunDir, cfg: PipelineConfig) -> list[bool]:
    return [run_ingest(run, cfg).skipped, run_sync(run, cfg).skipped,
            run_align(run, cfg).skipped]  # fmt: skip


def test_urls_are_remote_and_local_paths_are_not() -> None:
    assert is_remote("s3://b/run") and is_remote("gs://b/run")
    assert not is_remote("/data/run") and not is_remote("file:///data/run")


def test_stages_on_s3_write_the_same_bytes_as_a_local_run_and_a_second_machine_resumes(
    s3_bucket: tuple[Any, str, dict[str, Any]], factory: Path, tmp_path: Path
) -> None:
    fs, bucket, options = s3_bucket
    url = f"s3://{bucket}/runs/plant"
    local = _config(factory, str(tmp_path / "local-run"), options, tmp_path / "cache-a")
    with RunDir.open(local.run_dir) as run:
        _run_three(run, local)
    remote = local.model_copy(update={"run_dir": url})
    with open_run(url, remote.run_storage) as run:
        assert run.remote_url == url and not is_remote(run.root)
        assert _run_three(run, remote) == [False, False, False]

    expected = _local_hashes(tmp_path / "local-run")
    assert any(k.startswith("records/asset_id=") for k in expected)
    assert _remote_hashes(fs, f"{bucket}/runs/plant") == expected
    manifest = json.loads(fs.cat_file(f"{bucket}/runs/plant/manifest.json"))
    assert {k: v["status"] for k, v in manifest["stages"].items()} == {
        "ingest": "complete", "sync": "complete", "records": "complete"}  # fmt: skip
    assert not fs.exists(f"{bucket}/runs/plant/.lock")  # released
    assert not any("/.work/" in p for p in fs.find(f"{bucket}/runs/plant"))

    # Another machine (its own mirror) finds the stages done and goes on from there.
    other = remote.model_copy(update={"run_storage": RunStorageConfig(
        options=options, cache_dir=str(tmp_path / "cache-b"))})  # fmt: skip
    os.environ["MMDATA_PII_KEY"] = KEY
    try:
        with open_run(url, other.run_storage) as run:
            assert run.root.is_relative_to(tmp_path / "cache-b")
            assert _run_three(run, other) == [True, True, True]
            assert run_scrub(run, other).counts.out > 0
    finally:
        os.environ.pop("MMDATA_PII_KEY")
    fs.invalidate_cache()
    assert fs.find(f"{bucket}/runs/plant/scrubbed")
    # ...and the first machine's mirror pulls what the second one added.
    with open_run(url, remote.run_storage) as run:
        assert run.manifest.stages["scrubbed"].status == "complete"
        assert any(run.stage_path("scrubbed").rglob("*.parquet"))


def test_a_second_process_is_kept_out_by_the_lock_object(
    s3_bucket: tuple[Any, str, dict[str, Any]], tmp_path: Path
) -> None:
    fs, bucket, options = s3_bucket
    url = f"s3://{bucket}/run"
    storage = RunStorageConfig(options=options, cache_dir=str(tmp_path / "a"))
    with open_run(url, storage):
        holder = json.loads(fs.cat_file(f"{bucket}/run/.lock"))["owner"]
        other = RunStorageConfig(options=options, cache_dir=str(tmp_path / "b"))
        with pytest.raises(RunDirError, match="in use by") as err, open_run(url, other):
            pass
        assert holder in str(err.value) and f"{url}/.lock" in (err.value.hint or "")
    with open_run(url, RunStorageConfig(options=options, cache_dir=str(tmp_path / "b"))) as run:
        assert run.manifest.stages == {}


def test_the_lock_of_a_killed_run_on_this_host_is_taken_over(
    s3_bucket: tuple[Any, str, dict[str, Any]], tmp_path: Path
) -> None:
    fs, bucket, options = s3_bucket
    url, lock = f"s3://{bucket}/run", f"{bucket}/run/.lock"
    storage = RunStorageConfig(options=options, cache_dir=str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fs.pipe_file(lock, json.dumps({"owner": f"{socket.gethostname()}:{dead.pid}:1"}).encode())
    with open_run(url, storage):
        fs.invalidate_cache()
        host, pid, _ = json.loads(fs.cat_file(lock))["owner"].split(":")
        assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    # Another host's lock: only its owner knows whether it still runs.
    fs.pipe_file(lock, json.dumps({"owner": "other-host:1:1"}).encode())
    with pytest.raises(RunDirError, match="other-host"), open_run(url, storage):
        pass


def _half_done(ctx: StageContext) -> StageCounts:
    (ctx.out_dir / "part-00000.parquet").write_bytes(b"half written")
    raise RuntimeError("killed half-way")


def test_a_failed_stage_is_recorded_remotely_and_publishes_no_files(
    s3_bucket: tuple[Any, str, dict[str, Any]], tmp_path: Path
) -> None:
    fs, bucket, options = s3_bucket
    url = f"s3://{bucket}/run"
    storage = RunStorageConfig(options=options, cache_dir=str(tmp_path))
    with open_run(url, storage) as run, pytest.raises(StageError, match="killed half-way"):
        run_stage(run, StageSpec(name="boom"), _half_done)
    fs.invalidate_cache()
    manifest = json.loads(fs.cat_file(f"{bucket}/run/manifest.json"))
    assert manifest["stages"]["boom"]["status"] == "failed"
    assert not fs.exists(f"{bucket}/run/boom")
    index = json.loads(fs.cat_file(f"{bucket}/run/{INDEX_NAME}"))["files"]
    assert not any(rel.startswith(("boom/", ".work/")) for rel in index)


def test_a_rerun_stage_deletes_its_old_files_from_the_server(
    s3_bucket: tuple[Any, str, dict[str, Any]], factory: Path, tmp_path: Path
) -> None:
    fs, bucket, options = s3_bucket
    url = f"s3://{bucket}/run"
    cfg = _config(factory, url, options, tmp_path / "cache")
    with open_run(url, cfg.run_storage) as run:
        _run_three(run, cfg)
        before = set(fs.find(f"{bucket}/run/records"))
        # Shorter partitions: more, differently named part files.
        align = cfg.align.model_copy(update={"partition_s": 5})
        run_align(run, cfg.model_copy(update={"align": align}))
        after_local = {p.relative_to(run.root).as_posix()
                       for p in run.stage_path("records").rglob("*") if p.is_file()}  # fmt: skip
    fs.invalidate_cache()
    after = set(fs.find(f"{bucket}/run/records"))
    assert after != before
    assert {p.removeprefix(f"{bucket}/run/") for p in after} == after_local


def test_a_mirror_that_was_tampered_with_is_repaired_by_the_next_pull(
    s3_bucket: tuple[Any, str, dict[str, Any]], factory: Path, tmp_path: Path
) -> None:
    _, bucket, options = s3_bucket
    url = f"s3://{bucket}/run"
    cfg = _config(factory, url, options, tmp_path / "cache")
    with open_run(url, cfg.run_storage) as run:
        run_ingest(run, cfg)
        victim = next(run.stage_path("ingest").rglob("*.parquet"))
        good = victim.read_bytes()
    victim.write_bytes(b"garbage")
    (victim.parent / "stray.txt").write_text("not in the run")
    mirror = RunMirror(url, cfg.run_storage)
    assert mirror.pull() == 1
    assert victim.read_bytes() == good
    assert not (victim.parent / "stray.txt").exists()


def test_the_cli_runs_a_stage_on_an_s3_run_dir(
    cli: Any, s3_bucket: tuple[Any, str, dict[str, Any]], factory: Path, tmp_path: Path
) -> None:
    fs, bucket, options = s3_bucket
    cfg = _config(factory, f"s3://{bucket}/cli-run", options, tmp_path / "cache")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_defaults=True)))
    result = cli("ingest", path, "--json")
    assert result.code == 0, result.err
    assert result.json()["run_dir"] == f"s3://{bucket}/cli-run"
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"{bucket}/cli-run/manifest.json"))["stages"]["ingest"][
        "status"] == "complete"  # fmt: skip
