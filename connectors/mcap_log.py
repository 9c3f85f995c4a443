"""Robotics and edge-gateway logs in MCAP: one stream per topic.

Options (see :class:`McapOptions`): ``topics`` (keep only these; default all), ``time``
(``log``: when the recorder logged the message, the default; ``publish``: when it was
published), ``flatten`` (JSON messages: also numeric top-level fields as columns).

Stream ``<asset>.<device>.<topic>`` (the topic without its leading slash, ``/`` → ``.``,
e.g. ``/imu/accel`` → ``imu.accel``), rows in file order:

* JSON messages (``message_encoding`` json): ``ts_ns, locator, topic, sequence,
  payload_json`` and, with ``flatten``, one float64 column per numeric top-level field of
  the topic's first message in the file (a reserved name gets a ``field_`` prefix). A later
  message that lacks one of those fields, or holds a non-number there, is quarantined; so
  is one that is not UTF-8 JSON.
* other encodings (raw bytes, cdr, protobuf, ros1…): ``ts_ns, locator, topic, sequence,
  payload`` (binary), ``encoding``, ``schema_name``.

The locator is "message N", N counting every message of the file from 0 in file order.
Meta per stream: ``topic``, ``message_encoding``, ``schema_name`` and, for flattened JSON,
``fields``.

Units: messages of the selected topics as the file's summary (statistics) counts them,
independently of reading the messages. A file cut short or corrupted (bad chunk CRC, a
truncated chunk) keeps every message read before the damage; the messages after it are
quarantined together with the reader's error ("N messages after message M are
unreadable"). Without a readable summary the count is what could be read plus one unit for
the unreadable tail. Damage past the data section (a cut-off summary) loses no message and
is only flagged ``truncated_summary``. A file with no readable message at all is quarantined
whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeGuard

import pyarrow as pa
from pydantic import Field

from connectors.base import BaseOptions, Connector, ItemSink, SourceItem
from mmdata.errors import InputDataError

_BATCH_ROWS = 20_000
_COMMON = ("ts_ns", "locator", "topic", "sequence")
_RESERVED = frozenset((*_COMMON, "payload_json", "payload", "encoding", "schema_name"))


class McapOptions(BaseOptions):
    """Options of the MCAP connector."""

    topics: list[str] | None = Field(
        None, min_length=1, description="Topics to keep (default: all)."
    )
    time: Literal["log", "publish"] = Field(
        "log", description="Row time: the message's log_time or publish_time."
    )
    flatten: bool = Field(
        True, description="JSON messages: numeric top-level fields as float64 columns too."
    )


def topic_suffix(topic: str) -> str:
    """Stream suffix of a topic.

    >>> topic_suffix("/imu/accel"), topic_suffix("/")
    ('imu.accel', 'root')
    """
    parts = [p for p in topic.split("/") if p]
    text = ".".join(parts) or "root"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


@dataclass
class _Topic:
    """Rows of one channel waiting to be emitted, and what was learnt from the first."""

    topic: str
    suffix: str
    encoding: str
    schema_name: str
    json: bool
    fields: list[str] | None = None  # flattened fields (JSON), fixed by the first message
    rows: dict[str, list[Any]] = field(default_factory=dict)

    def columns(self) -> list[str]:
        if not self.json:
            return [*_COMMON, "payload", "encoding", "schema_name"]
        return [*_COMMON, "payload_json", *(column_name(f) for f in self.fields or [])]

    def schema(self) -> pa.Schema:
        types = {"ts_ns": pa.int64(), "sequence": pa.int64(), "payload": pa.binary()}
        return pa.schema(
            [(c, types.get(c, pa.string() if c in _RESERVED else pa.float64()))
             for c in self.columns()]
        )  # fmt: skip


def column_name(json_field: str) -> str:
    """Column of a flattened JSON field (reserved names get a ``field_`` prefix)."""
    return f"field_{json_field}" if json_field in _RESERVED else json_field


class McapConnector(Connector):
    """MCAP logs (the ``mcap`` package's reader)."""

    name: ClassVar[str] = "mcap"
    Options: ClassVar[type[BaseOptions]] = McapOptions
    modality = "message"
    patterns: ClassVar[tuple[str, ...]] = ("*.mcap",)

    def read(self, item: SourceItem, sink: ItemSink) -> None:
        """Read every message of the selected topics, in file order."""
        from mcap import records as rec
        from mcap.stream_reader import StreamReader

        opts: McapOptions = self.options
        wanted = set(opts.topics) if opts.topics else None
        with sink.open() as fh:
            expected = _expected_messages(fh, wanted)
            fh.seek(0)
            reader = StreamReader(fh, validate_crcs=True, record_size_limit=max(item.size, 1))
            schemas: dict[int, Any] = {}
            channels: dict[int, Any] = {}
            topics: dict[int, _Topic] = {}
            used: set[str] = set()
            index = -1  # of the last message read
            seen = 0  # messages of selected topics read (emitted or rejected)
            data_end = False
            error: Exception | None = None
            records = reader.records
            while True:
                try:  # only the reader's errors are damage; the rest is a bug to surface
                    record = next(records)
                except StopIteration:
                    break
                except Exception as err:  # keep what was read before the damage
                    error = err
                    break
                if isinstance(record, rec.Schema):
                    schemas[record.id] = record
                elif isinstance(record, rec.Channel):
                    channels[record.id] = record
                elif isinstance(record, rec.DataEnd):
                    data_end = True
                elif isinstance(record, rec.Message):
                    index += 1
                    channel = channels.get(record.channel_id)
                    if wanted is not None and (channel is None or channel.topic not in wanted):
                        continue
                    seen += 1
                    if expected is None:
                        sink.count_in(1)
                    if channel is None:
                        why = f"channel {record.channel_id} is never declared in the file"
                        sink.reject(f"message {index}", why)
                        continue
                    state = topics.get(channel.id)
                    if state is None:
                        state = topics[channel.id] = _new_topic(channel, schemas, used)
                    self._add(sink, state, record, index)
                    if len(state.rows.get("ts_ns", ())) >= _BATCH_ROWS:
                        _flush(sink, state)
            for state in topics.values():
                _flush(sink, state)
        self._account(sink, expected, seen, index, error, data_end)

    def _account(self, sink: ItemSink, expected: int | None, seen: int, index: int,
                 error: Exception | None, data_end: bool) -> None:  # fmt: skip
        """Count in and reject what the damage (if any) cost."""
        if expected is not None:
            sink.count_in(max(expected, seen))
        if error is not None and data_end:  # damage after the data section loses nothing
            sink.flag("truncated_summary")
            error = None
        if error is None:
            if expected is not None and expected > seen:
                sink.reject("summary", f"the summary counts {expected} messages, the data "
                            f"section holds {seen}", units=expected - seen)  # fmt: skip
            return
        why = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if index < 0:
            raise InputDataError(f"not a readable MCAP file ({why})")
        where = f"after message {index}"
        if expected is None:
            sink.count_in(1)
            sink.reject(where, f"the file is damaged or cut short {where} ({why}); "
                        "the messages before it are kept")  # fmt: skip
        elif expected > seen:
            lost = expected - seen
            sink.reject(where, f"{lost} messages {where} are unreadable ({why}); "
                        "the messages before it are kept", units=lost)  # fmt: skip

    def _add(self, sink: ItemSink, state: _Topic, msg: Any, index: int) -> None:
        opts: McapOptions = self.options
        ts = msg.log_time if opts.time == "log" else msg.publish_time
        row: dict[str, Any] = {"ts_ns": int(ts), "locator": f"message {index}",
                               "topic": state.topic, "sequence": int(msg.sequence)}  # fmt: skip
        if not state.json:
            row.update(payload=bytes(msg.data), encoding=state.encoding,
                       schema_name=state.schema_name)  # fmt: skip
        else:
            try:
                text = bytes(msg.data).decode("utf-8")
                value = json.loads(text)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                sink.reject(f"message {index}", f"topic {state.topic}: payload is not UTF-8 "
                            f"JSON ({err})")  # fmt: skip
                return
            row["payload_json"] = text
            if opts.flatten:
                if state.fields is None:
                    state.fields = _numeric_fields(value)
                problems = []
                for f in state.fields:
                    v = value.get(f) if isinstance(value, dict) else None
                    if not _is_number(v):
                        got = "missing" if not isinstance(value, dict) or f not in value else (
                            f"{json.dumps(v)[:40]}, not a number")  # fmt: skip
                        problems.append(f"field {f!r} is {got}")
                    else:
                        row[column_name(f)] = float(v)
                if problems:
                    sink.reject(f"message {index}", f"topic {state.topic}: "
                                + "; ".join(problems))  # fmt: skip
                    return
        for c in state.columns():
            state.rows.setdefault(c, []).append(row[c])


def _expected_messages(fh: Any, wanted: set[str] | None) -> int | None:
    """Messages of the selected topics per the file's summary, or None if unreadable."""
    from mcap.reader import make_reader

    try:
        summary = make_reader(fh).get_summary()
    except Exception:  # a damaged or missing summary: count while reading instead
        return None
    if summary is None or summary.statistics is None:
        return None
    counts = summary.statistics.channel_message_counts
    if wanted is None:
        return int(summary.statistics.message_count)
    return sum(int(n) for cid, n in counts.items()
               if cid in summary.channels and summary.channels[cid].topic in wanted)  # fmt: skip


def _new_topic(channel: Any, schemas: dict[int, Any], used: set[str]) -> _Topic:
    encoding = str(channel.message_encoding or "")
    schema = schemas.get(channel.schema_id)
    suffix = topic_suffix(channel.topic)
    if suffix in used:  # two topics that sanitise alike ("/a/b" and "a.b") stay apart
        suffix = f"{suffix}_{channel.id}"
    used.add(suffix)
    return _Topic(channel.topic, suffix, encoding, schema.name if schema else "",
                  encoding.lower() == "json")  # fmt: skip


def _numeric_fields(value: Any) -> list[str]:
    if not isinstance(value, dict):
        return []
    return [k for k, v in value.items() if _is_number(v)]


def _is_number(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _flush(sink: ItemSink, state: _Topic) -> None:
    if not state.rows.get("ts_ns"):
        return
    schema = state.schema()
    table = pa.table({c: pa.array(state.rows[c], schema.field(c).type) for c in schema.names},
                     schema=schema)  # fmt: skip
    meta: dict[str, Any] = {"topic": state.topic, "message_encoding": state.encoding,
                            "schema_name": state.schema_name}  # fmt: skip
    if state.json and state.fields is not None:
        meta["fields"] = list(state.fields)
    sink.emit(state.suffix, table, modality="message", meta=meta)
    state.rows = {}
