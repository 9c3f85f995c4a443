"""The project itself: two commands, pinned installs, CI entry point, lint-clean code."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import distributions

import pytest

from .conftest import ROOT, VENV_BIN


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_every_installed_distribution_is_pinned_at_its_installed_version():
    pins = _pins()
    skip = {"mmdata-toolkit", "pip", "setuptools", "wheel"}
    for dist in distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        # Ray puts its vendored copies (colorama, psutil) on sys.path once imported.
        if name in skip or "thirdparty_files" in str(dist.locate_file("")):
            continue
        assert name in pins, f"{name} is installed but not pinned in requirements/constraints.txt"
        assert pins[name] == dist.version, f"{name}: installed {dist.version}, pinned {pins[name]}"


def test_ci_runs_make_test_and_readme_shows_the_two_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:20])
    assert "make demo" in first_screen and "make test" in first_screen


def test_layout_as_designed():
    for path in ["pyproject.toml", "README.md", "mmdata", "schemas", "connectors", "tests",
                 "notebooks", "Makefile", "requirements/constraints.txt"]:  # fmt: skip
        assert (ROOT / path).exists(), path


def test_no_pickle_anywhere():
    hits = subprocess.run(
        ["git", "grep", "-nE", r"import (c)?pickle|from (c)?pickle|torch\.load\(", "--",
         "mmdata", "connectors"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert hits.stdout == ""


@pytest.mark.slow
def test_ruff_and_mypy_are_clean():
    ruff = subprocess.run([VENV_BIN / "ruff", "check", "."], cwd=ROOT, capture_output=True,
                          text=True)  # fmt: skip
    assert ruff.returncode == 0, ruff.stdout
    fmt = subprocess.run([VENV_BIN / "ruff", "format", "--check", "."], cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    assert fmt.returncode == 0, fmt.stdout
    mypy = subprocess.run([VENV_BIN / "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert mypy.returncode == 0, mypy.stdout


def test_the_readme_config_example_is_a_valid_pipeline():
    import re

    import yaml

    from mmdata.config import PipelineConfig

    text = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n(version: 1.*?)```", text, re.S)
    assert block is not None
    PipelineConfig.model_validate(yaml.safe_load(block.group(1)))


def test_the_japanese_quickstart_has_the_two_commands_and_every_stage_verb():
    text = (ROOT / "README.ja.md").read_text()
    for needle in ("make demo", "make test", "mmdata scrub", "mmdata build", "mmdata train",
                   "mmdata report"):  # fmt: skip
        assert needle in text


def test_the_readme_ray_config_is_valid() -> None:
    import re

    import yaml

    from mmdata.config import PipelineConfig

    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Running on Ray.*?```yaml\n(engine: ray.*?)```", text, re.S)
    assert block is not None
    doc = yaml.safe_load(block.group(1))
    doc["assets"] = {"press-1": {"sources": [{"connector": "notes", "path": "s3://b/n/"}]}}
    cfg = PipelineConfig.model_validate(doc)
    assert (cfg.engine, cfg.ray.address) == ("ray", "auto")
    assert cfg.run_dir.startswith("s3://") and cfg.scrub.key_file is not None
