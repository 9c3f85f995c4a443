"""Checkpoints in safetensors + JSON (never pickle), written atomically, pruned, resumed.

A checkpoint is a folder ``step-XXXXX/`` holding

* ``trainable.safetensors`` — LoRA adapters, fully trained modules, projectors (with their
  feature statistics) and the missing embeddings;
* ``optimizer.safetensors`` — AdamW moments and step per parameter (keyed by parameter
  name), with ``state.json`` holding the param groups;
* ``rng.safetensors`` — the torch CPU (and CUDA) generator states;
* ``state.json`` — step, early-stopping state, the learning-rate schedule's position and a
  hash of the config it belongs to.

It is written as ``step-XXXXX.tmp/`` and renamed into place, so a kill leaves either a whole
checkpoint or a ``.tmp`` folder that :func:`latest` ignores and :func:`prune` removes.

>>> import tempfile, torch
>>> root = Path(tempfile.mkdtemp())
>>> _ = save(root, 3, {"w": torch.ones(2)}, None, {"step": 3})
>>> ck = latest(root)
>>> ck.name, load_tensors(ck / TRAINABLE)["w"].tolist(), read_state(ck)["step"]
('step-00003', [1.0, 1.0], 3)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mmdata import atomic
from mmdata.errors import InputDataError

TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.safetensors"
RNG = "rng.safetensors"
STATE = "state.json"
FORMAT = "mmdata.train/1"
#: The only file types a checkpoint or a trained-model folder may hold.
ALLOWED_SUFFIXES = (".safetensors", ".json", ".jsonl", ".jinja", ".txt", ".parquet")


def step_dir(root: Path, step: int) -> Path:
    """``root/step-XXXXX`` (zero-padded so names sort by step)."""
    return root / f"step-{step:05d}"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` as one safetensors file, atomically."""
    with atomic.atomic_path(path) as tmp:
        save_file(
            {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata={"format": FORMAT},
        )


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (CPU tensors)."""
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises SafetensorError, OSError...
        raise InputDataError(
            f"checkpoint file {str(path)!r} is unreadable: {err}",
            hint="delete the checkpoint folder to resume from the one before",
        ) from err


def optimizer_tensors(
    opt: torch.optim.Optimizer, names: list[str]
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """AdamW state as named tensors (``<param>::<key>``) plus JSON-ready param groups."""
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            t = val if isinstance(val, torch.Tensor) else torch.tensor(val)
            tensors[f"{names[idx]}::{key}"] = t
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return tensors, groups


def restore_optimizer(
    opt: torch.optim.Optimizer,
    names: list[str],
    tensors: dict[str, torch.Tensor],
    groups: list[dict[str, Any]],
) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    index = {n: i for i, n in enumerate(names)}
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        name, _, field = key.rpartition("::")
        state.setdefault(index[name], {})[field] = t
    fixed = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    opt.load_state_dict({"state": state, "param_groups": fixed})


def rng_tensors() -> dict[str, torch.Tensor]:
    """The global torch generator states (CPU, and CUDA when present)."""
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i}"] = s
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_tensors`."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save(
    root: Path,
    step: int,
    trainable: dict[str, torch.Tensor],
    optimizer: tuple[dict[str, torch.Tensor], list[dict[str, Any]]] | None,
    state: dict[str, Any],
) -> Path:
    """Write checkpoint ``step`` under ``root`` (tmp folder + rename) and return its path."""
    final = step_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_tensors(tmp / TRAINABLE, trainable)
    doc = dict(state)
    if optimizer is not None:
        save_tensors(tmp / OPTIMIZER, optimizer[0])
        doc["optimizer_param_groups"] = optimizer[1]
    save_tensors(tmp / RNG, rng_tensors())
    atomic.write_json(tmp / STATE, {"format": FORMAT, **doc})
    atomic.fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic.fsync_dir(root)
    return final


def complete(root: Path) -> list[Path]:
    """Whole checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")]
    return sorted(p for p in found if not p.name.endswith(".tmp") and (p / STATE).is_file())


def latest(root: Path) -> Path | None:
    """The newest whole checkpoint under ``root``, or None."""
    found = complete(root)
    return found[-1] if found else None


def read_state(ckpt: Path) -> dict[str, Any]:
    """``state.json`` of a checkpoint."""
    doc: dict[str, Any] = json.loads((ckpt / STATE).read_text(encoding="utf-8"))
    return doc


def prune(root: Path, keep: int) -> None:
    """Keep the ``keep`` newest checkpoints; drop older ones and half-written ``.tmp`` folders."""
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name.endswith(".tmp"):
            shutil.rmtree(p, ignore_errors=True)
    for p in complete(root)[:-keep]:
        shutil.rmtree(p)


def foreign_files(root: Path) -> list[Path]:
    """Files under ``root`` that are not safetensors/JSON/text (a pickle would be one).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); _ = (d / "x.pt").write_bytes(b"")
    >>> [p.name for p in foreign_files(d)]
    ['x.pt']
    """
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix not in ALLOWED_SUFFIXES)
