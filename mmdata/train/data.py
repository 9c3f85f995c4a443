"""Samples + cached features → token ids and batches for the trainer.

A sample (``RUN/dataset/samples.parquet``, :data:`mmdata.build.samples.SAMPLES_SCHEMA`)
becomes an :class:`Example` whose *slots* list its media in the order the model reads them:
one ``<sensor>`` slot per sensor window, put before the prompt (its text has no placeholder
for sensors), then the prompt's ``<image>``/``<audio>`` placeholders in order. Each slot
names

* its **source** — ``image`` (camera frames), ``audio`` or ``sensor`` — what the ablation
  masks: a sensor rendered as a spectrogram image is a *sensor* slot read by the *image*
  projector, an audio spectrogram an *audio* slot (see :data:`ROLE_SOURCE`);
* its **kind** — the feature modality in ``RUN/features`` (which projector reads it).

:class:`FeatureBank` loads every slot's vector once (row 0 of each table is the "missing"
row for a medium without features); :func:`collate` left-pads encoded examples into a
:class:`Batch` (left padding keeps the answers aligned at the end, so the loss and greedy
generation read only the last positions). Token-level features (``pooling: none``) are
mean-pooled to one vector per medium.

>>> slots = prompt_slots("<image><audio>Which class?", ["frame"], 1, 1)
>>> [(s.source, s.kind) for s in slots]
[('sensor', 'sensor'), ('image', 'image'), ('audio', 'audio')]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from mmdata.build.samples import AUDIO_TOKEN, IMAGE_TOKEN
from mmdata.errors import InputDataError
from mmdata.train.tokenizer import PLACEHOLDER_RE, SENSOR_TOKEN, PromptFormat

#: The modalities the ablation masks, in table order.
MODALITIES: tuple[str, ...] = ("image", "audio", "sensor")
#: Image role → the source it shows (what masking that modality removes).
ROLE_SOURCE: dict[str, str] = {
    "frame": "image",
    "spectrogram": "sensor",
    "waveform": "sensor",
    "audio_spectrogram": "audio",
}
IGNORE = -100


@dataclass(frozen=True)
class Slot:
    """One medium the model reads: what it shows (``source``), its features (``kind``)."""

    source: str
    kind: str
    sha256: str


@dataclass
class Example:
    """One sample, as the trainer and the evaluator see it."""

    sample_id: str
    split: str
    task: str
    label: str | None
    target: dict[str, Any]
    prompt: str  # with a <sensor> placeholder per sensor window in front
    response: str
    slots: list[Slot]


def prompt_slots(
    prompt: str, image_roles: Sequence[str], n_audio: int, n_sensor: int, shas: Any = None
) -> list[Slot]:
    """The slots of a prompt: sensors first, then placeholders in prompt order.

    ``shas``: ``(images, audios, sensors)`` sha256 lists (placeholders when omitted).
    """
    images, audios, sensors = shas or (
        [""] * len(image_roles),
        [""] * n_audio,
        [""] * n_sensor,
    )
    slots = [Slot("sensor", "sensor", s) for s in sensors]
    i = a = 0
    for m in PLACEHOLDER_RE.finditer(prompt):
        if m.group() == IMAGE_TOKEN:
            slots.append(Slot(ROLE_SOURCE.get(image_roles[i], "image"), "image", images[i]))
            i += 1
        elif m.group() == AUDIO_TOKEN:
            slots.append(Slot("audio", "audio", audios[a]))
            a += 1
    return slots


def _example(row: dict[str, Any]) -> Example:
    prompt = row["prompt"]
    images, roles = row["images"] or [], row["image_roles"] or []
    audios, sensors = row["audios"] or [], row["sensors"] or []
    if SENSOR_TOKEN in prompt:
        raise InputDataError(f"the prompt holds the reserved placeholder {SENSOR_TOKEN!r}")
    n_img, n_aud = prompt.count(IMAGE_TOKEN), prompt.count(AUDIO_TOKEN)
    if n_img != len(images) or n_aud != len(audios) or len(roles) != len(images):
        raise InputDataError(
            f"{n_img} <image> / {n_aud} <audio> placeholders but {len(images)} image(s) "
            f"({len(roles)} role(s)) / {len(audios)} audio(s) attached",
            hint="rebuild the dataset (`mmdata build --force`)",
        )
    try:
        target = json.loads(row["target"]) if row["target"] else {}
    except json.JSONDecodeError as err:
        raise InputDataError(f"target is not JSON: {row['target']!r:.80}") from err
    slots = prompt_slots(prompt, roles, len(audios), len(sensors), (images, audios, sensors))
    return Example(
        sample_id=row["sample_id"],
        split=row["split"],
        task=row["task"],
        label=row["label"],
        target=target if isinstance(target, dict) else {},
        prompt=SENSOR_TOKEN * len(sensors) + prompt,
        response=row["response"],
        slots=slots,
    )


@dataclass
class Rejected:
    """A sample the trainer cannot use, and why (it is quarantined)."""

    sample_id: str
    split: str
    error: str
    message: str


def read_examples(
    dataset_dir: Path, tasks: Sequence[str], splits: Sequence[str]
) -> tuple[list[Example], list[Rejected]]:
    """Examples of ``tasks`` in ``splits`` from ``samples.parquet``, sorted by split, task, id."""
    path = dataset_dir / "samples.parquet"
    if not path.is_file():
        raise InputDataError(
            f"no samples index at {str(path)!r}", hint="run `mmdata build` on the run first"
        )
    rows = pq.read_table(path).to_pylist()
    rows = [r for r in rows if r["task"] in tasks and r["split"] in splits]
    rows.sort(key=lambda r: (splits.index(r["split"]), r["task"], r["sample_id"]))
    out: list[Example] = []
    bad: list[Rejected] = []
    for r in rows:
        try:
            out.append(_example(r))
        except InputDataError as err:
            bad.append(Rejected(r["sample_id"], r["split"], type(err).__name__, str(err)))
    return out, bad


class FeatureBank:
    """One float32 table per feature kind; row 0 is zeros and stands for missing features.

    ``rows[(kind, sha256)]`` is the row of a medium; a medium absent from the features
    index (quarantined, or a modality without an encoder) has row 0 and counts in
    :attr:`missing`.
    """

    def __init__(self, features_dir: Path, slots: Sequence[Slot]) -> None:
        from mmdata.features.stage import FeatureStore

        store = FeatureStore(features_dir)
        index = pq.read_table(store.index_path, columns=["sha256", "modality"]).to_pylist()
        available = {(r["modality"], r["sha256"]) for r in index}
        wanted: dict[str, set[str]] = {}
        for s in slots:
            if (s.kind, s.sha256) in available:
                wanted.setdefault(s.kind, set()).add(s.sha256)
        self.tables: dict[str, torch.Tensor] = {}
        self.rows: dict[tuple[str, str], int] = {}
        for kind in sorted(wanted):
            shas = sorted(wanted[kind])
            vecs = [_vector(store.load([sha], kind)[0]) for sha in shas]
            dims = {v.numel() for v in vecs}
            if len(dims) > 1:
                raise InputDataError(
                    f"{kind} features have different sizes {sorted(dims)}",
                    hint="use one encoder per modality (re-run `mmdata features --force`)",
                )
            self.tables[kind] = torch.cat([torch.zeros(1, vecs[0].numel()), torch.stack(vecs)])
            self.rows.update({(kind, sha): i + 1 for i, sha in enumerate(shas)})
        self.missing = sum(1 for s in slots if (s.kind, s.sha256) not in self.rows)

    @property
    def dims(self) -> dict[str, int]:
        """Feature size per kind."""
        return {k: int(t.shape[1]) for k, t in self.tables.items()}

    def row(self, slot: Slot) -> int:
        """Row of ``slot`` in its kind's table (0: no features)."""
        return self.rows.get((slot.kind, slot.sha256), 0)

    def stats(self, examples: Sequence[Example]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-dimension mean and std of each kind over the distinct media of ``examples``."""
        out = {}
        for kind, table in self.tables.items():
            rows = sorted({self.row(s) for e in examples for s in e.slots if s.kind == kind} - {0})
            x = table[rows] if rows else table[1:]
            mean = x.mean(dim=0)
            std = x.std(dim=0, unbiased=False) if len(x) > 1 else torch.ones_like(mean)
            out[kind] = (mean, torch.where(std > 1e-6, std, torch.ones_like(std)))
        return out


def _vector(t: torch.Tensor) -> torch.Tensor:
    t = t.float()
    return t.reshape(-1, t.shape[-1]).mean(dim=0) if t.ndim > 1 else t.reshape(-1)


@dataclass
class Encoded:
    """An example as ids: prompt (with media slots) then, for training, the response."""

    index: int  # position in the example list
    prompt_ids: list[int]
    slot_pos: list[int]  # first position of each slot group (k positions each)
    response_ids: list[int]


def encode(
    examples: Sequence[Example], fmt: PromptFormat, max_length: int
) -> tuple[list[Encoded], list[Rejected]]:
    """Tokenize examples; one longer than ``max_length`` tokens is rejected, not cut."""
    out, bad = [], []
    for i, ex in enumerate(examples):
        p = fmt.encode_prompt(ex.prompt)
        r = fmt.encode_response(ex.response)
        if len(p.ids) + len(r) > max_length:
            bad.append(
                Rejected(
                    ex.sample_id,
                    ex.split,
                    "InputDataError",
                    f"{len(p.ids) + len(r)} tokens, more than train.max_length = {max_length}",
                )
            )
            continue
        out.append(Encoded(i, p.ids, [s[0] for s in p.slots], r))
    return out, bad


@dataclass
class Batch:
    """Left-padded model inputs plus the media slots to fill with projected features."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T]
    targets: torch.Tensor  # [B, R]: the last R ids, IGNORE outside the response
    slot_batch: torch.Tensor  # [S]
    slot_pos: torch.Tensor  # [S] first position of the slot group
    slot_source: torch.Tensor  # [S] index into MODALITIES
    slot_missing: torch.Tensor  # [S] bool: no features for this medium
    kind_slots: dict[str, torch.Tensor] = field(default_factory=dict)  # kind → slot indices
    kind_feats: dict[str, torch.Tensor] = field(default_factory=dict)  # kind → [n, dim]
    examples: list[int] = field(default_factory=list)  # example indices, batch order

    @property
    def n_targets(self) -> int:
        """Response tokens the loss is taken over."""
        return int((self.targets != IGNORE).sum())

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device``."""
        return Batch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            position_ids=self.position_ids.to(device),
            targets=self.targets.to(device),
            slot_batch=self.slot_batch.to(device),
            slot_pos=self.slot_pos.to(device),
            slot_source=self.slot_source.to(device),
            slot_missing=self.slot_missing.to(device),
            kind_slots={k: v.to(device) for k, v in self.kind_slots.items()},
            kind_feats={k: v.to(device) for k, v in self.kind_feats.items()},
            examples=self.examples,
        )


def collate(
    items: Sequence[Encoded],
    examples: Sequence[Example],
    bank: FeatureBank,
    pad_id: int,
    with_response: bool,
) -> Batch:
    """Left-pad ``items`` into one batch (with their responses when training)."""
    seqs = [it.prompt_ids + (it.response_ids if with_response else []) for it in items]
    width = max(len(s) for s in seqs)
    r = max(len(it.response_ids) for it in items) if with_response else 0
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    targets = torch.full((len(items), r), IGNORE, dtype=torch.long)
    sb, sp, ss, sm, kinds, rows = [], [], [], [], [], []
    for b, (it, seq) in enumerate(zip(items, seqs, strict=True)):
        off = width - len(seq)
        ids[b, off:] = torch.tensor(seq, dtype=torch.long)
        mask[b, off:] = 1
        if with_response:
            n = len(it.response_ids)
            targets[b, r - n :] = torch.tensor(it.response_ids, dtype=torch.long)
        for slot, pos in zip(examples[it.index].slots, it.slot_pos, strict=True):
            row = bank.row(slot)
            sb.append(b)
            sp.append(off + pos)
            ss.append(MODALITIES.index(slot.source))
            sm.append(row == 0)
            kinds.append(slot.kind)
            rows.append(row)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    kind_slots, kind_feats = {}, {}
    for kind, table in bank.tables.items():
        idx = [i for i, k in enumerate(kinds) if k == kind and rows[i] > 0]
        if idx:
            kind_slots[kind] = torch.tensor(idx, dtype=torch.long)
            kind_feats[kind] = table[[rows[i] for i in idx]]
    return Batch(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        targets=targets,
        slot_batch=torch.tensor(sb, dtype=torch.long),
        slot_pos=torch.tensor(sp, dtype=torch.long),
        slot_source=torch.tensor(ss, dtype=torch.long),
        slot_missing=torch.tensor(sm, dtype=torch.bool),
        kind_slots=kind_slots,
        kind_feats=kind_feats,
        examples=[it.index for it in items],
    )


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of ``n`` items in ``epoch``: a function of (seed, epoch) only, so a
    resumed run reads exactly the batches an uninterrupted one would.

    >>> epoch_order(5, 0, 1) == epoch_order(5, 0, 1) != epoch_order(5, 0, 2)
    True
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return [int(i) for i in torch.randperm(n, generator=g)]
