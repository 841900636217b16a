"""`boxmask label`'s resume journal: `boxmask.journal.Journal`, one line per finished image.

Each line after the header is one image's result (see `boxmask.labeling.image_labeler`), keyed
by the image's index in the plan. The output is always built from the journal's records, in a
clean run as in a resumed one, so both go through the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from boxmask.journal import Journal, JournalError

__all__ = ["JournalError", "LabelJournal", "read_journal"]


class LabelJournal(Journal):
    KIND = "boxmask-label-journal"
    KEY = "index"


def read_journal(path: Path) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]], int]:
    """``(header, results by image index, length in bytes of the whole lines)``."""
    return LabelJournal.read(path)
