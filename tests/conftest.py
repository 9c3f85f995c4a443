"""Shared fixtures: small real files and a helper to run the CLI in-process."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmdata.cli import main

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

    counts: object  # StageCounts
    streams: dict  # suffix -> pyarrow.Table (the finalized stream)
    index: dict  # suffix -> stream index entry
    quarantine: list  # QuarantineRow

    def reasons(self) -> list[str]:
        return [r.message for r in self.quarantine]


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
