"""Sensor time series (vibration, current, temperature…) from CSV, gzipped CSV and Parquet.

Options (see :class:`SensorOptions`): ``format`` auto|csv|parquet (auto: by extension);
``layout`` wide (one column per channel) or long (``channel_column``, ``value_column`` per
row); ``time`` either ``{column, unit: s|ms|us|ns|iso}`` or a sample index
``{index_column (or the implicit row index), start: {ns|iso|filename}, rate_hz}``; ``tz``
for ISO strings (and Arrow timestamps) written without a zone, which are otherwise
quarantined; ``channels`` (wide; default: every numeric column but the time column);
``dtype`` float64|float32; ``units``; CSV ``delimiter``, ``decimal``, ``header``, ``names``;
``group`` (the stream suffix, default "sensor"); ``block_mb`` (text per batch).

Streams (rows in file order: the ingest finalizer sorts, segments and de-duplicates):

* wide: ``<asset>.<device>.<group>`` with ``ts_ns, locator, <channel>...`` (float64/32);
* long: ``<asset>.<device>.<group>.<channel>`` with ``ts_ns, locator, value``; each channel
  may have its own rate.

Meta per stream: ``channels``, ``sample_rate_hz`` (median rate of the item's first batch),
``units`` (when configured).

Units counted: data lines of a CSV (non-empty lines after the header, counted from the
bytes), rows of a Parquet file (its metadata). A row is quarantined, the others kept, when
it has the wrong number of fields, a value that is not a number, missing, NaN or infinite,
or a time that does not convert; the reason names the column, the locator the row: "row N"
is the file's N-th line (1-based, header included) for CSV and the 0-based row index for
Parquet. ISO times in several zones are all converted to UTC and flagged
``mixed_timezones``. A file that cannot be read at all (no header, unknown columns, a
corrupt file) is quarantined whole; so is one where no row of the first batch (100 rows or
more) has a usable time: that is a misconfiguration (wrong time column, unit or tz), better
told once than on every row. A gzip stream cut short keeps the rows before the damage.

Files split by time are stitched in listing order, which is natural ("vib_2" before
"vib_10"; :func:`connectors.files.natural_key`).
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Literal, Self

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.base import BaseOptions, Connector, ItemSink, SourceItem
from connectors.sensor_csv import LINE, ORD, Batch, CsvDialect, CsvReader, open_stream
from connectors.sensor_time import TimeReader, make_time_reader
from connectors.timeparse import FilenameTime, parse_iso_ns, zone
from mmdata.errors import ConfigError, InputDataError

_TIME_CANDIDATES = ("ts_ns", "ts", "timestamp", "time")
_ISO_LIKE = re.compile(r"\s*\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_PARQUET_BATCH_ROWS = 1 << 20
#: A first batch of at least this many rows with no usable time quarantines the whole file.
_MISCONFIG_ROWS = 100


class StartOptions(BaseModel):
    """Time of sample 0: exactly one of ns, iso, filename."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ns: int | None = Field(None, description="Epoch nanoseconds.")
    iso: str | None = Field(None, description="ISO-8601 date-time (zone-less: uses tz).")
    filename: str | None = Field(
        None, description="File-name pattern, e.g. 'vib_%Y%m%dT%H%M%S.%fZ' (zone-less: tz)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if sum(v is not None for v in (self.ns, self.iso, self.filename)) != 1:
            raise ValueError("give exactly one of ns, iso, filename")
        return self


class TimeOptions(BaseModel):
    """Where a row's time comes from: a time column, or sample index + start + rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = Field(
        None, description="Time column (default: the first of ts_ns, ts, timestamp, time)."
    )
    unit: Literal["s", "ms", "us", "ns", "iso"] | None = Field(
        None,
        description="Default: from the column name (_s, _ms, _us, _ns), else from the first "
        "value (ISO-looking text → iso; numbers by magnitude as epoch s/ms/us/ns).",
    )
    index_column: str | None = Field(
        None, description="Sample-index column (default: the row's position in the file)."
    )
    start: StartOptions | None = Field(None, description="Time of sample 0 (index mode).")
    rate_hz: float | None = Field(None, gt=0, description="Sample rate (index mode).")

    @model_validator(mode="after")
    def _one_mode(self) -> Self:
        if (self.start is None) != (self.rate_hz is None):
            raise ValueError("sample-index time needs both start and rate_hz")
        if self.rate_hz is not None and (self.column or self.unit):
            raise ValueError("give either column/unit or start/rate_hz, not both")
        if self.index_column is not None and self.rate_hz is None:
            raise ValueError("index_column needs start and rate_hz")
        return self


class SensorOptions(BaseOptions):
    """Options of the sensor connector."""

    format: Literal["auto", "csv", "parquet"] = Field(
        "auto", description="File format (auto: .parquet/.pq are Parquet, the rest CSV)."
    )
    layout: Literal["wide", "long"] = Field(
        "wide", description="wide: a column per channel; long: channel + value columns."
    )
    time: TimeOptions = Field(default_factory=TimeOptions, description="Row time.")
    tz: str | None = Field(None, description="Zone of ISO times written without one.")
    channels: list[str] | None = Field(
        None, min_length=1, description="Wide layout: channel columns (default: all numeric)."
    )
    channel_column: str = Field("channel", description="Long layout: the channel name column.")
    value_column: str = Field("value", description="Long layout: the value column.")
    dtype: Literal["float64", "float32"] = Field("float64", description="Channel value type.")
    units: str | dict[str, str] | None = Field(
        None, description="Physical unit of every channel, or per channel."
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field separator.")
    decimal: Literal[".", ","] = Field(".", description="CSV decimal mark.")
    header: bool = Field(True, description="CSV: the first line names the columns.")
    names: list[str] | None = Field(
        None, description="CSV column names (replace the header's, or name a header-less file)."
    )
    group: str = Field("sensor", min_length=1, description="Stream suffix (channel group).")
    block_mb: int = Field(16, ge=1, le=1024, description="CSV text parsed per batch (MiB).")

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                zone(v)
            except ConfigError as err:
                raise ValueError(f"unknown time zone {v!r}") from err
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.decimal == self.delimiter:
            raise ValueError("decimal and delimiter must differ (use delimiter ';' with ',')")
        if self.layout == "long" and self.channels is not None:
            raise ValueError("channels applies to the wide layout (long: every channel is kept)")
        return self


class SensorConnector(Connector):
    """Wide or long sensor tables from CSV (optionally gzipped) and Parquet."""

    name: ClassVar[str] = "sensor"
    Options: ClassVar[type[BaseOptions]] = SensorOptions
    modality = "sensor"
    patterns: ClassVar[tuple[str, ...]] = ("*.csv", "*.csv.gz", "*.parquet", "*.pq")

    def read(self, item: SourceItem, sink: ItemSink) -> None:
        """Read one file into its stream(s), batch by batch."""
        opts: SensorOptions = self.options
        fmt = opts.format
        if fmt == "auto":
            low = item.uri.lower()
            fmt = "parquet" if low.endswith((".parquet", ".pq")) else "csv"
        if fmt == "parquet":
            self._read_parquet(item, sink)
        else:
            self._read_csv(item, sink)

    # --- CSV -----------------------------------------------------------------------------
    def _read_csv(self, item: SourceItem, sink: ItemSink) -> None:
        opts: SensorOptions = self.options
        dialect = CsvDialect(opts.delimiter, opts.decimal, opts.header,
                             tuple(opts.names) if opts.names else None,
                             opts.block_mb << 20)  # fmt: skip
        with sink.open() as fh:
            reader = CsvReader(open_stream(fh, item.uri), dialect)
            sample = reader.sample()

            def first_value(col: str) -> str | None:
                return next((v for v in sample.get(col, []) if v.strip()), None)

            time = self._time_reader(reader.names, first_value, item)
            if opts.layout == "wide":
                others = [c for c in reader.names if c != time.column]
                # No row to look at (a header-only file): nothing will be emitted anyway.
                empty = not any(sample.values())
                channels = opts.channels or [
                    c for c in others if empty or _mostly_numbers(sample[c], opts.decimal)
                ]
            else:
                channels = [opts.value_column]
            emitter = _Emitter(sink, opts, time, channels, reader.names)
            float_type = pl.Float32() if opts.dtype == "float32" else pl.Float64()
            dtypes: dict[str, pl.DataType] = {}
            if time.column is not None:
                dtypes[time.column] = time.csv_dtype()
            if opts.layout == "long":
                dtypes[opts.channel_column] = pl.String()
            for c in channels:
                dtypes[c] = float_type
            for batch in reader.batches(dtypes):
                sink.count_in(batch.units)
                emitter.process(batch)
            if reader.damage is not None:
                where = f"row {reader.next_line}"
                sink.count_in(1)
                sink.reject(where, f"the file is damaged or cut short from {where} on "
                            f"({reader.damage}); the rows before it are kept")  # fmt: skip
            emitter.finish()

    # --- Parquet -------------------------------------------------------------------------
    def _read_parquet(self, item: SourceItem, sink: ItemSink) -> None:
        import pyarrow.parquet as pq

        opts: SensorOptions = self.options
        with sink.open() as fh:
            try:
                pf = pq.ParquetFile(fh)
            except (pa.ArrowException, OSError) as err:
                raise InputDataError(f"not a readable Parquet file: {err}") from err
            sink.count_in(pf.metadata.num_rows)
            empty = pl.from_arrow(pf.schema_arrow.empty_table())
            assert isinstance(empty, pl.DataFrame)
            schema = empty.schema
            names = list(schema)
            try:  # also gives the first values, to guess a time unit from
                first = pf.read_row_group(0) if pf.num_row_groups else None
            except (pa.ArrowException, OSError):
                first = None  # rejected with its reason below

            def first_value(col: str) -> Any:
                values = first.column(col).drop_null() if first is not None else []
                return values[0].as_py() if len(values) else None

            time = self._time_reader(names, first_value, item)
            if opts.layout == "wide":
                channels = opts.channels or [
                    c for c, t in schema.items() if c != time.column and t.is_numeric()
                ]
            else:
                channels = [opts.value_column]
            emitter = _Emitter(sink, opts, time, channels, names)
            used = [c for c in (time.column, opts.channel_column if opts.layout == "long"
                                else None, *channels) if c is not None]  # fmt: skip
            float_type = pl.Float32() if opts.dtype == "float32" else pl.Float64()
            row = 0
            for g in range(pf.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                try:
                    group = first if g == 0 and first is not None else (
                        pf.read_row_group(g, columns=used))  # fmt: skip
                    first = None
                except (pa.ArrowException, OSError) as err:
                    sink.reject(f"rows {row}-{row + n - 1}", f"row group {g} is unreadable: "
                                f"{err}", units=n)  # fmt: skip
                    row += n
                    continue
                for start in range(0, n, _PARQUET_BATCH_ROWS):
                    part = pl.from_arrow(group.select(used).slice(start, _PARQUET_BATCH_ROWS))
                    assert isinstance(part, pl.DataFrame)
                    emitter.process(_parquet_batch(part, row + start, channels, float_type,
                                                   emitter.channel_column))  # fmt: skip
                row += n
            emitter.finish()

    # --- time ----------------------------------------------------------------------------
    def _time_reader(self, names: list[str], first_value: Any, item: SourceItem) -> TimeReader:
        t: TimeOptions = self.options.time
        tz: str | None = self.options.tz
        if t.rate_hz is not None:
            assert t.start is not None
            if t.index_column is not None and t.index_column not in names:
                raise _missing("index column", t.index_column, names)
            return make_time_reader(column=t.index_column, unit="ns", tz=tz,
                                    start_ns=self._start_ns(t.start, item),
                                    rate_hz=t.rate_hz)  # fmt: skip
        column = t.column or next((c for c in _TIME_CANDIDATES if c in names), None)
        if column is None or column not in names:
            raise _missing("time column", column or "/".join(_TIME_CANDIDATES), names)
        unit = t.unit or _unit_from_name(column) or _unit_from_value(first_value(column))
        return make_time_reader(column=column, unit=unit, tz=tz)

    def _start_ns(self, start: StartOptions, item: SourceItem) -> int:
        tz: str | None = self.options.tz
        if start.ns is not None:
            return start.ns
        if start.iso is not None:
            return parse_iso_ns(start.iso, zone(tz) if tz else None)
        assert start.filename is not None
        return FilenameTime.compile(start.filename, tz or "UTC").parse(item.uri)


class _Emitter:
    """Checks one file's batches, quarantines bad rows and emits the good ones."""

    def __init__(self, sink: ItemSink, opts: SensorOptions, time: TimeReader,
                 channels: list[str], names: list[str]) -> None:  # fmt: skip
        needed = list(channels) + ([opts.channel_column] if opts.layout == "long" else [])
        missing = [c for c in needed if c not in names]
        if missing:
            raise _missing("column", missing[0], names)
        if not channels:
            raise InputDataError("no numeric channel columns found",
                                 hint=f"set channels (columns: {names})")  # fmt: skip
        self.sink = sink
        self.opts = opts
        self.time = time
        self.channels = channels
        self.long = opts.layout == "long"
        self.channel_column = opts.channel_column if self.long else None
        self.zones: set[str] = set()
        self.meta: dict[str, dict[str, Any]] = {}
        self.batches = 0
        self._first_reason = ""
        self.float_type = pa.float32() if opts.dtype == "float32" else pa.float64()

    def process(self, batch: Batch) -> None:
        """Reject the batch's bad rows with reasons; emit the rest."""
        for line, reason in batch.rejects:
            self.sink.reject(f"row {line}", reason)
        frame = batch.frame
        first = self.batches == 0
        self.batches += 1
        if frame.height == 0:
            return
        ts, zones = self.time.to_ns(frame, ORD)
        self.zones |= zones
        bad = ts.is_null()
        for c in self.channels:
            col = frame.get_column(c)
            bad = bad | col.is_null() | ~col.is_finite()
        if self.long:
            name = frame.get_column(self.opts.channel_column)
            bad = bad | name.is_null() | (name.str.strip_chars() == "")
        bad = bad.fill_null(True)
        if bad.any():
            no_time = ts.null_count() == ts.len()
            frame, ts, rescued = self._explain(batch, frame, ts, bad)
            if first and no_time and not rescued and bad.len() >= _MISCONFIG_ROWS:
                raise InputDataError(
                    f"none of the first {bad.len()} rows has a usable time, e.g. "
                    f"{self._first_reason}",
                    hint="check the time column, unit and tz options",
                )
        if frame.height:
            self._emit(frame.with_columns(ts.alias("ts_ns")))

    def _explain(self, batch: Batch, frame: pl.DataFrame, ts: pl.Series,
                 bad: pl.Series) -> tuple[pl.DataFrame, pl.Series, int]:  # fmt: skip
        """Reject bad rows with a reason each; keep those whose time the scalar path rescues.

        Returns the kept rows, their times and how many rows were rescued.
        """
        idx = np.flatnonzero(bad.to_numpy())
        raw = batch.raw()[idx]
        sub = frame[idx]
        time_col = self.time.column
        raw_time = raw.get_column(time_col).to_list() if time_col else [None] * idx.size
        ts_bad = ts.gather(idx).to_list()
        lines = sub.get_column(LINE).to_list()
        checks = [(c, sub.get_column(c).to_list(), raw.get_column(c).to_list())
                  for c in self.channels]  # fmt: skip
        names = sub.get_column(self.opts.channel_column).to_list() if self.long else None
        rescued: dict[int, int] = {}
        for k in range(idx.size):
            reasons = []
            t = ts_bad[k]
            if t is None:
                t, why, z = self.time.rescue(raw_time[k])
                if why:
                    reasons.append(why)
                elif z:
                    self.zones.add(z)
            for c, values, texts in checks:
                v = values[k]
                if v is None:
                    text = texts[k]
                    empty = text is None or not text.strip()
                    reasons.append(f"column {c}: missing value" if empty
                                   else f"column {c}: {text!r} is not a number")  # fmt: skip
                elif not math.isfinite(v):
                    reasons.append(f"column {c}: {texts[k]!r} is not a finite number")
            if names is not None and (names[k] is None or not names[k].strip()):
                reasons.append(f"column {self.opts.channel_column}: missing channel name")
            if reasons:
                reason = "; ".join(reasons)
                self._first_reason = self._first_reason or f"row {lines[k]}: {reason}"
                self.sink.reject(f"row {lines[k]}", reason)
            else:
                assert t is not None
                rescued[int(idx[k])] = t
        keep = ~bad.to_numpy()
        if rescued:
            at = np.fromiter(rescued, np.int64)
            keep[at] = True
            ts = ts.scatter(at, list(rescued.values()))
        mask = pl.Series(keep)
        return frame.filter(mask), ts.filter(mask), len(rescued)

    def _emit(self, frame: pl.DataFrame) -> None:
        if not self.long:
            self._emit_stream(self.opts.group, frame, self.channels)
            return
        col = self.opts.channel_column
        for key, part in frame.partition_by(col, maintain_order=True, as_dict=True).items():
            channel = str(key[0])
            self._emit_stream(f"{self.opts.group}.{channel}",
                              part.rename({self.opts.value_column: "value"}), ["value"],
                              channel)  # fmt: skip

    def _emit_stream(self, suffix: str, frame: pl.DataFrame, values: list[str],
                     channel: str | None = None) -> None:  # fmt: skip
        table = frame.select(pl.col("ts_ns"), *values).to_arrow()
        table = table.add_column(1, "locator", row_locators(frame.get_column(LINE)))
        fields = [pa.field("ts_ns", pa.int64()), pa.field("locator", pa.string())]
        fields += [pa.field(v, self.float_type) for v in values]
        table = table.cast(pa.schema(fields))
        meta = self.meta.get(suffix)
        if meta is None or "sample_rate_hz" not in meta:  # a slow channel's first batch
            meta = self.meta[suffix] = self._stream_meta(table, channel)  # may hold one row
        self.sink.emit(suffix, table, modality="sensor", meta=meta)

    def _stream_meta(self, table: pa.Table, channel: str | None) -> dict[str, Any]:
        channels = [channel] if channel is not None else list(self.channels)
        meta: dict[str, Any] = {"channels": channels}
        ts = table.column("ts_ns").to_numpy()[:100_000]
        steps = np.diff(ts)
        steps = steps[steps > 0]
        if steps.size:
            meta["sample_rate_hz"] = round(1e9 / float(np.median(steps)), 6)
        units = self.opts.units
        if isinstance(units, str):
            meta["units"] = dict.fromkeys(channels, units)
        elif units:
            meta["units"] = {c: units[c] for c in channels if c in units}
        return meta

    def finish(self) -> None:
        """Flag what was repaired across the whole file."""
        if len(self.zones) > 1:
            self.sink.flag("mixed_timezones")


_LOCATOR_CHUNK = 1 << 16
_LOCATOR_CACHE_ROWS = 1 << 19
_locator_chunks: list[pa.Array] = []


def _format_rows(numbers: pl.Series) -> pa.Array:
    text = pl.select(pl.concat_str(pl.lit("row "), numbers.cast(pl.String))).to_series()
    return text.to_arrow().cast(pa.string())


def row_locators(lines: pl.Series) -> pa.Array | pa.ChunkedArray:
    """Locators "row N" for each N in ``lines`` (ascending), as Arrow strings.

    Formatting millions of locators is a visible share of a CSV's cost and every file needs
    the same ones, so the first 512 Ki (under 10 MB) are built once per process, 64 Ki at a
    time (no big transient), and sliced.
    """
    n = lines.len()
    last = int(lines[-1]) if n else 0
    if n == 0 or last >= _LOCATOR_CACHE_ROWS or int(lines[0]) < 0:
        return _format_rows(lines)
    while len(_locator_chunks) * _LOCATOR_CHUNK <= last:
        start = len(_locator_chunks) * _LOCATOR_CHUNK
        _locator_chunks.append(_format_rows(pl.int_range(start, start + _LOCATOR_CHUNK,
                                                         eager=True)))  # fmt: skip
    first = int(lines[0])
    lo, hi = first // _LOCATOR_CHUNK, last // _LOCATOR_CHUNK
    cached = pa.chunked_array(_locator_chunks[lo : hi + 1])
    if last - first == n - 1:  # ascending and contiguous: a zero-copy slice
        return cached.slice(first - lo * _LOCATOR_CHUNK, n)
    return cached.take((lines - lo * _LOCATOR_CHUNK).to_arrow())


def _parquet_batch(part: pl.DataFrame, first_row: int, channels: list[str],
                   float_type: pl.DataType, channel_column: str | None) -> Batch:  # fmt: skip
    """A Parquet slice as a :class:`Batch` (locator numbers: 0-based row index)."""
    rows = np.arange(first_row, first_row + part.height, dtype=np.int64)
    casts = [pl.col(c).cast(float_type, strict=False) for c in channels]
    if channel_column is not None:
        casts.append(pl.col(channel_column).cast(pl.String, strict=False))
    frame = part.with_columns(*casts, pl.Series(LINE, rows), pl.Series(ORD, rows))
    return Batch(frame, lambda: part.select(pl.all().cast(pl.String, strict=False)))


def _mostly_numbers(values: list[str], decimal: str) -> bool:
    texts = [v.strip() for v in values if v.strip()]
    if not texts:
        return False
    ok = 0
    for v in texts:
        try:
            float(v.replace(",", ".") if decimal == "," else v)
            ok += 1
        except ValueError:
            pass
    return ok * 2 >= len(texts)


def _unit_from_name(column: str) -> str | None:
    for suffix in ("ns", "us", "ms", "s"):
        if column.lower().endswith("_" + suffix):
            return suffix
    return None


def _unit_from_value(value: Any) -> str:
    if value is None:
        return "ns"
    if hasattr(value, "timestamp"):  # a datetime from a Parquet timestamp column
        return "ns"
    if isinstance(value, str):
        if _ISO_LIKE.match(value):
            return "iso"
        try:
            value = float(value)
        except ValueError:
            return "ns"
    try:
        magnitude = abs(float(value))
    except (TypeError, ValueError):
        return "ns"
    if magnitude >= 1e17:
        return "ns"
    if magnitude >= 1e14:
        return "us"
    if magnitude >= 1e11:
        return "ms"
    return "s"


def _missing(what: str, name: str, names: list[str]) -> InputDataError:
    return InputDataError(f"{what} {name!r} is not in the file", hint=f"columns: {names}")
