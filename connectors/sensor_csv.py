"""CSV text for the sensor connector: header, bounded blocks, per-line checks, typed batches.

The file is read in blocks of whole lines (``block_bytes`` of text each, gzip decompressed on
the fly), so memory does not grow with the file's length. Each block is parsed by polars
with an explicit schema (no inference, no per-row Python) and checked:

* a *unit* is a line that is not empty (a lone ``\\r`` counts as empty); blank lines are
  skipped and not counted;
* a line whose field count differs from the header's is rejected ("row has 5 fields, header
  has 4");
* values that do not parse come back null and are explained later from the raw text.

A block is first checked as a whole (delimiters add up to the header's field count, no null,
nothing past the last column); only a block failing that is examined line by line, with
numpy over the bytes (or, if it holds quote characters, Python's ``csv`` module). One blind
spot remains: a line with an extra *empty* trailing field and, in the same block, a line
missing a field of a column that is not read (the counts balance, nothing reads null).

Line numbers are 1-based and count every physical line, header included, as an editor shows
them. Polars yields one row per physical line (blank ones included); when that does not hold
(a quoted field spanning lines, a parser error) the block falls back to Python's ``csv``
module line by line, where a line with an unterminated quote is rejected.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import polars as pl

from mmdata.errors import InputDataError

LINE = "__line"  # locator number: the line in the file
ORD = "__ord"  # sample ordinal: data lines before this one (the implicit sample index)
_EXTRA = "__extra__"  # catches fields beyond the header's
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class CsvDialect:
    """How the CSV text is written."""

    delimiter: str = ","
    decimal: str = "."
    header: bool = True
    names: tuple[str, ...] | None = None
    block_bytes: int = 16 << 20


@dataclass
class Batch:
    """One block's rows: typed columns, their raw text on demand, structural rejects."""

    frame: pl.DataFrame  # LINE, ORD + used columns, typed (nulls where unparseable)
    raw: Callable[[], pl.DataFrame]  # the same rows, used columns as text
    rejects: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    units: int = 0


def open_stream(fh: IO[bytes], uri: str) -> IO[bytes]:
    """``fh`` itself, or a gzip reader over it for ``.gz`` files (or gzip magic)."""
    head = fh.read(2)
    fh.seek(0)
    if uri.lower().endswith(".gz") or head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def _split_fields(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter, strict=True), [])


def _n_lines(block: bytes) -> int:
    return block.count(b"\n") + (0 if block.endswith(b"\n") else 1)


class CsvReader:
    """Reads one CSV stream: the header now, then :class:`Batch` es block by block."""

    def __init__(self, stream: IO[bytes], dialect: CsvDialect) -> None:
        self.dialect = dialect
        #: Why reading stopped early (a truncated or corrupt gzip stream), if it did.
        self.damage: str | None = None
        self._blocks = self._read_blocks(stream, dialect.block_bytes)
        first = next(self._blocks, b"")
        if first.startswith(_BOM):
            first = first[len(_BOM) :]
        self._line = 1  # number of the next line to read
        self._ordinal = 0
        self._pending: bytes | None = None
        self.names = self._read_header(first)
        self._sep = dialect.delimiter.encode()

    @property
    def next_line(self) -> int:
        """Number of the first line not read yet (where damage, if any, begins)."""
        return self._line

    def _read_blocks(self, stream: IO[bytes], size: int) -> Iterator[bytes]:
        """Chunks of whole lines (the last may lack its newline), about ``size`` bytes each.

        A read error (a gzip stream cut short) ends the file: the incomplete last line is
        dropped, since its values may be cut mid-number, and ``damage`` says why.
        """
        carry = b""
        want = min(size, 1 << 16)  # a small first block: the header is split off cheaply
        while True:
            try:
                data = stream.read(want)
                want = size
            except (OSError, EOFError) as err:
                self.damage = f"{type(err).__name__}: {err}"
                return
            if not data:
                if carry:
                    yield carry
                return
            cut = data.rfind(b"\n")
            if cut < 0:
                carry += data
                continue
            # One copy per block: join reads the memoryview without slicing a copy first.
            yield b"".join((carry, memoryview(data)[: cut + 1]))
            carry = data[cut + 1 :]

    def _read_header(self, first: bytes) -> list[str]:
        # Skip blank lines before the first line with content.
        pos = 0
        while pos < len(first):
            end = first.find(b"\n", pos)
            end = len(first) if end < 0 else end
            if first[pos:end].strip(b"\r"):
                break
            self._line += 1
            pos = end + 1
        if pos >= len(first):
            raise InputDataError("CSV file holds no lines")
        end = first.find(b"\n", pos)
        end = len(first) if end < 0 else end
        try:
            text = first[pos:end].rstrip(b"\r").decode("utf-8")
            fields = _split_fields(text, self.dialect.delimiter)
        except (UnicodeDecodeError, csv.Error) as err:
            raise InputDataError(f"CSV line {self._line} is not readable text: {err}") from err
        names = self.dialect.names
        if self.dialect.header:
            self._line += 1
            pos = end + 1
            header = [f.strip() or f"column_{i + 1}" for i, f in enumerate(fields)]
            if names is not None and len(names) != len(header):
                raise InputDataError(
                    f"names has {len(names)} entries, the CSV header has {len(header)}"
                )
            out = list(names) if names is not None else header
        else:
            out = list(names) if names is not None else [
                f"column_{i + 1}" for i in range(len(fields))
            ]  # fmt: skip
        dupes = sorted({n for n in out if out.count(n) > 1})
        if dupes:
            raise InputDataError(f"CSV header repeats column names {dupes}")
        self._pending = first[pos:] if pos else first
        return out

    def sample(self, n: int = 1000) -> dict[str, list[str]]:
        """Up to ``n`` data rows of the first block as text columns (for channel detection)."""
        out: dict[str, list[str]] = {name: [] for name in self.names}
        head = self._pending or b""
        end = -1
        for _ in range(n):
            end = head.find(b"\n", end + 1)
            if end < 0:
                end = len(head)
                break
        for raw in head[:end].split(b"\n"):
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                continue
            try:
                fields = _split_fields(line, self.dialect.delimiter)
            except csv.Error:
                continue
            if len(fields) == len(self.names):
                for name, value in zip(self.names, fields, strict=True):
                    out[name].append(value)
        return out

    def batches(self, dtypes: dict[str, pl.DataType]) -> Iterator[Batch]:
        """Typed batches, one per block; ``dtypes`` are the used columns' types."""
        if self._pending:
            yield self._parse(self._pending, dtypes)
        self._pending = None
        for block in self._blocks:
            yield self._parse(block, dtypes)

    # --- one block ---------------------------------------------------------------------
    def _read_csv(self, block: bytes, schema: dict[str, pl.DataType], **kw: object) -> pl.DataFrame:
        return pl.read_csv(
            block, has_header=False, schema=schema, separator=self.dialect.delimiter,
            decimal_comma=self.dialect.decimal == ",", ignore_errors=True,
            truncate_ragged_lines=True, missing_columns="insert", encoding="utf8-lossy",
            extra_columns="ignore", raise_if_empty=False, **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    def _parse(self, block: bytes, dtypes: dict[str, pl.DataType]) -> Batch:
        first_line = self._line
        n_lines = _n_lines(block)
        self._line += n_lines
        schema: dict[str, pl.DataType] = {n: dtypes.get(n, pl.String()) for n in self.names}
        schema[_EXTRA] = pl.String()
        try:
            df: pl.DataFrame | None = self._read_csv(block, schema)
        except Exception:  # a block polars refuses is read line by line instead
            df = None
        if df is None or df.height != n_lines:
            return self._careful(block, first_line, n_lines, dtypes)
        used = list(dtypes)
        ncols = len(self.names)
        lines = np.arange(first_line, first_line + n_lines, dtype=np.int64)
        # A clean block: field counts add up, nothing beyond the header's fields, no nulls
        # (a blank line would read as a row of nulls). Only otherwise look at each line.
        clean = (
            block.count(self._sep) == (ncols - 1) * n_lines
            and df.get_column(_EXTRA).null_count() == df.height
            and not any(df.get_column(c).null_count() for c in used)
        )
        rejects: list[tuple[int, str]] = []
        mask: pl.Series | None = None
        if clean:
            units = n_lines
            ords = np.arange(self._ordinal, self._ordinal + n_lines, dtype=np.int64)
        else:
            if b'"' in block:  # delimiters inside quotes: count fields the slow way
                return self._careful(block, first_line, n_lines, dtypes)
            arr = np.frombuffer(block, np.uint8)
            blank = _blank_lines(arr, n_lines)
            fields = _fields_per_line(arr, n_lines, self._sep[0])
            struct_bad = ~blank & (fields != ncols)
            for i in np.flatnonzero(struct_bad):
                reason = f"row has {int(fields[i])} fields, header has {ncols}"
                rejects.append((int(lines[i]), reason))
            units = n_lines - int(blank.sum())
            ords = self._ordinal + np.cumsum(~blank, dtype=np.int64) - 1
            mask = pl.Series(~blank & ~struct_bad)
        self._ordinal += units
        frame = df.select(used).with_columns(pl.Series(LINE, lines), pl.Series(ORD, ords))
        if mask is not None:
            frame = frame.filter(mask)

        def raw() -> pl.DataFrame:
            text = self._read_csv(block, {**dict.fromkeys(self.names, pl.String()),
                                          _EXTRA: pl.String()},
                                  empty_string_is_null=False).select(used)  # fmt: skip
            if text.height != n_lines:  # not seen; rows must stay aligned whatever happens
                text = self._text_rows(block, used)
            return text.filter(mask) if mask is not None else text

        return Batch(frame, raw, rejects, units)

    def _text_rows(self, block: bytes, used: list[str]) -> pl.DataFrame:
        """Every physical line's ``used`` fields as text (None where a line lacks them)."""
        lines = block.decode("utf-8", "replace").split("\n")
        if block.endswith(b"\n"):
            lines.pop()
        at = [self.names.index(c) for c in used]
        cols: list[list[str | None]] = [[] for _ in used]
        for line in lines:
            try:
                fields = _split_fields(line.rstrip("\r"), self.dialect.delimiter)
            except csv.Error:
                fields = []
            for col, i in zip(cols, at, strict=True):
                col.append(fields[i] if i < len(fields) else None)
        return pl.DataFrame(dict(zip(used, cols, strict=True)),
                            schema=dict.fromkeys(used, pl.String()))  # fmt: skip

    def _careful(
        self, block: bytes, first_line: int, n_lines: int, dtypes: dict[str, pl.DataType]
    ) -> Batch:
        """Line by line with Python's csv module (quoted fields across lines, odd blocks)."""
        text = block.decode("utf-8", "replace").split("\n")
        if block.endswith(b"\n"):
            text.pop()
        assert len(text) == n_lines
        ncols = len(self.names)
        rejects: list[tuple[int, str]] = []
        rows: list[list[str]] = []
        lines: list[int] = []
        ords: list[int] = []
        units = 0
        for i, line in enumerate(text):
            line = line.rstrip("\r")
            if not line:
                continue
            units += 1
            number = first_line + i
            try:
                fields = _split_fields(line, self.dialect.delimiter)
            except csv.Error as err:
                rejects.append((number, f"row is not valid CSV: {err}"))
                continue
            if len(fields) != ncols:
                rejects.append((number, f"row has {len(fields)} fields, header has {ncols}"))
                continue
            rows.append(fields)
            lines.append(number)
            ords.append(self._ordinal + units - 1)
        self._ordinal += units
        index = {n: i for i, n in enumerate(self.names)}
        raw_frame = pl.DataFrame(
            {c: [r[index[c]] for r in rows] for c in dtypes},
            schema=dict.fromkeys(dtypes, pl.String()),
        )
        frame = raw_frame.select(
            _cast_text(pl.col(c), dt, self.dialect.decimal) for c, dt in dtypes.items()
        ).with_columns(pl.Series(LINE, lines, pl.Int64), pl.Series(ORD, ords, pl.Int64))
        return Batch(frame, lambda: raw_frame, rejects, units)


def _cast_text(col: pl.Expr, dtype: pl.DataType, decimal: str) -> pl.Expr:
    """Text to ``dtype`` the way the CSV parser would (null where it does not parse)."""
    if dtype == pl.String:
        return col
    text = col.str.strip_chars()
    if decimal == ",":
        text = text.str.replace(",", ".", literal=True)
    if isinstance(dtype, pl.Decimal):
        return text.str.to_decimal(scale=dtype.scale)
    return text.cast(dtype, strict=False)


def _blank_lines(arr: np.ndarray, n_lines: int) -> np.ndarray:
    """Per line: True when it is empty (or only a carriage return)."""
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate([[0], nl + 1])[:n_lines]
    ends = np.concatenate([nl, [arr.size]])[:n_lines]
    length = ends - starts
    cr_only = (length == 1) & (arr[np.minimum(starts, arr.size - 1)] == 13)
    return (length == 0) | cr_only


def _fields_per_line(arr: np.ndarray, n_lines: int, sep: int) -> np.ndarray:
    """Per line: delimiters + 1 (quotes are not considered; see the module docstring)."""
    nl = np.flatnonzero(arr == 10)
    delims = np.flatnonzero(arr == sep)
    return np.bincount(np.searchsorted(nl, delims), minlength=n_lines)[:n_lines] + 1
