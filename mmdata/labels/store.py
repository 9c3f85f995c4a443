"""The labels writer: ``RUN/labels/{labels,resolved}.parquet``, ``agreement.json``,
``rejected.json`` — each written atomically, nothing written outside ``RUN/labels/``.

Every pull or import replaces these four files as a set (the latest import is the labels
state of the run; ``pull`` always brings back every annotation of the project). The build
stage merges ``resolved.parquet`` into the records' ``labels``.

>>> LABEL_SCHEMA.names[:4]
['record_id', 'task_id', 'annotation_id', 'annotator']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmdata import atomic
from mmdata.errors import RunDirError
from mmdata.records import LABEL_TYPE

LABELS_DIR = "labels"
LABELS_FILE = "labels.parquet"
RESOLVED_FILE = "resolved.parquet"
AGREEMENT_FILE = "agreement.json"
REJECTED_FILE = "rejected.json"

#: One row per result item of an annotation (``RUN/labels/labels.parquet``).
LABEL_SCHEMA = pa.schema([
    ("record_id", pa.string()), ("task_id", pa.int64()), ("annotation_id", pa.int64()),
    ("annotator", pa.string()), ("kind", pa.string()), ("name", pa.string()),
    ("value", pa.string()), ("start_ns", pa.int64()), ("end_ns", pa.int64()),
    ("bbox_x0", pa.int32()), ("bbox_y0", pa.int32()), ("bbox_x1", pa.int32()),
    ("bbox_y1", pa.int32()), ("lead_time_s", pa.float64()), ("created_at", pa.string()),
    ("updated_at", pa.string()), ("source", pa.string()),
])  # fmt: skip

#: One row per record and label decision, in the record ``labels`` struct's shape, plus
#: ``record_id`` (``RUN/labels/resolved.parquet``).
RESOLVED_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string()),
        *(LABEL_TYPE.field(i) for i in range(LABEL_TYPE.num_fields)),
    ]
)


def labels_dir(run_dir: Path) -> Path:
    """``RUN/labels``, refused if it resolves outside the run directory (a stray symlink).

    >>> import tempfile, pathlib
    >>> labels_dir(pathlib.Path(tempfile.mkdtemp())).name
    'labels'
    """
    root = Path(run_dir).resolve()
    out = root / LABELS_DIR
    if out.is_symlink() or (out.exists() and not out.resolve().is_relative_to(root)):
        raise RunDirError(f"{out} is a link; the labels of a run must live inside it",
                          hint=f"remove the link {out}")  # fmt: skip
    return out


def write_labels(run_dir: Path, rows: Sequence[Mapping[str, Any]],
                 resolved: Sequence[Mapping[str, Any]], agreement: Mapping[str, Any],
                 rejected: Mapping[str, Any]) -> list[Path]:  # fmt: skip
    """Write the four label files atomically under ``RUN/labels``; return their paths.

    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> [p.name for p in write_labels(run, [], [], {}, {})]
    ['labels.parquet', 'resolved.parquet', 'agreement.json', 'rejected.json']
    >>> sorted(p.name for p in run.iterdir())
    ['labels']
    """
    out = labels_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / LABELS_FILE, out / RESOLVED_FILE, out / AGREEMENT_FILE, out / REJECTED_FILE]
    atomic.write_parquet(paths[0], pa.Table.from_pylist(list(rows), schema=LABEL_SCHEMA))
    atomic.write_parquet(paths[1], pa.Table.from_pylist(list(resolved), schema=RESOLVED_SCHEMA))
    atomic.write_json(paths[2], dict(agreement))
    atomic.write_json(paths[3], dict(rejected))
    return paths


def read_resolved(run_dir: Path) -> pa.Table | None:
    """``RUN/labels/resolved.parquet`` (None when there is none), for the build stage.

    >>> import tempfile, pathlib
    >>> read_resolved(pathlib.Path(tempfile.mkdtemp())) is None
    True
    """
    path = Path(run_dir) / LABELS_DIR / RESOLVED_FILE
    return pq.read_table(path, schema=RESOLVED_SCHEMA) if path.exists() else None
