"""Instruction templates: records + labels → :class:`~mmdata.build.samples.Sample` pairs.

Tasks live in a YAML file (the bundled ``mmdata/build/data/templates.yaml`` unless
``build.templates`` names another), validated with pydantic::

    version: 1
    tasks:
      defect_class:
        description: Which class does the window show?
        needs: [defect]                 # defect | interval | notes | image | audio | sensor
        media: [image, audio, sensor]   # what is attached, in this order (when present)
        system: You are a maintenance assistant.        # optional
        prompts:                        # several Jinja phrasings; one is chosen per record
          - "{{ media }}Which of {{ classes | join(', ') }} is it?"
          - ...
        response: "{{ defect }}"        # one Jinja template, or a list paired with prompts

**Phrasing choice** is deterministic: ``int(sha256(f"{seed}:{record_id}:{task}")) % n``;
``Sample.template`` is ``"<task>/<index>"``.

**Needs** decide whether a task applies to a record; when one is not met the task is skipped
with a reason (``make_samples``' second return value): ``defect`` — the window's class is
known (ambiguous windows, where a fault covers less than ``min_label_overlap`` of it, are
skipped); ``interval`` — a fault interval overlaps the window, *or* the window is known to
be normal (the answer is then "no change"); ``notes`` — operator notes are present;
``image`` / ``audio`` / ``sensor`` — that medium is attached.

**Media**: ``image`` attaches the primary frame (or every frame, or none: ``build.images``);
``audio`` attaches the WAV, or its spectrogram as an image, or nothing (``build.audio_as``);
``sensor`` attaches one spectrogram/waveform PNG per sensor stream, or puts a text summary
in the context (``sensor_summary``), or the raw samples in ``Sample.tensors``
(``build.sensors_as``). ``{{ media }}`` expands to one ``<image>`` per attached image then
one ``<audio>`` per audio, so the placeholders always match; every rendered sample is
checked (:meth:`Sample.media_problem`), and data strings have ``<image>``/``<audio>``
defused to ``[image]``/``[audio]`` so a note cannot forge a placeholder.

**Context variables** (all defined for every task; None/empty when absent):

==================  ============================================================================
``task``            the task name; ``record_id``
``asset_id``        the asset; ``date`` the record's date
``window_start``    ISO-8601 UTC, milliseconds (``2026-03-01T08:00:02.000Z``);
                    ``window_start_ns`` / ``window_end_ns`` the bounds in int ns
``duration_s``      window length in seconds (0.1 s)
``media``           the placeholders; ``media_names`` what each is, in order;
                    ``media_legend`` the same as one sentence ("" without media)
``modalities``      present in the record, from ``image``, ``audio``, ``sensors``, ``notes``
``sensor_streams``  ``[{stream_id, channels, sample_rate}]``
``sensor_summary``  text summary of the sensors (only with ``sensors_as: text_summary`` and
                    ``sensor`` in the task's media)
``sensor_stats``    ``[{stream_id, channel, rms, peak, crest, kurtosis, freqs_hz, env_hz,
                    env_ratio}]`` when ``sensor`` is in the task's media
``defect``          the window's class or None; ``is_normal``; ``normal_label``
``classes``         sorted classes of the dataset (given by the caller)
``interval``        the main interval ``{label, start_s, end_s, start_ns, end_ns, starts_inside,
                    ends_inside}`` (relative to the window start; seconds rounded to 0.1)
                    or None; ``intervals`` all of them
``notes``           texts of the notes (scrubbed when building from scrubbed records);
                    ``note_items`` ``[{text, kind, lang, offset_s}]`` sorted by time
``label_source``    ``labels`` | ``ground_truth`` | None
==================  ============================================================================

Jinja runs in a :class:`~jinja2.sandbox.SandboxedEnvironment` with ``StrictUndefined``: a
syntax error, a misspelt variable or a failing expression raises
:class:`~mmdata.errors.ConfigError` naming the file, the task and the phrasing. Templates
are rendered once against example contexts at load time, so most mistakes surface before
the first record.

``Sample.target`` follows the needs: ``defect`` adds ``{"class": ...}``; ``interval`` adds
``{"change": bool, "label", "start_ns", "end_ns"}`` (ns from the window start).
``Sample.label`` is the window's class (None when ambiguous).

>>> from mmdata.config import BuildConfig
>>> from mmdata.build.labels import WindowLabels
>>> ctx = SampleContext(BuildConfig(tasks=["describe"]), TemplateSet.load(), ["normal"])
>>> rec = {"record_id": "r1", "asset_id": "press-1", "date": "2026-03-01",
...        "window_start_ns": 1772352000000000000, "window_end_ns": 1772352002000000000}
>>> samples, skipped = make_samples(rec, WindowLabels("normal", [], "ground_truth"), ctx)
>>> samples[0].task, samples[0].media_problem(), skipped
('describe', None, [])
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmdata.build.labels import WindowLabels
from mmdata.build.media import RecordMedia, defuse
from mmdata.build.samples import AUDIO_TOKEN, IMAGE_TOKEN, Media, Sample
from mmdata.config import BuildConfig, read_yaml, validation_problems
from mmdata.errors import ConfigError
from mmdata.timebase import NS_PER_S, ns_to_datetime

#: The templates shipped with mmdata.
BUNDLED_TEMPLATES = Path(__file__).parent / "data" / "templates.yaml"

Need = Literal["defect", "interval", "notes", "image", "audio", "sensor"]
MediaName = Literal["image", "audio", "sensor"]


class TaskTemplate(BaseModel):
    """One task of a templates file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1, description="What the task teaches.")
    needs: list[Need] = Field(default_factory=list, description="What a record must have.")
    media: list[MediaName] = Field(default_factory=list, description="Media attached, in order.")
    system: str | None = Field(None, description="System prompt (Jinja).")
    prompts: list[str] = Field(min_length=1, description="User-turn phrasings (Jinja).")
    response: str | list[str] = Field(
        description="Assistant turn (Jinja): one template, or one per prompt (paired)."
    )

    @model_validator(mode="after")
    def _paired(self) -> TaskTemplate:
        if isinstance(self.response, list) and len(self.response) != len(self.prompts):
            raise ValueError(
                f"a response list must pair with the prompts: {len(self.response)} "
                f"response(s) for {len(self.prompts)} prompt(s)"
            )
        return self


class TemplatesFile(BaseModel):
    """A templates file: ``version`` and ``tasks`` by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    tasks: dict[str, TaskTemplate] = Field(min_length=1)


_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
)


@dataclass
class CompiledTask:
    """A task with its Jinja templates compiled."""

    name: str
    spec: TaskTemplate
    prompts: list[jinja2.Template]
    responses: list[jinja2.Template]
    system: jinja2.Template | None

    def phrasing(self, seed: int, record_id: str) -> int:
        """The phrasing index of a record: ``sha256("{seed}:{record_id}:{task}") % n``.

        >>> t = TemplateSet.load().tasks["describe"]
        >>> t.phrasing(0, "r1") == t.phrasing(0, "r1") < len(t.prompts)
        True
        """
        digest = hashlib.sha256(f"{seed}:{record_id}:{self.name}".encode()).hexdigest()
        return int(digest, 16) % len(self.prompts)


@dataclass
class TemplateSet:
    """The tasks of one templates file, compiled and checked."""

    source: str
    tasks: dict[str, CompiledTask]

    @classmethod
    def load(cls, path: str | Path | None = None) -> TemplateSet:
        """Read, validate, compile and dry-run a templates file (None: the bundled one).

        >>> sorted(TemplateSet.load().tasks)
        ['anomaly_time', 'defect_class', 'describe', 'notes_qa']
        """
        p = Path(path) if path is not None else BUNDLED_TEMPLATES
        data = read_yaml(p)
        if not isinstance(data, dict):
            raise ConfigError(str(p), "(top level)", data, "a mapping with 'version' and 'tasks'")
        try:
            spec = TemplatesFile.model_validate(data)
        except ValidationError as err:
            first, *rest = validation_problems(err)
            raise ConfigError(str(p), *first, more=rest) from None
        tasks = {name: _compile(str(p), name, t) for name, t in sorted(spec.tasks.items())}
        out = cls(str(p), tasks)
        for task in tasks.values():
            out._dry_run(task)
        return out

    def check_tasks(self, names: list[str]) -> None:
        """Raise :class:`ConfigError` when a name in ``build.tasks`` is not a task here.

        >>> TemplateSet.load().check_tasks(["defect_clas"])
        Traceback (most recent call last):
        ...
        mmdata.errors.ConfigError: ...: build.tasks = 'defect_clas' is not allowed; expected one of anomaly_time, defect_class, describe, notes_qa
        """  # noqa: E501
        for name in names:
            if name not in self.tasks:
                raise ConfigError(
                    self.source, "build.tasks", name, "one of " + ", ".join(sorted(self.tasks))
                )

    def render(self, task: CompiledTask, index: int, context: dict[str, Any]) -> Sample:
        """Render phrasing ``index`` of ``task`` (no media attached); errors → ConfigError."""
        prompt = _render(self.source, task, "prompts", index, task.prompts[index], context)
        r_index = index if len(task.responses) > 1 else 0
        response = _render(self.source, task, "response", r_index, task.responses[r_index], context)
        system = (
            _render(self.source, task, "system", None, task.system, context)
            if task.system is not None
            else None
        )
        for part, text in (("prompts", prompt), ("response", response)):
            if not text:
                raise _template_error(self.source, task, part, index, "renders to empty text")
        return Sample(
            record_id=str(context["record_id"]),
            task=task.name,
            template=f"{task.name}/{index}",
            prompt=prompt,
            response=response,
            system=system or None,
        )

    def _dry_run(self, task: CompiledTask) -> None:
        """Render every phrasing against example contexts that meet the task's needs."""
        image, audio = Media("image", b"", "png", "frame"), Media("audio", b"", "wav", "audio")
        for context in _example_contexts(task.spec):
            for i in range(len(task.prompts)):
                s = self.render(task, i, context)
                s.images = [image] * context["media"].count(IMAGE_TOKEN)
                s.audios = [audio] * context["media"].count(AUDIO_TOKEN)
                problem = s.media_problem()
                if problem:
                    raise _template_error(
                        self.source, task, "prompts", i, f"must place {{{{ media }}}}: {problem}"
                    )


def _compile(source: str, name: str, spec: TaskTemplate) -> CompiledTask:
    def one(part: str, index: int | None, text: str) -> jinja2.Template:
        try:
            return _ENV.from_string(text)
        except jinja2.TemplateSyntaxError as err:
            field_ = f"tasks.{name}.{part}" + ("" if index is None else f".{index}")
            raise ConfigError(
                source, field_, text, f"valid Jinja (line {err.lineno}: {err.message})"
            ) from None

    responses = spec.response if isinstance(spec.response, list) else [spec.response]
    return CompiledTask(
        name=name,
        spec=spec,
        prompts=[one("prompts", i, t) for i, t in enumerate(spec.prompts)],
        responses=[
            one("response", i if len(responses) > 1 else None, t) for i, t in enumerate(responses)
        ],
        system=one("system", None, spec.system) if spec.system is not None else None,
    )


def _phrasing_text(task: CompiledTask, part: str, index: int | None) -> str:
    if part == "prompts" and index is not None:
        return task.spec.prompts[index]
    if part == "system":
        return task.spec.system or ""
    resp = task.spec.response
    return resp[index or 0] if isinstance(resp, list) else resp


def _template_error(
    source: str, task: CompiledTask, part: str, index: int | None, why: str
) -> ConfigError:
    multi = part == "prompts" or (part == "response" and isinstance(task.spec.response, list))
    field_ = f"tasks.{task.name}.{part}" + (f".{index}" if multi and index is not None else "")
    return ConfigError(
        source, field_, _phrasing_text(task, part, index), f"a template that renders ({why})"
    )


def _render(
    source: str,
    task: CompiledTask,
    part: str,
    index: int | None,
    template: jinja2.Template,
    context: dict[str, Any],
) -> str:
    try:
        return template.render(context).strip()
    except Exception as err:  # any failure inside a template is the template's fault
        why = f"{type(err).__name__}: {err}"
        raise _template_error(source, task, part, index, why) from None


@dataclass
class SampleContext:
    """What :func:`make_samples` needs besides the record: the build config, the templates
    and the dataset's classes (sorted; include the normal label)."""

    cfg: BuildConfig
    templates: TemplateSet
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.templates.check_tasks(self.cfg.tasks)
        self.classes = sorted({defuse(c) for c in self.classes})


def _iso(ns: int) -> str:
    d = ns_to_datetime(ns)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ns % NS_PER_S) // 1_000_000:03d}Z"


def _interval_ctx(name: str, s: int, e: int, start: int, end: int) -> dict[str, Any]:
    rs, re_ = s - start, e - start
    return {
        "label": defuse(name),
        "start_ns": rs,
        "end_ns": re_,
        "start_s": round(rs / NS_PER_S, 1),
        "end_s": round(re_ / NS_PER_S, 1),
        "starts_inside": s > start,
        "ends_inside": e < end,
    }


def _base_context(
    record: Mapping[str, Any], labels: WindowLabels, ctx: SampleContext
) -> dict[str, Any]:
    start, end = int(record["window_start_ns"]), int(record["window_end_ns"])
    intervals = [_interval_ctx(n, s, e, start, end) for n, s, e in labels.intervals]
    # the main interval: the longest in the window, the earliest on a tie
    main = max(intervals, key=lambda i: (i["end_ns"] - i["start_ns"], -i["start_ns"]), default=None)
    notes = sorted(
        (n for n in record.get("text") or [] if n.get("text")),
        key=lambda n: (int(n.get("ts_ns") or 0), str(n.get("note_id") or "")),
    )
    note_items = [
        {
            "text": defuse(str(n["text"])),
            "kind": defuse(str(n.get("kind") or "note")),
            "lang": n.get("lang"),
            "offset_s": round((int(n.get("ts_ns") or start) - start) / NS_PER_S, 1),
        }
        for n in notes
    ]
    defect = defuse(labels.defect) if labels.defect is not None else None
    return {
        "record_id": str(record["record_id"]),
        "asset_id": defuse(str(record.get("asset_id") or "")),
        "date": record.get("date"),
        "window_start": _iso(start),
        "window_start_ns": start,
        "window_end_ns": end,
        "duration_s": round((end - start) / NS_PER_S, 1),
        "defect": defect,
        "is_normal": defect is not None and defect == ctx.cfg.normal_label,
        "normal_label": ctx.cfg.normal_label,
        "classes": list(ctx.classes),
        "interval": main,
        "intervals": intervals,
        "notes": [n["text"] for n in note_items],
        "note_items": note_items,
        "label_source": labels.source,
    }


def _skip_reason(
    spec: TaskTemplate, base: dict[str, Any], media: RecordMedia, ctx: SampleContext
) -> str | None:
    cfg = ctx.cfg
    for need in spec.needs:
        if need == "defect":
            if base["defect"] is None:
                return "ambiguous defect label" if base["label_source"] else "no defect label"
            if ctx.classes and base["defect"] not in ctx.classes:
                return f"label {base['defect']!r} is not among the dataset's classes"
        elif need == "interval" and base["interval"] is None and not base["is_normal"]:
            return "no interval and not a normal window"
        elif need == "notes" and not base["notes"]:
            return "no notes"
        elif need == "image" and not media.frames:
            off = cfg.images == "none"
            return "no image attached (build.images: none)" if off else "no image in the window"
        elif need == "audio" and media.audio is None:
            off = cfg.audio_as == "none"
            return "no audio attached (build.audio_as: none)" if off else "no audio in the window"
        elif need == "sensor" and not media.streams:
            return "no sensor data in the window"
    return None


def make_samples(
    record: Mapping[str, Any], labels: WindowLabels, ctx: SampleContext
) -> tuple[list[Sample], list[tuple[str, str]]]:
    """The samples of one record, one per task of ``ctx.cfg.tasks`` that applies, and the
    ``(task, reason)`` of every task skipped. Bad media raise ``InputDataError``; template
    mistakes raise ``ConfigError``.
    """
    cfg = ctx.cfg
    media = RecordMedia(record, cfg)
    base = _base_context(record, labels, ctx)
    image, audio = record.get("image") or {}, record.get("audio") or {}
    present = {
        "image": bool(image.get("bytes") or image.get("path") or record.get("frames")),
        "audio": bool(audio.get("bytes") or audio.get("path")),
        "sensors": bool(media.streams),
        "notes": bool(base["notes"]),
    }
    base["modalities"] = [k for k, v in present.items() if v]
    base["sensor_streams"] = [
        {"stream_id": defuse(str(s.get("stream_id"))),
         "sample_rate": float(s.get("sample_rate") or 0),
         "channels": [defuse(str(c)) for c in s.get("channels") or []]}
        for s in media.streams
    ]  # fmt: skip
    provenance = {
        "asset_id": record.get("asset_id"),
        "window_start_ns": base["window_start_ns"],
        "window_end_ns": base["window_end_ns"],
        "sources": sorted({str(p["uri"]) for p in record.get("provenance") or [] if p.get("uri")}),
        "record_date": record.get("date"),
        "label_source": labels.source,
    }
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for name in cfg.tasks:
        task = ctx.templates.tasks[name]
        spec = task.spec
        reason = _skip_reason(spec, base, media, ctx)
        if reason is not None:
            skipped.append((name, reason))
            continue
        attached = media.attach(spec.media)
        context = {
            **base,
            "task": name,
            "media": IMAGE_TOKEN * len(attached.images) + AUDIO_TOKEN * len(attached.audios),
            "media_names": attached.names,
            "media_legend": attached.legend(),
            "sensor_summary": media.summary if "sensor" in spec.media else None,
            "sensor_stats": media.stats if "sensor" in spec.media else [],
        }
        index = task.phrasing(cfg.seed, base["record_id"])
        sample = ctx.templates.render(task, index, context)
        sample.images, sample.audios = attached.images, attached.audios
        sample.tensors = dict(attached.tensors)
        problem = sample.media_problem()
        if problem:
            raise _template_error(ctx.templates.source, task, "prompts", index, problem)
        sample.label = base["defect"]
        sample.target = _target(spec, base)
        sample.provenance = dict(provenance)
        samples.append(sample)
    return samples, skipped


def _target(spec: TaskTemplate, base: dict[str, Any]) -> dict[str, Any]:
    target: dict[str, Any] = {}
    if "defect" in spec.needs:
        target["class"] = base["defect"]
    if "interval" in spec.needs:
        main = base["interval"]
        if main is None:
            target.update(change=False, label=base["defect"], start_ns=None, end_ns=None)
        else:
            target.update(
                change=True, label=main["label"], start_ns=main["start_ns"], end_ns=main["end_ns"]
            )
    return target


# -- example contexts for the load-time dry run ------------------------------------------

_EXAMPLE_NOTE = {"text": "Checked the press, all fine.", "kind": "operator_note", "lang": "en",
                 "offset_s": 0.4}  # fmt: skip
_EXAMPLE_SUMMARY = (
    "acc-press-1: 5000 Hz, 2.00 s, 1 channel(s)\n"
    "ax: mean=0 rms=0.0612 peak=0.312 crest=5.1 kurt=3.02 f=25,50,75Hz env=88Hz(x9.1)"
)
_EXAMPLE_STATS = {"stream_id": "acc-press-1", "channel": "ax", "rms": 0.0612, "peak": 0.312,
                  "crest": 5.1, "kurtosis": 3.02, "freqs_hz": [25, 50, 75], "env_hz": 88,
                  "env_ratio": 9.1}  # fmt: skip


def _example_contexts(spec: TaskTemplate) -> list[dict[str, Any]]:
    """Contexts a real record could produce for this task: a fault, a normal window, and
    the sparsest one its needs allow."""
    n_img = sum(1 for m in spec.media if m in ("image", "sensor"))
    n_aud = 1 if "audio" in spec.media else 0
    interval = _interval_ctx("bearing_wear", 500_000_000, 2_000_000_000, 0, 2 * NS_PER_S)
    common = {
        "record_id": "example",
        "task": "example",
        "asset_id": "press-1",
        "date": "2026-03-01",
        "window_start": "2026-03-01T08:00:00.000Z",
        "window_start_ns": 0,
        "window_end_ns": 2 * NS_PER_S,
        "duration_s": 2.0,
        "normal_label": "normal",
        "classes": ["bearing_wear", "normal"],
        "media": IMAGE_TOKEN * n_img + AUDIO_TOKEN * n_aud,
        "media_names": ["camera frame"] * n_img + ["audio"] * n_aud,
        "media_legend": "Attached: image 1: camera frame." if n_img + n_aud else "",
        "modalities": ["image", "audio", "sensors", "notes"],
        "sensor_streams": [{"stream_id": "acc-press-1", "channels": ["ax"], "sample_rate": 5e3}],
    }
    fault = {
        **common,
        "defect": "bearing_wear",
        "is_normal": False,
        "interval": interval,
        "intervals": [interval],
        "notes": [_EXAMPLE_NOTE["text"]],
        "note_items": [_EXAMPLE_NOTE],
        "label_source": "ground_truth",
        "sensor_summary": _EXAMPLE_SUMMARY if "sensor" in spec.media else None,
        "sensor_stats": [_EXAMPLE_STATS] if "sensor" in spec.media else [],
    }
    normal = {**fault, "defect": "normal", "is_normal": True, "interval": None, "intervals": []}
    sparse = {
        **(normal if "interval" in spec.needs else fault),
        "media": "",
        "media_names": [],
        "media_legend": "",
        "modalities": [],
        "sensor_streams": [],
        "sensor_summary": None,
        "sensor_stats": [],
    }
    if "defect" not in spec.needs and "interval" not in spec.needs:
        sparse.update(defect=None, is_normal=False, interval=None, intervals=[], label_source=None)
    if "notes" not in spec.needs:
        sparse.update(notes=[], note_items=[])
    if any(n in spec.needs for n in ("image", "audio", "sensor")):
        sparse.update(media=common["media"], media_names=common["media_names"])
    return [fault, normal, sparse]
