"""``labels pull``: the project's annotations back from the server onto the run's records.

:func:`pull_export` downloads the project's export (``JSON`` by default, every task) with
the configured token, bounded by ``labels.max_export_bytes``, and parses it the way a file
import is parsed (numbers as exact Decimals, see :mod:`mmdata.labels.safety`).
:func:`pull_labels` maps it with :func:`mmdata.labels.mapping.labels_from_export` (source
``labelstudio:<project>``), telling the mapping what only the server knows: the project's
task ids (other task ids are refused), the annotators' e-mails (exports carry user ids),
and the local-files document root. It writes ``RUN/labels/`` with the mapping's writer
while it holds the run directory's lock.

>>> pull_export.__name__, pull_labels.__name__
('pull_export', 'pull_labels')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmdata.config import LabelsConfig
from mmdata.errors import InputDataError, UsageError
from mmdata.labels import safety
from mmdata.labels.client import LabelStudioClient, LabelStudioError, connect
from mmdata.labels.mapping import ImportOptions, ImportResult, labels_from_export
from mmdata.rundir import RunDir


def _project_id(client: LabelStudioClient, project: str) -> int:
    found = client.project_by_title(project)
    if found is None:
        raise UsageError(f"Label Studio at {client.url} has no project titled {project!r}",
                         hint="check --project (or labels.project), or run "
                         "`mmdata labels push` first")  # fmt: skip
    return int(found["id"])


def pull_export(config: LabelsConfig, project: str, *, export_type: str = "JSON",
                environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The project's export (every task) as parsed JSON: a list of tasks (``JSON``) or of
    flat annotations (``JSON_MIN``). ``environ``: where the token variable is looked up."""
    client = connect(config, environ)
    return _export(client, _project_id(client, project), config, export_type)


def _export(client: LabelStudioClient, pid: int, config: LabelsConfig,
            export_type: str) -> list[dict[str, Any]]:  # fmt: skip
    data = client.export(pid, export_type, max_bytes=config.max_export_bytes)
    parsed = safety.parse_json(data, f"the {export_type} export of project {pid}")
    if not isinstance(parsed, list):
        raise InputDataError(f"the export of project {pid} is not a list of tasks")
    return parsed


def _annotators(client: LabelStudioClient) -> dict[str, str]:
    """User id → e-mail of the organization's users (just the caller without the right)."""
    try:
        users = client.request("GET", "/api/users/")
    except LabelStudioError as err:
        if err.status not in (403, 404):
            raise
        users = [client.whoami()]
    return {str(u["id"]): str(u.get("email") or u["id"]) for u in users or []}


def pull_labels(run_dir: Path, config: LabelsConfig, project: str, *,
                document_root: Path | None = None,
                environ: Mapping[str, str] | None = None) -> ImportResult:  # fmt: skip
    """Pull ``project``'s annotations, map them onto ``run_dir``'s records, write
    ``RUN/labels/{labels,resolved}.parquet, agreement.json, rejected.json``.

    ``document_root`` (default ``$LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``) makes the media
    URL check exact; without it the check is the offline one.
    """
    client = connect(config, environ)
    pid = _project_id(client, project)
    known = {int(t["id"]): str((t.get("data") or {}).get("record_id", ""))
             for t in client.tasks(pid)}  # fmt: skip
    root = document_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    options = ImportOptions(known_tasks=known, annotator_names=_annotators(client),
                            document_root=Path(root) if root else None)  # fmt: skip
    export = _export(client, pid, config, "JSON")
    with RunDir.open(run_dir) as run:
        result = labels_from_export(export, run.root, config, f"labelstudio:{project}", options)
        result.write(run.root)
    return result
