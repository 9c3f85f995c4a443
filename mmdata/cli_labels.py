"""``mmdata labels push | pull | import``: the Label Studio round trip on the command line.

The server, the token (``labels.token_env`` or ``labels.token_file``) and the label set come
from the pipeline config's ``labels`` section; ``--project`` overrides ``labels.project``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mmdata.config import LabelsConfig
from mmdata.console import err_console, print_json
from mmdata.errors import UsageError

labels_app = typer.Typer(
    help="Label Studio round trip: push windows as tasks, pull or import labels.",
    no_args_is_help=True,
)

RunArg = Annotated[Path, typer.Argument(help="Run directory.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Pipeline YAML (for its labels section).")
]
ProjectOpt = Annotated[str | None, typer.Option(help="Label Studio project title.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print a JSON result on stdout.")]


def _labels_config(config: Path | None, run_dir: Path) -> LabelsConfig:
    """The ``labels`` section of ``config``, else of ``RUN/pipeline.yaml``, else defaults."""
    from mmdata.validate import validate_pipeline

    path = config or (run_dir / "pipeline.yaml")
    if config is None and not path.is_file():
        return LabelsConfig()
    return validate_pipeline(path).labels


def _project(cfg: LabelsConfig, project: str | None) -> str:
    name = project or cfg.project
    if not name:
        raise UsageError("no Label Studio project named",
                         hint="pass --project NAME or set labels.project")  # fmt: skip
    return name


def _print_import(result: Any, as_json: bool) -> None:
    doc = {"source": result.source, "in": result.n_in, "out": result.n_out,
           "rejected": result.n_rejected, "agreement": result.agreement}  # fmt: skip
    if as_json:
        print_json(doc)
        return
    err_console.print(f"labels: in {result.n_in} = out {result.n_out} + rejected "
                      f"{result.n_rejected} ({result.source})")  # fmt: skip
    for where, reason in result.rejected[:10]:
        err_console.print(f"  rejected {where}: {reason}", highlight=False)


@labels_app.command("import", epilog="Example: mmdata labels import runs/demo export.json")
def import_(
    run_dir: RunArg,
    export: Annotated[Path, typer.Argument(help="A Label Studio JSON or JSON_MIN export.")],
    config: ConfigOpt = None,
    as_json: AsJson = False,
) -> None:
    """Map an export an annotator saved by hand onto the run's records → RUN/labels/."""
    from mmdata.labels.mapping import labels_from_export

    cfg = _labels_config(config, run_dir)
    result = labels_from_export(export, run_dir, cfg, source=f"import:{export.name}")
    result.write(run_dir)
    _print_import(result, as_json)


@labels_app.command("push", epilog="Example: mmdata labels push runs/demo --project line2")
def push(
    run_dir: RunArg,
    project: ProjectOpt = None,
    config: ConfigOpt = None,
    allow_unscrubbed: Annotated[
        bool, typer.Option(help="Push records that were never scrubbed for PII.")
    ] = False,
    predictions: Annotated[
        Path | None, typer.Option(help="Pre-annotations: RUN/eval/predictions.parquet.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Create or update a project (config from the modalities present) and one task per
    window; a re-push updates the tasks instead of duplicating them."""
    from mmdata.labels.push import push_records

    cfg = _labels_config(config, run_dir)
    root = Path(cfg.document_root) if cfg.document_root else None
    report = push_records(run_dir, cfg, _project(cfg, project), allow_unscrubbed=allow_unscrubbed,
                          predictions=predictions, document_root=root)  # fmt: skip
    doc = report.as_dict()
    if as_json:
        print_json(doc)
        return
    err_console.print(
        f"labels push: project {report.project!r} (id {report.project_id}, config "
        f"{report.config_status}): {report.tasks} tasks ({report.tasks_created} created, "
        f"{report.tasks_updated} updated, {report.tasks_unchanged} unchanged), "
        f"{len(report.skipped)} records skipped, {report.predictions_created} predictions",
        highlight=False,
    )


@labels_app.command("pull", epilog="Example: mmdata labels pull runs/demo --project line2")
def pull(
    run_dir: RunArg,
    project: ProjectOpt = None,
    config: ConfigOpt = None,
    as_json: AsJson = False,
) -> None:
    """Pull the project's annotations onto the run's records → RUN/labels/ (labels, resolved
    decisions, agreement); `mmdata build` then uses them."""
    from mmdata.labels.pull import pull_labels

    cfg = _labels_config(config, run_dir)
    root = Path(cfg.document_root) if cfg.document_root else None
    result = pull_labels(run_dir, cfg, _project(cfg, project), document_root=root)
    _print_import(result, as_json)
