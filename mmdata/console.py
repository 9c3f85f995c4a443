"""Terminal output: rich messages and progress bars on stderr, results on stdout.

Programs read stdout (``--json``); people read stderr. ``--quiet`` silences stderr except
errors.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mmdata.runner import ProgressFn

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)


def print_json(obj: Any) -> None:
    """Write one JSON document to stdout (nothing else goes there in --json mode)."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def progress_bar(quiet: bool) -> Iterator[ProgressFn]:
    """A ``progress(description, done, total)`` callback drawing one bar per stage.

    A description ``"stage: detail"`` updates the bar of ``stage`` and shows ``detail``.

    >>> with progress_bar(quiet=True) as progress:
    ...     progress("work", 1, 2)
    """
    if quiet:
        yield lambda description, done, total: None
        return
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("[dim]{task.fields[detail]}"),
    )
    with Progress(*columns, console=err_console, transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def update(description: str, done: int, total: int) -> None:
            stage, _, detail = description.partition(": ")
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, detail=detail)
            bar.update(tasks[stage], completed=done, total=total, detail=detail)

        yield update
