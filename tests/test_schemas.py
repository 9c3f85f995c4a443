"""schemas/*.json are generated from the models, never stale, and usable without Python."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from mmdata import schemas

from .conftest import ROOT, VALID_PIPELINE


@pytest.mark.parametrize("name", sorted(schemas.SCHEMAS))
def test_checked_in_schema_is_current(name):
    _, filename = schemas.SCHEMAS[name]
    on_disk = (ROOT / "schemas" / filename).read_text()
    assert on_disk == schemas.render(name), f"schemas/{filename} is stale: run `make schemas`"


def test_pipeline_schema_accepts_a_valid_config_and_rejects_typos():
    schema = json.loads((ROOT / "schemas" / "pipeline.v1.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = yaml.safe_load(VALID_PIPELINE)
    assert list(validator.iter_errors(good)) == []
    bad = {**good, "engin": "ray"}
    assert any("engin" in e.message for e in validator.iter_errors(bad))


def test_write_all_regenerates_every_file(tmp_path):
    written = schemas.write_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(f for _, f in schemas.SCHEMAS.values())
    for p in written:
        assert json.loads(p.read_text())["$schema"].startswith("https://json-schema.org/")
