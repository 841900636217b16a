"""The progress bar of a labeling job: images done, images/s and the time left."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class ImagesPerSecondColumn(ProgressColumn):
    """Images per second over the last half minute (rich's speed estimate)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- img/s" if speed is None else f"{speed:.2f} img/s", style="progress.data.speed")


@contextmanager
def image_progress(total: int, completed: int = 0, console: Console | None = None,
                   enabled: bool = True) -> Iterator[Callable[[], None]]:
    """A context whose value, called once per finished image, advances the bar.

    completed: images finished by an earlier run (a resume): shown as done, not counted in the
    speed.
    """
    progress = Progress(
        TextColumn("[bold]labeling"), BarColumn(), MofNCompleteColumn(), ImagesPerSecondColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TimeElapsedColumn(),
        console=console, disable=not enabled, transient=False)
    with progress:
        task_id = progress.add_task("labeling", total=total, completed=completed)
        yield lambda: progress.advance(task_id)
