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
