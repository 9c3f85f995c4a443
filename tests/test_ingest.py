"""The ingest stage: safe listing, item isolation, stream stitching, counts, resume, s3://."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.base import BaseOptions, SourceItem
from connectors.files import list_source_files
from mmdata.config import PipelineConfig
from mmdata.ingest import read_index, run_ingest
from mmdata.quarantine import read_quarantine
from mmdata.rundir import RunDir
from mmdata.stitch import finalize_stream
from mmdata.streams import PartInfo, write_part

from .conftest import ingest_one

S = 1_000_000_000
T0 = 1_772_352_000 * S


def note(ts: str, text: str, **extra) -> str:
    return json.dumps({"ts": ts, "text": text, **extra}, ensure_ascii=False)


def write_notes(path: Path, lines: list[str | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


# --- listing ---------------------------------------------------------------------------


def test_listing_refuses_symlinks_escapes_and_empty_files(tmp_path):
    root = tmp_path / "notes"
    write_notes(root / "a.jsonl", [note("2026-03-01T08:00:00Z", "ok")])
    (root / "empty.jsonl").write_bytes(b"")
    secret = write_notes(tmp_path / "outside" / "secret.jsonl", [note("2026-03-01T08:00:00Z", "x")])
    os.symlink(secret, root / "link.jsonl")
    os.symlink(root / "a.jsonl", root / "inner-link.jsonl")
    entries = list(list_source_files(str(root), BaseOptions(), ("*.jsonl",)))
    items = [e for e in entries if isinstance(e, SourceItem)]
    refused = dict(e for e in entries if not isinstance(e, SourceItem))
    assert [Path(i.uri).name for i in items] == ["a.jsonl"]
    assert refused[str(root / "empty.jsonl")] == "zero-byte file"
    assert "symlink not followed" in refused[str(root / "link.jsonl")]
    followed = list(list_source_files(str(root), BaseOptions(follow_symlinks=True), ("*.jsonl",)))
    reasons = dict(e for e in followed if not isinstance(e, SourceItem))
    assert "outside the source root" in reasons[str(root / "link.jsonl")]
    assert str(root / "inner-link.jsonl") in [e.uri for e in followed if isinstance(e, SourceItem)]


def test_glob_with_dotdot_cannot_leave_the_root(tmp_path):
    write_notes(tmp_path / "outside.jsonl", [note("2026-03-01T08:00:00Z", "x")])
    (tmp_path / "data").mkdir()
    opts = BaseOptions(root=str(tmp_path / "data"))
    entries = list(list_source_files(str(tmp_path / "data" / ".." / "*.jsonl"), opts, ("*",)))
    refused = [e for e in entries if not isinstance(e, SourceItem)]
    assert entries and refused == entries
    assert "outside the source root" in refused[0][1]


def test_listing_sorts_numbered_files_naturally(tmp_path):
    for i in (1, 2, 10):
        write_notes(tmp_path / f"n_{i}.jsonl", [note("2026-03-01T08:00:00Z", str(i))])
    items = [e for e in list_source_files(str(tmp_path), BaseOptions(), ("*.jsonl",))
             if isinstance(e, SourceItem)]  # fmt: skip
    assert [Path(i.uri).name for i in items] == ["n_1.jsonl", "n_2.jsonl", "n_10.jsonl"]


def test_oversized_files_are_refused(tmp_path):
    write_notes(tmp_path / "big.jsonl", [note("2026-03-01T08:00:00Z", "x" * 2_000_000)])
    (entry,) = list(list_source_files(str(tmp_path), BaseOptions(max_file_mb=1), ("*.jsonl",)))
    assert not isinstance(entry, SourceItem)
    assert "exceeds max_file_mb=1" in entry[1]


# --- stream stitching ------------------------------------------------------------------


def part(tmp_path: Path, seq: int, ts: list[int], values: list[float] | None = None) -> PartInfo:
    table = pa.table({
        "ts_ns": pa.array(ts, pa.int64()),
        "locator": [f"row {i + 2}" for i in range(len(ts))],
        "x": pa.array(values if values is not None else [float(t % 1000) for t in ts]),
    })  # fmt: skip
    path = tmp_path / f"p{seq}.arrow"
    write_part(path, table)
    return PartInfo(str(path), f"/data/f{seq}.csv", len(ts), "sensor", {"sha256": "ab"}, seq)


def finalize(tmp_path, parts, jump_s=1):
    out = tmp_path / "stream.parquet"
    stats = finalize_stream(parts, out, {"stream_id": "a.d.s", "device_id": "d"},
                            clock_jump_ns=jump_s * S, row_group_bytes=1 << 20)  # fmt: skip
    return stats, (pq.read_table(out) if out.exists() else None)


def test_stream_rows_carry_ids_segment_and_source_ref(tmp_path):
    stats, table = finalize(tmp_path, [part(tmp_path, 0, [T0, T0 + S])])
    assert table.column_names == ["stream_id", "device_id", "ts_ns", "segment", "x",
                                  "source_uri", "source_locator", "source_sha256"]  # fmt: skip
    row = table.slice(1, 1).to_pylist()[0]
    assert (row["source_uri"], row["source_locator"], row["source_sha256"]) == (
        "/data/f0.csv", "row 3", "ab")  # fmt: skip
    assert stats.rows == 2 and stats.segments == 1 and stats.flags == {}


def test_small_disorder_is_sorted_and_counted(tmp_path):
    ts = [T0, T0 + 2, T0 + 1, T0 + 4, T0 + 3, T0 + 5]
    stats, table = finalize(tmp_path, [part(tmp_path, 0, ts)])
    assert table.column("ts_ns").to_pylist() == sorted(ts)
    assert stats.flags == {"non_monotonic": 2}


def test_backward_clock_jump_starts_a_segment_and_is_not_sorted_away(tmp_path):
    ts = [T0, T0 + S, T0 + 2 * S, T0 - 10 * S, T0 - 9 * S]
    stats, table = finalize(tmp_path, [part(tmp_path, 0, ts)])
    assert table.column("segment").to_pylist() == [0, 0, 0, 1, 1]
    assert table.column("ts_ns").to_pylist() == ts  # each segment keeps its own order
    assert stats.flags == {"clock_jumps": 1} and stats.segments == 2


def test_duplicates_are_quarantined_keeping_the_first(tmp_path):
    stats, table = finalize(tmp_path, [part(tmp_path, 0, [T0, T0, T0 + 1], [1.0, 2.0, 3.0])])
    assert table.column("x").to_pylist() == [1.0, 3.0]
    (rej,) = stats.rejects
    assert rej.locator == "row 3" and rej.error_class == "DuplicateTimestamp"


def test_files_split_by_time_are_stitched_and_boundary_duplicates_caught(tmp_path):
    parts = [part(tmp_path, 0, [T0, T0 + 1]), part(tmp_path, 1, [T0 + 1, T0 + 2]),
             part(tmp_path, 2, [T0 + 3, T0 + 4])]  # fmt: skip
    stats, table = finalize(tmp_path, parts)
    assert table.column("ts_ns").to_pylist() == [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4]
    assert [r.uri for r in stats.rejects] == ["/data/f1.csv"]


def test_overlapping_files_are_merged_in_time_order(tmp_path):
    parts = [part(tmp_path, 0, [T0, T0 + 10, T0 + 20]), part(tmp_path, 1, [T0 + 15, T0 + 30])]
    stats, table = finalize(tmp_path, parts)
    assert table.column("ts_ns").to_pylist() == [T0, T0 + 10, T0 + 15, T0 + 20, T0 + 30]
    assert stats.flags == {"overlapping_items": 1}


def test_a_file_that_starts_far_in_the_past_is_a_clock_jump(tmp_path):
    parts = [part(tmp_path, 0, [T0, T0 + S]), part(tmp_path, 1, [T0 - 60 * S, T0 - 59 * S])]
    stats, table = finalize(tmp_path, parts)
    assert table.column("segment").to_pylist() == [0, 0, 1, 1]
    assert stats.flags == {"clock_jumps": 1}


def test_row_groups_are_sized_and_time_sorted(tmp_path):
    n = 200_000
    ts = (T0 + np.arange(n, dtype=np.int64) * 200_000).tolist()
    out = tmp_path / "s.parquet"
    finalize_stream([part(tmp_path, 0, ts)], out, {"stream_id": "s", "device_id": "d"},
                    clock_jump_ns=S, row_group_bytes=256 * 1024)  # fmt: skip
    meta = pq.read_metadata(out)
    assert meta.num_row_groups > 4
    bounds = [meta.row_group(i).column(2).statistics for i in range(meta.num_row_groups)]
    assert all(a.max < b.min for a, b in itertools.pairwise(bounds))


# --- items are isolated; counts reconcile ------------------------------------------------


def test_bad_lines_are_quarantined_and_good_ones_kept(tmp_path):
    path = write_notes(tmp_path / "n.jsonl", [
        note("2026-03-01T17:00:00+09:00", "田中さんに連絡"),
        b"\xff\xfe not utf-8",
        b"{not json",
        note("2026-03-01T08:00:01", "no zone"),
        note("2026-03-01T08:00:02Z", ""),
        note("2026-03-01T08:00:03Z", "ok", asset="other"),
        note("2026-03-01T08:00:04Z", "last"),
    ])  # fmt: skip
    got = ingest_one(tmp_path, "notes", path)
    assert got.streams["notes"].column("text").to_pylist() == ["田中さんに連絡", "ok", "last"]
    assert got.counts.in_ == 7 and got.counts.quarantined == 4
    locs = {r.locator: r.message for r in got.quarantine}
    assert set(locs) == {"line 2", "line 3", "line 4", "line 5"}
    assert "not valid UTF-8" in locs["line 2"] and "has no time zone" in locs["line 4"]
    assert got.index["notes"]["flags"] == {"mixed_timezones": 1}


def test_a_failing_item_is_quarantined_whole_and_others_still_ingest(tmp_path):
    good = write_notes(tmp_path / "src" / "a.jsonl", [note("2026-03-01T08:00:00Z", "fine")])
    bad = tmp_path / "src" / "b.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage header\n1,2\n")
    got = ingest_one(tmp_path, "notes", good.parent)
    assert got.streams["notes"].num_rows == 1
    (row,) = got.quarantine
    assert row.source_ref == str(bad) and "header" in row.message


def test_parallel_workers_give_identical_streams(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        write_notes(
            src / f"n{i}.jsonl",
            [note(f"2026-03-01T08:0{i}:{s:02d}Z", f"note {i}/{s}") for s in range(30)],
        )
    one = ingest_one(tmp_path, "notes", src, workers=1)
    two = ingest_one(tmp_path, "notes", src, workers=2)
    assert one.streams["notes"].equals(two.streams["notes"])


# --- the stage in a run directory --------------------------------------------------------


def pipeline(tmp_path: Path, notes_dir: Path) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "run_dir": str(tmp_path / "run"),
        "assets": {"press-1": {"sources": [
            {"connector": "notes", "path": str(notes_dir), "device": "mes",
             "filter": {"asset": "press-1"}}]}},
    })  # fmt: skip


def test_stage_writes_index_quarantine_and_manifest_counts(tmp_path):
    src = write_notes(tmp_path / "notes" / "n.jsonl", [
        note("2026-03-01T08:00:00Z", "a", asset="press-1"), b"broken",
        note("2026-03-01T08:00:01Z", "b", asset="press-1")])  # fmt: skip
    cfg = pipeline(tmp_path, src.parent)
    with RunDir.open(cfg.run_dir) as run:
        first = run_ingest(run, cfg)
        again = run_ingest(run, cfg)
    assert not first.skipped and again.skipped
    run_dir = Path(cfg.run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["ingest"]["counts"] == {"in": 3, "out": 2, "quarantined": 1}
    (entry,) = read_index(run_dir / "ingest")
    assert entry["stream_id"] == "press-1.mes.notes" and entry["rows"] == 2
    (q,) = read_quarantine(run_dir / "quarantine" / "ingest.parquet")
    assert q.stage == "ingest" and q.locator == "line 2"
    src.write_text(note("2026-03-01T08:00:00Z", "changed", asset="press-1") + "\n")
    with RunDir.open(cfg.run_dir) as run:
        assert not run_ingest(run, cfg).skipped  # input changed


# --- s3:// against a real S3-compatible server -------------------------------------------


def test_notes_from_s3(tmp_path, s3_bucket):
    fs, bucket, options = s3_bucket
    local = write_notes(tmp_path / "n.jsonl", [note("2026-03-01T08:00:00Z", "from s3"),
                                               b"\xff bad"])  # fmt: skip
    fs.put(str(local), f"{bucket}/plant/notes/n.jsonl")
    fs.pipe(f"{bucket}/plant/notes/empty.jsonl", b"")
    got = ingest_one(tmp_path, "notes", f"s3://{bucket}/plant/notes/", workers=2,
                     storage_options=options)  # fmt: skip
    table = got.streams["notes"]
    assert table.column("text").to_pylist() == ["from s3"]
    assert table.column("source_uri")[0].as_py() == f"s3://{bucket}/plant/notes/n.jsonl"
    import hashlib

    sha = table.column("source_sha256")[0].as_py()
    assert sha == hashlib.sha256(local.read_bytes()).hexdigest()
    assert sorted(r.message for r in got.quarantine) == ["line is not valid UTF-8",
                                                         "zero-byte file"]  # fmt: skip


def test_missing_source_path_is_a_clear_error(tmp_path):
    from mmdata.errors import InputDataError

    with pytest.raises(InputDataError, match="does not exist"):
        ingest_one(tmp_path, "notes", tmp_path / "nope")


def test_overlap_duplicates_are_caught_after_the_merge(tmp_path):
    parts = [part(tmp_path, 0, [T0, T0 + 10, T0 + 20]), part(tmp_path, 1, [T0 + 10, T0 + 30])]
    stats, table = finalize(tmp_path, parts)
    assert table.column("ts_ns").to_pylist() == [T0, T0 + 10, T0 + 20, T0 + 30]
    (rej,) = stats.rejects
    assert rej.uri == "/data/f1.csv" and rej.locator == "row 2"


def test_large_parts_stream_in_batches_with_exact_duplicate_rows_removed(tmp_path):
    n = 150_000  # more than one read batch
    ts = (T0 + np.arange(n, dtype=np.int64) * 1000).tolist()
    ts[100_001] = ts[100_000]
    stats, table = finalize(tmp_path, [part(tmp_path, 0, ts)])
    assert table.num_rows == n - 1
    assert [r.locator for r in stats.rejects] == ["row 100003"]
    assert table.column("ts_ns").to_numpy()[100_000] == ts[100_000]
    assert table.column("ts_ns").to_numpy()[100_001] == ts[100_002]


@pytest.mark.parametrize("connector", ["camera", "video", "audio", "sensor", "mcap"])
def test_every_connector_reads_s3(tmp_path, s3_bucket, connector):
    """Each connector ingests the same files from s3:// as from disk, against a real server."""
    from mmdata.synth import SynthConfig, generate_factory

    from .test_connectors_mcap import write_log

    fs, bucket, storage = s3_bucket
    cam = "mp4" if connector == "video" else "jpeg"
    factory = tmp_path / "f"
    generate_factory(SynthConfig(assets=1, minutes=0.1, camera=cam, sensor_format="parquet",
                                 workers=1), factory)  # fmt: skip
    stamp = "{dev}_%Y%m%dT%H%M%S.%fZ"
    sources: dict[str, tuple[str, dict[str, Any]]] = {
        "camera": ("cam", {"timestamp": {"filename": stamp.format(dev="cam-press-1")}}),
        "video": ("cam", {"start": {"filename": stamp.format(dev="cam-press-1")}}),
        "audio": ("mic", {"start": {"filename": stamp.format(dev="mic-press-1")}}),
        "sensor": ("vib", {"layout": "wide", "time": {"column": "ts_ns", "unit": "ns"}}),
        "mcap": ("mcap", {}),
    }
    folder, options = sources[connector]
    local = factory / "press-1" / folder
    if connector == "mcap":
        local.mkdir(parents=True)
        write_log(local / "log.mcap", seconds=1)
    fs.put(str(local), f"{bucket}/raw/{folder}", recursive=True)
    remote = ingest_one(tmp_path, connector, f"s3://{bucket}/raw/{folder}/",
                        storage_options=storage, **options)  # fmt: skip
    on_disk = ingest_one(tmp_path, connector, local, **options)
    assert remote.quarantine == [] and set(remote.streams) == set(on_disk.streams)
    for suffix, table in remote.streams.items():
        twin = on_disk.streams[suffix]
        assert table.num_rows == twin.num_rows > 0
        assert table.column("ts_ns").equals(twin.column("ts_ns"))
        assert table.column("source_sha256").to_pylist() == twin.column("source_sha256").to_pylist()
        assert all(
            u.startswith(f"s3://{bucket}/raw/") for u in table.column("source_uri").to_pylist()
        )
