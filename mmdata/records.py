"""Aligned multimodal records: the Arrow schema, its JSON Schema, and HF features metadata.

One record per window. Every modality keeps its own sample rate (nothing is resampled):

* ``sensors``: one entry per sensor stream — channel names, nominal sample rate, the
  reference time of the first sample, and one list of values per channel;
* ``audio``: Hugging Face ``Audio`` convention ``{bytes, path}`` (a WAV of the window's
  samples, channels kept) plus ``audio_info`` (rate, channels, frames, first sample time);
* ``image``: Hugging Face ``Image`` convention ``{bytes, path}`` of the window's primary
  frame, plus ``frames``: every frame matched to the window with its reference time and
  staleness;
* ``text``: operator notes matched to the window; ``labels``: annotations;
* ``coverage``: fraction of the window each modality covers; ``flags``; ``provenance``.

The Parquet schema carries ``{"huggingface": {"info": {"features": ...}}}`` metadata so
``datasets.load_dataset("parquet", ...)`` decodes ``image`` and ``audio``.

>>> RECORD_SCHEMA.field("window_start_ns").type
DataType(int64)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RECORD_SCHEMA_VERSION = "mmdata.record/1"

_HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_HF_AUDIO = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

SENSOR_TYPE = pa.struct([
    ("stream_id", pa.string()), ("device_id", pa.string()), ("sample_rate", pa.float64()),
    ("channels", pa.list_(pa.string())), ("first_ts_ns", pa.int64()),
    ("n_samples", pa.int32()), ("values", pa.list_(pa.list_(pa.float32()))),
])  # fmt: skip
AUDIO_INFO_TYPE = pa.struct([
    ("stream_id", pa.string()), ("device_id", pa.string()), ("sample_rate", pa.int32()),
    ("channels", pa.int16()), ("n_frames", pa.int32()), ("first_ts_ns", pa.int64()),
])  # fmt: skip
FRAME_TYPE = pa.struct([
    ("stream_id", pa.string()), ("ts_ns", pa.int64()), ("device_ts_ns", pa.int64()),
    ("staleness_ns", pa.int64()), ("path", pa.string()), ("bytes", pa.binary()),
    ("width", pa.int32()), ("height", pa.int32()),
])  # fmt: skip
TEXT_TYPE = pa.struct([
    ("stream_id", pa.string()), ("ts_ns", pa.int64()), ("staleness_ns", pa.int64()),
    ("note_id", pa.string()), ("text", pa.string()), ("lang", pa.string()),
    ("kind", pa.string()),
])  # fmt: skip
LABEL_TYPE = pa.struct([
    ("name", pa.string()), ("value", pa.string()), ("start_ns", pa.int64()),
    ("end_ns", pa.int64()), ("source", pa.string()), ("annotator", pa.string()),
])  # fmt: skip
COVERAGE_TYPE = pa.struct([
    ("sensors", pa.float32()), ("audio", pa.float32()), ("image", pa.float32()),
    ("text", pa.float32()),
])  # fmt: skip
FLAGS_TYPE = pa.struct([
    ("gap", pa.bool_()), ("stale", pa.bool_()), ("clock_uncertain", pa.bool_()),
    ("exceeds_tolerance", pa.bool_()), ("missing_modality", pa.bool_()),
    ("pii_unchecked", pa.bool_()), ("scrubbed", pa.bool_()),
])  # fmt: skip
WORD_TYPE = pa.struct([("word", pa.string()), ("t0_ns", pa.int64()), ("t1_ns", pa.int64())])
PROVENANCE_TYPE = pa.struct([
    ("stream_id", pa.string()), ("uri", pa.string()), ("locator", pa.string()),
    ("sha256", pa.string()),
])  # fmt: skip

_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("schema_version", pa.string(), "Record format version."),
    ("record_id", pa.string(), "Stable hash of asset, window bounds and record-shaping config."),
    ("asset_id", pa.string(), "Asset the window belongs to."),
    ("date", pa.string(), "UTC date of the window start (partition key)."),
    ("window_start_ns", pa.int64(), "Window start, reference time, ns since the epoch."),
    ("window_end_ns", pa.int64(), "Window end (exclusive), reference time."),
    ("span", pa.int32(), "Continuous span of the asset (a new one after a gap or clock jump)."),
    ("sensors", pa.list_(SENSOR_TYPE), "Sensor streams at their own rates."),
    ("audio", _HF_AUDIO, "WAV of the window's audio (Hugging Face Audio convention)."),
    ("audio_info", AUDIO_INFO_TYPE, "Rate, channels and first-sample time of `audio`."),
    ("transcript", pa.list_(WORD_TYPE), "Word-timed transcript of `audio` (times from its start)."),
    ("image", _HF_IMAGE, "Primary frame (Hugging Face Image convention: bytes or path)."),
    ("frames", pa.list_(FRAME_TYPE), "Every frame matched to the window."),
    ("text", pa.list_(TEXT_TYPE), "Notes matched to the window."),
    ("labels", pa.list_(LABEL_TYPE), "Annotations of the window."),
    ("coverage", COVERAGE_TYPE, "Fraction of the window each modality covers."),
    ("flags", FLAGS_TYPE, "Quality flags."),
    ("provenance", pa.list_(PROVENANCE_TYPE), "Sources of every value, with ranges."),
]

#: Hugging Face features of the record columns, stored in the Parquet schema metadata.
HF_FEATURES: dict[str, Any] = {
    "image": {"_type": "Image"},
    "audio": {"_type": "Audio"},
}


def _hf_value(t: pa.DataType) -> Any:
    if pa.types.is_struct(t):
        return {t.field(i).name: _hf_value(t.field(i).type) for i in range(t.num_fields)}
    if pa.types.is_list(t):
        return {"_type": "List", "feature": _hf_value(t.value_type)}
    names = {pa.int64(): "int64", pa.int32(): "int32", pa.int16(): "int16",
             pa.float32(): "float32", pa.float64(): "float64", pa.bool_(): "bool",
             pa.string(): "string", pa.binary(): "binary"}  # fmt: skip
    return {"_type": "Value", "dtype": names[t]}


def hf_features() -> dict[str, Any]:
    """The ``datasets.Features`` dict of a record, as stored in Parquet metadata."""
    return {name: HF_FEATURES.get(name) or _hf_value(t) for name, t, _ in _FIELDS}


RECORD_SCHEMA = pa.schema(
    [pa.field(name, t, metadata={"description": doc}) for name, t, doc in _FIELDS],
    metadata={
        b"huggingface": json.dumps({"info": {"features": hf_features()}}).encode(),
        b"mmdata": json.dumps({"schema_version": RECORD_SCHEMA_VERSION}).encode(),
    },
)


def record_id(asset_id: str, start_ns: int, end_ns: int, shaping_hash: str) -> str:
    """Stable id of a window: same asset, bounds and record-shaping config → same id.

    >>> a = record_id("press-1", 0, 2_000_000_000, "abc")
    >>> a == record_id("press-1", 0, 2_000_000_000, "abc"), len(a)
    (True, 32)
    """
    key = f"{asset_id}\0{start_ns}\0{end_ns}\0{shaping_hash}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def json_type(t: pa.DataType) -> dict[str, Any]:
    """The JSON Schema of an Arrow type (nullable), for the schemas/ files."""
    if pa.types.is_struct(t):
        return {
            "type": ["object", "null"],
            "properties": {t.field(i).name: json_type(t.field(i).type)
                           for i in range(t.num_fields)},
            "additionalProperties": False,
        }  # fmt: skip
    if pa.types.is_list(t):
        return {"type": ["array", "null"], "items": json_type(t.value_type)}
    if pa.types.is_integer(t):
        return {"type": ["integer", "null"], "x-arrow-type": str(t)}
    if pa.types.is_floating(t):
        return {"type": ["number", "null"], "x-arrow-type": str(t)}
    if pa.types.is_boolean(t):
        return {"type": ["boolean", "null"]}
    if pa.types.is_binary(t):
        return {"type": ["string", "null"], "contentEncoding": "base64"}
    return {"type": ["string", "null"]}


def record_json_schema() -> dict[str, Any]:
    """``schemas/record.v1.json``: the record as JSON Schema, derived from the Arrow schema."""
    props = {}
    for name, t, doc in _FIELDS:
        entry = json_type(t)
        entry["description"] = doc
        props[name] = entry
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://mmdata.dev/schemas/record.v1.json",
        "title": "Record",
        "description": "One aligned multimodal window (Parquet row under RUN/records/).",
        "type": "object",
        "properties": props,
        "required": ["schema_version", "record_id", "asset_id", "window_start_ns",
                     "window_end_ns"],
        "additionalProperties": False,
    }  # fmt: skip


_NO_SENSORS = pa.schema([f for f in RECORD_SCHEMA if f.name != "sensors"])
_SENSORS_AT = RECORD_SCHEMA.get_field_index("sensors")


def records_table(records: list[dict[str, Any]]) -> pa.Table:
    """Records (``sensors[*].values`` as numpy arrays) → an Arrow table of RECORD_SCHEMA.

    Sensor values are assembled from numpy buffers with offsets, never as Python floats.
    """
    rest = pa.Table.from_pylist(
        [{k: v for k, v in r.items() if k != "sensors"} for r in records], schema=_NO_SENSORS
    )
    entries = [e for r in records for e in r["sensors"]]
    outer = np.cumsum([0] + [len(r["sensors"]) for r in records], dtype=np.int32)
    middle = np.cumsum([0] + [len(e["values"]) for e in entries], dtype=np.int32)
    arrays = [v for e in entries for v in e["values"]]
    inner = np.cumsum([0] + [a.size for a in arrays], dtype=np.int64)  # < 2**31 per group
    flat = np.concatenate(arrays).astype(np.float32) if arrays else np.zeros(0, np.float32)
    values = pa.ListArray.from_arrays(
        pa.array(middle), pa.ListArray.from_arrays(pa.array(inner.astype(np.int32)), pa.array(flat))
    )
    field_types = {f.name: f.type for f in RECORD_SCHEMA.field("sensors").type.value_type}
    cols = {
        name: pa.array([e[name] for e in entries], field_types[name])
        for name in ("stream_id", "device_id", "sample_rate", "channels", "first_ts_ns",
                     "n_samples")
    }  # fmt: skip
    cols["values"] = values
    struct = pa.StructArray.from_arrays(list(cols.values()), fields=list(
        RECORD_SCHEMA.field("sensors").type.value_type))  # fmt: skip
    sensors = pa.ListArray.from_arrays(pa.array(outer), struct)
    return rest.add_column(
        _SENSORS_AT, RECORD_SCHEMA.field("sensors"), sensors
    ).replace_schema_metadata(RECORD_SCHEMA.metadata)


class RecordWriter:
    """Writes records to ``asset_id=<a>/date=<d>/part-NNNNN.parquet``, row groups by count."""

    def __init__(self, root: Path, records_per_group: int, records_per_file: int = 4096,
                 prefix: str = "part-00000") -> None:  # fmt: skip
        self.root = root
        self.prefix = prefix
        self.per_group = records_per_group
        self.per_file = records_per_file
        self.buffer: list[dict[str, Any]] = []
        self.writer: pq.ParquetWriter | None = None
        self.key: tuple[str, str] | None = None
        self.in_file = 0
        self.parts: dict[tuple[str, str], int] = {}
        self.files: list[str] = []

    def add(self, rec: dict[str, Any]) -> None:
        key = (rec["asset_id"], rec["date"])
        if key != self.key or self.in_file >= self.per_file:
            self._roll(key)
        self.buffer.append(rec)
        self.in_file += 1
        if len(self.buffer) >= self.per_group:
            self._flush()

    def _roll(self, key: tuple[str, str]) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
        n = self.parts.get(key, 0)
        self.parts[key] = n + 1
        name = self.prefix if n == 0 else f"{self.prefix}-{n}"
        rel = f"asset_id={key[0]}/date={key[1]}/{name}.parquet"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(path, RECORD_SCHEMA, compression="zstd",
                                       write_statistics=["window_start_ns", "window_end_ns",
                                                         "asset_id", "record_id"])  # fmt: skip
        self.files.append(rel)
        self.key, self.in_file = key, 0

    def _flush(self) -> None:
        if self.buffer and self.writer is not None:
            self.writer.write_table(records_table(self.buffer))
        self.buffer = []

    def close(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
