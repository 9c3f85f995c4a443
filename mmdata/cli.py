"""The ``mmdata`` command line. Every verb has ``--help`` with an example.

Errors never show a traceback: each :class:`~mmdata.errors.MmdataError` subclass maps to a
message and an exit code (README, "Exit codes"). ``MMDATA_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mmdata._version import __version__
from mmdata.console import err_console, out_console, print_json, progress_bar
from mmdata.errors import ConfigError, MmdataError, UsageError

app = typer.Typer(
    name="mmdata",
    help="Turn raw factory logs into time-aligned, anonymized multimodal datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors (no progress).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print a JSON result on stdout.")]


def _version(value: bool) -> None:
    if value:
        out_console.print(f"mmdata {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """mmdata: camera, audio, sensor and notes logs → multimodal instruction-tuning data.

    Example: [bold]mmdata demo[/bold]
    """


@app.command(epilog="Example: mmdata synth --out data/factory --assets 3 --minutes 10 --seed 0")
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the factory into.")],
    assets: Annotated[int, typer.Option(help="Number of assets (stations).")] = 3,
    minutes: Annotated[float, typer.Option(help="Minutes of data per asset.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    camera: Annotated[str, typer.Option(help="Camera output: jpeg frames or mp4.")] = "jpeg",
    sensor_format: Annotated[
        str, typer.Option(help="Accelerometer files: parquet, csv, or mixed (by asset).")
    ] = "mixed",
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing synthetic factory in --out.")
    ] = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Generate the synthetic inspection line: camera, accelerometer, microphone, notes.

    Writes files as real devices would (own clocks with offset and drift, sync events,
    faults visible in one modality each) plus ground_truth.json.
    """
    from mmdata.synth import SynthConfig, generate_factory

    cfg = _validated(
        SynthConfig,
        "synth options",
        {"assets": assets, "minutes": minutes, "seed": seed, "camera": camera,
         "sensor_format": sensor_format, "workers": workers},
    )  # fmt: skip
    with progress_bar(quiet or as_json) as progress:
        summary = generate_factory(cfg, out, progress=progress, overwrite=overwrite)
    if as_json:
        print_json(summary.model_dump(mode="json"))
    elif not quiet:
        err_console.print(
            f"[green]wrote[/green] {sum(summary.files.values())} files "
            f"({summary.bytes_written / 1e6:.1f} MB) to {out} in {summary.elapsed_ns / 1e9:.1f} s"
        )


@app.command(epilog="Example: mmdata demo --run-dir runs/demo")
def demo(
    run_dir: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/demo"),
    assets: Annotated[int, typer.Option(help="Assets in the synthetic factory.")] = 3,
    minutes: Annotated[float, typer.Option(help="Minutes per asset.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic factory.")] = 0,
    force: Annotated[bool, typer.Option(help="Re-run stages even when unchanged.")] = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Run the pipeline on the bundled synthetic factory and summarise what it wrote.

    Stages whose inputs and config are unchanged are skipped on a re-run.
    """
    from mmdata.demo import DemoConfig, run_demo

    cfg = _validated(
        DemoConfig,
        "demo options",
        {"run_dir": run_dir, "assets": assets, "minutes": minutes, "seed": seed, "force": force},
    )
    with progress_bar(quiet or as_json) as progress:
        summary = run_demo(cfg, progress=progress)
    if as_json:
        print_json(summary)
        return
    if quiet:
        return
    table = Table(title="stages", show_edge=False)
    for col in ("stage", "status", "in", "out", "quarantined", "seconds"):
        table.add_column(col)
    for s in summary["stages"]:
        c = s["counts"]
        status = "skipped (unchanged)" if s["skipped"] else "ran"
        table.add_row(
            s["stage"], status, str(c["in"]), str(c["out"]), str(c["quarantined"]),
            f"{s['elapsed_s']:.1f}",
        )  # fmt: skip
    err_console.print(table)
    f = summary["factory"]
    err_console.print(
        f"factory: {len(f['assets'])} assets, {f['devices']} devices, {f['files']} files, "
        f"{f['megabytes']} MB; {f['sync_events']} sync events; faults {f['fault_intervals']}; "
        f"{f['notes']} notes with {f['pii_spans']} PII spans"
    )
    _streams_table(summary["streams"])
    _clock_table(summary["clocks"])
    err_console.print(f"records: {summary['records']}")
    a = summary["audit"]
    err_console.print(f"PII audit: {a['findings']} findings anonymized, {a['residual']} residual "
                      f"after the re-scan; report: {a['report']}")  # fmt: skip
    for line in summary["dataset"]["console"]:
        err_console.print(line, highlight=False)
    err_console.print(f"dataset: {summary['dataset']['samples']} samples in "
                      f"{summary['dataset']['path']} (card: README.md)")  # fmt: skip
    err_console.print(f"features: {summary['features']}")
    for line in summary["eval"]:
        err_console.print(line, highlight=False)
    err_console.print(f"pipeline config: {summary['pipeline']}")
    err_console.print(f"run directory: [bold]{summary['run_dir']}[/bold]")
    err_console.print(f"report: [bold]{summary['report']}[/bold]")


@app.command(epilog="Example: mmdata ingest pipeline.yaml --workers 2")
def ingest(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    run_dir: Annotated[
        str | None, typer.Option(help="Run directory or s3:// URL (default: the config's run_dir).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    engine: EngineOpt = None,
    force: Annotated[bool, typer.Option(help="Re-run even when unchanged.")] = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Read every source through its connector into RUN/ingest/ (quarantine: RUN/quarantine/).

    Relative paths in the config are taken from the config file's folder.
    """
    from mmdata.ingest import read_index, run_ingest
    from mmdata.rundir_remote import open_run
    from mmdata.validate import validate_pipeline

    cfg = validate_pipeline(config).resolved(config.resolve().parent)
    if workers is not None:
        cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"workers": workers})})
    cfg = cfg.model_copy(update=_engine_update(engine))
    target = run_dir if run_dir is not None else cfg.run_dir
    with open_run(target, cfg.run_storage) as run, progress_bar(quiet or as_json) as progress:
        outcome = run_ingest(run, cfg, progress=progress, force=force)
        streams = read_index(run.stage_path("ingest"))
    counts = outcome.counts.model_dump(by_alias=True)
    if as_json:
        print_json({"run_dir": str(target), "skipped": outcome.skipped, "counts": counts,
                    "streams": streams})  # fmt: skip
        return
    if quiet:
        return
    _streams_table(streams)
    state = "unchanged, skipped" if outcome.skipped else f"{outcome.elapsed_ns / 1e9:.1f} s"
    err_console.print(
        f"ingest: in {counts['in']} = out {counts['out']} + quarantined {counts['quarantined']}"
        f" ({state}); quarantine: {target}/quarantine/ingest.parquet"
    )


def _clock_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="clock sync: recovered vs synthetic ground truth", show_edge=False)
    table.add_column("device", no_wrap=True)
    for col in ("evidence", "offset ms", "true ms", "drift ppm", "true ppm", "error ms"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["device"] + (" (uncertain)" if r["clock_uncertain"] else ""), str(r["evidence"]),
            f"{r['offset_ms']:.1f}", f"{r['true_offset_ms']:.1f}", f"{r['drift_ppm']:.2f}",
            f"{r['true_drift_ppm']:.2f}", f"{r['error_ms']:.3f}",
        )  # fmt: skip
    err_console.print(table)


def _stage_verb(
    stage: str,
    config: Path,
    run_dir: str | None,
    force: bool,
    quiet: bool,
    as_json: bool,
    update: dict[str, Any] | None = None,
) -> None:
    """Shared body of the stage verbs that run on an existing run directory; ``update``
    overrides config fields (``{"features.device": "cpu"}``)."""
    from mmdata.align import run_align
    from mmdata.build.stage import run_build
    from mmdata.features.stage import run_features
    from mmdata.rundir_remote import open_run
    from mmdata.scrub.stage import run_scrub
    from mmdata.sync import run_sync
    from mmdata.validate import validate_pipeline

    runners = {"sync": run_sync, "align": run_align, "scrub": run_scrub, "build": run_build,
               "features": run_features}  # fmt: skip
    cfg = validate_pipeline(config).resolved(config.resolve().parent)
    for dotted, value in (update or {}).items():
        if "." not in dotted:  # a top-level field (engine)
            cfg = cfg.model_copy(update={dotted: value})
            continue
        section, field = dotted.split(".")
        part = getattr(cfg, section).model_copy(update={field: value})
        cfg = cfg.model_copy(update={section: part})
    target = run_dir if run_dir is not None else cfg.run_dir
    with open_run(target, cfg.run_storage) as run, progress_bar(quiet or as_json) as progress:
        outcome = runners[stage](run, cfg, progress=progress, force=force)
    counts = outcome.counts.model_dump(by_alias=True)
    doc = {"run_dir": str(target), "stage": outcome.name, "skipped": outcome.skipped,
           "counts": counts, "output": str(outcome.out_dir)}  # fmt: skip
    if as_json:
        print_json(doc)
    elif not quiet:
        for line in _stage_console(outcome.out_dir):
            err_console.print(line, highlight=False)
        state = "unchanged, skipped" if outcome.skipped else f"{outcome.elapsed_ns / 1e9:.1f} s"
        err_console.print(
            f"{stage}: in {counts['in']} = out {counts['out']} + quarantined "
            f"{counts['quarantined']} ({state}); output: {outcome.out_dir}"
        )


def _stage_console(out_dir: Path) -> list[str]:
    """Lines a stage left for the console (the build's splits and leakage, the features'
    per-modality counts)."""
    report = out_dir / "build_report.json"
    if report.is_file():
        lines: list[str] = json.loads(report.read_text(encoding="utf-8")).get("console", [])
        return lines
    if (out_dir / "summary.json").is_file() and out_dir.name == "features":
        from mmdata.features.stage import summary_lines

        return summary_lines(json.loads((out_dir / "summary.json").read_text(encoding="utf-8")))
    return []


RunDirOpt = Annotated[
    str | None,
    typer.Option("--run-dir", help="Run directory or s3:// URL (default: the config's run_dir)."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Re-run even when unchanged.")]
EngineOpt = Annotated[
    str | None, typer.Option("--engine", help="local | ray (default: the config's engine).")
]


def _engine_update(engine: str | None) -> dict[str, Any]:
    """The config change ``--engine`` asks for (none without it)."""
    if engine is not None and engine not in ("local", "ray"):
        raise UsageError(f"--engine {engine!r} is not one of local, ray")
    return {"engine": engine} if engine else {}


def _register_stage_verb(stage: str, doc: str, example: str) -> None:
    """One CLI verb per stage that runs on a pipeline config; they differ only in the stage."""

    def verb(
        config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
        run_dir: RunDirOpt = None,
        engine: EngineOpt = None,
        force: ForceOpt = False,
        quiet: Quiet = False,
        as_json: AsJson = False,
    ) -> None:
        _stage_verb(stage, config, run_dir, force, quiet, as_json, _engine_update(engine))

    verb.__doc__ = doc
    app.command(stage, epilog=f"Example: {example}")(verb)


_register_stage_verb(
    "sync",
    "Fit a clock model per device (sync events, NTP logs, constants) → RUN/sync/.",
    "mmdata sync pipeline.yaml",
)
_register_stage_verb(
    "align",
    "Cut the synchronized streams into windows → Parquet records in RUN/records/.",
    "mmdata align pipeline.yaml",
)
_register_stage_verb(
    "scrub",
    "Anonymize RUN/records (notes, frames, audio) into RUN/scrubbed; findings in RUN/audit."
    "\n\nThe pseudonym key comes from scrub.key_env (default MMDATA_PII_KEY) or scrub.key_file.",
    "mmdata scrub pipeline.yaml  (with the key in MMDATA_PII_KEY)",
)


_register_stage_verb(
    "build",
    "Build instruction datasets (LLaVA, LLaMA-Factory, HF messages) with leakage-free splits "
    "from RUN/scrubbed → RUN/dataset (+ dataset card README.md).",
    "mmdata build pipeline.yaml",
)


@app.command(epilog="Example: mmdata features pipeline.yaml --device auto")
def features(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    run_dir: RunDirOpt = None,
    device: Annotated[
        str | None, typer.Option(help="auto | cpu | cuda (default: features.device).")
    ] = None,
    engine: EngineOpt = None,
    force: ForceOpt = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Encode the dataset's media and sensor windows into the content-addressed feature cache
    → RUN/features/ (a warm re-run computes nothing; on Ray: a pool of encoder actors)."""
    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {device!r} is not one of auto, cpu, cuda")
    update: dict[str, Any] = {"features.device": device} if device else {}
    update.update(_engine_update(engine))
    _stage_verb("features", config, run_dir, force, quiet, as_json, update)


def _train_stage(stage: str, config: Path, run_dir: str | None, flags: dict[str, Any],
                 changes: dict[str, Any]) -> None:  # fmt: skip
    """Shared body of ``mmdata train`` / ``mmdata eval``: options → config, run, print."""
    from mmdata.rundir_remote import open_run
    from mmdata.train.stage import console_lines, run_eval, run_train, train_overrides
    from mmdata.validate import validate_pipeline

    cfg = train_overrides(validate_pipeline(config).resolved(config.resolve().parent), **changes)
    target = run_dir if run_dir is not None else cfg.run_dir
    quiet, as_json = flags["quiet"], flags["as_json"]
    with open_run(target, cfg.run_storage) as run, progress_bar(quiet or as_json) as progress:
        if stage == "train":
            outcome = run_train(run, cfg, progress=progress, force=flags["force"])
        else:
            outcome = run_eval(run, cfg, progress=progress, force=flags["force"],
                               ablation=flags["ablation"])  # fmt: skip
    counts = outcome.counts.model_dump(by_alias=True)
    if as_json:
        print_json({"run_dir": str(target), "stage": outcome.name, "skipped": outcome.skipped,
                    "counts": counts, "output": str(outcome.out_dir)})  # fmt: skip
        return
    if not quiet:
        for line in console_lines(Path(outcome.out_dir)):
            err_console.print(line, highlight=False)
        state = "unchanged, skipped" if outcome.skipped else f"{outcome.elapsed_ns / 1e9:.1f} s"
        err_console.print(
            f"{stage}: in {counts['in']} = out {counts['out']} + quarantined "
            f"{counts['quarantined']} ({state}); output: {outcome.out_dir}"
        )


DeviceOpt = Annotated[str | None, typer.Option(help="auto | cpu | cuda (default: from config).")]


@app.command(epilog="Example: mmdata train pipeline.yaml --epochs 5 --device auto")
def train(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    run_dir: RunDirOpt = None,
    device: DeviceOpt = None,
    base_model: Annotated[
        str | None, typer.Option(help="A Hugging Face causal LM: local path or hub id.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per micro-batch.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (data order, init).")] = None,
    quantize: Annotated[
        str | None, typer.Option(help="none | 4bit (QLoRA: needs bitsandbytes and a GPU).")
    ] = None,
    task: Annotated[list[str] | None, typer.Option(help="Task to train on (repeatable).")] = None,
    force: ForceOpt = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Train the reference model (per-modality projectors + a causal LM with LoRA) on
    RUN/dataset + RUN/features → RUN/train/ (checkpoints resume after a kill)."""
    changes = {
        "device": device,
        "base_model": base_model,
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "learning_rate": lr,
        "seed": seed,
        "quantize": quantize,
        "tasks": task or None,
    }
    _train_stage("train", config, run_dir,
                 {"quiet": quiet, "as_json": as_json, "force": force, "ablation": None},
                 changes)  # fmt: skip


@app.command("eval", epilog="Example: mmdata eval pipeline.yaml --ablation")
def eval_(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    run_dir: RunDirOpt = None,
    device: DeviceOpt = None,
    ablation: Annotated[
        bool | None,
        typer.Option("--ablation/--no-ablation", help="Mask each modality; train on each alone."),
    ] = None,
    split: Annotated[str | None, typer.Option(help="test | validation.")] = None,
    force: ForceOpt = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Evaluate the trained model on the test split (accuracy, macro-F1, confusion matrix,
    interval IoU) and, with --ablation, per modality → RUN/eval/."""
    changes: dict[str, Any] = {"device": device}
    if split is not None:
        changes["eval"] = {"split": split}
    _train_stage("eval", config, run_dir,
                 {"quiet": quiet, "as_json": as_json, "force": force, "ablation": ablation},
                 changes)  # fmt: skip


@app.command(epilog="Example: mmdata report runs/demo")
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    out: Annotated[
        Path | None, typer.Option(help="Output HTML file (default: RUN/report.html).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Write one self-contained HTML report of a run: timeline, clocks, stage counts, PII
    audit, dataset card, training curves, evaluation and ablation."""
    from mmdata.report.page import write_report

    path = write_report(run_dir, out)
    if as_json:
        print_json({"report": str(path)})
        return
    err_console.print(f"report: [bold]{path}[/bold]")


@app.command(epilog="Example: mmdata audit runs/demo --sample 20 --seed 1")
def audit(
    run_dir: Annotated[Path, typer.Argument(help="Run directory that was scrubbed.")],
    sample: Annotated[int, typer.Option(help="Findings shown in context in the report.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the review sample.")] = 0,
    as_json: AsJson = False,
) -> None:
    """Re-scan the scrubbed output for residual PII; write RUN/audit/report.html."""
    from mmdata.scrub.review import review_run

    out = review_run(run_dir, sample=sample, seed=seed)
    if as_json:
        print_json(out)
        return
    summ = out["summary"]
    err_console.print(json.dumps({k: summ[k] for k in summ if k != "sample"}, indent=1)[:3000])
    err_console.print(f"report: [bold]{out['report']}[/bold]")


@app.command("pii-eval", epilog="Example: mmdata pii-eval notes.jsonl --json")
def pii_eval(
    corpus: Annotated[
        Path | None, typer.Argument(help="JSONL: text, lang, spans, must_not_flag.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Precision, recall and F2 per entity type of the text scrubber on a labeled corpus.

    Without CORPUS, the bundled labeled factory notes are used.
    """
    from mmdata.scrub.evaluate import DEFAULT_CORPUS
    from mmdata.scrub.evaluate import pii_eval as evaluate_corpus

    report = evaluate_corpus(corpus or DEFAULT_CORPUS)
    if as_json:
        print_json(report.to_dict())
    else:
        out_console.print(report.format())


def _streams_table(streams: list[dict[str, Any]]) -> None:
    table = Table(title="streams", show_edge=False)
    for col in ("stream", "modality", "rows", "segments", "flags"):
        table.add_column(col)
    for st in streams:
        flags = ", ".join(f"{k}={v}" for k, v in st["flags"].items()) or "-"
        table.add_row(st["stream_id"], st["modality"], f"{st['rows']:,}", str(st["segments"]),
                      flags)  # fmt: skip
    err_console.print(table)


@app.command(epilog="Example: mmdata validate pipeline.yaml")
def validate(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML to check.")],
    as_json: AsJson = False,
) -> None:
    """Check a pipeline config: fields, types, cross-references and connectors."""
    from mmdata.validate import validate_pipeline

    try:
        cfg = validate_pipeline(config)
    except ConfigError as err:
        if as_json:
            problems = [{"field": f, "value": v, "allowed": a} for f, v, a in err.problems]
            print_json({"valid": False, "file": str(config), "problems": problems})
            raise typer.Exit(err.exit_code) from None
        raise
    devices = cfg.devices()
    if as_json:
        print_json({"valid": True, "file": str(config), "assets": list(cfg.assets),
                    "devices": devices, "engine": cfg.engine})  # fmt: skip
        return
    err_console.print(
        f"[green]valid[/green]: {config} — {len(cfg.assets)} assets, {len(devices)} devices, "
        f"engine {cfg.engine}"
    )


@app.command(epilog="Example: mmdata schema pipeline > pipeline.v1.json")
def schema(
    name: Annotated[str | None, typer.Argument(help="pipeline, quarantine or manifest.")] = None,
    write: Annotated[
        Path | None, typer.Option(help="Write every schema file into this folder.")
    ] = None,
) -> None:
    """Print a JSON Schema, or regenerate all schema files with --write."""
    from mmdata import schemas

    if write is not None:
        for path in schemas.write_all(write):
            err_console.print(f"wrote {path}")
        return
    if name is None:
        raise UsageError(
            "give a schema name or --write DIR", hint=f"names: {', '.join(sorted(schemas.SCHEMAS))}"
        )
    sys.stdout.write(schemas.render(name))


@app.command(epilog="Example: mmdata bench synth --scale 0.5 --json")
def bench(
    workloads: Annotated[
        list[str] | None, typer.Argument(help="Workloads to run (default: all).")
    ] = None,
    scale: Annotated[float, typer.Option(help="Multiply each workload's data size.")] = 1.0,
    repeat: Annotated[int, typer.Option(help="Runs per side; the best counts.")] = 1,
    engine: Annotated[
        str, typer.Option(help="local | ray (align adds a local Ray cluster's figure).")
    ] = "local",
    list_: Annotated[bool, typer.Option("--list", help="List workloads and exit.")] = False,
    as_json: AsJson = False,
) -> None:
    """Time mmdata against a baseline measured in the same run; print figures and ratios."""
    from mmdata.bench import WORKLOADS, BenchOptions, run_workloads

    if list_:
        for w in WORKLOADS.values():
            out_console.print(f"{w.name:<12} {w.description}")
        return
    options = _validated(BenchOptions, "bench options",
                         {"scale": scale, "repeat": repeat, "engine": engine})  # fmt: skip
    if not as_json:
        err_console.print("[dim]running workloads…[/dim]")
    results = run_workloads(list(workloads or []), options)
    if as_json:
        print_json([r.to_json() for r in results])
        return
    table = Table(show_edge=False)
    for col in ("workload", "metric", "mmdata", "baseline", "ratio", "baseline is"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r.workload, f"{r.metric} ({r.unit})", f"{r.mmdata:,.1f}", f"{r.baseline:,.1f}",
            f"{r.ratio:.2f}x", r.baseline_name,
        )  # fmt: skip
    out_console.print(table)


def _validated(model: Any, what: str, values: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from mmdata.config import validation_problems

    try:
        return model.model_validate(values)
    except ValidationError as err:
        first, *rest = validation_problems(err)
        raise ConfigError(what, *first, more=rest) from None


def _wants_json(argv: list[str]) -> bool:
    return "--json" in argv


from mmdata.cli_labels import labels_app  # noqa: E402

app.add_typer(labels_app, name="labels")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmdata`` script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("MMDATA_DEBUG") == "1"
    try:
        rc = app(args=args, prog_name="mmdata", standalone_mode=False)
    except typer.Exit as done:
        return int(done.exit_code)
    except MmdataError as err:
        if debug:
            raise
        _report(err.__class__.__name__, str(err), err.exit_code, _wants_json(args))
        return err.exit_code
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        return 130
    except Exception as err:  # click's own usage errors and truly unexpected failures
        if isinstance(err, typer.TyperException) and hasattr(err, "show"):
            err.show()  # typer's vendored click usage errors (bad option, missing argument)
            return int(getattr(err, "exit_code", 2))
        if debug:
            raise
        _report(
            "InternalError",
            f"{type(err).__name__}: {err}\n  (a bug in mmdata; MMDATA_DEBUG=1 shows the traceback)",
            1,
            _wants_json(args),
        )
        return 1
    return rc if isinstance(rc, int) else 0


def _report(kind: str, message: str, code: int, as_json: bool) -> None:
    if as_json:
        print_json({"error": {"class": kind, "message": message, "exit_code": code}})
    else:
        err_console.print(f"[red]error[/red] ({kind}): {escape(message)}", soft_wrap=True)
