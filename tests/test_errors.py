"""One root error; narrow subclasses with distinct exit codes and actionable messages."""

from __future__ import annotations

import mmdata
from mmdata import errors


def test_every_error_derives_from_the_root_and_has_a_distinct_exit_code():
    classes: list[type[errors.MmdataError]] = [
        errors.UsageError,
        errors.ConfigError,
        errors.InputDataError,
        errors.RunDirError,
        errors.StageError,
        errors.DependencyError,
        errors.ConnectorError,
    ]
    assert all(issubclass(c, errors.MmdataError) for c in classes)
    codes = [c.exit_code for c in classes]
    assert len(set(codes)) == len(codes)
    assert errors.MmdataError.exit_code not in codes
    assert errors.ConfigFileError.exit_code == errors.ConfigError.exit_code


def test_hint_is_part_of_the_message():
    err = errors.RunDirError("run dir locked", hint="wait or use another --run-dir")
    assert "fix: wait or use another --run-dir" in str(err)


def test_config_error_quotes_long_values_briefly():
    err = errors.ConfigError("c.yaml", "x", "y" * 500, "short")
    assert len(str(err)) < 250


def test_public_api_reexports_errors():
    assert mmdata.MmdataError is errors.MmdataError
    assert set(mmdata.__all__) <= set(dir(mmdata))


def test_readme_documents_every_exit_code():
    from .conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    for name, code in errors.EXIT_CODES.items():
        cls = name.split()[0].split("/")[0]
        assert f"| {code} |" in readme, name
        assert cls in readme, name
