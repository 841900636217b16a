"""A rich progress bar for training that stays quiet where nobody watches it."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_enabled(console: Console) -> bool:
    """A live bar only on an interactive terminal, never in CI or in logs piped to a file."""
    if os.environ.get("CI") or os.environ.get("BOXMASK_NO_PROGRESS"):
        return False
    return console.is_terminal and sys.stderr.isatty()


def training_progress(enabled: bool | None = None) -> Progress:
    """Bar with epoch/iteration counts, ETA and a free-text field for the current losses."""
    console = Console(stderr=True)
    if enabled is None:
        enabled = progress_enabled(console)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not enabled,
        transient=False,
    )
