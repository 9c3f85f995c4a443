"""Shared fixtures: small real files and a helper to run the CLI in-process."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmdata.cli import main
from mmdata.rundir import StageCounts

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """Run ``mmdata ARGS`` in-process; return exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


VALID_PIPELINE = """\
version: 1
run_dir: runs/line2
assets:
  press-1:
    sources:
      - {connector: camera, path: data/press-1/cam/, device: cam-press-1}
      - {connector: sensor, path: "data/press-1/vib/*.parquet", device: acc-press-1}
sync: {reference: acc-press-1, tolerance_ms: 5}
align:
  window: {mode: sliding, length_ms: 2000, hop_ms: 500}
"""


@pytest.fixture
def pipeline_yaml(tmp_path: Path) -> Path:
    p = tmp_path / "pipeline.yaml"
    p.write_text(VALID_PIPELINE)
    return p


@dataclass
class Ingested:
    """What ingesting one source produced, read back from disk."""

    counts: StageCounts
    streams: dict  # suffix -> pyarrow.Table (the finalized stream)
    index: dict  # suffix -> stream index entry
    quarantine: list  # QuarantineRow

    def reasons(self) -> list[str]:
        return [r.message for r in self.quarantine]


def counts(result: Ingested) -> StageCounts:
    """The stage's counts of one ingest."""
    return result.counts


def totals(result: Ingested) -> tuple[int, int, int]:
    """Units in, rows out, units quarantined."""
    c = result.counts
    return c.in_, c.out, c.quarantined


def ingest_one(
    tmp_path: Path,
    connector: str,
    path,
    *,
    asset: str = "a",
    device: str = "dev",
    workers: int = 1,
    clock_jump_ms: int = 1000,
    **options,
) -> Ingested:
    """Ingest one source with the real ingest code; read every output back."""
    import pyarrow.parquet as pq

    from mmdata.ingest import IngestOptions, IngestSource, ingest_sources, read_index
    from mmdata.quarantine import QuarantineLog

    out = tmp_path / f"ingest-{connector}-{len(list(tmp_path.glob('ingest-*')))}"
    log = QuarantineLog("ingest")
    src = IngestSource(asset, device, 0, connector, str(path), options)
    counts = ingest_sources(
        [src], out, log, IngestOptions(workers=workers, clock_jump_ms=clock_jump_ms)
    )
    assert counts.reconciles(), counts
    index = {e["stream_id"].split(".", 2)[2]: e for e in read_index(out)}
    streams = {k: pq.read_table(out / e["file"]) for k, e in index.items()}
    return Ingested(counts, streams, index, list(log.rows))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto in server mode) on 127.0.0.1, for the session."""
    import os
    import subprocess
    import time
    import urllib.request

    port = _free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_DEFAULT_REGION")}  # fmt: skip
    os.environ.update({k: env[k] for k in saved})
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh bucket on the local S3 server; returns (s3fs filesystem, bucket, options)."""
    import uuid

    import s3fs

    options = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(**options)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    return fs, bucket, options
