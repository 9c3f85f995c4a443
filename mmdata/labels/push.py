"""``labels push``: windows out to Label Studio as tasks, one per record, re-push updates.

For every record of ``RUN/scrubbed`` (or ``RUN/records`` with ``allow_unscrubbed``), in
(asset, window start, record id) order, the task ``data`` is (see ``mmdata.labels.xml`` for
the labeling config it renders in):

* ``record_id`` (the stable external id: a re-push finds the task by it and updates it in
  place, or leaves it alone when nothing changed), ``asset_id``, ``window_start_ns`` and
  ``window_end_ns`` as strings (JSON numbers lose int64 precision in the browser),
  ``window_s`` (display only);
* ``image``: the primary frame, inline as a ``data:`` URI up to ``labels.inline_image_max_bytes``,
  else served from ``RUN/labels/media/<record_id>/frame.<ext>``; ``image_width``/``image_height``;
* ``vibration``: ``RUN/labels/media/<record_id>/vibration.csv``, header ``t,<col>...``, ``t`` in
  seconds from the window start (9 decimals: the mapping back is
  ``window_start_ns + round(t * 1e9)``), one column ``<stream>__<channel>`` per channel
  (the stream's last name part; the device is prepended when two streams share it). Several
  streams at different rates are shown on the densest stream's time grid (the others are
  linearly interpolated; display only, the labels map back through ``t`` alone). Every CSV
  carries every column of the project; a record without that stream leaves it empty;
* ``audio``: ``RUN/labels/media/<record_id>/audio.wav`` (the record's WAV), with
  ``audio_first_ts_ns`` (string): the reference time of its first sample.

A modality a record lacks is an empty string (Label Studio requires every key of the
config). Media are served by the server's local-files storage: the project gets a
local-files import storage on ``RUN/labels/media`` (never synced) and the task URLs are
``/data/local-files/?d=<path relative to the server's document root>``; the document root
is ``document_root`` or ``$LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` (the server's own
setting: both must name the same folder, and the run dir must be inside it).

**Pre-annotations** (``predictions=RUN/eval/predictions.parquet``): the evaluated model's
answers, joined to records through ``RUN/dataset/samples.parquet`` (``sample_id`` →
``record_id``), become Label Studio *predictions* (not annotations) with
``model_version = "mmdata-eval-<hash of the file>"``: ``defect_class`` answers as the
``defect`` choice, ``anomaly_time`` answers as an ``anomaly`` range. A re-push keeps an
identical prediction and replaces older ``mmdata-eval-*`` ones.

``RUN/labels/push.json`` records what was pushed (never the token).

>>> vibration_csv([], 0)[0]
b''
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import os
import re
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from mmdata import atomic
from mmdata.config import LabelsConfig
from mmdata.errors import ConfigError, InputDataError, UsageError
from mmdata.labels import xml as lx
from mmdata.labels.client import LabelStudioClient, connect
from mmdata.rundir import RunDir

MEDIA_DIR = Path("labels") / "media"
PUSH_REPORT = Path("labels") / "push.json"
MODEL_PREFIX = "mmdata-eval-"
_RECORD_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,127}")
_COLUMNS = ["record_id", "asset_id", "window_start_ns", "window_end_ns", "sensors", "audio",
            "audio_info", "image"]  # fmt: skip
_BATCH = 32


@dataclass
class PushReport:
    """What one push did. ``skipped`` lists ``(record_id, reason)`` of records not pushed."""

    project: str
    project_id: int
    url: str
    source: str
    label_config: str
    config_status: str  # created | updated | unchanged
    tasks_created: int = 0
    tasks_updated: int = 0
    tasks_unchanged: int = 0
    predictions_created: int = 0
    predictions_kept: int = 0
    media_files: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    predictions_skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def tasks(self) -> int:
        """Tasks this push covers (created + updated + unchanged)."""
        return self.tasks_created + self.tasks_updated + self.tasks_unchanged

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``push.json``); deterministic, no token, no wall clock."""
        doc = asdict(self)
        doc["tasks"] = self.tasks
        doc["label_config_sha256"] = hashlib.sha256(self.label_config.encode()).hexdigest()
        del doc["label_config"]
        return doc


# -- records ------------------------------------------------------------------------------


def records_source(run_dir: Path, allow_unscrubbed: bool = False) -> Path:
    """``RUN/scrubbed``, or ``RUN/records`` when allowed and nothing is scrubbed.

    >>> records_source(Path("/nonexistent"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mmdata.errors.UsageError: no scrubbed records in '/nonexistent/scrubbed': only scrubbed ...
      fix: run `mmdata scrub` first, or pass --allow-unscrubbed to push RUN/records as they are
    """
    scrubbed = run_dir / "scrubbed"
    if any(scrubbed.glob("asset_id=*/date=*/*.parquet")):
        return scrubbed
    records = run_dir / "records"
    if allow_unscrubbed and any(records.glob("asset_id=*/date=*/*.parquet")):
        return records
    if allow_unscrubbed:
        raise UsageError(f"no records in {str(scrubbed)!r} or {str(records)!r}",
                         hint="run `mmdata align` (and `mmdata scrub`) first")  # fmt: skip
    raise UsageError(
        f"no scrubbed records in {str(scrubbed)!r}: only scrubbed records may be pushed to "
        "Label Studio",
        hint="run `mmdata scrub` first, or pass --allow-unscrubbed to push RUN/records as they are",
    )


def iter_records(source: Path, columns: Sequence[str] = _COLUMNS) -> Iterator[dict[str, Any]]:
    """The records' ``columns``, file by file (asset, date, part), a small batch at a time.

    The aligner writes each file in window order, so this is (asset, time) order.
    """
    for f in sorted(source.glob("asset_id=*/date=*/*.parquet")):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=_BATCH, columns=list(columns)):
            yield from batch.to_pylist()


def _stream_names(sensors: Sequence[Mapping[str, Any]]) -> list[str]:
    short = [str(s["stream_id"]).split(".")[-1] for s in sensors]
    return [f"{s['device_id']}__{n}" if short.count(n) > 1 else n
            for s, n in zip(sensors, short, strict=True)]  # fmt: skip


def sensor_columns(sensors: Sequence[Mapping[str, Any]]) -> list[str]:
    """The CSV columns of one record's sensors.

    >>> sensor_columns([{"stream_id": "a.acc-1.accel", "device_id": "acc-1",
    ...                  "channels": ["ax", "ay"]}])
    ['accel__ax', 'accel__ay']
    """
    return [lx.column_name(name, ch) for s, name in zip(sensors, _stream_names(sensors),
            strict=True) for ch in s["channels"]]  # fmt: skip


def vibration_csv(sensors: Sequence[Mapping[str, Any]], window_start_ns: int,
                  columns: Sequence[str] = ()) -> tuple[bytes, list[str]]:  # fmt: skip
    """The vibration CSV of one record (``b""`` without sensors) and its columns.

    >>> s = [{"stream_id": "a.acc.accel", "device_id": "acc", "channels": ["ax"],
    ...       "sample_rate": 2.0, "first_ts_ns": 10**9, "values": [[0.5, -1.0]]}]
    >>> print(vibration_csv(s, 0)[0].decode())
    t,accel__ax
    1.000000000,0.5
    1.500000000,-1
    <BLANKLINE>
    """
    usable = [s for s in sensors if s["values"] and len(s["values"][0]) > 0]
    if not usable:
        return b"", []
    own = sensor_columns(usable)
    cols = list(columns) or own
    grid_src = max(usable, key=lambda s: len(s["values"][0]))

    def times(s: Mapping[str, Any]) -> np.ndarray:  # ns from the window start, exact
        steps = np.round(np.arange(len(s["values"][0])) * (1e9 / float(s["sample_rate"])))
        return (int(s["first_ts_ns"]) - int(window_start_ns)) + steps.astype(np.int64)

    grid = times(grid_src)
    table: dict[str, np.ndarray] = {}
    names = iter(own)
    for s in usable:
        ts = times(s)
        for ch in s["values"]:
            v = np.asarray(ch, dtype=np.float64)
            table[next(names)] = v if s is grid_src else np.interp(grid, ts, v)
    buf = io.StringIO()
    buf.write(",".join([lx.TIME_COLUMN, *cols]) + "\n")
    t = grid / 1e9
    cells = [[f"{x:.9f}" for x in t]]
    for c in cols:
        cells.append([f"{x:.7g}" for x in table[c]] if c in table else [""] * len(grid))
    for row in zip(*cells, strict=True):
        buf.write(",".join(row) + "\n")
    return buf.getvalue().encode("ascii"), own


# -- tasks ---------------------------------------------------------------------------------


def _local_url(path: Path, document_root: Path) -> str:
    rel = path.relative_to(document_root).as_posix()
    return "/data/local-files/?d=" + urllib.parse.quote(rel, safe="/")


def _image(rec: Mapping[str, Any]) -> tuple[bytes, str, int, int] | None:
    data = (rec.get("image") or {}).get("bytes")
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = (im.format or "").lower(), im.size
    except (OSError, ValueError) as err:
        raise InputDataError(f"the primary frame is not a readable image: {err}") from None
    ext = {"jpeg": "jpg", "png": "png", "webp": "webp"}.get(fmt)
    if ext is None:
        raise InputDataError(f"the primary frame is a {fmt or 'unknown'} image; expected JPEG/PNG")
    return bytes(data), ext, int(w), int(h)


@dataclass
class _Ctx:
    config: LabelsConfig
    media: Path
    document_root: Path
    modalities: lx.Modalities
    files: int = 0

    def write(self, rid: str, name: str, data: bytes) -> str:
        path = self.media / rid / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != data:
            atomic.write_bytes(path, data)
        self.files += 1
        return _local_url(path, self.document_root)


def task_data(rec: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any]:
    """The Label Studio ``data`` of one record; its media written under ``ctx.media``."""
    rid = str(rec["record_id"])
    if not _RECORD_ID.fullmatch(rid):
        raise InputDataError(f"record_id {rid!r} cannot name a media folder")
    start, end = int(rec["window_start_ns"]), int(rec["window_end_ns"])
    data: dict[str, Any] = {
        "record_id": rid, "asset_id": str(rec["asset_id"]),
        "window_start_ns": str(start), "window_end_ns": str(end),
        "window_s": round((end - start) / 1e9, 9),
    }  # fmt: skip
    mods = ctx.modalities
    if mods.image:
        img = _image(rec)
        data.update(image="", image_width=0, image_height=0)
        if img is not None:
            raw, ext, w, h = img
            if len(raw) <= ctx.config.inline_image_max_bytes:
                mime = "jpeg" if ext == "jpg" else ext
                url = f"data:image/{mime};base64," + base64.b64encode(raw).decode("ascii")
            else:
                url = ctx.write(rid, f"frame.{ext}", raw)
            data.update(image=url, image_width=w, image_height=h)
    if mods.channels:
        csv, _ = vibration_csv(rec.get("sensors") or [], start, mods.channels)
        data["vibration"] = ctx.write(rid, "vibration.csv", csv) if csv else ""
    if mods.audio:
        wav = (rec.get("audio") or {}).get("bytes")
        info = rec.get("audio_info") or {}
        data["audio"] = ctx.write(rid, "audio.wav", bytes(wav)) if wav else ""
        first = info.get("first_ts_ns")
        data["audio_first_ts_ns"] = str(int(first)) if wav and first is not None else ""
    return data


def _any_bytes(column: Any) -> bool:
    return bool(pc.sum(pc.binary_length(column.field("bytes"))).as_py() or 0)


def scan_modalities(source: Path) -> lx.Modalities:
    """Which modalities any record has, and the union of vibration columns (first-seen order).

    Reads names and sizes only (Arrow compute), never the sample values.
    """
    image = audio = False
    cols: dict[str, None] = {}
    for f in sorted(source.glob("asset_id=*/date=*/*.parquet")):
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=256, columns=["sensors", "audio", "image"]):
            image = image or _any_bytes(batch.column("image"))
            audio = audio or _any_bytes(batch.column("audio"))
            sensors = batch.column("sensors")
            flat = sensors.flatten()
            meta = {k: flat.field(k).to_pylist()
                    for k in ("stream_id", "device_id", "channels", "n_samples")}  # fmt: skip
            offsets = sensors.offsets.to_pylist()
            for a, b in itertools.pairwise(offsets):
                usable = [{k: meta[k][i] for k in meta} for i in range(a, b)
                          if meta["n_samples"][i]]  # fmt: skip
                cols.update(dict.fromkeys(sensor_columns(usable)))
    return lx.Modalities(image=image, channels=tuple(cols), audio=audio)


# -- predictions ----------------------------------------------------------------------------


Predictions = dict[str, list[dict[str, Any]]]


def load_predictions(path: Path, run_dir: Path, config: LabelsConfig, mods: lx.Modalities
                     ) -> tuple[Predictions, str, list[tuple[str, str]]]:  # fmt: skip
    """Prediction results by record id, the model version, and the skipped answers' reasons."""
    samples_path = run_dir / "dataset" / "samples.parquet"
    try:
        preds = pq.read_table(path, columns=["sample_id", "task", "parsed"]).to_pylist()
        samples = pq.read_table(samples_path, columns=["sample_id", "record_id"]).to_pylist()
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"cannot read predictions {str(path)!r} with {str(samples_path)!r}: "
                         f"{err}", hint="run `mmdata build` and `mmdata eval` first"
                         ) from None  # fmt: skip
    record_of = {s["sample_id"]: s["record_id"] for s in samples}
    version = MODEL_PREFIX + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    out: dict[str, list[dict[str, Any]]] = {}
    skipped: list[tuple[str, str]] = []
    to_window = mods.objects[0]
    for p in sorted(preds, key=lambda p: (str(p["sample_id"]), str(p["task"]))):
        rid = record_of.get(p["sample_id"])
        try:
            parsed = json.loads(p["parsed"]) if p["parsed"] else None
        except ValueError:
            skipped.append((str(rid or p["sample_id"]), "the parsed answer is not JSON"))
            continue
        if rid is None:
            skipped.append((str(p["sample_id"]), "sample not in RUN/dataset/samples.parquet"))
        elif p["task"] == "defect_class" and isinstance(parsed, str):
            if parsed not in config.choices:
                skipped.append((rid, f"class {parsed!r} is not in labels.choices"))
                continue
            out.setdefault(rid, []).append({
                "from_name": lx.DEFECT, "to_name": to_window, "type": "choices",
                "value": {"choices": [parsed]}})  # fmt: skip
        elif p["task"] == "anomaly_time" and isinstance(parsed, list) and mods.channels:
            if not config.ranges:
                skipped.append((rid, "labels.ranges is empty"))
                continue
            try:
                start, end = (float(x) for x in parsed)
            except (TypeError, ValueError):
                skipped.append((rid, f"anomaly_time answer {parsed!r} is not [start_s, end_s]"))
                continue
            out.setdefault(rid, []).append({
                "from_name": lx.ANOMALY, "to_name": lx.VIBRATION, "type": "timeserieslabels",
                "value": {"start": start, "end": end, "instant": False,
                          "timeserieslabels": [config.ranges[0]]}})  # fmt: skip
    return out, version, skipped


def _sync_predictions(client: LabelStudioClient, task_id: int, result: list[dict[str, Any]],
                      version: str, report: PushReport) -> None:  # fmt: skip
    keep = False
    for old in client.predictions(task_id):
        mv = str(old.get("model_version") or "")
        if mv == version and old.get("result") == result and not keep:
            keep = True
        elif mv.startswith(MODEL_PREFIX):
            client.delete_prediction(int(old["id"]))
    if keep:
        report.predictions_kept += 1
    else:
        client.create_prediction(task_id, result, model_version=version)
        report.predictions_created += 1


# -- push ----------------------------------------------------------------------------------


def _document_root(document_root: Path | None, media: Path) -> Path:
    root = document_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    if not root:
        raise UsageError(
            "the Label Studio server's local-files document root is not known",
            hint="set LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT to the folder the server uses "
            "(the server must see the run dir below it)",
        )
    root_path = Path(root).resolve()
    if root_path not in media.resolve().parents:
        raise ConfigError("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "document root", str(root),
                          f"a folder containing {str(media.resolve())!r}")  # fmt: skip
    return root_path


def push_records(run_dir: Path, config: LabelsConfig, project: str, *,
                 allow_unscrubbed: bool = False, predictions: Path | None = None,
                 document_root: Path | None = None, environ: Mapping[str, str] | None = None,
                 ) -> PushReport:  # fmt: skip
    """Create or update ``project`` and one task per record of ``run_dir``; see module doc.

    Holds the run directory's lock while it writes ``RUN/labels/media`` and ``push.json``.
    ``environ`` is where the token variable is looked up (default ``os.environ``).
    """
    run_dir = Path(run_dir)
    source = records_source(run_dir, allow_unscrubbed)
    with RunDir.open(run_dir) as run:
        media = run.root / MEDIA_DIR
        media.mkdir(parents=True, exist_ok=True)
        client = connect(config, environ)  # a bad token or URL fails before any work
        mods = scan_modalities(source)
        xml = lx.label_config(config, mods)
        ctx = _Ctx(config, media.resolve(), _document_root(document_root, media), mods)
        proj, status = client.ensure_project(project, xml)
        pid = int(proj["id"])
        report = PushReport(project, pid, config.url, source.name, xml, status)
        preds: dict[str, list[dict[str, Any]]] = {}
        version = ""
        if predictions is not None:
            preds, version, report.predictions_skipped = load_predictions(
                Path(predictions), run.root, config, mods)  # fmt: skip
        client.ensure_local_storage(pid, ctx.media, f"mmdata media ({run.root.name})")
        existing = client.tasks_by_record(pid)
        new: list[dict[str, Any]] = []
        for rec in iter_records(source):
            rid = str(rec["record_id"])
            try:
                data = task_data(rec, ctx)
            except InputDataError as err:
                report.skipped.append((rid, err.message))
                continue
            task = existing.get(rid)
            if task is None:
                item: dict[str, Any] = {"data": data}
                if rid in preds:
                    item["predictions"] = [{"model_version": version, "result": preds[rid]}]
                    report.predictions_created += 1
                new.append(item)
                continue
            old = task.get("data") or {}
            if any(old.get(k) != v for k, v in data.items()) or set(old) - set(data):
                client.update_task(int(task["id"]), data)
                report.tasks_updated += 1
            else:
                report.tasks_unchanged += 1
            if rid in preds:
                _sync_predictions(client, int(task["id"]), preds[rid], version, report)
        report.tasks_created = len(client.import_tasks(pid, new)) if new else 0
        report.media_files = ctx.files
        atomic.write_json(run.root / PUSH_REPORT, report.as_dict())
    return report
