"""Run directory, manifest, atomic writes and the stage runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pytest

from mmdata import atomic
from mmdata.errors import RunDirError, StageError
from mmdata.quarantine import QuarantineLog, read_quarantine
from mmdata.rundir import RunDir, StageCounts, fingerprint_tree
from mmdata.runner import StageContext, StageSpec, run_stage

from .conftest import ROOT


def numbers_stage(n: int, bad: frozenset[int] | set[int] = frozenset()):
    """A stage that writes one file per good item and quarantines the bad ones."""

    def fn(ctx: StageContext) -> StageCounts:
        for i in range(n):
            if i in bad:
                ctx.quarantine.add(f"item-{i}", ValueError(f"item {i} is odd"), locator=f"#{i}")
            else:
                atomic.write_text(ctx.out_dir / f"{i}.txt", str(i * i))
            ctx.report("numbers", i + 1, n)
        return StageCounts(in_=n, out=n - len(bad), quarantined=len(bad))

    return fn


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "data.json"
    atomic.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic.atomic_open(target) as fh:
        fh.write(b'{"v": 2, "trunc')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]  # no temp litter
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_stage_runs_then_skips_when_unchanged(tmp_path):
    progress: list[tuple[str, int, int]] = []
    with RunDir.open(tmp_path / "run") as run:
        spec = StageSpec(name="numbers", config={"n": 5}, inputs_fingerprint="abc")
        first = run_stage(run, spec, numbers_stage(5, {3}), progress=lambda *a: progress.append(a))
        second = run_stage(run, spec, numbers_stage(5, {3}))
    assert not first.skipped and second.skipped
    assert first.counts == second.counts == StageCounts(in_=5, out=4, quarantined=1)
    assert progress[-1] == ("numbers", 5, 5)
    out = tmp_path / "run" / "numbers"
    assert sorted(p.name for p in out.iterdir()) == ["0.txt", "1.txt", "2.txt", "4.txt"]

    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    rec = manifest["stages"]["numbers"]
    assert rec["status"] == "complete"
    assert rec["counts"] == {"in": 5, "out": 4, "quarantined": 1}
    assert rec["elapsed_ns"] > 0 and isinstance(rec["elapsed_ns"], int)
    assert manifest["packages"]["pyarrow"] and manifest["packages"]["mmdata-toolkit"]

    rows = read_quarantine(tmp_path / "run" / "quarantine" / "numbers.parquet")
    assert [(r.stage, r.source_ref, r.locator, r.error_class) for r in rows] == [
        ("numbers", "item-3", "#3", "ValueError")
    ]


@pytest.mark.parametrize(
    "change", [{"config": {"n": 6}}, {"inputs_fingerprint": "def"}, {"version": "2"}]
)
def test_stage_reruns_when_config_inputs_or_code_version_change(tmp_path, change):
    base = {"name": "numbers", "config": {"n": 5}, "inputs_fingerprint": "abc"}
    with RunDir.open(tmp_path / "run") as run:
        run_stage(run, StageSpec(**base), numbers_stage(5))
        again = run_stage(run, StageSpec(**{**base, **change}), numbers_stage(6))
    assert not again.skipped
    assert len(list((tmp_path / "run" / "numbers").iterdir())) == 6


def test_stage_reruns_when_its_output_was_deleted(tmp_path):
    spec = StageSpec(name="numbers", config={"n": 2})
    with RunDir.open(tmp_path / "run") as run:
        run_stage(run, spec, numbers_stage(2))
        (tmp_path / "run" / "quarantine" / "numbers.parquet").unlink()
        assert not run_stage(run, spec, numbers_stage(2)).skipped


def test_counts_that_do_not_reconcile_fail_the_stage_and_publish_nothing(tmp_path):
    def lying(ctx: StageContext) -> StageCounts:
        (ctx.out_dir / "x").write_text("x")
        return StageCounts(in_=3, out=1, quarantined=0)

    with RunDir.open(tmp_path / "run") as run, pytest.raises(StageError, match="reconcile"):
        run_stage(run, StageSpec(name="lying"), lying)
    assert not (tmp_path / "run" / "lying").exists()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["lying"]["status"] == "failed"
    assert "reconcile" in manifest["stages"]["lying"]["error"]


def test_unexpected_exception_becomes_stage_error_and_keeps_previous_output(tmp_path):
    def broken(ctx: StageContext) -> StageCounts:
        raise ZeroDivisionError("boom")

    with RunDir.open(tmp_path / "run") as run:
        run_stage(run, StageSpec(name="numbers", config={"n": 2}), numbers_stage(2))
        with pytest.raises(StageError, match="ZeroDivisionError: boom"):
            run_stage(run, StageSpec(name="numbers", config={"n": 3}), broken)
    assert len(list((tmp_path / "run" / "numbers").iterdir())) == 2
    assert not (tmp_path / "run" / ".work" / "numbers").exists()


def test_foreign_nonempty_folder_is_refused(tmp_path):
    (tmp_path / "precious.csv").write_text("do not touch")
    with pytest.raises(RunDirError, match="not an mmdata run dir"):
        RunDir.open(tmp_path)
    assert (tmp_path / "precious.csv").read_text() == "do not touch"


def test_a_run_dir_is_locked_against_a_second_process(tmp_path):
    with RunDir.open(tmp_path / "run"):
        probe = subprocess.run(
            [sys.executable, "-c",
             f"from mmdata.rundir import RunDir; RunDir.open({str(tmp_path / 'run')!r})"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert probe.returncode != 0
        assert "in use by another mmdata process" in probe.stderr
    with RunDir.open(tmp_path / "run"):  # released on close
        pass


KILLED_STAGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mmdata.rundir import RunDir, StageCounts
    from mmdata.runner import StageSpec, run_stage
    from mmdata import atomic

    def slow(ctx):
        for i in range(10):
            atomic.write_text(ctx.out_dir / f"{i}.txt", str(i))
            if i == 4:
                Path(sys.argv[2]).write_text("halfway")
                time.sleep(60)
        return StageCounts(in_=10, out=10)

    with RunDir.open(sys.argv[1]) as run:
        run_stage(run, StageSpec(name="slow", config={"k": 1}), slow)
    """
)


def test_killed_stage_reruns_cleanly_with_the_same_result(tmp_path):
    run_path, marker = tmp_path / "run", tmp_path / "halfway"
    script = tmp_path / "stage.py"
    script.write_text(KILLED_STAGE)
    proc = subprocess.Popen([sys.executable, str(script), str(run_path), str(marker)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    manifest = json.loads((run_path / "manifest.json").read_text())
    assert manifest["stages"]["slow"]["status"] == "running"
    assert not (run_path / "slow").exists()  # nothing half-written looks whole

    def fast(ctx: StageContext) -> StageCounts:
        for i in range(10):
            atomic.write_text(ctx.out_dir / f"{i}.txt", str(i))
        return StageCounts(in_=10, out=10)

    with RunDir.open(run_path) as run:
        outcome = run_stage(run, StageSpec(name="slow", config={"k": 1}), fast)
    assert not outcome.skipped
    assert sorted(int(p.stem) for p in (run_path / "slow").iterdir()) == list(range(10))
    assert not any((run_path / ".work").iterdir())


def test_quarantine_table_matches_its_json_schema(tmp_path):
    log = QuarantineLog("ingest")
    log.add("s3://plant/a.csv", "GarbageRow", locator="row 12")
    log.add("b.wav", OSError("truncated"), item_id="b")
    path = tmp_path / "q.parquet"
    log.write(path)
    schema = json.loads((ROOT / "schemas" / "quarantine.v1.json").read_text())
    assert set(pq.read_schema(path).names) == set(schema["properties"])
    assert set(schema["required"]) <= set(pq.read_schema(path).names)
    rows = read_quarantine(path)
    assert rows[1].message == "truncated" and rows[1].item_id == "b"


def test_fingerprint_tree_sees_content_changes(tmp_path):
    (tmp_path / "a.txt").write_text("1")
    before = fingerprint_tree(tmp_path)
    (tmp_path / "a.txt").write_text("22")
    assert fingerprint_tree(tmp_path) != before
