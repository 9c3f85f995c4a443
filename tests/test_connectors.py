"""Connectors are plug-ins found through the `mmdata.connectors` entry-point group."""

from __future__ import annotations

import textwrap

import pytest

import connectors
from mmdata.errors import ConfigError, ConnectorError
from mmdata.validate import validate_pipeline

TOY_MODULE = textwrap.dedent(
    """
    from pydantic import BaseModel, ConfigDict

    class ToyOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        layout: str = "wide"
        rate_hz: int = 100

    class ToyConnector:
        name = "toy"
        Options = ToyOptions

    NotAConnector = 42
    """
)


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """Install a real third-party distribution (dist-info + entry points) on sys.path."""
    site = tmp_path / "site"
    dist = site / "toy_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[mmdata.connectors]\ntoy = toy_conn:ToyConnector\nbroken = toy_conn:NotAConnector\n"
        "missing = toy_conn_nope:X\n"
    )
    (site / "toy_conn.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(site))
    return site


def test_registry_lists_and_loads_a_third_party_connector(toy_plugin):
    assert {"toy", "broken", "missing"} <= set(connectors.available())
    cls = connectors.load("toy")
    assert cls.name == "toy" and cls.Options().rate_hz == 100


def test_unknown_or_broken_connectors_are_clear_errors(toy_plugin):
    with pytest.raises(ConnectorError, match="unknown connector 'nope'"):
        connectors.load("nope")
    with pytest.raises(ConnectorError, match="not a connector class"):
        connectors.load("broken")
    with pytest.raises(ConnectorError, match="failed to load"):
        connectors.load("missing")


def test_validate_checks_connector_names_and_their_options(toy_plugin, tmp_path):
    p = tmp_path / "pipeline.yaml"
    p.write_text(
        "run_dir: r\nassets:\n  a:\n    sources:\n"
        "      - {connector: toy, path: x, device: d1, rate_hz: 200}\n"
        "      - {connector: toy, path: y, device: d2, rate_hz: fast}\n"
        "      - {connector: camra, path: z}\n"
    )
    with pytest.raises(ConfigError) as info:
        validate_pipeline(p)
    problems = {f: (v, a) for f, v, a in info.value.problems}
    assert set(problems) == {"assets.a.sources.1.rate_hz", "assets.a.sources.2.connector"}
    assert problems["assets.a.sources.1.rate_hz"][0] == "fast"
    assert "'toy'" in problems["assets.a.sources.2.connector"][1]
