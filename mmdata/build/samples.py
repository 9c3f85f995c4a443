"""Instruction samples: what templates produce and every dataset format writes.

A :class:`Sample` is one single-turn instruction pair made from one record: a ``prompt``
whose media placeholders (``<image>``, ``<audio>``) stand, in order, for the attached
``images`` and ``audios``, and the ``response``. Media are content-addressed
(:attr:`Media.sha256`): the same frame in two samples is stored once, and the feature cache
keys on the same hash.

>>> m = Media(kind="image", data=b"\\x89PNG...", ext="png", role="frame")
>>> s = Sample(record_id="r1", task="describe", template="describe/0", prompt="<image>What?",
...            response="A press.", images=[m])
>>> s.placeholder_counts(), len(s.sample_id)
((1, 0), 32)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pyarrow as pa

IMAGE_TOKEN = "<image>"  # noqa: S105 (a placeholder, not a secret)
AUDIO_TOKEN = "<audio>"  # noqa: S105
SPLITS = ("train", "validation", "test")
_TOKENS = re.compile(r"<image>|<audio>")

MediaKind = Literal["image", "audio"]
#: What a medium shows: a camera frame, the window's audio, or a rendering of a sensor/audio.
MediaRole = Literal["frame", "audio", "spectrogram", "waveform", "audio_spectrogram"]


@dataclass(frozen=True)
class Media:
    """One encoded medium attached to a sample (PNG/JPEG image or WAV audio)."""

    kind: MediaKind
    data: bytes
    ext: str  # "jpg" | "png" | "wav": the file name extension used when written
    role: MediaRole

    @cached_property
    def sha256(self) -> str:
        """Hex sha256 of ``data``: the file name in ``media/`` and the feature-cache key."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def filename(self) -> str:
        """``<sha256>.<ext>``: where the medium lives under a dataset's ``media/`` folder."""
        return f"{self.sha256}.{self.ext}"


@dataclass
class Sample:
    """One instruction/response pair made from one record."""

    record_id: str
    task: str
    template: str  # "<task>/<phrasing index>": which phrasing was chosen
    prompt: str  # user turn; "<image>"/"<audio>" placeholders in media order
    response: str  # assistant turn
    images: list[Media] = field(default_factory=list)
    audios: list[Media] = field(default_factory=list)
    system: str | None = None
    label: str | None = None  # the class this sample teaches, for stratification and eval
    target: dict[str, Any] = field(default_factory=dict)  # structured answer (e.g. interval)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # sensors_as: tensor
    provenance: dict[str, Any] = field(default_factory=dict)  # asset_id, window, sources
    split: str = "train"

    @property
    def sample_id(self) -> str:
        """Stable id: sha256 of record, task and phrasing (32 hex chars)."""
        key = f"{self.record_id}\0{self.task}\0{self.template}".encode()
        return hashlib.sha256(key).hexdigest()[:32]

    def placeholder_counts(self) -> tuple[int, int]:
        """``(<image> count, <audio> count)`` in the prompt, system and response."""
        text = f"{self.system or ''}{self.prompt}{self.response}"
        found = _TOKENS.findall(text)
        return found.count(IMAGE_TOKEN), found.count(AUDIO_TOKEN)

    def media_problem(self) -> str | None:
        """Why the placeholders and the attached media disagree, or None when they match.

        >>> Sample(record_id="r", task="t", template="t/0", prompt="<image><image>",
        ...        response="x").media_problem()
        '2 <image> placeholder(s) but 0 image(s) attached'
        """
        n_img, n_aud = self.placeholder_counts()
        if n_img != len(self.images):
            return f"{n_img} <image> placeholder(s) but {len(self.images)} image(s) attached"
        if n_aud != len(self.audios):
            return f"{n_aud} <audio> placeholder(s) but {len(self.audios)} audio(s) attached"
        if _TOKENS.search(self.response) or _TOKENS.search(self.system or ""):
            return "media placeholders outside the user turn"
        return None


def prompt_parts(prompt: str) -> list[dict[str, str]]:
    """The prompt as typed content parts (HF chat ``messages`` convention).

    >>> prompt_parts("<image>Is it scratched?")
    [{'type': 'image'}, {'type': 'text', 'text': 'Is it scratched?'}]
    """
    parts: list[dict[str, str]] = []
    pos = 0
    for m in _TOKENS.finditer(prompt):
        if m.start() > pos:
            parts.append({"type": "text", "text": prompt[pos : m.start()]})
        parts.append({"type": "image" if m.group() == IMAGE_TOKEN else "audio"})
        pos = m.end()
    if pos < len(prompt):
        parts.append({"type": "text", "text": prompt[pos:]})
    return parts


_INDEX_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("sample_id", pa.string(), "Stable id: sha256 of record, task and phrasing (32 hex)."),
    ("record_id", pa.string(), "The record (window) the sample was made from."),
    ("asset_id", pa.string(), "Asset of the window."),
    ("window_start_ns", pa.int64(), "Window start, reference time, ns since the epoch."),
    ("window_end_ns", pa.int64(), "Window end (exclusive)."),
    ("split", pa.string(), "train | validation | test."),
    ("task", pa.string(), "Task name from the templates."),
    ("template", pa.string(), "<task>/<phrasing index> chosen for this record."),
    ("label", pa.string(), "The window's class (null when unknown or ambiguous)."),
    ("target", pa.string(), "Structured answer as JSON (class, interval in ns from start)."),
    ("prompt", pa.string(), "User turn with <image>/<audio> placeholders in media order."),
    ("response", pa.string(), "Assistant turn."),
    ("images", pa.list_(pa.string()), "sha256 of each attached image (media/<sha>.<ext>)."),
    ("image_roles", pa.list_(pa.string()), "What each image shows (frame, spectrogram...)."),
    ("audios", pa.list_(pa.string()), "sha256 of each attached audio."),
    ("sensors", pa.list_(pa.string()), "sha256 of each sensor window (sensors.parquet)."),
]

#: ``RUN/dataset/samples.parquet``: one row per sample, what the trainer and the feature
#: cache read (media by content hash).
SAMPLES_SCHEMA = pa.schema(
    [pa.field(n, t, metadata={"description": d}) for n, t, d in _INDEX_FIELDS]
)


def sample_json_schema() -> dict[str, Any]:
    """``schemas/sample.v1.json``: a row of ``samples.parquet`` as JSON Schema."""
    from mmdata.records import json_type

    props = {n: {**json_type(t), "description": d} for n, t, d in _INDEX_FIELDS}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://mmdata.dev/schemas/sample.v1.json",
        "title": "Sample",
        "description": "One instruction sample (row of RUN/dataset/samples.parquet).",
        "type": "object",
        "properties": props,
        "required": ["sample_id", "record_id", "split", "task", "prompt", "response"],
        "additionalProperties": False,
    }
