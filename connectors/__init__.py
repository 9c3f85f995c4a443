"""Connectors: readers that turn raw sources into normalized streams.

A connector is any class registered under the ``mmdata.connectors`` entry-point group, so a
third party adds one by declaring, in its own package::

    [project.entry-points."mmdata.connectors"]
    plc = "my_pkg.plc:PlcConnector"

The class must provide ``name`` (str) and ``Options`` (a pydantic model of its source
options, validated by ``mmdata validate``). Reading is specified by the ingest stage.

>>> sorted(available())  # doctest: +SKIP
['audio', 'camera', ...]
"""

from __future__ import annotations

import functools
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from mmdata.errors import ConnectorError

ENTRY_POINT_GROUP = "mmdata.connectors"

__all__ = ["ENTRY_POINT_GROUP", "Connector", "available", "load"]


@runtime_checkable
class Connector(Protocol):
    """What the registry requires of a connector class."""

    name: str
    Options: type[BaseModel]


def available() -> dict[str, EntryPoint]:
    """Installed connectors by name (entry points of the ``mmdata.connectors`` group).

    Scanning entry points reads every installed distribution's metadata (milliseconds), so
    the result is cached per ``sys.path``.

    >>> isinstance(available(), dict)
    True
    """
    return dict(_scan(tuple(sys.path)))


@functools.lru_cache(maxsize=8)
def _scan(_path: tuple[str, ...]) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return dict(sorted(found.items()))


def load(name: str) -> Any:
    """Load the connector class registered as ``name``; raise :class:`ConnectorError` if unknown.

    >>> try:
    ...     load("no-such-connector")
    ... except ConnectorError as err:
    ...     print(str(err).splitlines()[0])
    unknown connector 'no-such-connector'
    """
    eps = available()
    if name not in eps:
        names = ", ".join(eps) or "none are installed"
        raise ConnectorError(
            f"unknown connector {name!r}",
            hint=f"use one of: {names}; or install a package that registers it "
            f"under the {ENTRY_POINT_GROUP!r} entry-point group",
        )
    return _load(name, eps[name])


@functools.lru_cache(maxsize=64)
def _load(name: str, ep: EntryPoint) -> Any:
    eps = {name: ep}
    try:
        cls = eps[name].load()
    except Exception as err:  # a third-party plugin can fail in any way on import
        raise ConnectorError(
            f"connector {name!r} ({eps[name].value}) failed to load: {err}",
            hint="reinstall the package that provides it",
        ) from err
    if not isinstance(cls, type) or not isinstance(getattr(cls, "name", None), str):
        raise ConnectorError(
            f"connector {name!r} ({eps[name].value}) is not a connector class",
            hint="it must be a class with `name` and `Options` attributes",
        )
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise ConnectorError(
            f"connector {name!r} has no pydantic `Options` model",
            hint="declare `Options = <pydantic BaseModel subclass>` on the class",
        )
    return cls
