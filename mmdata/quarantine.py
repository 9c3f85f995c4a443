"""Quarantine: every item a stage rejects, with where it came from and why.

Rows follow ``schemas/quarantine.v1.json`` (generated from :class:`QuarantineRow`). A stage
collects rows in a :class:`QuarantineLog` and the stage runner writes them atomically to
``RUN/quarantine/<stage>.parquet``. Rows hold no wall-clock time, so a re-run that rejects
the same items writes the same file.

>>> log = QuarantineLog("ingest")
>>> log.add("raw/cam/x.jpg", ValueError("truncated JPEG"), locator="bytes 0-1024")
>>> log.rows[0].error_class, len(log)
('ValueError', 1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from mmdata import atomic

QUARANTINE_SCHEMA_VERSION: Final = "mmdata.quarantine/1"
_MAX_MESSAGE = 2000


class QuarantineRow(BaseModel):
    """One rejected item."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal["mmdata.quarantine/1"] = QUARANTINE_SCHEMA_VERSION
    stage: str = Field(description="Stage that rejected the item (ingest, align, ...).")
    source_ref: str = Field(description="File path or URL of the item's source.")
    locator: str | None = Field(
        None, description="Where in the source: row, byte or sample range, frame, task id."
    )
    item_id: str | None = Field(None, description="Stable id of the item, if it has one.")
    error_class: str = Field(description="Error class name, e.g. InputDataError.")
    message: str = Field(description="What was wrong and how to fix it (no raw PII).")


_ARROW_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("source_ref", pa.string(), nullable=False),
        pa.field("locator", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("error_class", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
    ]
)


class QuarantineLog:
    """Collects a stage's rejected items; order of ``add`` calls is kept."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.rows: list[QuarantineRow] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(
        self,
        source_ref: str,
        error: BaseException | str,
        *,
        locator: str | None = None,
        item_id: str | None = None,
    ) -> None:
        """Record one rejected item; ``error`` is an exception or an error-class name."""
        if isinstance(error, BaseException):
            error_class, message = type(error).__name__, str(error) or repr(error)
        else:
            error_class, message = error, error
        self.record(source_ref, error_class, message, locator=locator, item_id=item_id)

    def record(
        self,
        source_ref: str,
        error_class: str,
        message: str,
        *,
        locator: str | None = None,
        item_id: str | None = None,
    ) -> None:
        """Record one rejected item with an explicit error class and message."""
        self.rows.append(
            QuarantineRow(
                stage=self.stage,
                source_ref=source_ref,
                locator=locator,
                item_id=item_id,
                error_class=error_class,
                message=message[:_MAX_MESSAGE],
            )
        )

    def to_table(self) -> pa.Table:
        """The rows as an Arrow table with the quarantine schema."""
        cols = {name: [getattr(r, name) for r in self.rows] for name in _ARROW_SCHEMA.names}
        return pa.table(cols, schema=_ARROW_SCHEMA)

    def write(self, path: Path) -> None:
        """Atomically write the rows as Parquet (an empty table when nothing was rejected)."""
        atomic.write_parquet(path, self.to_table())


def read_quarantine(path: Path) -> list[QuarantineRow]:
    """Read a quarantine Parquet file back into validated rows.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "q.parquet"
    >>> log = QuarantineLog("ingest"); log.add("a.csv", "bad row", locator="row 7")
    >>> log.write(p)
    >>> read_quarantine(p)[0].locator
    'row 7'
    """
    table = pq.read_table(path)
    return [QuarantineRow.model_validate(row) for row in table.to_pylist()]
