"""`boxmask cvat boxes-to-masks`'s resume journal: `boxmask.journal.Journal`, one line per frame.

Each line after the header is one converted frame (its counts), keyed by the frame's index.
The header names the task, so a journal is never resumed against another task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from boxmask.journal import SYNC_EVERY_S, Journal


class CvatJournal(Journal):
    """Frames of one CVAT task already converted."""

    KIND = "boxmask-cvat-journal"
    KEY = "frame"

    def __init__(self, path: Path, fd: int, sync_every: float = SYNC_EVERY_S) -> None:
        super().__init__(path, fd, sync_every)
        self.done: set[int] = set()

    @classmethod
    def open(cls, path: Path, task_id: int) -> CvatJournal:
        """The journal of CVAT task `task_id` at `path`: resumed when it exists, else new."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        journal, records = cls.resume(Path(path), {"task": int(task_id)})
        journal.done = set(records)
        return journal

    def record(self, frame: int, **info: Any) -> None:
        """Record one converted frame (its counts in `info`)."""
        self.append({"frame": frame, **info})
        self.done.add(frame)
