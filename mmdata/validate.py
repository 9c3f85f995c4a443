"""``mmdata validate``: a pipeline config checked beyond its schema.

On top of :func:`mmdata.config.load_pipeline_config` (fields, types, cross-references) it
checks that every source names an installed connector and that the source's options fit
that connector's ``Options`` model.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "pipeline.yaml"
>>> _ = p.write_text("run_dir: r\\nassets: {a: {sources: [{connector: nope, path: x}]}}\\n")
>>> try:
...     validate_pipeline(p)
... except ConfigError as err:
...     print(err.problems[0][0])
assets.a.sources.0.connector
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

import connectors
from mmdata.config import PipelineConfig, load_pipeline_config, validation_problems
from mmdata.errors import ConfigError, ConnectorError

_COMMON = {"connector", "path", "device"}


def validate_pipeline(path: Path | str) -> PipelineConfig:
    """Load ``path`` and check its sources against the installed connectors.

    All problems found are reported together in one :class:`ConfigError`.
    """
    cfg = load_pipeline_config(path)
    installed = connectors.available()
    problems: list[tuple[str, Any, str]] = []
    for asset_id, asset in cfg.assets.items():
        for i, src in enumerate(asset.sources):
            where = f"assets.{asset_id}.sources.{i}"
            if src.connector not in installed:
                names = ", ".join(repr(n) for n in installed) or "none are installed"
                problems.append((f"{where}.connector", src.connector, f"one of: {names}"))
                continue
            try:
                cls = connectors.load(src.connector)
            except ConnectorError as err:
                problems.append((f"{where}.connector", src.connector, str(err)))
                continue
            options = {k: v for k, v in (src.model_extra or {}).items() if k not in _COMMON}
            try:
                cls.Options.model_validate(options)
            except ValidationError as err:
                for field, value, allowed in validation_problems(err):
                    problems.append((f"{where}.{field}", value, allowed))
    if problems:
        first, *rest = problems
        raise ConfigError(str(path), *first, more=rest)
    return cfg
