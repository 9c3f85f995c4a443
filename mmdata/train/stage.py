"""The ``train`` and ``eval`` stages, and loading a trained model back.

``run_train`` (after ``dataset`` and ``features``) writes ``RUN/train/``::

    model/trainable.safetensors   best weights (validation loss): adapters, trained modules,
                                  projectors with their feature statistics, missing embeddings
    model/model.json              what rebuilds the model (config, feature sizes, base model)
    tokenizer/                    the tokenizer (trained on the train split, or the base's)
    base/                         the built-in model's random base weights (built-in only)
    checkpoints/step-XXXXX/       the last train.keep_checkpoints checkpoints
    metrics.jsonl                 one line per optimizer step (loss, lr, grad norm, val loss)
    summary.json                  steps, best step, early stop, timings

While it runs, checkpoints live in ``RUN/.resume/train/<fingerprint>/``: the runner clears a
stage's work folder when it fails, and a killed training must find them again. Re-running
the same stage (same config and inputs) resumes from the last one; the folder moves into
``RUN/train`` when training completes.

``run_eval`` (after ``train``) writes ``RUN/eval/metrics.json``, ``predictions.parquet`` and,
with the ablation, ``ablation.json`` plus one folder per single-modality model under
``ablation/`` (see :mod:`mmdata.train.ablation`).

>>> train_overrides(PipelineConfig.model_validate({"run_dir": "r", "assets": {"a": {
...     "sources": [{"connector": "notes", "path": "n"}]}}}), device="cpu").train.device
'cpu'
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmdata import atomic
from mmdata.config import PipelineConfig, TrainConfig, config_hash
from mmdata.errors import ConfigError, StageError
from mmdata.rundir import RunDir, StageCounts
from mmdata.runner import ProgressFn, StageContext, StageOutcome, StageSpec, run_stage
from mmdata.train import checkpoint as ckpt
from mmdata.train.data import (
    Encoded,
    Example,
    FeatureBank,
    Rejected,
    encode,
    read_examples,
)
from mmdata.train.loop import METRICS, Hooks, TrainData, TrainResult, train_model
from mmdata.train.model import (
    MultimodalLM,
    builtin_lm,
    check_quantize,
    cpu_threads,
    load_lm,
    quiet_hf,
    resolve_base_model,
    resolve_device,
    torch_settings,
    with_lora,
)
from mmdata.train.tokenizer import PromptFormat, load_tokenizer, train_tokenizer

MODEL_FORMAT = "mmdata.train/1"
SUMMARY_VERSION = "mmdata.train.summary/1"


def train_overrides(config: PipelineConfig, **changes: Any) -> PipelineConfig:
    """``config`` with ``train`` fields replaced, validated — what the CLI options
    ``--device``, ``--base-model``, ``--epochs``... map to. None values are ignored; a dict
    updates a section (``eval={"split": "validation"}`` keeps the other eval fields)."""
    data = config.model_dump(mode="python")
    train = data["train"]
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(train.get(key), dict):
            train[key] = {**train[key], **value}
        elif value is not None:
            train[key] = value
    return PipelineConfig.model_validate(data)


def _drop_resume(resume: Path) -> None:
    """Remove a finished stage's resume folder, and its parents when empty."""
    shutil.rmtree(resume, ignore_errors=True)
    for parent in (resume.parent, resume.parent.parent):
        try:
            parent.rmdir()
        except OSError:  # not empty (another stage's resume folder), or gone
            return


def _resume_dir(run: RunDir, stage: str, fingerprint: str) -> Path:
    """``RUN/.resume/<stage>/<fingerprint>``; folders of other fingerprints (a changed config
    after a kill) can never resume and are removed."""
    folder = run.root / ".resume" / stage
    current = folder / fingerprint[:16]
    if folder.is_dir():
        for old in folder.iterdir():
            if old != current:
                shutil.rmtree(old, ignore_errors=True)
    return current


def _require(run: RunDir, stage: str, verb: str) -> str:
    rec = run.manifest.stages.get(stage)
    if rec is None or rec.status != "complete":
        verbs = {"dataset": "build", "features": "features", "train": "train"}
        raise StageError(
            f"{verb} needs a completed {stage} stage in this run",
            hint=f"run `mmdata {verbs[stage]}` first",
        )
    return rec.fingerprint


# -- setup shared by training, ablation trainings and evaluation ----------------------------
@dataclass
class Setup:
    """A tokenizer, the examples of some splits encoded, and their features."""

    fmt: PromptFormat
    examples: list[Example]
    encoded: list[Encoded]
    rejected: list[Rejected]
    bank: FeatureBank

    def data(self, train: str = "train", val: str = "validation") -> TrainData:
        """The encoded examples of two splits as the loop's train/validation data."""
        pick = [e for e in self.encoded if self.examples[e.index].split == train]
        held = [e for e in self.encoded if self.examples[e.index].split == val]
        return TrainData(self.examples, pick, held, self.bank, self.fmt.pad_id)

    def split(self, name: str) -> list[Encoded]:
        """Encoded examples of one split."""
        return [e for e in self.encoded if self.examples[e.index].split == name]

    def sources(self) -> list[str]:
        """Modalities with features in these examples, in table order."""
        from mmdata.train.data import MODALITIES

        have = {s.source for e in self.examples for s in e.slots if self.bank.row(s)}
        return [m for m in MODALITIES if m in have]


def make_setup(
    run: RunDir, tasks: list[str], splits: list[str], tokenizer: Any, cfg: TrainConfig
) -> Setup:
    """Read, encode and load features for ``tasks`` in ``splits``."""
    examples, bad = read_examples(run.stage_path("dataset"), tasks, splits)
    fmt = PromptFormat(tokenizer, cfg.tokens_per_medium)
    encoded, too_long = encode(examples, fmt, cfg.max_length)
    bank = FeatureBank(run.stage_path("features"), [s for e in examples for s in e.slots])
    return Setup(fmt, examples, encoded, bad + too_long, bank)


def _tokenizer(run: RunDir, cfg: TrainConfig, base_dir: Path | None, dest: Path) -> Any:
    if (dest / "tokenizer_config.json").is_file():  # a resumed run keeps its tokenizer
        return load_tokenizer(dest)
    if base_dir is not None:
        tok = load_tokenizer(base_dir)
    else:
        examples, _ = read_examples(run.stage_path("dataset"), cfg.tasks, ["train"])
        texts = [t for e in examples for t in (e.prompt, e.response)]
        tok = train_tokenizer(texts, cfg.model.vocab_size)
    tok.save_pretrained(str(dest))
    return load_tokenizer(dest)


def new_model(
    cfg: TrainConfig,
    base_dir: Path,
    builtin: bool,
    dims: dict[str, int],
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] | None,
    device: torch.device,
) -> MultimodalLM:
    """Base LM (from ``base_dir``) + LoRA + fresh projectors (initialised from the seed)."""
    if stats is None:
        stats = {k: (torch.zeros(d), torch.ones(d)) for k, d in dims.items()}
    with torch.random.fork_rng(devices=[]), quiet_hf():
        torch.manual_seed(cfg.seed)
        lm = with_lora(load_lm(base_dir, cfg, device), cfg, builtin)
        model = MultimodalLM(lm, dims, stats, cfg)
    model.projectors.to(device)
    model.missing.data = model.missing.data.to(device)
    return model


def _fingerprint_config(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    doc = cfg.model_dump(mode="json", exclude={"eval", "threads", "device"})
    # the thread count changes float sums (a resumed run must use the same one)
    threads = cpu_threads(cfg) if device.type == "cpu" else None
    return {**doc, "device": device.type, "threads": threads}


@dataclass
class Trained:
    """A trained model loaded back, with the config it was trained with."""

    model: MultimodalLM
    cfg: TrainConfig  # training config, with the current run's device / eval settings
    fmt: PromptFormat
    doc: dict[str, Any]
    base_dir: Path
    builtin: bool


def load_trained(train_dir: Path, current: TrainConfig) -> Trained:
    """The model of a train stage folder (``RUN/train``) on ``current.device``, evaluated with
    ``current.eval``; a pretrained base model must still be the one it was trained on."""
    doc = json.loads((train_dir / "model" / "model.json").read_text(encoding="utf-8"))
    keep = {
        "device": current.device,
        "bf16": current.bf16,
        "threads": current.threads,
        "eval": current.eval.model_dump(),
    }
    cfg = TrainConfig.model_validate({**doc["train_config"], **keep})
    device = resolve_device(cfg.device)
    check_quantize(cfg, device)
    builtin = doc["base_model"] is None
    base_dir = (
        train_dir / "base" if builtin else resolve_base_model(doc["base_model"], cfg.revision)
    )
    if not builtin:
        from mmdata.features.encoders import weights_revision

        if weights_revision(base_dir) != doc["base_revision"]:
            raise StageError(
                f"the base model at {str(base_dir)!r} changed since it was trained on: the "
                "adapters no longer fit its weights",
                hint="train again (`mmdata train --force`)",
            )
    tok = load_tokenizer(train_dir / "tokenizer")
    model = new_model(cfg, base_dir, builtin, doc["dims"], None, device)
    model.load_trainable(ckpt.load_tensors(train_dir / "model" / ckpt.TRAINABLE))
    return Trained(model, cfg, PromptFormat(tok, cfg.tokens_per_medium), doc, base_dir, builtin)


def write_model(dest: Path, result: TrainResult, doc: dict[str, Any]) -> None:
    """``model/``: the best weights and ``model.json``."""
    ckpt.save_tensors(dest / ckpt.TRAINABLE, result.best_state)
    doc = {"format": MODEL_FORMAT, **doc, "best_step": result.best_step}
    atomic.write_json(dest / "model.json", doc)


def result_summary(result: TrainResult) -> dict[str, Any]:
    """JSON-ready facts of a training (``seconds`` is the only run-dependent value)."""
    return {
        "steps": result.steps,
        "total_steps": result.total_steps,
        "steps_per_epoch": result.steps_per_epoch,
        "best_step": result.best_step,
        "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early,
        "resumed_from": result.resumed_from,
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "seconds": round(result.seconds, 2),
    }


def _quarantine(ctx: StageContext, bad: list[Rejected]) -> None:
    for r in bad:
        ctx.quarantine.record(
            "dataset/samples.parquet", r.error, r.message, item_id=r.sample_id, locator="sample"
        )


# -- train -------------------------------------------------------------------------------
def run_train(
    run: RunDir,
    config: PipelineConfig,
    *,
    progress: ProgressFn | None = None,
    force: bool = False,
    hooks: Hooks | None = None,
) -> StageOutcome:
    """The ``train`` stage: train projectors + LoRA on ``train.tasks`` (resumes when killed)."""
    cfg = config.train
    fp_dataset = _require(run, "dataset", "train")
    fp_features = _require(run, "features", "train")
    device = resolve_device(cfg.device)
    check_quantize(cfg, device)
    _check_tasks(run, cfg.tasks, "train.tasks")
    base_dir: Path | None = None
    base_rev = None
    if cfg.base_model is not None:
        from mmdata.features.encoders import weights_revision

        base_dir = resolve_base_model(cfg.base_model, cfg.revision)
        base_rev = weights_revision(base_dir)
    spec = StageSpec(
        name="train",
        version="1",
        config=_fingerprint_config(cfg, device),
        inputs_fingerprint=config_hash(
            {"dataset": fp_dataset, "features": fp_features, "base": base_rev}
        ),
    )
    resume = _resume_dir(run, "train", spec.fingerprint())

    def stage(ctx: StageContext) -> StageCounts:
        with torch_settings(cfg, device), torch.random.fork_rng(devices=[]):
            tok = _tokenizer(run, cfg, base_dir, resume / "tokenizer")
            builtin = base_dir is None
            lm_dir = base_dir
            if lm_dir is None:
                lm_dir = resume / "base"
                if not (lm_dir / "config.json").is_file():
                    with quiet_hf():
                        builtin_lm(cfg, tok, cfg.seed).save_pretrained(str(lm_dir))
            setup = make_setup(run, cfg.tasks, ["train", "validation"], tok, cfg)
            _quarantine(ctx, setup.rejected)
            data = setup.data()
            stats = setup.bank.stats([setup.examples[e.index] for e in data.train])
            model = new_model(cfg, lm_dir, builtin, setup.bank.dims, stats, device)
            result = train_model(
                model, data, cfg, device, resume, progress=ctx.progress, hooks=hooks
            )
            doc = {
                "base_model": cfg.base_model,
                "base_revision": base_rev,
                "dims": setup.bank.dims,
                "sources": setup.sources(),
                "train_config": cfg.model_dump(mode="json"),
                "masked": [],
            }
            write_model(ctx.out_dir / "model", result, doc)
            for name in ("tokenizer", "base", "checkpoints", METRICS):
                if (resume / name).exists():
                    shutil.move(str(resume / name), str(ctx.out_dir / name))
            summary = {
                "schema_version": SUMMARY_VERSION,
                **result_summary(result),
                "device": device.type,
                "samples": {"train": len(data.train), "validation": len(data.val)},
                "missing_features": setup.bank.missing,
                "trainable_parameters": sum(
                    p.numel() for p in model.parameters() if p.requires_grad
                ),
                "console": train_console(result, len(data.train), len(data.val)),
            }
            atomic.write_json(ctx.out_dir / "summary.json", summary)
        _drop_resume(resume)
        n_in = len(setup.encoded) + len(setup.rejected)
        return StageCounts(in_=n_in, out=len(setup.encoded), quarantined=len(setup.rejected))

    return run_stage(run, spec, stage, progress=progress, force=force)


def train_console(result: TrainResult, n_train: int, n_val: int) -> list[str]:
    """Console lines after training."""
    stop = "stopped early" if result.stopped_early else "ran all steps"
    val = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "n/a"
    return [
        f"trained {result.steps}/{result.total_steps} steps on {n_train} samples "
        f"({n_val} validation) in {result.seconds:.1f} s; {stop}",
        f"best step {result.best_step}: validation loss {val}; "
        f"final train loss {result.history[-1]['loss'] if result.history else float('nan'):.4f}",
    ]


def console_lines(out_dir: Path) -> list[str]:
    """The lines a finished train or eval stage left for the console (for the CLI)."""
    for name in ("summary.json", "metrics.json"):
        path = out_dir / name
        if path.is_file():
            lines: list[str] = json.loads(path.read_text(encoding="utf-8")).get("console", [])
            return lines
    return []


# -- eval --------------------------------------------------------------------------------
def run_eval(
    run: RunDir,
    config: PipelineConfig,
    *,
    progress: ProgressFn | None = None,
    force: bool = False,
    ablation: bool | None = None,
    hooks: Hooks | None = None,
) -> StageOutcome:
    """The ``eval`` stage: score the trained model on ``train.eval.split``; with the ablation,
    also each modality masked and one model trained per modality alone."""
    from mmdata.train.ablation import evaluate_run

    cfg = config.train
    if ablation is not None:
        cfg = train_overrides(config, eval={"ablation": ablation}).train
    fps = {s: _require(run, s, "eval") for s in ("dataset", "features", "train")}
    device = resolve_device(cfg.device)
    spec = StageSpec(
        name="eval",
        version="1",
        config={
            "eval": cfg.eval.model_dump(mode="json"),
            "device": device.type,
            "sensors_as": config.build.sensors_as,
        },
        inputs_fingerprint=config_hash(fps),
    )
    resume = _resume_dir(run, "eval", spec.fingerprint())

    def stage(ctx: StageContext) -> StageCounts:
        with torch_settings(cfg, device), torch.random.fork_rng(devices=[]):
            trained = load_trained(run.stage_path("train"), cfg)
            tasks = trained.cfg.eval.tasks or trained.cfg.tasks
            _check_tasks(run, tasks, "train.eval.tasks")
            splits = ["train", "validation", trained.cfg.eval.split]
            setup = make_setup(
                run, tasks, list(dict.fromkeys(splits)), trained.fmt.tokenizer, trained.cfg
            )
            scored = setup.split(trained.cfg.eval.split)
            bad = [r for r in setup.rejected if r.split == trained.cfg.eval.split]
            _quarantine(ctx, bad)
            evaluate_run(ctx, trained, setup, resume, config.build.sensors_as, hooks)
        _drop_resume(resume)
        return StageCounts(in_=len(scored) + len(bad), out=len(scored), quarantined=len(bad))

    return run_stage(run, spec, stage, progress=progress, force=force)


def _check_tasks(run: RunDir, tasks: list[str], field: str) -> None:
    """Every task must be in the dataset."""
    import pyarrow.parquet as pq

    path = run.stage_path("dataset") / "samples.parquet"
    have = sorted(set(pq.read_table(path, columns=["task"]).column("task").to_pylist()))
    unknown = [t for t in tasks if t not in have]
    if unknown:
        raise ConfigError(
            "pipeline config", field, unknown, f"tasks of the dataset ({', '.join(have)})"
        )
