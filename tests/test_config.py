"""A pipeline YAML is validated by pydantic models; bad configs get one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmdata.config import PipelineConfig, config_hash, load_pipeline_config
from mmdata.errors import ConfigError, ConfigFileError

from .conftest import VALID_PIPELINE


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pipeline.yaml"
    p.write_text(text)
    return p


def test_valid_config_loads_with_defaults(pipeline_yaml):
    cfg = load_pipeline_config(pipeline_yaml)
    assert cfg.engine == "local"
    assert cfg.devices() == ["cam-press-1", "acc-press-1"]
    assert cfg.align.window.hop_ms == 500
    assert cfg.scrub.key_env == "MMDATA_PII_KEY"


def test_error_names_file_field_value_and_allowed(tmp_path):
    p = write(tmp_path, VALID_PIPELINE.replace("length_ms: 2000", "length_ms: -3"))
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(p)
    msg = str(info.value)
    assert str(p) in msg
    assert "align.window.length_ms" in msg
    assert "-3" in msg
    assert "greater than 0" in msg


def test_every_problem_is_reported_together(tmp_path):
    text = VALID_PIPELINE.replace("version: 1", "version: 1\nengine: spark\nrun_dri: x")
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(write(tmp_path, text))
    fields = {f for f, _, _ in info.value.problems}
    assert fields == {"engine", "run_dri"}
    allowed = dict((f, a) for f, _, a in info.value.problems)
    assert "'local' or 'ray'" in allowed["engine"]
    assert "no such field" in allowed["run_dri"]


def test_cross_references_are_checked(tmp_path):
    p = write(tmp_path, VALID_PIPELINE.replace("reference: acc-press-1", "reference: acc-9"))
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(p)
    field, value, allowed = info.value.problems[0]
    assert (field, value) == ("sync.reference", "acc-9")
    assert "'cam-press-1'" in allowed and "'acc-press-1'" in allowed


def test_mode_specific_fields_are_required(tmp_path):
    p = write(tmp_path, VALID_PIPELINE.replace(", hop_ms: 500", ""))
    with pytest.raises(ConfigError, match="hop_ms for sliding windows"):
        load_pipeline_config(p)


def test_missing_required_field(tmp_path):
    p = write(tmp_path, VALID_PIPELINE.replace("run_dir: runs/line2\n", ""))
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(p)
    assert info.value.problems[0][0] == "run_dir"
    assert "required" in info.value.problems[0][2]


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    p = write(tmp_path, "run_dir: x\nassets: {a: [\n")
    with pytest.raises(ConfigFileError, match=r"line \d+, column \d+"):
        load_pipeline_config(p)


def test_duplicate_keys_are_refused(tmp_path):
    p = write(tmp_path, VALID_PIPELINE + "run_dir: other\n")
    with pytest.raises(ConfigFileError, match="duplicate key 'run_dir'"):
        load_pipeline_config(p)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigFileError, match="no such file"):
        load_pipeline_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_pipeline_config(write(tmp_path, "- a\n- b\n"))


def test_yaml_tags_cannot_construct_objects(tmp_path):
    p = write(tmp_path, "run_dir: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigFileError):
        load_pipeline_config(p)


def test_config_hash_is_stable_and_sensitive(pipeline_yaml):
    a = load_pipeline_config(pipeline_yaml)
    b = PipelineConfig.model_validate(a.model_dump())
    assert config_hash(a) == config_hash(b)
    c = a.model_copy(update={"engine": "ray"})
    assert config_hash(c) != config_hash(a)


def test_relative_paths_are_taken_from_the_config_folder(tmp_path):
    cfg = PipelineConfig.model_validate({
        "run_dir": "runs/x",
        "assets": {"a": {"sources": [{"connector": "notes", "path": "n.jsonl"},
                                     {"connector": "sensor", "path": "s3://b/k/"}]}},
        "sync": {"ntp_logs": {"*": "logs/ntp-{device}.log"}},
    }).resolved(tmp_path)  # fmt: skip
    assert cfg.run_dir == str(tmp_path / "runs/x")
    assert cfg.assets["a"].sources[0].path == str(tmp_path / "n.jsonl")
    assert cfg.assets["a"].sources[1].path == "s3://b/k/"
    assert cfg.sync.ntp_logs == {"*": str(tmp_path / "logs/ntp-{device}.log")}
