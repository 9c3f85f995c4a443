"""Label Studio exports → label rows on records, with reference-time ns and frame pixels.

Both export formats are read, item by item (an item is one *result*: one choice, one
time range, one audio region or one box of one annotation; an annotation submitted without
any result is one item too — "nothing here" counts for agreement):

* **JSON** — a list of tasks ``{id, data, annotations: [{id, completed_by, lead_time,
  created_at, updated_at, was_cancelled, result: [{from_name, type, value, ...}]}],
  predictions}``. Cancelled annotations are skipped; predictions are skipped unless
  ``ImportOptions.include_predictions`` (then each is an annotator ``prediction:<model>``
  with ``annotation_id = -1 - prediction id``);
* **JSON_MIN** — one flat object per annotation: the task's data fields, ``id`` (task),
  ``annotation_id``, ``annotator``, ``lead_time``, ``created_at``, ``updated_at`` and one
  key per control: a choice as a string (or ``{"choices": [...]}``), regions and boxes as
  lists of value objects (``{start, end, timeserieslabels}``, ``{x, y, width, height,
  rectanglelabels, original_width, original_height}``...).

Tasks are matched to records by ``data.record_id``; the record must exist in
``RUN/scrubbed`` (or ``RUN/records`` when the run was not scrubbed), of which only
``record_id, window_start_ns, window_end_ns`` are read. The controls are the ones
``labels push`` generates (:data:`CONTROLS`): ``defect`` (Choices), ``anomaly``
(TimeSeriesLabels), ``audio_region`` (Labels on the audio), ``box`` (RectangleLabels).

Mapping, in exact integer arithmetic (numbers are Decimals parsed from the JSON text, or
the repr of a float handed in by the SDK; rounding is half-to-even):

* ranges: ``t`` seconds from the window start → ``window_start_ns + round(t * 1e9)``
  (when the task says ``vibration_units: "index"``, sample indices → ``window_start_ns +
  round(i * 1e9 / vibration_sample_rate)``); instants have ``start_ns == end_ns``;
* audio regions: seconds from the audio start → ``audio_first_ts_ns + round(s * 1e9)``;
* ranges ending up to :data:`WINDOW_TOLERANCE_NS` outside the window are clipped to it,
  farther ones are refused;
* boxes: percent of the frame → pixels of ``image_width`` x ``image_height`` (the task's
  data, else the result's ``original_width/height``; both present and different: refused),
  ``x0 = round(x% * W / 100)`` and so on, inside the frame.

Labels must be in the configured label set (``labels.choices`` for ``defect``,
``labels.ranges`` for ``anomaly`` and ``audio_region``, ``labels.boxes`` for ``box``): an
unknown label is **refused** with the label quoted, never silently added to the classes.
Everything an item can get wrong is refused with a reason (see :mod:`mmdata.labels.safety`)
and the other items still land: ``n_in == n_out + n_rejected``. Items under a refused task
or annotation (unknown record, media pointing outside the project, duplicate annotation)
are each refused with that reason; an unreadable task or annotation counts as one item.

>>> sorted(CONTROLS)
['anomaly', 'audio_region', 'box', 'defect']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mmdata.config import LabelsConfig
from mmdata.errors import ConfigError, InputDataError, StageError
from mmdata.labels import safety
from mmdata.labels.agreement import AnnotationRef, evaluate
from mmdata.labels.safety import MediaPolicy, Refused, quote
from mmdata.labels.store import write_labels
from mmdata.rundir import StageCounts

#: Ranges may overshoot the window by this much (then they are clipped to it).
WINDOW_TOLERANCE_NS = 1_000_000
#: Box coordinates may overshoot 0-100 % by this much (then they are clamped).
PERCENT_TOLERANCE = Decimal("0.001")
#: Largest time (seconds or sample index) a result may carry before it is refused.
_TIME_BOUND = 10**9
_NS = 10**9


@dataclass(frozen=True)
class ControlSpec:
    """A control of the generated labeling config: its row kind, Label Studio result type,
    the value keys holding its labels, and the config setting listing the allowed labels."""

    kind: str
    result_type: str
    label_keys: tuple[str, ...]
    setting: str


CONTROLS: dict[str, ControlSpec] = {
    "defect": ControlSpec("choice", "choices", ("choices",), "choices"),
    "anomaly": ControlSpec("range", "timeserieslabels", ("timeserieslabels", "labels"), "ranges"),
    "audio_region": ControlSpec("audio_region", "labels", ("labels",), "ranges"),
    "box": ControlSpec("box", "rectanglelabels", ("rectanglelabels", "labels"), "boxes"),
}
MEDIA_KEYS = ("image", "vibration", "audio")


@dataclass(frozen=True)
class ImportOptions:
    """Extras for :func:`labels_from_export` (``pull`` knows more than an offline import).

    ``known_tasks``: task id → record id of the project (then other task ids are refused);
    ``annotator_names``: Label Studio user id (as a string) → name/email for the rows;
    ``document_root``: the server's local-files document root (exact media check).
    """

    include_predictions: bool = False
    known_tasks: Mapping[int, str] | None = None
    annotator_names: Mapping[str, str] | None = None
    document_root: Path | None = None


@dataclass
class ImportResult:
    """What an export brought: label rows, refusals, agreement and resolved labels.

    ``n_in`` items (results) were seen: ``n_out`` became rows, the rest are in ``rejected``
    as ``(where, reason)``. ``ignored`` counts what is not an item (cancelled annotations,
    predictions, tasks without annotations).
    """

    source: str
    rows: list[dict[str, Any]]
    rejected: list[tuple[str, str]]
    n_in: int
    n_out: int
    agreement: dict[str, Any]
    resolved: list[dict[str, Any]]
    annotations: list[AnnotationRef] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)

    @property
    def n_rejected(self) -> int:
        """Items refused (one per entry of ``rejected``)."""
        return len(self.rejected)

    @property
    def counts(self) -> dict[str, int]:
        """``{"in", "out", "rejected"}``; in = out + rejected."""
        return {"in": self.n_in, "out": self.n_out, "rejected": self.n_rejected}

    def stage_counts(self) -> StageCounts:
        """The counts as a stage reports them (rejected = quarantined)."""
        return StageCounts(in_=self.n_in, out=self.n_out, quarantined=self.n_rejected)

    def rejected_json(self) -> dict[str, Any]:
        """The content of ``RUN/labels/rejected.json``."""
        return {
            "schema_version": "mmdata.labels.rejected/1",
            "source": self.source,
            "counts": self.counts,
            "ignored": dict(sorted(self.ignored.items())),
            "rejected": [{"where": w, "reason": r} for w, r in self.rejected],
        }

    def write(self, run_dir: Path) -> list[Path]:
        """Write ``RUN/labels/{labels,resolved}.parquet, agreement.json, rejected.json``."""
        return write_labels(run_dir, self.rows, self.resolved, self.agreement,
                            self.rejected_json())  # fmt: skip


def read_windows(run_dir: Path) -> dict[str, tuple[int, int]]:
    """``record_id → (window_start_ns, window_end_ns)`` of the run's scrubbed records (or
    raw records when there are no scrubbed ones); only those three columns are read."""
    for stage in ("scrubbed", "records"):
        files = sorted((Path(run_dir) / stage).glob("asset_id=*/date=*/part-*.parquet"))
        if files:
            break
    else:
        raise StageError(
            f"no records in {run_dir}/scrubbed or {run_dir}/records to put labels on",
            hint="run `mmdata align` (and `mmdata scrub`) first",
        )
    out: dict[str, tuple[int, int]] = {}
    for f in files:
        t = pq.ParquetFile(f).read(columns=["record_id", "window_start_ns", "window_end_ns"])
        cols = t.to_pydict()
        for rid, s, e in zip(cols["record_id"], cols["window_start_ns"], cols["window_end_ns"],
                             strict=True):  # fmt: skip
            out[rid] = (int(s), int(e))
    return out


def labels_from_export(export: list[dict[str, Any]] | Path | bytes, run_dir: Path,
                       config: LabelsConfig, source: str,
                       options: ImportOptions | None = None) -> ImportResult:  # fmt: skip
    """Map a Label Studio export (JSON or JSON_MIN; a file, its bytes, or parsed tasks)
    onto the run's records; compute agreement and resolve. Nothing is written: call
    ``result.write(run_dir)``.

    A whole file that cannot be read (too large, not JSON: line and column quoted) raises
    :class:`~mmdata.errors.InputDataError`; bad items are refused one by one.

    >>> # res = labels_from_export(Path("export.json"), run, cfg.labels, "import:export.json")
    >>> # res.counts, res.agreement["controls"]["defect"]["fleiss_kappa"]; res.write(run)
    """
    opts = options or ImportOptions()
    if config.resolution == "reviewer" and not config.reviewer:
        raise ConfigError("pipeline", "labels.reviewer", config.reviewer,
                          "the annotator whose labels win when labels.resolution is "
                          "'reviewer'")  # fmt: skip
    items = _items(export, config.max_export_bytes)
    mapper = _Mapper(read_windows(run_dir), config, source, opts,
                     MediaPolicy(run_dir, config.url, opts.document_root))  # fmt: skip
    for index, item in enumerate(items):
        mapper.item(index, item)
    rows = sorted(mapper.rows, key=_row_key)
    agreement, resolved = evaluate(rows, mapper.refs, config, source)
    return ImportResult(source, rows, mapper.rejected, mapper.n_in, mapper.n_out, agreement,
                        resolved, mapper.refs, dict(sorted(mapper.ignored.items())))  # fmt: skip


def _row_key(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return (r["record_id"], r["name"], r["annotator"], r["annotation_id"],
            -1 if r["start_ns"] is None else r["start_ns"], r["value"],
            tuple(-1 if r[k] is None else r[k] for k in ("bbox_x0", "bbox_y0", "bbox_x1",
                                                          "bbox_y1")))  # fmt: skip


def _items(export: Any, max_bytes: int) -> list[Any]:
    if isinstance(export, Path):
        data = safety.load_export(export, max_bytes)
    elif isinstance(export, bytes | bytearray):
        if len(export) > max_bytes:
            raise InputDataError(f"the export is {len(export)} bytes, over "
                                 f"labels.max_export_bytes = {max_bytes}")  # fmt: skip
        data = safety.parse_json(bytes(export), "the export")
    else:
        data = export
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InputDataError(f"a Label Studio export is a list of tasks, not "
                             f"{type(data).__name__}",
                             hint="export the project as JSON or JSON_MIN")  # fmt: skip
    return data


# -- one export item -----------------------------------------------------------------------


@dataclass
class _Ann:
    where: str
    raw_id: Any
    annotator: Any
    meta: dict[str, Any]
    results: list[tuple[str, Any]]  # (where, raw result) — raw result normalized per format
    problem: str | None = None
    prediction: bool = False


@dataclass
class _Task:
    data: Any  # the task's data (JSON) or the flat item (JSON_MIN)
    task_id: Any
    anns: list[_Ann]


class _Mapper:
    def __init__(self, windows: dict[str, tuple[int, int]], config: LabelsConfig, source: str,
                 opts: ImportOptions, media: MediaPolicy) -> None:  # fmt: skip
        self.windows, self.config, self.source = windows, config, source
        self.opts, self.media = opts, media
        self.rows: list[dict[str, Any]] = []
        self.refs: list[AnnotationRef] = []
        self.rejected: list[tuple[str, str]] = []
        self.ignored: dict[str, int] = {}
        self.n_in = self.n_out = 0
        self.task_records: dict[int, str] = {}
        self.seen_anns: set[int] = set()

    def _reject(self, where: str, reason: str) -> None:
        self.n_in += 1
        self.rejected.append((where, reason))

    def _ignore(self, what: str, n: int = 1) -> None:
        if n:
            self.ignored[what] = self.ignored.get(what, 0) + n

    def item(self, index: int, item: Any) -> None:
        where = f"item {index}"
        if not isinstance(item, dict):
            self._reject(where, f"is a {type(item).__name__}, not a task object")
            return
        if _is_int(item.get("id")):
            where = f"task {item['id']}"
        try:
            safety.check_depth(item)
        except Refused as err:
            self._reject(where, str(err))
            return
        json_format = any(k in item for k in ("annotations", "predictions", "data"))
        refused_before = len(self.rejected)
        task = self._json_task(index, item) if json_format else self._min_task(index, item)
        if task is None or (not task.anns and len(self.rejected) > refused_before):
            return
        n_results = sum(max(len(a.results), a.problem is not None) for a in task.anns)
        if not task.anns or (n_results == 0 and not any(a.raw_id is not None
                                                        for a in task.anns)):  # fmt: skip
            self._ignore("tasks without annotations")
            return
        try:
            ctx = self._task_ctx(task)
        except Refused as err:
            for a in task.anns:
                for w, _ in a.results or [(a.where, None)]:
                    self._reject(w, str(err))
            return
        for a in task.anns:
            self._annotation(a, ctx)

    # -- formats ---------------------------------------------------------------------------

    def _json_task(self, index: int, item: dict[str, Any]) -> _Task | None:
        tid = item.get("id")
        where = f"task {tid}" if _is_int(tid) else f"item {index}"
        anns: list[_Ann] = []
        lists = [("annotations", item.get("annotations", []))]
        preds = item.get("predictions") or []
        if self.opts.include_predictions:
            lists.append(("predictions", preds))
        elif isinstance(preds, list):
            self._ignore("predictions", len(preds))
        for key, raw in lists:
            if not isinstance(raw, list) or len(raw) > safety.MAX_ANNOTATIONS:
                self._reject(f"{where} {key}", f"{key} is not a list of at most "
                             f"{safety.MAX_ANNOTATIONS} objects")  # fmt: skip
                continue
            for j, a in enumerate(raw):
                anns.extend(self._json_ann(f"{where} {key}[{j}]", a, key == "predictions"))
        return _Task(item.get("data"), tid, anns)

    def _json_ann(self, where: str, a: Any, prediction: bool) -> list[_Ann]:
        if not isinstance(a, dict):
            return [_Ann(where, None, None, {}, [], "annotation is not an object")]
        if a.get("was_cancelled") is True or a.get("skipped") is True:
            self._ignore("cancelled annotations")
            return []
        raw_id = a.get("id")
        where = f"{where} (annotation {raw_id})" if _is_int(raw_id) else where
        who = f"prediction:{a.get('model_version') or 'model'}" if prediction else a.get(
            "completed_by")  # fmt: skip
        meta = {k: a.get(k) for k in ("lead_time", "created_at", "updated_at")}
        res = a.get("result")
        if not isinstance(res, list) or len(res) > safety.MAX_RESULTS:
            return [_Ann(where, raw_id, who, meta, [], "result is not a list of at most "
                         f"{safety.MAX_RESULTS} objects", prediction)]  # fmt: skip
        results = [(f"{where} result {k}{_name_suffix(r)}", r) for k, r in enumerate(res)]
        return [_Ann(where, raw_id, who, meta, results, None, prediction)]

    def _min_task(self, index: int, item: dict[str, Any]) -> _Task | None:
        tid, aid = item.get("id"), item.get("annotation_id")
        where = f"item {index} (task {quote(tid, 24)}, annotation {quote(aid, 24)})"
        results: list[tuple[str, Any]] = []
        for name in sorted(CONTROLS):
            if name not in item:
                continue
            v = item[name]
            elems = v if isinstance(v, list) else [v]
            for j, e in enumerate(elems):
                if CONTROLS[name].kind == "choice" and not isinstance(e, dict):
                    e = {"choices": [e]}  # a plain value: one choice (checked as a label)
                raw = {"from_name": name, "value": e}
                raw.update((k, _get(e, k)) for k in ("original_width", "original_height"))
                results.append((f"{where} {name}[{j}]", raw))
        if not results and aid is None:
            self._ignore("tasks without annotations")
            return None
        meta = {k: item.get(k) for k in ("lead_time", "created_at", "updated_at")}
        return _Task(item, tid, [_Ann(where, aid, item.get("annotator"), meta, results)])

    # -- checks ----------------------------------------------------------------------------

    def _task_ctx(self, task: _Task) -> dict[str, Any]:
        tid = safety.check_id(task.task_id, "task id")
        data = task.data
        if not isinstance(data, dict):
            raise Refused(f"task data is {quote(data, 40)}, not an object")
        rid = safety.check_record_id(data.get("record_id"))
        if rid not in self.windows:
            raise Refused(f"unknown record_id {quote(rid)}: no such record in this run")
        known = self.opts.known_tasks
        if known is not None and known.get(tid) != rid:
            raise Refused(f"unknown task id {tid}: not a task of this project"
                          if tid not in known else f"task {tid} is record "
                          f"{known[tid]!r} in the project, not {rid!r}")  # fmt: skip
        if self.task_records.setdefault(tid, rid) != rid:
            raise Refused(f"task {tid} appears again with another record_id {rid!r}")
        start, end = self.windows[rid]
        for key, want in (("window_start_ns", start), ("window_end_ns", end)):
            if data.get(key) is not None and safety.int_field(data[key], key) != want:
                raise Refused(f"task says {key} = {quote(data[key])} but record {rid} has "
                              f"{want}: the task is from another run")  # fmt: skip
        for key in MEDIA_KEYS:
            self.media.check(key, data.get(key), rid)
        return {"task_id": tid, "record_id": rid, "start": start, "end": end, "data": data}

    def _annotation(self, a: _Ann, ctx: dict[str, Any]) -> None:
        try:
            if a.problem is not None:
                raise Refused(a.problem)
            meta = self._ann_meta(a)
        except Refused as err:
            for w, _ in a.results or [(a.where, None)]:
                self._reject(w, str(err))
            return
        refused: set[str] = set()
        for where, raw in a.results:
            name = raw.get("from_name") if isinstance(raw, dict) else None
            try:
                rows = self._result(raw, ctx)
            except Refused as err:
                self._reject(where, str(err))
                refused.add(name if isinstance(name, str) else "")
                continue
            self.n_in += 1
            self.n_out += 1
            self.rows.extend({**meta, **row} for row in rows)
        if not a.results:  # an empty submission: "nothing to label here" is a rating too
            self.n_in += 1
            self.n_out += 1
        self.refs.append(AnnotationRef(ctx["record_id"], meta["annotation_id"],
                                       meta["annotator"], meta["updated_at"],
                                       frozenset(refused)))  # fmt: skip

    def _ann_meta(self, a: _Ann) -> dict[str, Any]:
        aid = safety.check_id(a.raw_id, "annotation id")
        if a.prediction:
            aid = -1 - aid
        if aid in self.seen_anns:
            raise Refused(f"annotation {a.raw_id} appears twice in the export")
        who = a.annotator
        if isinstance(who, dict):
            who = who.get("email") or who.get("id")
        if _is_int(who):
            who = str(who)
        names = self.opts.annotator_names or {}
        who = safety.check_text(names.get(who, who) if isinstance(who, str) else who,
                                "annotator")  # fmt: skip
        lead = a.meta.get("lead_time")
        lead_s = None
        if lead is not None:
            dec = safety.to_decimal(lead, "lead_time", 10**9)
            if dec < 0:
                raise Refused(f"lead_time {quote(lead)} is negative")
            lead_s = float(dec)
        stamps = {k: None if a.meta.get(k) is None
                  else safety.check_text(a.meta[k], k, safety.MAX_STAMP_CHARS)
                  for k in ("created_at", "updated_at")}  # fmt: skip
        self.seen_anns.add(aid)
        return {"annotation_id": aid, "annotator": who, "lead_time_s": lead_s, **stamps}

    def _result(self, raw: Any, ctx: dict[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(raw, dict):
            raise Refused(f"result is a {type(raw).__name__}, not an object")
        name = raw.get("from_name")
        if not isinstance(name, str) or name not in CONTROLS:
            raise Refused(f"control {quote(name)} (type {quote(raw.get('type'), 30)}) is not "
                          f"one mmdata's labeling config has {sorted(CONTROLS)}")  # fmt: skip
        spec = CONTROLS[name]
        rtype = raw.get("type")
        if rtype is not None and (not isinstance(rtype, str) or rtype.lower() != spec.result_type):
            raise Refused(f"control {name!r} gave a result of type {quote(rtype)}, expected "
                          f"{spec.result_type!r}")  # fmt: skip
        value = raw.get("value")
        if not isinstance(value, dict):
            raise Refused(f"value of {name!r} is {quote(value, 40)}, not an object")
        labels = self._labels(name, spec, value)
        base: dict[str, Any] = {
            "record_id": ctx["record_id"], "task_id": ctx["task_id"], "kind": spec.kind,
            "name": name, "start_ns": None, "end_ns": None, "bbox_x0": None, "bbox_y0": None,
            "bbox_x1": None, "bbox_y1": None, "source": self.source,
        }  # fmt: skip
        if spec.kind in ("range", "audio_region"):
            base.update(zip(("start_ns", "end_ns"), _times(spec.kind, value, ctx), strict=True))
        elif spec.kind == "box":
            base.update(zip(("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"),
                            _box(raw, value, ctx["data"]), strict=True))  # fmt: skip
        return [{**base, "value": lab} for lab in labels]

    def _labels(self, name: str, spec: ControlSpec, value: dict[str, Any]) -> list[str]:
        key = next((k for k in spec.label_keys if k in value), spec.label_keys[0])
        raw = value.get(key)
        if not isinstance(raw, list) or not raw or len(raw) > 64:
            raise Refused(f"{name!r} carries no labels under {key!r} (got {quote(raw, 40)})")
        allowed = getattr(self.config, spec.setting)
        labels = [safety.check_label(v, name, allowed, f"labels.{spec.setting}") for v in raw]
        return sorted(set(labels))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _name_suffix(r: Any) -> str:
    name = _get(r, "from_name")
    return f" {quote(name, 40)}" if name is not None else ""


def _ns(x: Fraction) -> int:
    return round(x)  # Fraction.__round__: exact, half to even


def _times(kind: str, value: dict[str, Any], ctx: dict[str, Any]) -> tuple[int, int]:
    data, w_start, w_end = ctx["data"], ctx["start"], ctx["end"]
    s = safety.to_decimal(value.get("start"), "start", _TIME_BOUND)
    e_raw = value.get("end")
    e = s if e_raw is None and value.get("instant") is True else safety.to_decimal(
        e_raw, "end", _TIME_BOUND)  # fmt: skip
    if kind == "audio_region":
        if data.get("audio_first_ts_ns") in (None, ""):
            raise Refused("audio region on a task without audio_first_ts_ns")
        origin = safety.int_field(data["audio_first_ts_ns"], "audio_first_ts_ns")
        scale = Fraction(_NS)
    else:
        origin = w_start
        units = data.get("vibration_units", "s")
        if units == "s":
            scale = Fraction(_NS)
        elif units == "index":
            rate = safety.to_decimal(data.get("vibration_sample_rate"), "vibration_sample_rate",
                                     10**9)  # fmt: skip
            if rate <= 0:
                raise Refused(f"vibration_sample_rate {quote(rate)} is not > 0")
            scale = Fraction(_NS) / Fraction(rate)
        else:
            raise Refused(f"vibration_units {quote(units)} is not 's' or 'index'")
    start_ns = origin + _ns(Fraction(s) * scale)
    end_ns = origin + _ns(Fraction(e) * scale)
    if end_ns < start_ns:
        raise Refused(f"range ends before it starts (start {s}, end {e})")
    if start_ns < w_start - WINDOW_TOLERANCE_NS or end_ns > w_end + WINDOW_TOLERANCE_NS:
        raise Refused(f"range {s}..{e} ({start_ns}..{end_ns} ns) is outside the window "
                      f"{w_start}..{w_end} ns")  # fmt: skip
    return max(start_ns, w_start), min(end_ns, w_end)


def _frame_size(raw: dict[str, Any], data: dict[str, Any]) -> tuple[int, int]:
    if data.get("image_width") in ("", 0) or data.get("image") == "":
        raise Refused("box on a task without a frame (push left image/image_width empty)")
    sizes = []
    keys = (("image_width", "image_height", data), ("original_width", "original_height", raw))
    for wk, hk, src in keys:
        if src.get(wk) is not None or src.get(hk) is not None:
            w, h = safety.int_field(src.get(wk), wk), safety.int_field(src.get(hk), hk)
            if not (0 < w <= 100_000 and 0 < h <= 100_000):
                raise Refused(f"frame size {w}x{h} ({wk}/{hk}) is not plausible")
            sizes.append((w, h))
    if not sizes:
        raise Refused("box on a task without image_width/image_height")
    if len(sizes) == 2 and sizes[0] != sizes[1]:
        raise Refused(f"box drawn on a {sizes[1][0]}x{sizes[1][1]} image but the task's "
                      f"frame is {sizes[0][0]}x{sizes[0][1]}")  # fmt: skip
    return sizes[0]


def _box(raw: dict[str, Any], value: dict[str, Any], data: dict[str, Any]
         ) -> tuple[int, int, int, int]:  # fmt: skip
    x, y, w, h = (safety.to_decimal(value.get(k), k, 10**6) for k in ("x", "y", "width",
                                                                       "height"))  # fmt: skip
    rot = safety.to_decimal(value.get("rotation") or 0, "rotation", 10**6)
    if rot % 360 != 0:
        raise Refused(f"box is rotated by {rot} degrees; draw it unrotated")
    if w <= 0 or h <= 0:
        raise Refused(f"box has no area (width {w} %, height {h} %)")
    tol = PERCENT_TOLERANCE
    if x < -tol or y < -tol or x + w > 100 + tol or y + h > 100 + tol:
        raise Refused(f"box x={x} y={y} width={w} height={h} (percent) is outside the frame "
                      "(0-100 %)")  # fmt: skip
    fw, fh = _frame_size(raw, data)

    def px(p: Decimal, size: int) -> int:
        return min(max(_ns(Fraction(p) * size / 100), 0), size)

    box = px(x, fw), px(y, fh), px(x + w, fw), px(y + h, fh)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise Refused(f"box x={x} y={y} width={w} height={h} (percent) is under one pixel "
                      f"of a {fw}x{fh} frame")  # fmt: skip
    return box


__all__: Sequence[str] = ["CONTROLS", "ImportOptions", "ImportResult", "labels_from_export",
                          "read_windows"]  # fmt: skip
