"""The CLI on an existing Ray cluster (``ray.address: auto``), the way a submitted job runs.

A real head node is started with ``ray start --head`` (2 CPUs, no dashboard, its temp dir
in the test's tmp); the stage verbs then run as separate processes with ``RAY_ADDRESS`` set
— what ``ray job submit`` gives its entrypoint — and ``engine: ray`` / ``address: auto`` in
the pipeline YAML. Their outputs are byte-identical to the local engine's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mmdata.align import run_align
from mmdata.demo import factory_pipeline
from mmdata.ingest import run_ingest
from mmdata.rundir import RunDir
from mmdata.scrub.stage import run_scrub
from mmdata.sync import run_sync
from mmdata.synth import SynthConfig, generate_factory

KEY = "a-test-key-that-is-long-enough-0123456789"
RAY = Path(sys.executable).with_name("ray")
MMDATA = Path(sys.executable).with_name("mmdata")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A head node of its own; yields the environment a job on it gets."""
    import tempfile

    temp = Path(tempfile.mkdtemp(prefix="mmray-"))  # short: Ray's socket paths must fit
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MMDATA_PII_KEY": KEY}
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats",
         f"--object-store-memory={128 << 20}", "--node-ip-address=127.0.0.1"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        probe = subprocess.run([str(RAY), "status", f"--address={address}"], env=env,
                               capture_output=True, text=True)  # fmt: skip
        if probe.returncode == 0:
            break
        if head.poll() is not None or time.monotonic() > deadline:
            os.killpg(head.pid, signal.SIGKILL)
            pytest.fail(f"ray start failed: {head.stderr.read().decode() if head.stderr else ''}")
        time.sleep(1)
    try:
        yield {**env, "RAY_ADDRESS": address}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-f", str(temp)], check=False)  # stragglers of it only
        shutil.rmtree(temp, ignore_errors=True)


def _hashes(run_dir: Path) -> dict[str, str]:
    files = [p for stage in ("ingest", "records", "scrubbed", "audit")
             for p in sorted((run_dir / stage).rglob("*")) if p.is_file()]  # fmt: skip
    return {p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}  # fmt: skip


def test_stage_verbs_on_a_running_cluster_match_the_local_engine(
    cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = tmp_path / "factory"
    generate_factory(SynthConfig(assets=2, minutes=0.3, seed=6, workers=1), factory)
    cfg = factory_pipeline(factory, tmp_path / "local")
    image = cfg.scrub.image.model_copy(update={"ocr": [], "profile_faces": False})
    cfg = cfg.model_copy(update={"scrub": cfg.scrub.model_copy(update={"image": image})})
    monkeypatch.setenv("MMDATA_PII_KEY", KEY)
    with RunDir.open(cfg.run_dir) as run:
        for stage in (run_ingest, run_sync, run_align, run_scrub):
            stage(run, cfg)

    doc = cfg.model_dump(mode="json", exclude_defaults=True)
    doc.update(run_dir=str(tmp_path / "on-ray"), engine="ray", ray={"address": "auto"})
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(doc))
    for verb in ("ingest", "sync", "align", "scrub"):
        done = subprocess.run([str(MMDATA), verb, str(config), "--quiet"], env=cluster,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
    expected = _hashes(tmp_path / "local")
    assert any(k.startswith("scrubbed/asset_id=") for k in expected)
    assert _hashes(tmp_path / "on-ray") == expected
    # The jobs ran on the cluster: the CLI did not start a Ray of its own in the run dir.
    assert not (tmp_path / "on-ray" / ".work" / "ray").exists()
