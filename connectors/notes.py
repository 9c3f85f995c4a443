"""Operator notes and maintenance tickets: JSONL or CSV with a timestamp and free text.

Each line (JSONL) or row (CSV) is one unit. A line that is not UTF-8, not JSON, lacks the
time or text field, or has an unparseable or zone-less time (without ``tz``) is
quarantined; the other lines are kept. ``filter`` keeps only rows whose fields equal the
given values (e.g. ``{asset: press-3}``); the others are not this source's and are not
counted. Times in different zones in one file are all converted to UTC and flagged
``mixed_timezones``.

Stream ``<asset>.<device>.notes``: ``ts_ns, locator, note_id, text, kind, lang, author,
extra`` (remaining fields as JSON).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from connectors.base import BaseOptions, Connector, ItemSink, SourceItem
from connectors.timeparse import epoch_to_ns, iso_zone, parse_iso_ns, zone
from mmdata.errors import InputDataError

_KNOWN = ("note_id", "kind", "lang", "author")
_SCHEMA = pa.schema(
    [("ts_ns", pa.int64()), ("locator", pa.string()), ("note_id", pa.string()),
     ("text", pa.string()), ("kind", pa.string()), ("lang", pa.string()),
     ("author", pa.string()), ("extra", pa.string())]
)  # fmt: skip


class NotesOptions(BaseOptions):
    """Options of the notes connector."""

    format: str = Field("auto", pattern="^(auto|jsonl|csv)$", description="By extension if auto.")
    time_field: str = Field("ts", description="Field holding the time.")
    time_unit: str = Field(
        "iso", pattern="^(iso|s|ms|us|ns)$", description="ISO-8601 strings or epoch numbers."
    )
    text_field: str = Field("text", description="Field holding the free text.")
    id_field: str = Field("note_id", description="Field holding a stable id, if any.")
    tz: str | None = Field(None, description="Zone for times written without one.")
    filter: dict[str, str] = Field(default_factory=dict, description="Keep rows with these.")


class NotesConnector(Connector):
    """JSONL / CSV operator notes."""

    name: ClassVar[str] = "notes"
    Options: ClassVar[type[BaseOptions]] = NotesOptions
    modality = "text"
    patterns: ClassVar[tuple[str, ...]] = ("*.jsonl", "*.ndjson", "*.json", "*.csv")

    def read(self, item: SourceItem, sink: ItemSink) -> None:
        opts: NotesOptions = self.options
        data = sink.read_bytes()
        fmt = opts.format
        if fmt == "auto":
            fmt = "csv" if item.uri.lower().endswith(".csv") else "jsonl"
        records = self._jsonl(data, sink) if fmt == "jsonl" else self._csv(data, sink)
        default_tz = zone(opts.tz) if opts.tz else None
        cols: dict[str, list[Any]] = {f.name: [] for f in _SCHEMA}
        zones: set[str] = set()
        for locator, rec in records:
            if any(str(rec.get(k)) != v for k, v in opts.filter.items()):
                continue
            sink.count_in(1)
            try:
                ts, z = self._time(rec, default_tz)
                text = rec.get(opts.text_field)
                if not isinstance(text, str) or not text.strip():
                    raise InputDataError(f"no text in field {opts.text_field!r}")
            except InputDataError as err:
                sink.reject(locator, err.message)
                continue
            if z is not None:
                zones.add("Z" if z in ("Z", "+00:00", "+0000") else z)
            cols["ts_ns"].append(ts)
            cols["locator"].append(locator)
            cols["note_id"].append(_str(rec.get(opts.id_field)))
            cols["text"].append(text)
            for k in _KNOWN[1:]:
                cols[k].append(_str(rec.get(k)))
            rest = {
                k: v
                for k, v in rec.items()
                if k not in {opts.time_field, opts.text_field, opts.id_field, *_KNOWN}
            }
            cols["extra"].append(json.dumps(rest, ensure_ascii=False, sort_keys=True)
                                 if rest else None)  # fmt: skip
        if len(zones) > 1:
            sink.flag("mixed_timezones")
        sink.emit("notes", pa.table(cols, schema=_SCHEMA), modality="text")

    def _time(self, rec: dict[str, Any], default_tz: Any) -> tuple[int, str | None]:
        opts: NotesOptions = self.options
        raw = rec.get(opts.time_field)
        if raw is None or raw == "":
            raise InputDataError(f"no time in field {opts.time_field!r}")
        if opts.time_unit == "iso":
            if not isinstance(raw, str):
                raise InputDataError(f"time {raw!r} is not an ISO-8601 string")
            return parse_iso_ns(raw, default_tz), iso_zone(raw)
        try:
            import numpy as np

            value = np.array([float(raw)])
        except (TypeError, ValueError) as err:
            raise InputDataError(f"time {raw!r} is not a number") from err
        return int(epoch_to_ns(value, opts.time_unit)[0]), None

    @staticmethod
    def _jsonl(data: bytes, sink: ItemSink) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for n, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            locator = f"line {n}"
            try:
                rec = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                sink.count_in(1)
                sink.reject(locator, "line is not valid UTF-8")
                continue
            except json.JSONDecodeError as err:
                sink.count_in(1)
                sink.reject(locator, f"line is not JSON: {err.msg} at column {err.colno}")
                continue
            if not isinstance(rec, dict):
                sink.count_in(1)
                sink.reject(locator, "line is JSON but not an object")
                continue
            out.append((locator, rec))
        return out

    @staticmethod
    def _csv(data: bytes, sink: ItemSink) -> list[tuple[str, dict[str, Any]]]:
        lines = data.split(b"\n")
        header, body = lines[0], lines[1:]
        try:
            names = next(csv.reader([header.decode("utf-8-sig")]))
        except (UnicodeDecodeError, StopIteration) as err:
            raise InputDataError("CSV header is missing or not UTF-8") from err
        out = []
        for n, raw in enumerate(body, start=2):
            if not raw.strip():
                continue
            locator = f"row {n}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                sink.count_in(1)
                sink.reject(locator, "row is not valid UTF-8")
                continue
            values = next(csv.reader(io.StringIO(text)))
            if len(values) != len(names):
                sink.count_in(1)
                sink.reject(locator, f"row has {len(values)} fields, header has {len(names)}")
                continue
            out.append((locator, dict(zip(names, values, strict=True))))
        return out


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
