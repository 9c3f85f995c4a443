"""The error hierarchy: one root, narrow subclasses that quote the bad value and say the fix.

Every error mmdata raises on purpose is a :class:`MmdataError`. The CLI maps each
subclass to a one-paragraph message and an exit code (see ``EXIT_CODES`` and the README),
never a traceback.

>>> try:
...     raise ConfigError("pipeline.yaml", "align.window.length_ms", -5, "an integer > 0")
... except MmdataError as err:
...     print(err.exit_code, err)
3 pipeline.yaml: align.window.length_ms = -5 is not allowed; expected an integer > 0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class MmdataError(Exception):
    """Root of every error mmdata raises on purpose. ``exit_code`` is the CLI's exit status."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  fix: {hint}")


class UsageError(MmdataError):
    """A command was called with arguments that cannot work together."""

    exit_code = 2


class ConfigError(MmdataError):
    """A pipeline config (or a stage's config) is invalid.

    ``problems`` holds one ``(field_path, bad_value, allowed)`` per issue found.
    """

    exit_code = 3

    def __init__(
        self,
        source: str,
        field: str,
        value: Any,
        allowed: str,
        *,
        more: Sequence[tuple[str, Any, str]] = (),
    ) -> None:
        self.source = source
        self.problems: list[tuple[str, Any, str]] = [(field, value, allowed), *more]
        lines = [
            f"{source}: {f} = {_quote(v)} is not allowed; expected {a}" for f, v, a in self.problems
        ]
        super().__init__("\n".join(lines))


class ConfigFileError(MmdataError):
    """A config file cannot be read or parsed as YAML/JSON at all."""

    exit_code = 3


class InputDataError(MmdataError):
    """An input file or item is unusable (corrupt, truncated, wrong format).

    Stages catch it per item and quarantine the item; it only reaches the CLI when a
    whole input is unusable.
    """

    exit_code = 4


class RunDirError(MmdataError):
    """The run directory is unusable: not writable, locked by another run, or foreign."""

    exit_code = 5


class StageError(MmdataError):
    """A pipeline stage failed as a whole (not one item, which would be quarantined)."""

    exit_code = 6


class DependencyError(MmdataError):
    """An optional dependency, system package or device a feature needs is missing."""

    exit_code = 7


class ConnectorError(MmdataError):
    """A connector is unknown, fails to load, or is misconfigured."""

    exit_code = 8


#: Exit codes the CLI uses, documented in the README. 0 = success.
EXIT_CODES: dict[str, int] = {
    "MmdataError (unexpected internal error)": MmdataError.exit_code,
    "UsageError": UsageError.exit_code,
    "ConfigError / ConfigFileError": ConfigError.exit_code,
    "InputDataError": InputDataError.exit_code,
    "RunDirError": RunDirError.exit_code,
    "StageError": StageError.exit_code,
    "DependencyError": DependencyError.exit_code,
    "ConnectorError": ConnectorError.exit_code,
}


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
