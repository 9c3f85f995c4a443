"""Records: the Arrow schema and schemas/record.v1.json agree; tables build from records."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from mmdata.records import RECORD_SCHEMA, hf_features, record_id, records_table

from .conftest import ROOT


def _agrees(arrow: pa.DataType, js: dict) -> bool:
    kinds = set(js["type"]) - {"null"}
    if pa.types.is_struct(arrow):
        names = [arrow.field(i).name for i in range(arrow.num_fields)]
        return (
            kinds == {"object"}
            and list(js["properties"]) == names
            and all(_agrees(arrow.field(i).type, js["properties"][n]) for i, n in enumerate(names))
        )
    if pa.types.is_list(arrow):
        return kinds == {"array"} and _agrees(arrow.value_type, js["items"])
    if pa.types.is_integer(arrow) or pa.types.is_floating(arrow):
        return js.get("x-arrow-type") == str(arrow)
    if pa.types.is_boolean(arrow):
        return kinds == {"boolean"}
    if pa.types.is_binary(arrow):
        return kinds == {"string"} and js.get("contentEncoding") == "base64"
    return kinds == {"string"}


def test_arrow_schema_matches_the_json_schema_field_by_field():
    js = json.loads((ROOT / "schemas" / "record.v1.json").read_text())
    assert list(js["properties"]) == RECORD_SCHEMA.names
    for f in RECORD_SCHEMA:
        assert _agrees(f.type, js["properties"][f.name]), f.name


def test_hf_features_mark_image_and_audio():
    meta = json.loads(RECORD_SCHEMA.metadata[b"huggingface"])
    feats = meta["info"]["features"]
    assert feats["image"] == {"_type": "Image"} and feats["audio"] == {"_type": "Audio"}
    assert feats == hf_features()
    assert feats["window_start_ns"] == {"_type": "Value", "dtype": "int64"}


def test_record_id_is_stable_and_sensitive():
    a = record_id("press-1", 0, 2, "cfg")
    assert a == record_id("press-1", 0, 2, "cfg")
    assert len({a, record_id("press-2", 0, 2, "cfg"), record_id("press-1", 0, 3, "cfg"),
                record_id("press-1", 0, 2, "cfg2")}) == 4  # fmt: skip


def _record(i: int, channels: int, n: int) -> dict:
    return {
        "schema_version": "mmdata.record/1", "record_id": str(i), "asset_id": "a",
        "date": "2026-03-01", "window_start_ns": i, "window_end_ns": i + 1, "span": 0,
        "sensors": [{"stream_id": "a.acc.accel", "device_id": "acc", "sample_rate": 5000.0,
                     "channels": [f"c{k}" for k in range(channels)], "first_ts_ns": i,
                     "n_samples": n,
                     "values": [np.arange(n, dtype=np.float32) + 100 * k
                                for k in range(channels)]}],
        "audio": None, "audio_info": None, "transcript": [], "image": None, "frames": [],
        "text": [],
        "labels": [], "coverage": {"sensors": 1.0, "audio": 0.0, "image": 0.0, "text": 0.0},
        "flags": {"gap": False, "stale": False, "clock_uncertain": False,
                  "exceeds_tolerance": False, "missing_modality": False,
                  "pii_unchecked": False, "scrubbed": False},
        "provenance": [],
    }  # fmt: skip


def test_records_table_keeps_every_channel_at_its_own_length():
    table = records_table([_record(0, 3, 5), _record(1, 2, 0), _record(2, 1, 7)])
    assert table.schema.equals(RECORD_SCHEMA, check_metadata=True)
    sensors = table.column("sensors").to_pylist()
    assert sensors[0][0]["values"][2] == [200.0, 201.0, 202.0, 203.0, 204.0]
    assert sensors[1][0]["values"] == [[], []]
    assert len(sensors[2][0]["values"][0]) == 7
