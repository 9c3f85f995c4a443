"""The connector contract: what a connector is given, what it yields, how it rejects items.

A connector lists *items* (usually files) of one configured source and reads each item into
rows of one or more *streams* through an :class:`ItemSink`. Every row carries ``ts_ns``
(int64 device time) and a ``locator`` (where in the item it came from: "row 17",
"frame 3", "samples 0-15999"); ingest adds ``stream_id``, ``device_id``, ``segment`` and the
provenance columns ``source_uri``, ``source_locator``, ``source_sha256`` (of the item).

Bad input never stops a run:

* a whole item that cannot be read → raise (any exception, ideally
  :class:`~mmdata.errors.InputDataError` with the reason); the item is quarantined and
  whatever it emitted is discarded;
* a bad part of an item (a garbage CSV row, a non-UTF-8 note) → ``sink.reject(...)``; the
  rest of the item is kept.

Counting: a connector calls ``sink.count_in(n)`` with the number of units the item holds,
counted independently of parsing (lines in a CSV, frames in a video, chunks of audio).
At the end of the item, units in must equal rows emitted + units rejected; a shortfall is
quarantined as "unaccounted" (a connector bug that the tests look for).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar, Literal, Protocol

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

Modality = Literal["image", "video", "audio", "sensor", "text", "message"]


class BaseOptions(BaseModel):
    """Options every connector accepts (connector models subclass this)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str | None = Field(
        None,
        description="Files must resolve inside this folder (default: the path's folder). "
        "Symlinks and paths escaping it are quarantined.",
    )
    follow_symlinks: bool = Field(
        False, description="Accept symlinks whose target stays inside root."
    )
    patterns: list[str] | None = Field(
        None, description="File-name globs when path is a folder (default: the connector's)."
    )
    max_file_mb: int = Field(4096, gt=0, description="Larger files are quarantined.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for remote paths (endpoint_url, anon, ...). "
        "Credentials come from the environment, never from here.",
    )


@dataclass(frozen=True)
class SourceItem:
    """One unit of input: a file (local path or fsspec URL)."""

    uri: str
    size: int
    seq: int = 0  # position in the source's sorted listing
    fingerprint: str = ""  # size + mtime / etag, for skip-if-unchanged


@dataclass(frozen=True)
class SourceContext:
    """What a connector knows about the source it reads."""

    asset_id: str
    device_id: str
    source_index: int
    path: str
    options: Any  # the connector's validated Options instance
    extra: dict[str, Any] = field(default_factory=dict)


class ItemSink(Protocol):
    """Where a connector puts what it read from one item (implemented by the ingest stage)."""

    item: SourceItem

    def open(self) -> IO[bytes]:
        """Open the item for binary reading (local or remote, seekable)."""
        ...

    def read_bytes(self) -> bytes:
        """The whole item (checked against max_file_mb); its sha256 is taken from these."""
        ...

    def local_path(self) -> str:
        """A local file path for libraries that need one (remote items are downloaded)."""
        ...

    def count_in(self, n: int) -> None:
        """Declare ``n`` more units in this item (counted independently of parsing)."""
        ...

    def emit(
        self,
        suffix: str,
        rows: pa.Table,
        *,
        modality: Modality,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Add rows to stream ``<asset>.<device>.<suffix>``.

        ``rows`` must have ``ts_ns`` (int64, device time) and ``locator`` (string) columns
        plus payload columns; every batch of a stream must have the same schema. ``meta``
        (JSON-able: sample_rate_hz, channels, units, ...) is merged into the stream index.
        """
        ...

    def reject(self, locator: str, reason: str, *, error_class: str = "InputDataError",
               units: int = 1) -> None:  # fmt: skip
        """Quarantine ``units`` units of this item at ``locator`` with ``reason``."""
        ...

    def flag(self, name: str, n: int = 1) -> None:
        """Count an issue that was repaired, not rejected (e.g. mixed_timezones)."""
        ...


class Connector(abc.ABC):
    """Base class of the built-in connectors (third parties may follow the same shape)."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseOptions]] = BaseOptions
    modality: ClassVar[Modality]
    #: File-name globs used when the configured path is a folder.
    patterns: ClassVar[tuple[str, ...]] = ("*",)

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.options = ctx.options

    def list_items(self) -> Iterator[SourceItem | tuple[str, str]]:
        """Items of this source in a stable order; ``(uri, reason)`` for refused entries."""
        from connectors.files import list_source_files

        yield from list_source_files(self.ctx.path, self.options, self.patterns)

    @abc.abstractmethod
    def read(self, item: SourceItem, sink: ItemSink) -> None:
        """Read one item into the sink (raise to quarantine the whole item)."""
