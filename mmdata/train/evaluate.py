"""Evaluation: greedy generation on a split, answers parsed and scored exactly.

* ``defect_class`` (and any task whose target has a ``class``): the answer is normalised
  (case, ``_``/``-``/spaces, trailing punctuation) and matched to the class list — exactly,
  else when exactly one class name occurs in it. Anything else is *unparseable*: counted
  wrong, shown in its own confusion-matrix column and listed. Metrics: accuracy,
  per-class precision / recall / F1 / support, macro-F1 over the classes present in the
  truth or the predictions (as scikit-learn's default), the confusion matrix (rows: truth,
  columns: prediction, class order given).
* ``anomaly_time``: start/end seconds are read from the answer ("from 0.4 s to 1.2 s",
  "at 0.4 s ... until ... (2.0 s)", "... ends at 1.3 s"; "no change" → no interval). A target
  with an interval scores the IoU of the two intervals (0 when the answer has none); a target
  without one is right when the answer says nothing changes. Metrics: mean / median IoU,
  share with IoU ≥ 0.5, no-change accuracy, and accuracy (no-change right or IoU ≥ 0.5).
* other tasks: exact match of the normalised text.

>>> m = classification_metrics(["a", "b", "b"], ["a", "b", None], ["a", "b"])
>>> m["accuracy"], m["macro_f1"], m["unparseable"]
(0.6666666666666666, 0.8333333333333333, 1)
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmdata.config import TrainConfig
from mmdata.train.data import Encoded, Example
from mmdata.train.loop import TrainData
from mmdata.train.model import MultimodalLM, autocast
from mmdata.train.tokenizer import PromptFormat

UNPARSEABLE = "(unparseable)"
_NUM_S = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:s\b|sec|seconds?\b)")
_NO_CHANGE = re.compile(r"\b(no change|nothing changes|nothing abnormal|stays normal)\b")


def normalize(text: str) -> str:
    """Lower case, ``_``/``-``/spaces folded to one ``_``, outer punctuation dropped.

    >>> normalize("  Bearing-Wear. ")
    'bearing_wear'
    """
    t = re.sub(r"[\s_\-]+", "_", text.strip().lower())
    return t.strip("_.,;:!?\"'`()[]")


def parse_class(text: str, classes: Sequence[str]) -> str | None:
    """The class an answer names, or None.

    >>> parse_class("Loose part rattle", ["normal", "loose_part_rattle"])
    'loose_part_rattle'
    >>> parse_class("normal or bearing_wear", ["normal", "bearing_wear"]) is None
    True
    """
    norm = {normalize(c): c for c in classes}
    t = normalize(text)
    if t in norm:
        return norm[t]
    found = [
        c for n, c in norm.items() if re.search(rf"(?<![a-z0-9]){re.escape(n)}(?![a-z0-9])", t)
    ]
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class Interval:
    """A parsed localisation answer: ``change`` False means "nothing changes"."""

    change: bool
    start_s: float = 0.0
    end_s: float = 0.0


def parse_interval(text: str, window_s: float | None = None) -> Interval | None:
    """Start and end seconds from an answer; None when neither times nor "no change".

    >>> parse_interval("The signals change from 0.4 s to 1.2 s (bearing_wear).")
    Interval(change=True, start_s=0.4, end_s=1.2)
    >>> parse_interval("The window opens in an abnormal state (x) that ends at 1.3 s.")
    Interval(change=True, start_s=0.0, end_s=1.3)
    >>> parse_interval("No change: press-1 stays normal for the whole 2.0 s window.")
    Interval(change=False, start_s=0.0, end_s=0.0)
    """
    low = text.lower()
    nums = [float(x) for x in _NUM_S.findall(low)]
    if len(nums) >= 2:  # includes "no change within the window: X from 0.0 s to 2.0 s"
        return Interval(True, min(nums[:2]), max(nums[:2]))
    if _NO_CHANGE.search(low):
        return Interval(False)
    if len(nums) == 1 and re.search(r"\bends? at\b", low):
        return Interval(True, 0.0, nums[0])
    if len(nums) == 1 and window_s is not None and re.search(r"\b(at|from|begins?)\b", low):
        return Interval(True, min(nums[0], window_s), window_s)
    return None


def interval_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two intervals (0 when both are empty).

    >>> interval_iou((0.0, 1.0), (0.5, 1.5))
    0.3333333333333333
    """
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def classification_metrics(
    truth: Sequence[str], pred: Sequence[str | None], classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro-F1 and the confusion matrix.

    A class never predicted has precision 0 (scikit-learn's ``zero_division=0``); macro-F1
    averages the classes present in ``truth`` or ``pred``.
    """
    order = list(classes) + [c for c in dict.fromkeys(truth) if c not in classes]
    cols = [*order, UNPARSEABLE]
    matrix = [[0] * len(cols) for _ in order]
    for t, p in zip(truth, pred, strict=True):
        matrix[order.index(t)][cols.index(p if p is not None else UNPARSEABLE)] += 1
    per_class: dict[str, dict[str, float | int]] = {}
    for i, c in enumerate(order):
        tp = matrix[i][i]
        support = sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    present = [c for c in order if per_class[c]["support"] or any(p == c for p in pred)]
    n = len(truth)
    correct = sum(1 for t, p in zip(truth, pred, strict=True) if t == p)
    return {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "macro_f1": (sum(float(per_class[c]["f1"]) for c in present) / len(present))
        if present
        else 0.0,
        "classes": order,
        "per_class": per_class,
        "confusion": {"rows": order, "columns": cols, "matrix": matrix},
        "unparseable": sum(1 for p in pred if p is None),
    }


def localisation_metrics(
    targets: Sequence[dict[str, Any]], pred: Sequence[Interval | None]
) -> dict[str, Any]:
    """IoU statistics of predicted vs true intervals (targets: ``change``/``start_ns``/...)."""
    ious: list[float] = []
    no_change_right = no_change = correct = 0
    for t, p in zip(targets, pred, strict=True):
        if t.get("change") and t.get("start_ns") is not None and t.get("end_ns") is not None:
            truth = (t["start_ns"] / 1e9, t["end_ns"] / 1e9)
            iou = interval_iou(truth, (p.start_s, p.end_s)) if p is not None and p.change else 0.0
            ious.append(iou)
            correct += iou >= 0.5
        else:
            no_change += 1
            ok = p is not None and not p.change
            no_change_right += ok
            correct += ok
    n = len(targets)
    return {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "n_change": len(ious),
        "mean_iou": statistics.fmean(ious) if ious else None,
        "median_iou": statistics.median(ious) if ious else None,
        "iou_at_0.5": sum(1 for x in ious if x >= 0.5) / len(ious) if ious else None,
        "n_no_change": no_change,
        "no_change_accuracy": no_change_right / no_change if no_change else None,
        "unparseable": sum(1 for p in pred if p is None),
    }


def generate_answers(
    model: MultimodalLM,
    data: TrainData,
    items: Sequence[Encoded],
    fmt: PromptFormat,
    cfg: TrainConfig,
    device: torch.device,
    masked: frozenset[str] = frozenset(),
) -> list[str]:
    """Greedy answers to ``items`` (prompts only), in order."""
    model.eval()
    out: list[str] = []
    bs = cfg.eval.batch_size
    for lo in range(0, len(items), bs):
        b = data.batch(items[lo : lo + bs], device, with_response=False)
        with autocast(cfg, device):
            seqs = model.generate(
                b, model.slot_mask(b, masked), cfg.eval.max_new_tokens, fmt.eos_id
            )
        out.extend(fmt.decode(s) for s in seqs)
    return out


def task_classes(examples: Sequence[Example], task: str) -> list[str]:
    """Sorted class names of a task, from its examples' labels / target classes."""
    names = {
        e.target.get("class") or e.label
        for e in examples
        if e.task == task and (e.target.get("class") or e.label)
    }
    return sorted(str(n) for n in names)


def _window_s(ex: Example) -> float | None:
    m = re.search(r"(\d+(?:\.\d+)?)\s*s\b(?: long| window)", ex.prompt)
    return float(m.group(1)) if m else None


def score(
    examples: Sequence[Example],
    answers: Sequence[str],
    classes: dict[str, list[str]],
    max_examples: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics per task, and one prediction row per example (in the order given)."""
    rows: dict[int, dict[str, Any]] = {}
    by_task: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_task.setdefault(ex.task, []).append(i)
    tasks: dict[str, Any] = {}
    for task, idx in sorted(by_task.items()):
        exs = [examples[i] for i in idx]
        ans = [answers[i] for i in idx]
        errors: list[dict[str, Any]] = []
        if task in classes or any("class" in e.target for e in exs):
            names = classes.get(task) or task_classes(exs, task)
            truth = [str(e.target.get("class") or e.label) for e in exs]
            pred = [parse_class(a, names) for a in ans]
            m = classification_metrics(truth, pred, names)
            ok = [t == p for t, p in zip(truth, pred, strict=True)]
            parsed: list[Any] = pred
        elif task == "anomaly_time" or any("start_ns" in e.target for e in exs):
            intervals = [parse_interval(a, _window_s(e)) for a, e in zip(ans, exs, strict=True)]
            m = localisation_metrics([e.target for e in exs], intervals)
            ok, parsed = [], []
            for e, p in zip(exs, intervals, strict=True):
                if e.target.get("change") and e.target.get("start_ns") is not None:
                    truth_iv = (e.target["start_ns"] / 1e9, e.target["end_ns"] / 1e9)
                    good = (
                        p is not None
                        and p.change
                        and interval_iou(truth_iv, (p.start_s, p.end_s)) >= 0.5
                    )
                else:
                    good = p is not None and not p.change
                ok.append(good)
                parsed.append(None if p is None else [p.start_s, p.end_s] if p.change else "none")
        else:
            ok = [normalize(a) == normalize(e.response) for a, e in zip(ans, exs, strict=True)]
            parsed = [None] * len(exs)
            m = {"n": len(exs), "exact_match": sum(ok) / len(exs) if exs else 0.0}
        for i, e, a, p, good in zip(idx, exs, ans, parsed, ok, strict=True):
            row = {
                "sample_id": e.sample_id,
                "task": task,
                "label": e.label,
                "expected": e.response,
                "answer": a,
                "parsed": p,
                "correct": bool(good),
            }
            rows[i] = row
            if not good and len(errors) < max_examples:
                errors.append(row)
        m["errors"] = errors
        tasks[task] = m
    return tasks, [rows[i] for i in sorted(rows)]
