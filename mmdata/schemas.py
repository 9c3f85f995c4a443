"""Language-neutral JSON Schemas generated from mmdata's pydantic models.

The files in the repository's ``schemas/`` folder are these, written by
``mmdata schema --write schemas/``; a test fails when they are stale.

>>> sorted(SCHEMAS)
['audit', 'manifest', 'pipeline', 'quarantine', 'record', 'sample']
>>> json_schema("pipeline")["title"]
'PipelineConfig'
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from mmdata import atomic
from mmdata.build.samples import sample_json_schema
from mmdata.config import PipelineConfig
from mmdata.errors import UsageError
from mmdata.quarantine import QuarantineRow
from mmdata.records import record_json_schema
from mmdata.rundir import Manifest
from mmdata.scrub.audit import AuditRow

#: name -> (pydantic model or a function returning the schema, file name in schemas/)
SCHEMAS: dict[str, tuple[type[BaseModel] | Callable[[], dict[str, Any]], str]] = {
    "pipeline": (PipelineConfig, "pipeline.v1.json"),
    "quarantine": (QuarantineRow, "quarantine.v1.json"),
    "manifest": (Manifest, "manifest.v1.json"),
    "record": (record_json_schema, "record.v1.json"),
    "audit": (AuditRow, "audit.v1.json"),
    "sample": (sample_json_schema, "sample.v1.json"),
}

_BASE_ID = "https://mmdata.dev/schemas/"


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``name``; :class:`UsageError` if unknown."""
    if name not in SCHEMAS:
        raise UsageError(
            f"unknown schema {name!r}", hint=f"use one of: {', '.join(sorted(SCHEMAS))}"
        )
    model, filename = SCHEMAS[name]
    if isinstance(model, type) and issubclass(model, BaseModel):
        schema = model.model_json_schema(by_alias=True, mode="validation")
    else:
        return cast(Callable[[], dict[str, Any]], model)()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": _BASE_ID + filename,
        **schema,
    }


def render(name: str) -> str:
    """The schema as the exact text stored in ``schemas/``."""
    return json.dumps(json_schema(name), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write_all(folder: Path) -> list[Path]:
    """Regenerate every schema file into ``folder``; return the paths written."""
    written = []
    for name, (_, filename) in sorted(SCHEMAS.items()):
        path = folder / filename
        atomic.write_text(path, render(name))
        written.append(path)
    return written
