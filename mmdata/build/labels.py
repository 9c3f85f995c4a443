"""Window labels: what class a record's window shows, and where in it a fault lies.

Two sources, in order of precedence:

1. **The record's own annotations** (the ``labels`` column, e.g. pulled from Label Studio).
   Each annotation is ``{name, value, start_ns, end_ns, source, annotator}`` and is read as:

   * ``name == "defect"`` — a window-level *choice*: ``value`` is the class of the whole
     window (its times, if any, only have to overlap the window). When several ``defect``
     annotations disagree, the window is ambiguous (``defect=None``);
   * any other annotation with both ``start_ns`` and ``end_ns`` — a *time-interval label*
     (e.g. a ``TimeSeriesLabels`` region named ``anomaly``): the class is ``value`` (or
     ``name`` when ``value`` is empty), the interval is clipped to the window. Without a
     ``defect`` choice, the intervals decide the window's class with the same overlap rule
     as ground truth (below);
   * anything else (a window-level annotation with another name, e.g. ``quality: good``)
     says nothing about defects and is ignored.

   A record with at least one defect choice or one overlapping interval is labelled from its
   annotations (``source="labels"``) and ground truth is not consulted.

2. **Ground truth** (the synthetic factory's ``ground_truth.json``, or any file of that
   shape): a fault covering at least ``min_label_overlap`` of the window labels it; a window
   no fault overlaps at all is ``normal_label``; a window a fault overlaps by less than the
   threshold is **ambiguous** (``defect=None``): classification tasks skip it, but the
   clipped interval is still reported so time-localisation tasks can use it.

Intervals are half-open ``[start_ns, end_ns)`` in reference time, like the windows.

>>> from mmdata.config import BuildConfig
>>> rec = {"asset_id": "press-1", "window_start_ns": 0, "window_end_ns": 2_000, "labels": []}
>>> f = Fault("bearing_wear", "accelerometer", 1_000, 9_000, "press-1")
>>> window_labels(rec, [f], BuildConfig())
WindowLabels(defect='bearing_wear', intervals=[('bearing_wear', 1000, 2000)], source='ground_truth')
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from mmdata.config import BuildConfig
from mmdata.errors import InputDataError

#: The ``schema_version`` prefix of ground-truth files this reader understands.
GROUND_TRUTH_SCHEMA = "mmdata.synth.ground_truth/1"
#: Annotation name of a window-level defect choice.
DEFECT_LABEL = "defect"

Interval = tuple[str, int, int]  # (class, start_ns, end_ns), reference time


@dataclass(frozen=True)
class Fault:
    """One fault interval of one asset, reference time ``[start_ns, end_ns)``.

    >>> Fault("surface_scratch", "camera", 0, 10, "press-2").end_ns
    10
    """

    class_name: str
    modality: str | None
    start_ns: int
    end_ns: int
    asset_id: str


@dataclass
class WindowLabels:
    """The labels of one window.

    ``defect`` is a class, ``normal_label``, or None (unknown or ambiguous); ``intervals``
    are ``(class, start_ns, end_ns)`` clipped to the window, sorted; ``source`` says where
    they came from (``"labels"``, ``"ground_truth"`` or None when nothing labels the window).

    >>> WindowLabels().defect is None
    True
    """

    defect: str | None = None
    intervals: list[Interval] = field(default_factory=list)
    source: Literal["labels", "ground_truth"] | None = None


class _FaultEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    class_name: str = Field(alias="class", min_length=1)
    modality: str | None = None
    start_ns: StrictInt
    end_ns: StrictInt

    @model_validator(mode="after")
    def _ordered(self) -> _FaultEntry:
        if self.end_ns <= self.start_ns:
            raise ValueError(f"end_ns ({self.end_ns}) must be after start_ns ({self.start_ns})")
        return self


class _GroundTruth(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: str | None = None
    faults: dict[str, list[_FaultEntry]]


def load_ground_truth(path: str | Path) -> dict[str, list[Fault]]:
    """Faults per asset from a ``ground_truth.json`` (``faults: {asset: [{class, modality,
    start_ns, end_ns}]}``, reference time in int ns), each asset's list sorted by time.

    A missing, unreadable or malformed file raises :class:`InputDataError` naming the file
    and the bad field.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "ground_truth.json"
    >>> _ = p.write_text('{"faults": {"press-1": [{"class": "bearing_wear", '
    ...                  '"modality": "accelerometer", "start_ns": 5, "end_ns": 9}]}}')
    >>> load_ground_truth(p)["press-1"][0].class_name
    'bearing_wear'
    """
    p = Path(path)
    hint = "point build.ground_truth at a ground_truth.json written by `mmdata synth`"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputDataError(f"{p}: no such ground-truth file", hint=hint) from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputDataError(f"{p}: cannot read the ground-truth file: {err}", hint=hint) from err
    except json.JSONDecodeError as err:
        raise InputDataError(
            f"{p}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}", hint=hint
        ) from err
    if not isinstance(data, dict):
        raise InputDataError(f"{p}: expected a JSON object with 'faults'", hint=hint)
    version = data.get("schema_version")
    if version is not None and version != GROUND_TRUTH_SCHEMA:
        raise InputDataError(
            f"{p}: schema_version {version!r} is not supported (expected {GROUND_TRUTH_SCHEMA!r})",
            hint=hint,
        )
    try:
        truth = _GroundTruth.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise InputDataError(
            f"{p}: {where} = {e.get('input')!r} is invalid: {e['msg']}"
            + (f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""),
            hint=hint,
        ) from None
    return {
        asset: sorted(
            (Fault(f.class_name, f.modality, f.start_ns, f.end_ns, asset) for f in entries),
            key=lambda f: (f.start_ns, f.end_ns, f.class_name),
        )
        for asset, entries in sorted(truth.faults.items())
    }


def dataset_classes(
    ground_truth: Mapping[str, list[Fault]] | None, extra: Iterable[str], normal_label: str
) -> list[str]:
    """Sorted classes of a dataset: ground-truth fault classes, ``extra`` (e.g. the defects
    found in records' annotations) and the normal label.

    >>> dataset_classes({"a": [Fault("b", None, 0, 1, "a")]}, ["c"], "normal")
    ['b', 'c', 'normal']
    """
    found = {f.class_name for faults in (ground_truth or {}).values() for f in faults}
    return sorted(found | {x for x in extra if x} | {normal_label})


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _decide(intervals: list[Interval], start: int, end: int, cfg: BuildConfig) -> str | None:
    """The class of a window from clipped intervals: the class covering the most of it if
    that is at least ``min_label_overlap``; normal with no interval; else None (ambiguous)."""
    if not intervals:
        return cfg.normal_label
    cover: dict[str, int] = {}
    for name, s, e in intervals:
        cover[name] = cover.get(name, 0) + (e - s)
    best = max(cover.values())
    winners = [name for name, c in cover.items() if c == best]
    # exact: the threshold as written (0.1 is 1/10, not the binary float just above it)
    if len(winners) != 1 or best < Fraction(str(cfg.min_label_overlap)) * (end - start):
        return None
    return winners[0]


def _from_annotations(record: Mapping[str, Any], cfg: BuildConfig) -> WindowLabels | None:
    start, end = int(record["window_start_ns"]), int(record["window_end_ns"])
    choices: set[str] = set()
    intervals: list[Interval] = []
    for lab in record.get("labels") or []:
        name, value = lab.get("name"), lab.get("value")
        s, e = lab.get("start_ns"), lab.get("end_ns")
        timed = s is not None and e is not None
        if name == DEFECT_LABEL:
            if value and (not timed or _overlap(int(s), int(e), start, end) > 0):
                choices.add(str(value))
        elif timed and _overlap(int(s), int(e), start, end) > 0:
            cls = str(value or name or "")
            if cls:
                intervals.append((cls, max(int(s), start), min(int(e), end)))
    if not choices and not intervals:
        return None
    intervals.sort(key=lambda t: (t[1], t[2], t[0]))
    if choices:
        defect = next(iter(choices)) if len(choices) == 1 else None
    else:
        defect = _decide(intervals, start, end, cfg)
    return WindowLabels(defect, intervals, "labels")


def window_labels(
    record: Mapping[str, Any], faults: list[Fault] | None, cfg: BuildConfig
) -> WindowLabels:
    """The labels of ``record``'s window: its annotations first, then ``faults`` (the ground
    truth of its asset; None when there is none). See the module docstring for the rules.

    >>> from mmdata.config import BuildConfig
    >>> rec = {"asset_id": "a", "window_start_ns": 0, "window_end_ns": 100, "labels": [
    ...     {"name": "defect", "value": "surface_scratch", "start_ns": None, "end_ns": None}]}
    >>> window_labels(rec, [], BuildConfig()).defect
    'surface_scratch'
    >>> window_labels({**rec, "labels": []}, [], BuildConfig())
    WindowLabels(defect='normal', intervals=[], source='ground_truth')
    >>> window_labels({**rec, "labels": []}, None, BuildConfig())
    WindowLabels(defect=None, intervals=[], source=None)
    """
    own = _from_annotations(record, cfg)
    if own is not None:
        return own
    if faults is None:
        return WindowLabels()
    start, end = int(record["window_start_ns"]), int(record["window_end_ns"])
    asset = record.get("asset_id")
    intervals = sorted(
        (
            (f.class_name, max(f.start_ns, start), min(f.end_ns, end))
            for f in faults
            if (asset is None or f.asset_id == asset) and _overlap(f.start_ns, f.end_ns, start, end)
        ),
        key=lambda t: (t[1], t[2], t[0]),
    )
    return WindowLabels(_decide(intervals, start, end, cfg), intervals, "ground_truth")
