"""The `mmdata` command line: every verb documented, errors mapped to messages and codes."""

from __future__ import annotations

import json
import subprocess

import pytest

from mmdata import schemas
from mmdata._version import __version__

from .conftest import VALID_PIPELINE, VENV_BIN

VERBS = [
    "synth",
    "demo",
    "validate",
    "schema",
    "bench",
    "ingest",
    "sync",
    "align",
    "scrub",
    "audit",
    "pii-eval",
    "build",
    "features",
    "train",
    "eval",
    "report",
    "labels",
]


def test_version(cli):
    r = cli("--version")
    assert r.code == 0 and r.out.strip() == f"mmdata {__version__}"


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help_with_an_example(cli, verb):
    subs = {"labels": ["import", "push", "pull"]}.get(verb)
    for args in [[verb, s] for s in subs] if subs else [[verb]]:
        r = cli(*args, "--help")
        assert r.code == 0
        assert f"Example: mmdata {' '.join(args)}" in r.out


def test_top_level_help_lists_the_verbs(cli):
    r = cli("--help")
    assert r.code == 0
    for verb in VERBS:
        assert verb in r.out


def test_validate_ok_and_json(cli, pipeline_yaml, toy_free_pipeline):
    r = cli("validate", toy_free_pipeline, "--json")
    assert r.code == 0, r.err
    assert r.json()["valid"] is True and r.json()["devices"] == ["acc-1"]


def test_validate_bad_config_is_one_message_no_traceback(cli, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(VALID_PIPELINE.replace("length_ms: 2000", "length_ms: -3"))
    r = cli("validate", p)
    assert r.code == 3
    assert "Traceback" not in r.err
    assert "align.window.length_ms = -3" in r.err and str(p) in r.err


def test_validate_json_lists_problems(cli, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(VALID_PIPELINE.replace("mode: sliding", "mode: hopping"))
    r = cli("validate", p, "--json")
    assert r.code == 3
    doc = r.json()
    assert doc["valid"] is False
    assert doc["problems"][0]["field"] == "align.window.mode"
    assert doc["problems"][0]["value"] == "hopping"


def test_unknown_connector_is_reported_by_validate(cli, pipeline_yaml):
    pipeline_yaml.write_text(
        pipeline_yaml.read_text().replace("connector: camera", "connector: camra")
    )
    r = cli("validate", pipeline_yaml)
    assert r.code == 3
    assert "assets.press-1.sources.0.connector = 'camra'" in r.err


def test_missing_config_file(cli, tmp_path):
    r = cli("validate", tmp_path / "nope.yaml", "--json")
    assert r.code == 3
    assert r.json()["error"]["class"] == "ConfigFileError"


def test_schema_prints_the_checked_in_schema(cli):
    r = cli("schema", "pipeline")
    assert r.code == 0
    assert json.loads(r.out) == json.loads(schemas.render("pipeline"))


def test_schema_unknown_name_is_a_usage_error(cli):
    r = cli("schema", "nope")
    assert r.code == 2 and "unknown schema 'nope'" in r.err


def test_synth_writes_a_factory_and_refuses_to_clobber(cli, tmp_path):
    out = tmp_path / "factory"
    r = cli("synth", "--out", out, "--assets", "1", "--minutes", "0.2", "--json")
    assert r.code == 0, r.err
    summary = r.json()
    assert summary["assets"] == ["press-1"]
    assert (out / "ground_truth.json").exists()
    again = cli("synth", "--out", out, "--assets", "1", "--minutes", "0.2", "--quiet")
    assert again.code == 2 and "--overwrite" in again.err
    replaced = cli("synth", "--out", out, "--assets", "1", "--minutes", "0.1", "--overwrite", "-q")
    assert replaced.code == 0 and replaced.err == ""


def test_synth_refuses_foreign_folder_and_bad_options(cli, tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    assert cli("synth", "--out", tmp_path, "--minutes", "0.1").code == 2
    r = cli("synth", "--out", tmp_path / "f", "--assets", "0")
    assert r.code == 3 and "assets = 0" in r.err


def test_demo_runs_then_skips_unchanged_stages(cli, tmp_path):
    args = ("demo", "--run-dir", tmp_path / "run", "--assets", "1", "--minutes", "0.2")
    first = cli(*args, "--json")
    assert first.code == 0, first.err
    doc = first.json()
    assert doc["stages"][0]["stage"] == "synth" and doc["stages"][0]["skipped"] is False
    assert doc["factory"]["assets"] == ["press-1"]
    second = cli(*args)
    assert second.code == 0
    assert "skipped (unchanged)" in second.err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["synth"]["counts"]["in"] == doc["stages"][0]["counts"]["in"]


def test_demo_in_a_foreign_folder_is_a_run_dir_error(cli, tmp_path):
    (tmp_path / "data.csv").write_text("x")
    r = cli("demo", "--run-dir", tmp_path, "--minutes", "0.1", "--json")
    assert r.code == 5 and r.json()["error"]["class"] == "RunDirError"


def test_bench_lists_and_runs_workloads(cli):
    listed = cli("bench", "--list")
    assert listed.code == 0 and "synth" in listed.out
    r = cli("bench", "synth", "--scale", "0.05", "--json")
    assert r.code == 0, r.err
    (res,) = r.json()
    assert res["workload"] == "synth" and res["mmdata"] > 0 and res["baseline"] > 0
    assert res["ratio"] == pytest.approx(res["mmdata"] / res["baseline"])
    unknown = cli("bench", "nope")
    assert unknown.code == 2 and "unknown bench workload" in unknown.err


def test_installed_script_maps_errors_to_exit_codes(tmp_path):
    exe = VENV_BIN / "mmdata"
    ok = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert ok.returncode == 0 and __version__ in ok.stdout
    bad = subprocess.run([exe, "validate", tmp_path / "none.yaml"], capture_output=True, text=True)
    assert bad.returncode == 3 and "Traceback" not in bad.stderr
    usage = subprocess.run([exe, "synth"], capture_output=True, text=True)
    assert usage.returncode == 2 and "--out" in usage.stderr


@pytest.fixture
def toy_free_pipeline(tmp_path, monkeypatch):
    """A pipeline whose one source uses a connector registered by a temp plug-in."""
    site = tmp_path / "site"
    dist = site / "ok_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ok-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mmdata.connectors]\nvib = ok_conn:Vib\n")
    (site / "ok_conn.py").write_text(
        "from pydantic import BaseModel\nclass Vib:\n    name = 'vib'\n"
        "    class Options(BaseModel):\n        pass\n"
    )
    monkeypatch.syspath_prepend(str(site))
    p = tmp_path / "ok.yaml"
    p.write_text(
        "run_dir: r\nassets:\n  a:\n    sources: [{connector: vib, path: x, device: acc-1}]\n"
    )
    return p


def test_stage_verbs_run_a_pipeline_config_end_to_end(cli, tmp_path):
    import yaml

    from mmdata.demo import factory_pipeline

    assert (
        cli("synth", "--out", tmp_path / "f", "--assets", "1", "--minutes", "0.3", "-q").code == 0
    )
    cfg = factory_pipeline(tmp_path / "f", tmp_path / "run")
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_defaults=True)))
    assert cli("validate", config).code == 0
    ing = cli("ingest", config, "--json")
    assert ing.code == 0, ing.err
    assert {"sensor", "audio", "image"} <= {s["modality"] for s in ing.json()["streams"]}
    assert cli("ingest", config, "--json").json()["skipped"] is True
    syn = cli("sync", config, "--json")
    assert syn.code == 0 and (tmp_path / "run" / "sync" / "clock_models.json").exists()
    ali = cli("align", config, "--json")
    assert ali.code == 0, ali.err
    counts = ali.json()["counts"]
    assert counts["out"] > 5 and counts["in"] == counts["out"] + counts["quarantined"]
    assert list((tmp_path / "run" / "records").rglob("part-*.parquet"))


def test_align_before_ingest_is_a_clear_stage_error(cli, tmp_path):
    from mmdata.demo import factory_pipeline

    cli("synth", "--out", tmp_path / "f", "--assets", "1", "--minutes", "0.1", "-q")
    config = tmp_path / "pipeline.yaml"
    import yaml

    cfg = factory_pipeline(tmp_path / "f", tmp_path / "run")
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_defaults=True)))
    r = cli("sync", config)
    assert r.code == 6 and "needs a completed ingest stage" in r.err
