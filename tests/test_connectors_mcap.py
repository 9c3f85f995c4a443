"""The MCAP connector: robotics / edge-gateway logs into one message stream per topic.

Files are written with the ``mcap`` package's own writer, then damaged (cut short, a chunk
corrupted) where a test needs bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcap.writer import CompressionType, Writer

from connectors.mcap_log import topic_suffix
from tests.conftest import counts, ingest_one, totals

T0 = 1_772_352_000_000_000_000  # 2026-03-01T08:00:00Z
MS = 1_000_000


def write_log(path: Path, *, seconds: int = 2, compression: CompressionType = CompressionType.ZSTD,
              chunk_size: int = 4096) -> dict[str, list[tuple[int, bytes]]]:  # fmt: skip
    """IMU accel (JSON, 100 Hz), temperature (JSON, 5 Hz), a raw-bytes camera trigger (2 Hz).

    Returns what was written per topic: (log_time, payload), in write order.
    """
    written: dict[str, list[tuple[int, bytes]]] = {"/imu/accel": [], "/env/temp": [],
                                                    "/cam/trigger": []}  # fmt: skip
    with path.open("wb") as fh:
        w = Writer(fh, chunk_size=chunk_size, compression=compression)
        w.start("ros2", "test")
        schema = w.register_schema("Reading", "jsonschema", b'{"type": "object"}')
        accel = w.register_channel("/imu/accel", "json", schema)
        temp = w.register_channel("/env/temp", "json", schema)
        trigger = w.register_channel("/cam/trigger", "", 0)
        for k in range(seconds * 100):
            t = T0 + k * 10 * MS
            data = json.dumps({"x": k / 100, "y": -k, "z": 9.81, "frame": "imu"}).encode()
            w.add_message(accel, t, data, t - 1000, sequence=k)
            written["/imu/accel"].append((t, data))
            if k % 20 == 0:
                data = json.dumps({"celsius": 20 + k / 200}).encode()
                w.add_message(temp, t + 1, data, t, sequence=k // 20)
                written["/env/temp"].append((t + 1, data))
            if k % 50 == 0:
                data = bytes([k % 256, 0, 255, 7])
                w.add_message(trigger, t + 2, data, t + 2, sequence=k // 50)
                written["/cam/trigger"].append((t + 2, data))
        w.finish()
    return written


def test_each_topic_becomes_a_stream_with_its_times_payloads_and_fields(tmp_path):
    path = tmp_path / "gw.mcap"
    written = write_log(path)

    r = ingest_one(tmp_path, "mcap", path)

    assert set(r.streams) == {"imu.accel", "env.temp", "cam.trigger"}
    assert totals(r) == (200 + 10 + 4, 214, 0)
    accel = r.streams["imu.accel"]
    assert accel.column("ts_ns").to_pylist() == [t for t, _ in written["/imu/accel"]]
    assert accel.column("payload_json").to_pylist()[3] == written["/imu/accel"][3][1].decode()
    assert accel.column("x").to_pylist()[:3] == [0.0, 0.01, 0.02]
    assert accel.column("y").to_pylist()[:3] == [0.0, -1.0, -2.0]  # ints become float64
    assert "frame" not in accel.column_names  # text fields stay in payload_json only
    assert accel.column("sequence").to_pylist()[:3] == [0, 1, 2]
    assert set(accel.column("topic").to_pylist()) == {"/imu/accel"}
    temp = r.streams["env.temp"]
    assert temp.column("celsius").to_pylist() == [20 + k / 10 for k in range(10)]
    assert r.index["imu.accel"]["meta"] == {
        "topic": "/imu/accel", "message_encoding": "json", "schema_name": "Reading",
        "fields": ["x", "y", "z"],
    }  # fmt: skip
    raw = r.streams["cam.trigger"]
    assert raw.column("payload").to_pylist() == [d for _, d in written["/cam/trigger"]]
    assert raw.column("ts_ns").to_pylist() == [t for t, _ in written["/cam/trigger"]]
    assert set(raw.column("encoding").to_pylist()) == {""}
    assert "payload_json" not in raw.column_names


def test_locators_count_every_message_of_the_file_in_order(tmp_path):
    path = tmp_path / "gw.mcap"
    write_log(path)

    r = ingest_one(tmp_path, "mcap", path)

    locs = r.streams["cam.trigger"].column("source_locator").to_pylist()
    # Message 0 is accel k=0, 1 temp, 2 trigger; then 49 accel, 2 temps, ...: k=50 → 55.
    assert locs[:2] == ["message 2", "message 55"]


def test_publish_time_topic_selection_and_no_flattening(tmp_path):
    path = tmp_path / "gw.mcap"
    written = write_log(path)

    r = ingest_one(tmp_path, "mcap", path, topics=["/imu/accel"], time="publish", flatten=False)

    assert set(r.streams) == {"imu.accel"}
    assert totals(r)[:2] == (200, 200)  # other topics are not this source's
    t = r.streams["imu.accel"]
    assert t.column("ts_ns").to_pylist() == [ts - 1000 for ts, _ in written["/imu/accel"]]
    assert t.column_names == ["stream_id", "device_id", "ts_ns", "segment", "topic",
                              "sequence", "payload_json", "source_uri", "source_locator",
                              "source_sha256"]  # fmt: skip


def test_other_encodings_keep_raw_payload_encoding_and_schema_name(tmp_path):
    path = tmp_path / "robot.mcap"
    with path.open("wb") as fh:
        w = Writer(fh)
        w.start("ros2", "test")
        schema = w.register_schema("sensor_msgs/msg/Imu", "ros2msg", b"float64 x")
        ch = w.register_channel("/imu", "cdr", schema)
        for k in range(3):
            w.add_message(ch, T0 + k, b"\x00\x01" + bytes([k]), T0 + k)
        w.finish()

    r = ingest_one(tmp_path, "mcap", path)

    t = r.streams["imu"]
    assert t.column("payload").to_pylist() == [b"\x00\x01\x00", b"\x00\x01\x01", b"\x00\x01\x02"]
    assert set(t.column("encoding").to_pylist()) == {"cdr"}
    assert set(t.column("schema_name").to_pylist()) == {"sensor_msgs/msg/Imu"}


def test_json_messages_missing_a_field_or_not_json_are_quarantined(tmp_path):
    path = tmp_path / "gw.mcap"
    with path.open("wb") as fh:
        w = Writer(fh)
        w.start("ros2", "test")
        ch = w.register_channel("/pressure", "json", 0)
        payloads = [
            b'{"bar": 1.5, "psi": 21.7}',
            b'{"bar": 1.6}',
            b'{"bar": "high", "psi": 1}',
            b"not json",
            b'\xff{"bar": 1}',
            b'{"bar": 1.7, "psi": 24.6, "extra": 1}',
        ]
        for k, data in enumerate(payloads):
            w.add_message(ch, T0 + k * MS, data, T0 + k * MS)
        w.finish()

    r = ingest_one(tmp_path, "mcap", path)

    t = r.streams["pressure"]
    assert t.column("bar").to_pylist() == [1.5, 1.7]
    assert t.column("psi").to_pylist() == [21.7, 24.6]
    reasons = {q.locator: q.message for q in r.quarantine}
    assert reasons["message 1"] == "topic /pressure: field 'psi' is missing"
    assert reasons["message 2"] == "topic /pressure: field 'bar' is \"high\", not a number"
    assert reasons["message 3"].startswith("topic /pressure: payload is not UTF-8 JSON")
    assert reasons["message 4"].startswith("topic /pressure: payload is not UTF-8 JSON")
    assert totals(r) == (6, 2, 4)


def test_a_truncated_file_keeps_the_messages_before_the_cut(tmp_path):
    full = tmp_path / "full.mcap"
    written = write_log(full)
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])

    r = ingest_one(tmp_path, "mcap", cut)

    kept = r.streams["imu.accel"].column("ts_ns").to_pylist()
    assert 0 < len(kept) < 200
    assert kept == [t for t, _ in written["/imu/accel"]][: len(kept)]
    (damage,) = r.quarantine
    assert damage.locator.startswith("after message ")
    assert "damaged or cut short" in damage.message and "kept" in damage.message
    # Without the summary, the units are what could be read plus the unreadable tail.
    assert counts(r).in_ == counts(r).out + 1


def test_a_file_cut_in_its_summary_loses_no_message(tmp_path):
    full = tmp_path / "full.mcap"
    write_log(full)
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(full.read_bytes()[:-60])  # into the footer / summary section

    r = ingest_one(tmp_path, "mcap", cut)

    assert totals(r) == (214, 214, 0)
    assert r.index["imu.accel"]["flags"] == {"truncated_summary": 1}


def test_a_corrupt_chunk_loses_the_messages_from_there_and_says_how_many(tmp_path):
    full = tmp_path / "full.mcap"
    write_log(full, compression=CompressionType.NONE, chunk_size=2048)
    data = bytearray(full.read_bytes())
    at = data.index(b'"x": 1.0,')  # accel message 100, in a chunk halfway through
    data[at + 6] = ord("7")
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(bytes(data))

    r = ingest_one(tmp_path, "mcap", bad)

    assert counts(r).in_ == 214  # from the intact summary
    (damage,) = r.quarantine
    lost = 214 - counts(r).out
    assert damage.message.startswith(f"{lost} messages after message ")
    assert "crc" in damage.message.lower()
    assert 0 < r.streams["imu.accel"].num_rows <= 100  # up to the damaged chunk


def test_a_file_that_is_not_mcap_is_quarantined_whole(tmp_path):
    path = tmp_path / "notes.mcap"
    path.write_bytes(b"this is not an mcap file at all\n" * 4)

    r = ingest_one(tmp_path, "mcap", path)

    assert r.streams == {}
    (only,) = r.quarantine
    assert only.locator is None and "not a readable MCAP file" in only.message


@pytest.mark.parametrize(
    ("topic", "suffix"),
    [("/imu/accel", "imu.accel"), ("/", "root"), ("robot 1/joint#2", "robot_1.joint_2"),
     ("plain", "plain")],
)  # fmt: skip
def test_topic_names_become_stream_suffixes(topic, suffix):
    assert topic_suffix(topic) == suffix
