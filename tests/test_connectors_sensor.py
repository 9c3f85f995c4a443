"""The sensor connector: CSV / gzipped CSV / Parquet time series into sensor streams.

Every test writes real files with polars / pyarrow / pandas writers and runs them through
the real ingest stage (``ingest_one``), which also checks that counts reconcile.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from connectors.sensor import SensorOptions
from tests.conftest import ROOT, counts, ingest_one, totals

T0 = 1_772_352_000_000_000_000  # 2026-03-01T08:00:00Z
RATE = 5000
PERIOD = 1_000_000_000 // RATE


def wide(n: int = 10_000, start: int = T0, period: int = PERIOD) -> pl.DataFrame:
    """A 3-axis accelerometer: ts_ns and ax/ay/az (values exact in float32 and in text)."""
    i = np.arange(n)
    return pl.DataFrame(
        {
            "ts_ns": start + i.astype(np.int64) * period,
            "ax": np.round(np.sin(i / 7.0), 4),
            "ay": np.round(np.cos(i / 5.0), 4),
            "az": 1.0 + (i % 10) / 8.0,
        }
    )


def locators(table: pa.Table) -> list[str]:
    return table.column("source_locator").to_pylist()


def rejected(result) -> dict[str, str]:
    return {r.locator: r.message for r in result.quarantine}


# --- wide CSV and Parquet ----------------------------------------------------------------


def test_wide_csv_at_5khz_keeps_every_sample_with_its_exact_time(tmp_path):
    df = wide()
    path = tmp_path / "acc.csv"
    df.write_csv(path)

    r = ingest_one(tmp_path, "sensor", path, time={"column": "ts_ns", "unit": "ns"})

    t = r.streams["sensor"]
    assert totals(r) == (10_000, 10_000, 0)
    assert t.column_names == ["stream_id", "device_id", "ts_ns", "segment", "ax", "ay", "az",
                              "source_uri", "source_locator", "source_sha256"]  # fmt: skip
    assert t.column("ts_ns").to_pylist() == df["ts_ns"].to_list()
    assert t.schema.field("ax").type == pa.float64()
    np.testing.assert_array_equal(t.column("ay").to_numpy(), df["ay"].to_numpy())
    assert locators(t)[:2] == ["row 2", "row 3"]  # line numbers; the header is row 1
    meta = r.index["sensor"]["meta"]
    assert meta["channels"] == ["ax", "ay", "az"]
    assert meta["sample_rate_hz"] == 5000.0
    assert r.index["sensor"]["segments"] == 1 and r.index["sensor"]["flags"] == {}


def test_wide_parquet_at_5khz_with_float32_values_and_units(tmp_path):
    df = wide()
    path = tmp_path / "acc.parquet"
    pq.write_table(df.to_arrow(), path, row_group_size=3000)

    r = ingest_one(tmp_path, "sensor", path, dtype="float32", units="g", group="vib")

    t = r.streams["vib"]
    assert counts(r).out == 10_000
    assert t.schema.field("az").type == pa.float32()
    assert t.column("ts_ns").to_pylist() == df["ts_ns"].to_list()
    np.testing.assert_array_equal(t.column("ax").to_numpy(), df["ax"].to_numpy().astype("f4"))
    assert locators(t)[:2] == ["row 0", "row 1"]  # Parquet: 0-based row index
    assert locators(t)[3000] == "row 3000"  # across row groups
    assert r.index["vib"]["meta"]["units"] == {"ax": "g", "ay": "g", "az": "g"}


def test_parquet_rows_with_nulls_nan_or_inf_are_quarantined_by_row_index(tmp_path):
    table = pa.table({
        "ts_ns": pa.array([T0 + k * PERIOD for k in range(6)], pa.int64()),
        "ax": pa.array([0.1, None, 0.3, float("nan"), 0.5, float("-inf")]),
        "ay": pa.array([1.0] * 6),
    })  # fmt: skip
    path = tmp_path / "acc.parquet"
    pq.write_table(table, path)

    r = ingest_one(tmp_path, "sensor", path)

    assert counts(r).out == 3
    assert rejected(r) == {
        "row 1": "column ax: missing value",
        "row 3": "column ax: 'NaN' is not a finite number",
        "row 5": "column ax: '-inf' is not a finite number",
    }


# --- time ---------------------------------------------------------------------------------


def _epoch_text(ts: np.ndarray, unit: str) -> list[str]:
    """Exact decimal text of ``ts`` (ns) in ``unit``: 1772352000.0002 s, ..."""
    digits = {"s": 9, "ms": 6, "us": 3, "ns": 0}[unit]
    if digits == 0:
        return [str(int(v)) for v in ts]
    scale = 10**digits
    return [f"{int(v) // scale}.{int(v) % scale:0{digits}d}" for v in ts]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_csv_epoch_times_in_any_unit_convert_exactly_to_ns(tmp_path, unit):
    df = wide(n=500)
    ts = df["ts_ns"].to_numpy()
    text = df.with_columns(pl.Series("time", _epoch_text(ts, unit))).drop("ts_ns")
    path = tmp_path / f"acc_{unit}.csv"
    text.write_csv(path)

    r = ingest_one(tmp_path, "sensor", path, time={"column": "time", "unit": unit})

    assert r.streams["sensor"].column("ts_ns").to_pylist() == ts.tolist()
    assert r.index["sensor"]["meta"]["channels"] == ["ax", "ay", "az"]


@pytest.mark.parametrize(
    ("column", "unit", "expected_unit_guess"),
    [
        (pa.array([1772352000.0, 1772352000.0002, 1772352000.0004]), "s", None),
        (pa.array([1772352000000, 1772352000001, 1772352000002], pa.int64()), "ms", None),
        (pa.array([1772352000000000, 1772352000000200, 1772352000000400]), None, "us"),
        (pa.array([T0, T0 + 1, T0 + 2], pa.timestamp("ns", "UTC")), None, "ns"),
        (pa.array([1772352000000000, 1772352000000200, 1772352000000400],
                  pa.timestamp("us", "+09:00")), None, "us"),
    ],
)  # fmt: skip
def test_parquet_time_columns_of_any_type(tmp_path, column, unit, expected_unit_guess):
    values = column.to_pylist()
    path = tmp_path / "acc.parquet"
    pq.write_table(pa.table({"t": column, "ax": pa.array([1.0, 2.0, 3.0])}), path)

    time = {"column": "t", **({"unit": unit} if unit else {})}
    r = ingest_one(tmp_path, "sensor", path, time=time)

    got = r.streams["sensor"].column("ts_ns").to_pylist()
    if pa.types.is_timestamp(column.type):
        expected = pc_to_ns(column)
    elif unit == "s":
        expected = [T0, T0 + 200_000, T0 + 400_000]  # rounded to 1 ns, not float noise
    else:
        scale = {"ms": 1_000_000, "us": 1_000}[unit or expected_unit_guess]
        expected = [v * scale for v in values]
    assert got == expected


def pc_to_ns(column: pa.Array) -> list[int]:
    return column.cast(pa.timestamp("ns", "UTC")).cast(pa.int64()).to_pylist()


def test_iso_times_in_mixed_zones_are_converted_to_utc_and_flagged(tmp_path):
    path = tmp_path / "acc.csv"
    path.write_text(
        "time,ax\n"
        "2026-03-01T17:00:00.000200+09:00,1.0\n"
        "2026-03-01T08:00:00.0004Z,2.0\n"
        "2026-03-01 17:00:00.000600123+09:00,3.0\n"
        "2026-03-01T03:00:00.0008-05:00,4.0\n"
    )

    r = ingest_one(tmp_path, "sensor", path, time={"column": "time", "unit": "iso"})

    assert r.streams["sensor"].column("ts_ns").to_pylist() == [
        T0 + 200_000, T0 + 400_000, T0 + 600_123, T0 + 800_000]  # fmt: skip
    assert r.index["sensor"]["flags"] == {"mixed_timezones": 1}


def test_iso_times_without_a_zone_need_the_tz_option(tmp_path):
    path = tmp_path / "acc.csv"
    path.write_text("time,ax\n2026-03-01T17:00:00+09:00,1.0\n2026-03-01T17:00:01,2.0\n"
                    "2026-03-01T17:00:02,3.0\nyesterday,4.0\n")  # fmt: skip

    without = ingest_one(tmp_path, "sensor", path, time={"unit": "iso"})
    with_tz = ingest_one(tmp_path, "sensor", path, time={"unit": "iso"}, tz="Asia/Tokyo")

    assert counts(without).out == 1
    reasons = rejected(without)
    assert "no time zone" in reasons["row 3"] and "tz" in reasons["row 3"]
    assert reasons["row 5"].startswith("column time: 'yesterday' is not an ISO-8601")
    assert with_tz.streams["sensor"].column("ts_ns").to_pylist() == [
        T0, T0 + 1_000_000_000, T0 + 2_000_000_000]  # fmt: skip
    assert "row 5" in rejected(with_tz)


def test_sample_index_with_start_and_rate_gives_each_row_its_time(tmp_path):
    implicit = tmp_path / "implicit.csv"
    pl.DataFrame({"ax": [0.0, 1.0, 2.0, 3.0], "ay": [1.0] * 4}).write_csv(implicit)
    indexed = tmp_path / "indexed.csv"
    pl.DataFrame({"n": [0, 1, 2, 7], "ax": [0.0, 1.0, 2.0, 3.0]}).write_csv(indexed)

    a = ingest_one(
        tmp_path,
        "sensor",
        implicit,
        time={"start": {"iso": "2026-03-01T17:00:00+09:00"}, "rate_hz": 5000},
    )
    b = ingest_one(tmp_path, "sensor", indexed,
                   time={"index_column": "n", "start": {"ns": T0}, "rate_hz": 3})  # fmt: skip

    assert a.streams["sensor"].column("ts_ns").to_pylist() == [
        T0, T0 + PERIOD, T0 + 2 * PERIOD, T0 + 3 * PERIOD]  # fmt: skip
    assert a.index["sensor"]["meta"]["channels"] == ["ax", "ay"]
    # 1/3 s is not a whole number of ns: rounded, without drift over the index.
    assert b.streams["sensor"].column("ts_ns").to_pylist() == [
        T0, T0 + 333_333_333, T0 + 666_666_667, T0 + 2_333_333_333]  # fmt: skip
    assert b.index["sensor"]["meta"]["channels"] == ["ax"]


def test_sample_index_start_can_come_from_the_file_name(tmp_path):
    folder = tmp_path / "vib"
    folder.mkdir()
    for name in ("vib_20260301T080000.000Z.csv", "vib_20260301T080000.500Z.csv"):
        pl.DataFrame({"ax": [1.0, 2.0]}).write_csv(folder / name)

    r = ingest_one(tmp_path, "sensor", folder,
                   time={"start": {"filename": "vib_%Y%m%dT%H%M%S.%fZ"}, "rate_hz": 4})  # fmt: skip

    assert r.streams["sensor"].column("ts_ns").to_pylist() == [
        T0, T0 + 250_000_000, T0 + 500_000_000, T0 + 750_000_000]  # fmt: skip


# --- long layout ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_long_layout_makes_a_stream_per_channel_each_at_its_own_rate(tmp_path, fmt):
    rows = []
    for name, rate in (("temp", 1), ("current", 10), ("ax", 100)):
        step = 1_000_000_000 // rate
        rows += [(T0 + k * step, name, float(k)) for k in range(3 * rate)]
    rows.sort()
    df = pd.DataFrame(rows, columns=["ts", "channel", "value"])
    path = tmp_path / f"long.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.astype({"channel": "category"}).to_parquet(path, index=False)

    r = ingest_one(tmp_path, "sensor", path, layout="long", time={"unit": "ns"},
                   units={"temp": "degC", "ax": "g"})  # fmt: skip

    assert set(r.streams) == {"sensor.temp", "sensor.current", "sensor.ax"}
    for name, rate in (("temp", 1), ("current", 10), ("ax", 100)):
        t = r.streams[f"sensor.{name}"]
        assert t.num_rows == 3 * rate
        assert t.column("value").to_pylist() == [float(k) for k in range(3 * rate)]
        assert r.index[f"sensor.{name}"]["meta"]["sample_rate_hz"] == rate
        assert r.index[f"sensor.{name}"]["meta"]["channels"] == [name]
    assert r.index["sensor.ax"]["meta"]["units"] == {"ax": "g"}
    first_current = [row[1] for row in rows].index("current") + (2 if fmt == "csv" else 0)
    assert locators(r.streams["sensor.current"])[0] == f"row {first_current}"


def test_a_slow_channel_gets_its_rate_even_with_one_sample_in_the_first_block(tmp_path):
    rows = [(T0 + k * 1_000_000, "ax", 0.5) for k in range(20_000)]  # 1 kHz for 20 s
    rows += [(T0 + k * 5_000_000_000, "temp", 21.0) for k in range(4)]  # 0.2 Hz
    rows.sort()
    path = tmp_path / "long.csv"
    pd.DataFrame(rows, columns=["ts", "channel", "value"]).to_csv(path, index=False)

    r = ingest_one(tmp_path, "sensor", path, layout="long", time={"unit": "ns"})

    assert r.index["sensor.temp"]["meta"]["sample_rate_hz"] == 0.2
    assert r.index["sensor.ax"]["meta"]["sample_rate_hz"] == 1000.0


def test_long_layout_rows_without_a_channel_name_are_quarantined(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text(f"ts,channel,value\n{T0},a,1.0\n{T0 + 1},,2.0\n{T0 + 2},a,x\n")

    r = ingest_one(tmp_path, "sensor", path, layout="long", time={"unit": "ns"})

    assert counts(r).out == 1
    assert rejected(r) == {"row 3": "column channel: missing channel name",
                           "row 4": "column value: 'x' is not a number"}  # fmt: skip


# --- gzip ---------------------------------------------------------------------------------


def test_gzipped_csv_reads_like_the_plain_file(tmp_path):
    df = wide(n=2000)
    path = tmp_path / "acc.csv.gz"
    path.write_bytes(gzip.compress(df.write_csv().encode()))

    r = ingest_one(tmp_path, "sensor", path)

    assert counts(r).out == 2000
    assert r.streams["sensor"].column("ts_ns").to_pylist() == df["ts_ns"].to_list()


def test_a_cut_off_gzip_keeps_the_rows_before_the_damage(tmp_path):
    df = wide(n=50_000)
    blob = gzip.compress(df.write_csv().encode())
    path = tmp_path / "acc.csv.gz"
    path.write_bytes(blob[: len(blob) * 3 // 4])

    r = ingest_one(tmp_path, "sensor", path, block_mb=1)

    kept = counts(r).out
    assert 0 < kept < 50_000
    assert r.streams["sensor"].column("ts_ns").to_pylist() == df["ts_ns"].to_list()[:kept]
    ((where, reason),) = rejected(r).items()
    assert where == f"row {kept + 2}" and "cut short" in reason


# --- bad rows -----------------------------------------------------------------------------


def test_bad_rows_are_quarantined_with_column_and_row_while_good_rows_are_kept(tmp_path):
    lines = [
        "ts,ax,ay,az",
        f"{T0},0.1,0.2,0.3",  # row 2: good
        f"{T0 + 1},abc,0.2,0.3",  # row 3
        f"{T0 + 2},0.1,0.2",  # row 4: missing field
        f"{T0 + 3},0.1,0.2,0.3,0.4",  # row 5: extra field
        "",  # row 6: blank, neither counted nor rejected
        f"{T0 + 4},NaN,0.2,0.3",  # row 7
        f"{T0 + 5},0.1,inf,-inf",  # row 8
        f"{T0 + 6},,0.2,0.3",  # row 9: empty value
        "2026-03-01,0.1,0.2,0.3",  # row 10: not an epoch number
        f"{T0 + 8},0.1,0.2,0.3",  # row 11: good
        f"{T0 + 9},1e-3,-2.5E2,+7",  # row 12: good (exponents, signs)
    ]
    path = tmp_path / "acc.csv"
    path.write_text("\n".join(lines) + "\n")

    r = ingest_one(tmp_path, "sensor", path, time={"unit": "ns"})

    assert totals(r) == (10, 3, 7)
    assert locators(r.streams["sensor"]) == ["row 2", "row 11", "row 12"]
    assert r.streams["sensor"].column("ay").to_pylist() == [0.2, 0.2, -250.0]
    assert rejected(r) == {
        "row 3": "column ax: 'abc' is not a number",
        "row 4": "row has 3 fields, header has 4",
        "row 5": "row has 5 fields, header has 4",
        "row 7": "column ax: 'NaN' is not a finite number",
        "row 8": "column ay: 'inf' is not a finite number; column az: '-inf' is not a "
        "finite number",
        "row 9": "column ax: missing value",
        "row 10": "column ts: '2026-03-01' is not a number",
    }


def test_bad_rows_are_found_in_every_block_of_a_long_file(tmp_path):
    df = wide(n=60_000)
    text = df.write_csv().splitlines()
    text[30_001] = text[30_001].replace(",", ",oops", 1)  # a garbage time, mid-file
    text[-1] += ",9"  # the very last line has an extra field
    path = tmp_path / "acc.csv"
    path.write_text("\r\n".join(text))  # CRLF, no final newline

    r = ingest_one(tmp_path, "sensor", path, block_mb=1)

    assert totals(r)[:2] == (60_000, 59_998)
    assert set(rejected(r)) == {"row 30002", "row 60001"}
    ts = r.streams["sensor"].column("ts_ns").to_numpy()
    assert np.all(np.diff(ts) > 0)


def test_a_sensor_warming_up_with_nan_is_not_mistaken_for_a_bad_file(tmp_path):
    df = wide(n=1000).with_columns(
        pl.when(pl.int_range(pl.len()) < 300).then(float("nan")).otherwise(pl.col("ax")).alias("ax")
    )
    path = tmp_path / "acc.csv"
    df.write_csv(path)

    r = ingest_one(tmp_path, "sensor", path)

    assert totals(r) == (1000, 700, 300)
    assert rejected(r)["row 2"] == "column ax: 'NaN' is not a finite number"


def test_quoted_fields_and_a_quote_left_open_across_lines(tmp_path):
    path = tmp_path / "acc.csv"
    path.write_text(
        'ts,ax,note\n'
        f'{T0},"1.5","a, b"\n'
        f'{T0 + 1},2.5,"open\n'
        f'{T0 + 2},3.5,still open"\n'
        f'{T0 + 3},4.5,ok\n'
    )  # fmt: skip

    r = ingest_one(tmp_path, "sensor", path, time={"unit": "ns"})

    # Lines are units: the one that opens a quote and never closes it is rejected; the next
    # line is a complete row by itself (a quote inside an unquoted field is just a character).
    assert r.streams["sensor"].column("ax").to_pylist() == [1.5, 3.5, 4.5]
    assert r.index["sensor"]["meta"]["channels"] == ["ax"]  # text columns are not channels
    ((where, reason),) = rejected(r).items()
    assert where == "row 3" and "not valid CSV" in reason


def test_semicolon_delimiter_with_decimal_comma(tmp_path):
    path = tmp_path / "acc.csv"
    path.write_text(f"zeit;ax;ay\n{T0};1,5;-2,25\n{T0 + 1};3;abc\n")

    r = ingest_one(tmp_path, "sensor", path, delimiter=";", decimal=",",
                   time={"column": "zeit", "unit": "ns"})  # fmt: skip

    assert r.streams["sensor"].column("ax").to_pylist() == [1.5]
    assert r.streams["sensor"].column("ay").to_pylist() == [-2.25]
    assert rejected(r) == {"row 3": "column ay: 'abc' is not a number"}


def test_headerless_csv_with_names_counts_lines_from_1(tmp_path):
    path = tmp_path / "acc.csv"
    path.write_text(f"{T0},1.0\n{T0 + 1},x\n")

    r = ingest_one(tmp_path, "sensor", path, header=False, names=["ts", "ax"],
                   time={"unit": "ns"})  # fmt: skip

    assert locators(r.streams["sensor"]) == ["row 1"]
    assert rejected(r) == {"row 2": "column ax: 'x' is not a number"}


def test_unreadable_or_misconfigured_files_are_quarantined_whole(tmp_path):
    folder = tmp_path / "vib"
    folder.mkdir()
    wide(n=200).write_csv(folder / "a_good.csv")
    wide(n=200).rename({"ts_ns": "when"}).write_csv(folder / "b_no_time.csv")
    (folder / "c_header_only.csv").write_text("ts_ns,ax\n")
    (folder / "d_broken.parquet").write_bytes(b"PAR1 this is not parquet")
    wide(n=200).write_csv(folder / "e_wrong_unit.csv")

    r = ingest_one(tmp_path, "sensor", folder, time={"column": "ts_ns", "unit": "ns"},
                   patterns=["a_*", "b_*", "c_*", "d_*"])  # fmt: skip
    unit = ingest_one(tmp_path, "sensor", folder / "e_wrong_unit.csv", time={"unit": "iso"})

    reasons = {Path(q.source_ref).name: q.message for q in r.quarantine}
    assert set(reasons) == {"b_no_time.csv", "d_broken.parquet"}
    assert "time column 'ts_ns' is not in the file" in reasons["b_no_time.csv"]
    assert "not a readable Parquet file" in reasons["d_broken.parquet"]
    assert counts(r).out == 200  # a_good; c_header_only holds no row: nothing to say
    # Epoch numbers read as ISO: a misconfiguration, one reason for the file, not 200.
    (only,) = unit.quarantine
    assert only.locator is None and "none of the first 200 rows has a usable time" in only.message
    assert "is not an ISO-8601 date-time" in only.message


def test_options_are_checked_before_any_file_is_read():
    with pytest.raises(ValidationError, match="start and rate_hz"):
        SensorOptions.model_validate({"time": {"rate_hz": 100}})
    with pytest.raises(ValidationError, match="column/unit or start/rate_hz"):
        SensorOptions.model_validate({"time": {"unit": "s", "rate_hz": 1, "start": {"ns": 0}}})
    with pytest.raises(ValidationError, match="exactly one"):
        SensorOptions.model_validate({"time": {"rate_hz": 1, "start": {"ns": 0, "iso": "x"}}})
    with pytest.raises(ValidationError, match="unknown time zone"):
        SensorOptions.model_validate({"tz": "Mars/Olympus"})
    with pytest.raises(ValidationError, match="must differ"):
        SensorOptions.model_validate({"decimal": ","})
    with pytest.raises(ValidationError, match="wide layout"):
        SensorOptions.model_validate({"layout": "long", "channels": ["a"]})
    with pytest.raises(ValidationError, match="Extra inputs"):
        SensorOptions.model_validate({"colums": ["a"]})


# --- what the finalizer does with the rows, end to end ------------------------------------


def test_slightly_out_of_order_rows_are_sorted_and_counted(tmp_path):
    ts = [T0 + k * PERIOD for k in range(10)]
    ts[3], ts[4] = ts[4], ts[3]
    ts[7], ts[8] = ts[8], ts[7]
    path = tmp_path / "acc.csv"
    pl.DataFrame({"ts_ns": ts, "ax": [float(k) for k in range(10)]}).write_csv(path)

    r = ingest_one(tmp_path, "sensor", path)

    t = r.streams["sensor"]
    assert t.column("ts_ns").to_pylist() == sorted(ts)
    assert t.column("ax").to_pylist()[3:5] == [4.0, 3.0]  # rows travel with their times
    assert r.index["sensor"]["flags"] == {"non_monotonic": 2}


def test_duplicate_timestamps_are_quarantined_and_the_first_kept(tmp_path):
    ts = [T0, T0 + PERIOD, T0 + PERIOD, T0 + 2 * PERIOD, T0 + 2 * PERIOD, T0 + 3 * PERIOD]
    path = tmp_path / "acc.csv"
    pl.DataFrame({"ts_ns": ts, "ax": [float(k) for k in range(6)]}).write_csv(path)

    r = ingest_one(tmp_path, "sensor", path)

    assert r.streams["sensor"].column("ax").to_pylist() == [0.0, 1.0, 3.0, 5.0]
    assert {q.locator for q in r.quarantine} == {"row 4", "row 6"}
    assert all(q.error_class == "DuplicateTimestamp" for q in r.quarantine)
    assert r.index["sensor"]["flags"] == {"duplicates": 2}


def test_a_backward_clock_jump_starts_a_new_segment(tmp_path):
    ts = [T0 + k * PERIOD for k in range(5)] + [T0 - 5_000_000_000 + k * PERIOD for k in range(5)]
    path = tmp_path / "acc.csv"
    pl.DataFrame({"ts_ns": ts, "ax": [float(k) for k in range(10)]}).write_csv(path)

    r = ingest_one(tmp_path, "sensor", path, clock_jump_ms=1000)

    t = r.streams["sensor"]
    assert t.column("segment").to_pylist() == [0] * 5 + [1] * 5
    assert t.column("ts_ns").to_pylist() == ts  # each segment stays in its own time order
    assert r.index["sensor"]["segments"] == 2
    assert r.index["sensor"]["flags"] == {"clock_jumps": 1}


def test_files_split_by_time_are_stitched_in_natural_order(tmp_path):
    folder = tmp_path / "vib"
    folder.mkdir()
    n = 2000  # 2 s per file at 1 kHz: a wrong order would look like a 2 s clock jump
    for order, k in enumerate((1, 2, 10)):
        wide(n=n, start=T0 + order * n * 1_000_000, period=1_000_000).write_csv(
            folder / f"vib_{k}.csv"
        )

    r = ingest_one(tmp_path, "sensor", folder, clock_jump_ms=1000)

    entry = r.index["sensor"]
    ts = r.streams["sensor"].column("ts_ns").to_numpy()
    assert (entry["segments"], entry["flags"]) == (1, {})
    assert np.all(np.diff(ts) == 1_000_000) and ts.size == 3 * n
    uris = r.streams["sensor"].column("source_uri").to_pylist()
    assert [Path(u).name for u in uris[::n]] == ["vib_1.csv", "vib_2.csv", "vib_10.csv"]


# --- the synthetic factory ----------------------------------------------------------------


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    from mmdata.synth import SynthConfig, generate_factory

    out = tmp_path_factory.mktemp("factory")
    generate_factory(SynthConfig(assets=2, minutes=0.2, workers=1), out)
    return out


@pytest.mark.parametrize(("asset", "ext"), [("press-1", "parquet"), ("press-2", "csv")])
def test_synthetic_factory_vibration_matches_its_ground_truth(tmp_path, factory, asset, ext):
    truth = json.loads((factory / "ground_truth.json").read_text())["devices"][f"acc-{asset}"]
    files = sorted((factory / asset / "vib").glob(f"*.{ext}"))
    assert files and truth["format"] == ext

    r = ingest_one(tmp_path, "sensor", factory / asset / "vib", device=f"acc-{asset}")

    t = r.streams["sensor"]
    assert counts(r).out == truth["samples"] == t.num_rows and not r.quarantine
    ts = t.column("ts_ns").to_numpy()
    uris = t.column("source_uri").to_pylist()
    for f in truth["files"]:
        mine = ts[[u.endswith(f["path"]) for u in uris]]
        assert (mine.size, int(mine[0]), int(mine[-1])) == (
            f["samples"], f["first_ts_ns"], f["last_ts_ns"])  # fmt: skip
    assert r.index["sensor"]["meta"]["sample_rate_hz"] == pytest.approx(
        truth["nominal_rate_hz"], rel=1e-3)  # fmt: skip


# --- memory -------------------------------------------------------------------------------

_PEAK = textwrap.dedent(
    """
    import os, resource, sys, tempfile
    from pathlib import Path
    from connectors.base import SourceContext, SourceItem
    from connectors.sensor import SensorConnector, SensorOptions
    from mmdata.streams import PartSink

    path = sys.argv[1]
    opts = SensorOptions(block_mb=2)
    item = SourceItem(path, os.path.getsize(path))
    sink = PartSink(item, Path(tempfile.mkdtemp()), {}, 1 << 40)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    SensorConnector(SourceContext("a", "d", 0, path, opts)).read(item, sink)
    result = sink.commit()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(result.units_out, (after - before) // 1024)
    """
)


def _peak_mb(path: Path) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True,
                         text=True, check=True, cwd=ROOT)  # fmt: skip
    rows, mb = out.stdout.split()
    return int(rows), int(mb)


def test_a_large_csv_is_read_in_bounded_memory(tmp_path):
    medium, large = tmp_path / "medium.csv", tmp_path / "large.csv"
    wide(n=500_000).write_csv(medium)
    wide(n=2_000_000).write_csv(large)
    extra_mb = (large.stat().st_size - medium.stat().st_size) >> 20  # about 57 MB of text

    medium_rows, medium_mb = _peak_mb(medium)
    large_rows, large_mb = _peak_mb(large)

    assert (medium_rows, large_rows) == (500_000, 2_000_000)
    # Holding the file whole would cost at least the extra text, and its parsed rows on top;
    # streamed in 2 MiB blocks, the peak barely moves (about 10 MB measured).
    assert large_mb - medium_mb < extra_mb / 2, (medium_mb, large_mb, extra_mb)


def test_files_on_s3_are_streamed_like_local_ones(tmp_path, s3_bucket):
    fs, bucket, options = s3_bucket
    df = wide(n=3000)
    fs.pipe(f"{bucket}/vib/acc_1.csv.gz", gzip.compress(df.head(1000).write_csv().encode()))
    pq.write_table(df.tail(2000).to_arrow(), tmp_path / "acc_2.parquet", row_group_size=500)
    fs.put(str(tmp_path / "acc_2.parquet"), f"{bucket}/vib/acc_2.parquet")

    r = ingest_one(tmp_path, "sensor", f"s3://{bucket}/vib/", storage_options=options)

    assert totals(r) == (3000, 3000, 0)
    assert r.streams["sensor"].column("ts_ns").to_pylist() == df["ts_ns"].to_list()
