"""The ingest stage on the execution engines: Ray gives the local engine's files, byte for byte.

One real local Ray cluster (2 CPUs, no dashboard, temp dir in tmp) serves the whole file.
Jobs travel as JSON and come back as JSON; a corrupt file is quarantined with the same reason
on Ray as locally; a job that raises as a whole quarantines each of its items with the
reason (counts reconcile), and a setup failure in a job fails the stage.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.base import SourceItem
from mmdata.demo import factory_pipeline
from mmdata.engine import Engine
from mmdata.engine.local import LocalEngine
from mmdata.engine.ray import RayEngine
from mmdata.errors import StageError
from mmdata.ingest import (
    IngestOptions,
    IngestSource,
    _run_jobs,
    ingest_sources,
    run_ingest,
    sources_of,
)
from mmdata.quarantine import QuarantineLog, read_quarantine
from mmdata.rundir import RunDir, StageCounts
from mmdata.synth import SynthConfig, generate_factory


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayEngine]:
    eng = RayEngine("local", temp_root=tmp_path_factory.mktemp("ray"), num_cpus=2,
                    object_store_mb=128)  # fmt: skip
    eng.connect()
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("factory") / "factory"
    generate_factory(SynthConfig(assets=1, minutes=0.5, seed=3, workers=1), out)
    return out


def corrupted(factory: Path, where: Path) -> Path:
    """A copy of ``factory`` with a truncated JPEG, a garbage sensor file and a bad note."""
    bad = where / "bad-factory"
    shutil.copytree(factory, bad)
    jpg = sorted((bad / "press-1" / "cam").glob("*.jpg"))[10]
    jpg.write_bytes(jpg.read_bytes()[:200])
    vib = next((bad / "press-1" / "vib").glob("*.parquet"))
    vib.write_bytes(b"this is not a parquet file\n" * 10)
    notes = bad / "notes" / "operator_notes.jsonl"
    notes.write_bytes(notes.read_bytes() + b"{not json\n")
    return bad


def ingest(factory: Path, run_dir: Path, engine: str) -> StageCounts:
    cfg = factory_pipeline(factory, run_dir)
    ray = cfg.ray.model_copy(update={"address": "local"})  # the cluster started above
    cfg = cfg.model_copy(update={"engine": engine, "ray": ray})
    with RunDir.open(cfg.run_dir) as run:
        return run_ingest(run, cfg).counts


def ingest_hashes(run_dir: Path) -> dict[str, str]:
    """sha256 of every file ingest wrote: the streams, their index and the quarantine."""
    files = [p for p in sorted((run_dir / "ingest").rglob("*")) if p.is_file()]
    files.append(run_dir / "quarantine" / "ingest.parquet")
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}  # fmt: skip


def test_ingest_on_ray_writes_byte_identical_streams_index_and_quarantine(
    engine: RayEngine, factory: Path, tmp_path: Path
) -> None:
    counts = {name: ingest(factory, tmp_path / name, name) for name in ("local", "ray")}
    local, ray = (ingest_hashes(tmp_path / name) for name in ("local", "ray"))
    assert counts["ray"] == counts["local"]
    assert counts["local"].out > 0 and counts["local"].reconciles()
    assert len([k for k in local if k.startswith("ingest/streams/")]) == 4  # vib, cam, mic, notes
    assert ray == local


def test_corrupt_files_are_quarantined_with_their_reason_on_ray_as_locally(
    engine: RayEngine, factory: Path, tmp_path: Path
) -> None:
    bad = corrupted(factory, tmp_path)
    counts = {name: ingest(bad, tmp_path / name, name) for name in ("local", "ray")}
    assert counts["ray"] == counts["local"] and counts["ray"].reconciles()
    rows = {name: read_quarantine(tmp_path / name / "quarantine" / "ingest.parquet")
            for name in ("local", "ray")}  # fmt: skip
    assert rows["ray"] == rows["local"]
    why = {Path(r.source_ref).parent.name: r.message for r in rows["ray"]}
    assert why["cam"].startswith("corrupt JPEG")
    assert why["vib"].startswith("not a readable Parquet file")
    assert why["notes"].startswith("line is not JSON")
    assert ingest_hashes(tmp_path / "ray") == ingest_hashes(tmp_path / "local")


def test_a_job_that_fails_as_a_whole_quarantines_each_of_its_items_with_the_reason(
    engine: RayEngine, factory: Path, tmp_path: Path
) -> None:
    cfg = factory_pipeline(factory, tmp_path / "run")
    sources = sources_of(cfg)
    camera = next(s for s in sources if s.connector == "camera")
    out = tmp_path / "ingest"
    # The camera job cannot write its part file: its part folder is taken by a file.
    blocker = out / "_parts" / f"s{camera.asset_id}-{camera.index}"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    log = QuarantineLog("ingest")
    counts = ingest_sources(sources, out, log, IngestOptions(), engine=engine)
    frames = len(list((factory / "press-1" / "cam").glob("*.jpg")))
    assert counts.reconciles() and counts.quarantined == frames
    assert {r.source_ref for r in log.rows} == {
        str(p) for p in (factory / "press-1" / "cam").glob("*.jpg")
    }
    assert all(r.error_class == "FileExistsError" for r in log.rows)
    assert all(r.message.startswith("reading the job holding this item failed (FileExistsError)")
               for r in log.rows)  # fmt: skip
    assert "press-1.cam-press-1.frames" not in (out / "streams.json").read_text()


@pytest.mark.parametrize("on", ["ray", "local"])
def test_a_setup_failure_in_a_job_fails_the_stage(
    on: str, engine: RayEngine, factory: Path, tmp_path: Path
) -> None:
    # A worker without the connector fails every job alike: that is the setup's fault.
    source = IngestSource("press-1", "cam", 0, "no-such-connector", str(factory), {})
    job = (source, [SourceItem(str(factory / "README.md"), 1)], str(tmp_path / "parts"), 0)
    runner: Engine = engine if on == "ray" else LocalEngine()
    with pytest.raises(StageError, match="ingest job 0 failed: ConnectorError: unknown connector"):
        _run_jobs([job], 1, lambda _: None, runner)


def test_the_local_spawn_pool_writes_the_same_files_as_one_process(
    factory: Path, tmp_path: Path
) -> None:
    sources = sources_of(factory_pipeline(factory, tmp_path / "run"))
    hashes = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        opts = IngestOptions(workers=workers, parallel_min_mb=0)  # always parallel
        counts = ingest_sources(sources, out, QuarantineLog("ingest"), opts)
        assert counts.reconciles() and counts.quarantined == 0
        hashes[workers] = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                           for p in sorted(out.rglob("*")) if p.is_file()}  # fmt: skip
    assert hashes[2] == hashes[1] and "streams.json" in hashes[1]
