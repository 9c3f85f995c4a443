"""Evaluation of a trained model, and the per-modality ablation.

Rows of the ablation (modalities that have features in the dataset, in table order):

* ``fused`` — the trained model, every modality;
* ``fused, <m> masked`` — the same weights, modality ``m``'s slots replaced by its missing
  embedding (what the fused model loses without ``m``);
* ``<m> only`` — a model trained from the same base, tokenizer, data, config and seed with
  every other modality always masked (in training and evaluation): what ``m`` alone can
  teach.

On data where each fault shows in one modality only, ``fused`` should beat the best
``<m> only`` row by a wide margin; ``ablation.json`` records that margin
(``fused_minus_best_single``) on the primary task's macro-F1 (accuracy when no task is a
classification). The single-modality trainings resume like the main one (their
checkpoints sit in ``RUN/.resume/eval/...`` until the stage completes).

>>> variants(["image", "audio"])[1]
Variant(name='fused, image masked', trained_on=('image', 'audio'), masked=('image',))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from mmdata import atomic
from mmdata.runner import StageContext
from mmdata.train.evaluate import generate_answers, score, task_classes
from mmdata.train.loop import METRICS, Hooks, train_model
from mmdata.train.model import MultimodalLM, resolve_device

if TYPE_CHECKING:
    from mmdata.train.stage import Setup, Trained

EVAL_VERSION = "mmdata.eval/1"
ABLATION_VERSION = "mmdata.eval.ablation/1"


@dataclass(frozen=True)
class Variant:
    """One row: what the model was trained on and which modalities it reads masked."""

    name: str
    trained_on: tuple[str, ...]
    masked: tuple[str, ...]


def variants(sources: list[str]) -> list[Variant]:
    """The ablation rows for the modalities present."""
    allm = tuple(sources)
    rows = [Variant("fused", allm, ())]
    rows += [Variant(f"fused, {m} masked", allm, (m,)) for m in sources]
    rows += [Variant(f"{m} only", (m,), tuple(x for x in sources if x != m)) for m in sources]
    return rows


def primary(tasks: dict[str, Any]) -> tuple[str, str]:
    """``(task, metric)`` the ablation compares: a classification's macro-F1 first."""
    for name, m in tasks.items():
        if "macro_f1" in m:
            return name, "macro_f1"
    name = next(iter(tasks))
    return name, "accuracy" if "accuracy" in tasks[name] else "exact_match"


def _notes(trained: Trained, sensors_as: str) -> list[str]:
    notes = []
    if sensors_as == "text_summary":
        notes.append(
            "the prompts hold a text summary of the sensor windows (build.sensors_as: "
            "text_summary): masking the sensor features does not remove that text, so rows "
            "without sensor features still read sensor statistics"
        )
    if trained.cfg.modality_dropout == 0:
        notes.append(
            "the fused model never saw a masked modality in training "
            "(train.modality_dropout: 0): its masked rows show what it relies on"
        )
    return notes


def _table(rows: list[dict[str, Any]], task: str, metric: str, n: int, split: str) -> list[str]:
    lines = [
        f"ablation on {split} ({task}, {n} samples; {metric.replace('_', '-')} and accuracy):",
        f"  {'variant':<24} {'trained on':<22} {'macro-F1':>8} {'accuracy':>8}",
    ]
    for r in rows:
        f1 = f"{r['macro_f1']:.3f}" if r.get("macro_f1") is not None else "-"
        lines.append(
            f"  {r['variant']:<24} {'+'.join(r['trained_on']):<22} {f1:>8} {r['accuracy']:>8.3f}"
        )
    return lines


def _row(v: Variant, tasks: dict[str, Any], task: str) -> dict[str, Any]:
    m = tasks.get(task, {})
    return {
        "variant": v.name,
        "trained_on": list(v.trained_on),
        "masked": list(v.masked),
        "macro_f1": m.get("macro_f1"),
        "accuracy": m.get("accuracy", m.get("exact_match", 0.0)),
        "tasks": {t: _headline(x) for t, x in tasks.items()},
    }


def _ablation_doc(
    table: list[dict[str, Any]], task: str, metric: str, n: int, cfg: Any, notes: list[str]
) -> dict[str, Any]:
    singles = [r for r in table if r["variant"].endswith(" only")]
    best = max(singles, key=lambda r: r[metric] or 0.0)
    margin = (table[0][metric] or 0.0) - (best[metric] or 0.0)
    lines = _table(table, task, metric, n, cfg.eval.split)
    lines.append(f"  fused - best single-modality model ({best['variant']}): {margin:+.3f}")
    return {
        "schema_version": ABLATION_VERSION,
        "split": cfg.eval.split,
        "task": task,
        "metric": metric,
        "n": n,
        "seed": cfg.seed,
        "rows": table,
        "best_single": best["variant"],
        "fused_minus_best_single": margin,
        "notes": notes,
        "console": lines,
    }


def _train_single(
    ctx: StageContext, trained: Trained, setup: Setup, v: Variant, resume: Path, hooks: Any
) -> MultimodalLM:
    """Train the ``<m> only`` model of ``v`` and save it under ``ablation/only-<m>/``."""
    from mmdata.train.stage import new_model, result_summary, write_model

    cfg, name = trained.cfg, f"only-{v.trained_on[0]}"
    device = resolve_device(cfg.device)
    data = setup.data()
    stats = setup.bank.stats([setup.examples[e.index] for e in data.train])
    model = new_model(cfg, trained.base_dir, trained.builtin, setup.bank.dims, stats, device)
    res = train_model(
        model,
        data,
        cfg,
        device,
        resume / name,
        masked=frozenset(v.masked),
        label=f"eval: {v.name} (training)",
        progress=ctx.progress,
        hooks=hooks,
    )
    model.load_trainable(res.best_state)
    out = ctx.out_dir / "ablation" / name
    write_model(out / "model", res, {**trained.doc, "masked": list(v.masked)})
    (resume / name / METRICS).replace(out / METRICS)
    atomic.write_json(out / "summary.json", result_summary(res))
    return model


def evaluate_run(
    ctx: StageContext,
    trained: Trained,
    setup: Setup,
    resume: Path,
    sensors_as: str,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """Score ``trained`` on the eval split (and run the ablation); write ``ctx.out_dir``."""
    cfg = trained.cfg
    device = resolve_device(cfg.device)
    items = setup.split(cfg.eval.split)
    exs = [setup.examples[e.index] for e in items]
    data = setup.data()
    classes = {
        t: task_classes(setup.examples, t)
        for t in sorted({e.task for e in setup.examples})
        if any("class" in e.target for e in setup.examples if e.task == t)
    }

    def run_variant(model: MultimodalLM, v: Variant) -> tuple[dict[str, Any], list[Any]]:
        ctx.report(f"eval: {v.name}", 0, len(items))
        masked = frozenset(v.masked)
        answers = generate_answers(model, data, items, setup.fmt, cfg, device, masked)
        ctx.report(f"eval: {v.name}", len(items), len(items))
        return score(exs, answers, classes, cfg.eval.examples)

    sources = setup.sources()
    rows_v = variants(sources)
    tasks, preds = run_variant(trained.model, rows_v[0])
    _write_predictions(ctx.out_dir / "predictions.parquet", preds)
    task, metric = primary(tasks) if tasks else ("", "accuracy")
    notes = _notes(trained, sensors_as)
    console = _console(tasks, cfg.eval.split, len(items))
    doc_ab: dict[str, Any] | None = None
    if cfg.eval.ablation and len(sources) >= 2 and items:
        table = [_row(rows_v[0], tasks, task)]
        for v in rows_v[1:]:
            only = v.name.endswith(" only")
            model = _train_single(ctx, trained, setup, v, resume, hooks) if only else trained.model
            table.append(_row(v, run_variant(model, v)[0], task))
        doc_ab = _ablation_doc(table, task, metric, len(items), cfg, notes)
        atomic.write_json(ctx.out_dir / "ablation.json", doc_ab)
        console += doc_ab["console"]
    elif cfg.eval.ablation:
        notes.append(f"ablation skipped: modalities with features: {sources or 'none'}")
    head = tasks.get(task, {})
    doc = {
        "schema_version": EVAL_VERSION,
        "split": cfg.eval.split,
        "n": len(items),
        "task": task,
        "accuracy": head.get("accuracy"),
        "macro_f1": head.get("macro_f1"),
        "tasks": tasks,
        "model": {
            "best_step": trained.doc.get("best_step"),
            "base_model": trained.doc["base_model"],
            "seed": cfg.seed,
        },
        "notes": notes,
        "console": console + [f"note: {n}" for n in notes],
    }
    atomic.write_json(ctx.out_dir / "metrics.json", doc)
    return {"metrics": doc, "ablation": doc_ab}


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "macro_f1", "mean_iou", "no_change_accuracy", "exact_match", "unparseable")
    return {k: m[k] for k in keys if k in m}


def _console(tasks: dict[str, Any], split: str, n: int) -> list[str]:
    lines = []
    for name, m in tasks.items():
        if "macro_f1" in m:
            lines.append(
                f"{name} on {split} ({m['n']} samples): accuracy {m['accuracy']:.3f}, "
                f"macro-F1 {m['macro_f1']:.3f}, unparseable {m['unparseable']}"
            )
            for c, pc in m["per_class"].items():
                lines.append(
                    f"  {c:<22} P {pc['precision']:.3f}  R {pc['recall']:.3f}  "
                    f"F1 {pc['f1']:.3f}  n {pc['support']}"
                )
        elif "mean_iou" in m:
            iou = "n/a" if m["mean_iou"] is None else f"{m['mean_iou']:.3f}"
            nca = m["no_change_accuracy"]
            lines.append(
                f"{name} on {split} ({m['n']} samples): mean IoU {iou} over {m['n_change']} "
                f"intervals, no-change accuracy {'n/a' if nca is None else f'{nca:.3f}'}, "
                f"unparseable {m['unparseable']}"
            )
        else:
            lines.append(
                f"{name} on {split} ({m['n']} samples): exact match {m['exact_match']:.3f}"
            )
    if not tasks:
        lines.append(f"no {split} samples to score ({n})")
    return lines


def _write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    cols = ["sample_id", "task", "label", "expected", "answer", "parsed", "correct"]
    data = {c: [r[c] for r in rows] for c in cols}
    data["parsed"] = [json.dumps(p) for p in data["parsed"]]
    schema = pa.schema([(c, pa.bool_() if c == "correct" else pa.string()) for c in cols])
    atomic.write_parquet(path, pa.table(data, schema=schema))
