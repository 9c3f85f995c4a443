"""The training loop: AdamW with warmup + cosine decay, gradient accumulation, periodic
validation with early stopping, checkpoints, and exact resume.

Exact resume rests on one rule: everything random in a step is a function of
``(seed, step)`` — the epoch's sample order (:func:`mmdata.train.data.epoch_order`), the
modality-dropout draw and the global generator (reseeded each step, for adapter dropout) —
and everything else (weights, AdamW moments, early-stopping state, the metrics history) is
in the checkpoint. A run killed at any point and restarted from its last checkpoint therefore
computes the same steps on the same batches and ends with the same weights as an
uninterrupted run (on the same device and thread count; deterministic algorithms are on).

The loss is the mean cross-entropy over response tokens only, and with gradient accumulation
it is normalised by the step's total response tokens, so ``grad_accum × batch_size`` behaves
like one large batch.

>>> [round(learning_rate(s, total=10, warmup=2, peak=1.0), 3) for s in (0, 1, 2, 9)]
[0.333, 0.667, 1.0, 0.134]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmdata import atomic
from mmdata.config import TrainConfig
from mmdata.errors import InputDataError
from mmdata.runner import ProgressFn
from mmdata.train import checkpoint as ckpt
from mmdata.train.data import Encoded, Example, FeatureBank, collate, epoch_order
from mmdata.train.model import MultimodalLM, autocast

METRICS = "metrics.jsonl"
_IMPROVE = 1e-4  # a validation loss must beat the best by this much to count


@dataclass
class TrainData:
    """What the loop trains on: encoded train/validation examples and their features."""

    examples: list[Example]
    train: list[Encoded]
    val: list[Encoded]
    bank: FeatureBank
    pad_id: int

    def batch(self, items: Sequence[Encoded], device: torch.device, with_response: bool) -> Any:
        """Collate ``items`` onto ``device``."""
        return collate(items, self.examples, self.bank, self.pad_id, with_response).to(device)


@dataclass
class Hooks:
    """Callbacks into the loop (tests use ``on_step`` to interrupt a run)."""

    on_step: Callable[[int], None] | None = None


@dataclass
class TrainResult:
    """How a training went; ``best_state`` is what evaluation loads."""

    steps: int
    total_steps: int
    steps_per_epoch: int
    best_step: int
    best_val_loss: float | None
    stopped_early: bool
    resumed_from: int | None
    history: list[dict[str, Any]]
    best_state: dict[str, torch.Tensor]
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)


def learning_rate(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 10 % of ``peak``."""
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step`` (global generator, modality dropout).

    >>> step_seed(0, 1) != step_seed(0, 2) != step_seed(1, 1)
    True
    """
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**63)


def validation_loss(
    model: MultimodalLM,
    data: TrainData,
    cfg: TrainConfig,
    device: torch.device,
    masked: frozenset[str],
) -> float:
    """Mean response-token cross-entropy over the validation examples."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    bs = cfg.eval.batch_size
    with torch.no_grad():
        for lo in range(0, len(data.val), bs):
            b = data.batch(data.val[lo : lo + bs], device, with_response=True)
            with autocast(cfg, device):
                total += float(model.loss(b, model.slot_mask(b, masked)))
            tokens += b.n_targets
    model.train(was_training)
    return total / max(tokens, 1)


@dataclass
class _State:
    step: int = 0
    best_loss: float | None = None
    best_step: int = 0
    bad_evals: int = 0
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def _best_path(work: Path, step: int) -> Path:
    return work / "best" / f"step-{step:05d}.safetensors"


def _prune_best(work: Path, keep: set[int]) -> None:
    folder = work / "best"
    if folder.is_dir():
        for p in folder.glob("step-*.safetensors"):
            if int(p.stem.split("-")[1]) not in keep:
                p.unlink()


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def train_model(
    model: MultimodalLM,
    data: TrainData,
    cfg: TrainConfig,
    device: torch.device,
    work: Path,
    *,
    masked: frozenset[str] = frozenset(),
    label: str = "train",
    progress: ProgressFn | None = None,
    hooks: Hooks | None = None,
) -> TrainResult:
    """Train ``model`` (resuming from ``work/checkpoints`` when a checkpoint is there).

    ``masked``: sources always read as missing (single-modality training masks the others).
    The global torch generator is reseeded every step and restored on return.
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return _train(model, data, cfg, device, work, masked, label, progress, hooks)


def _train(
    model: MultimodalLM,
    data: TrainData,
    cfg: TrainConfig,
    device: torch.device,
    work: Path,
    masked: frozenset[str],
    label: str,
    progress: ProgressFn | None,
    hooks: Hooks | None,
) -> TrainResult:
    t0 = time.perf_counter()
    n = len(data.train)
    if n == 0:
        raise InputDataError(
            "no training samples for train.tasks in the train split",
            hint="check train.tasks against the dataset's tasks (RUN/dataset/samples.parquet)",
        )
    bs, ga = cfg.batch_size, cfg.grad_accum
    mb_per_epoch = math.ceil(n / bs)
    spe = math.ceil(mb_per_epoch / ga)
    total = cfg.epochs * spe if cfg.max_steps is None else min(cfg.epochs * spe, cfg.max_steps)
    eval_every = cfg.eval_every or spe
    save_every = cfg.save_every or eval_every
    warmup = min(cfg.warmup_steps, max(total - 1, 0))
    groups = model.parameter_groups()
    named = [x for g in groups for x in g]
    names = [nm for nm, _ in named]
    used = [(g, peak) for g, peak in zip(groups, cfg.peak_learning_rates(), strict=True) if g]
    peaks = [peak for _, peak in used]
    opt = torch.optim.AdamW(
        [{"params": [p for _, p in g], "lr": peak} for g, peak in used],
        weight_decay=cfg.weight_decay,
    )
    ck_root = work / "checkpoints"
    st = _State()
    resumed: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    last = ckpt.latest(ck_root)
    if last is not None:
        doc = ckpt.read_state(last)
        model.load_trainable(ckpt.load_tensors(last / ckpt.TRAINABLE))
        ckpt.restore_optimizer(
            opt, names, ckpt.load_tensors(last / ckpt.OPTIMIZER), doc["optimizer_param_groups"]
        )
        ckpt.restore_rng(ckpt.load_tensors(last / ckpt.RNG))
        keys = ("step", "best_loss", "best_step", "bad_evals", "stopped", "history")
        st = _State(*(doc[k] for k in keys))
        resumed = st.step
        if st.best_loss is not None:
            best_state = ckpt.load_tensors(_best_path(work, st.best_step))

    def report(detail: str) -> None:
        if progress is not None:
            progress(f"{label}: {detail}", st.step, total)

    report("resumed" if resumed else "starting")
    model.train()
    while st.step < total and not st.stopped:
        epoch, j = divmod(st.step, spe)
        order = epoch_order(n, cfg.seed, epoch)
        micro = [
            order[i * bs : (i + 1) * bs] for i in range(j * ga, min((j + 1) * ga, mb_per_epoch))
        ]
        torch.manual_seed(step_seed(cfg.seed, st.step))
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, st.step) + 1)
        batches = [data.batch([data.train[i] for i in mb], device, True) for mb in micro]
        n_tok = max(sum(b.n_targets for b in batches), 1)
        factor = learning_rate(st.step, total, warmup, 1.0)
        for g, peak in zip(opt.param_groups, peaks, strict=True):
            g["lr"] = peak * factor
        lr = peaks[0] * factor
        loss_sum = 0.0
        for b in batches:
            mask = model.slot_mask(b, masked, cfg.modality_dropout, gen)
            with autocast(cfg, device):
                loss = model.loss(b, mask)
            (loss / n_tok).backward()
            loss_sum += float(loss.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        st.step += 1
        rec: dict[str, Any] = {
            "step": st.step,
            "epoch": _round(st.step / spe),
            "loss": _round(loss_sum / n_tok),
            "lr": _round(lr),
            "grad_norm": _round(float(grad_norm)),
        }
        if data.val and (st.step % eval_every == 0 or st.step == total):
            val = validation_loss(model, data, cfg, device, masked)
            rec["val_loss"] = _round(val)
            if st.best_loss is None or val < st.best_loss - _IMPROVE:
                st.best_loss, st.best_step, st.bad_evals = val, st.step, 0
                best_state = model.trainable_state()
                ckpt.save_tensors(_best_path(work, st.step), best_state)
            else:
                st.bad_evals += 1
                st.stopped = st.bad_evals >= cfg.patience
            rec["best"] = st.best_step == st.step
        st.history.append(rec)
        if st.step % save_every == 0 or st.step == total or st.stopped:
            _checkpoint(model, opt, names, st, work, cfg, total)
        val_text = f" val {rec['val_loss']:.4f}" if "val_loss" in rec else ""
        report(f"loss {rec['loss']:.4f}{val_text} lr {lr:.2e}")
        if hooks is not None and hooks.on_step is not None:
            hooks.on_step(st.step)
    if best_state is None:  # no validation split: the last weights
        best_state = model.trainable_state()
        st.best_step = st.step
    write_metrics(work / METRICS, st.history)
    return TrainResult(
        steps=st.step,
        total_steps=total,
        steps_per_epoch=spe,
        best_step=st.best_step,
        best_val_loss=None if st.best_loss is None else _round(st.best_loss),
        stopped_early=st.stopped,
        resumed_from=resumed,
        history=st.history,
        best_state=best_state,
        seconds=time.perf_counter() - t0,
    )


def _checkpoint(
    model: MultimodalLM,
    opt: torch.optim.Optimizer,
    names: list[str],
    st: _State,
    work: Path,
    cfg: TrainConfig,
    total: int,
) -> None:
    root = work / "checkpoints"
    state = {
        "step": st.step,
        "total_steps": total,
        "best_loss": st.best_loss,
        "best_step": st.best_step,
        "bad_evals": st.bad_evals,
        "stopped": st.stopped,
        "schedule": {
            "kind": "warmup+cosine",
            "peak_lr": list(cfg.peak_learning_rates()),
            "warmup_steps": cfg.warmup_steps,
        },
        "history": st.history,
    }
    ckpt.save(root, st.step, model.trainable_state(), ckpt.optimizer_tensors(opt, names), state)
    ckpt.prune(root, cfg.keep_checkpoints)
    kept = {ckpt.read_state(p)["best_step"] for p in ckpt.complete(root)}
    _prune_best(work, kept | {st.best_step})
    write_metrics(work / METRICS, st.history)


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl``: one JSON object per optimizer step (atomically rewritten)."""
    import json

    atomic.write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
