"""Resume journals: append-only JSON-lines files of finished work items, one per line.

The one journal of the project, used by `boxmask label` (`LabelJournal`: one line per image,
keyed by its ``index``) and by the CVAT converter (`boxmask.integrations.cvat`: one line per
frame, keyed by ``frame``); a subclass names its `KIND` and `KEY`.

Line 1 is a header that identifies the job (for `boxmask label`: input sha256, model,
output-changing settings); each further line is one item's result, handed to the kernel with a
single ``write`` before the next item counts as done. A killed process loses
nothing the kernel has; against an OS crash or power cut the file is ``fsync``-ed at most
``sync_every`` seconds apart (and on close), so such a crash costs at most that much work, done
again on resume. Either way the file ends, at worst, in a line without its newline: reading
drops that torn tail and truncates the file back to the last whole line. A result seen twice
(never written by us, but cheap to tolerate) counts once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boxmask.files import fsync_dir

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

JOURNAL_VERSION = 1
# An fsync costs milliseconds to tens of milliseconds: once per image would cap a fast model.
SYNC_EVERY_S = 1.0


class JournalError(RuntimeError):
    """The journal cannot be used: it belongs to another job or kind, or it is corrupt mid-file."""


def _dumps(record: Mapping[str, Any]) -> bytes:
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a \ud800 escape in the input) has no UTF-8 bytes; as a JSON
        # escape it does, and reads back as the same string. A line that cannot be written
        # would stop the job and leave a journal whose resume meets the same line again.
        return (json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
                + "\n").encode("ascii")


class Journal:
    """An open journal, ready to append results.

    Use `start` (fresh) or `resume`; both return the journal and the results it already holds,
    keyed by each record's `KEY`. Subclasses set `KIND` (the header's ``kind``: a journal of one
    kind is never read as another) and `KEY`.
    """

    KIND = "boxmask-journal"
    KEY = "index"

    def __init__(self, path: Path, fd: int, sync_every: float = SYNC_EVERY_S) -> None:
        self.path = path
        self._fd = fd
        self.sync_every = sync_every
        self._last_sync = time.monotonic()

    @classmethod
    def header(cls, job: Mapping[str, Any]) -> dict[str, Any]:
        return {"kind": cls.KIND, "version": JOURNAL_VERSION, "job": dict(job)}

    @classmethod
    def start(cls, path: Path, job: Mapping[str, Any]) -> Self:
        """A new journal, replacing any file at `path`."""
        path = Path(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        journal = cls(path, fd)
        journal._write(cls.header(job))
        journal.sync()
        fsync_dir(path.parent)
        return journal

    @classmethod
    def resume(cls, path: Path, job: Mapping[str, Any]) -> tuple[Self, dict[int, dict[str, Any]]]:
        """Open `path` for appending after checking it belongs to `job`; a missing or
        header-less journal starts afresh."""
        path = Path(path)
        if not path.exists():
            return cls.start(path, job), {}
        header, records, good_bytes = cls.read(path)
        if header is None:
            return cls.start(path, job), {}
        expected = cls.header(job)
        if header != expected:
            raise JournalError(_explain_mismatch(path, header, expected))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        # Drop a torn last line before anything is appended after it.
        os.ftruncate(fd, good_bytes)
        os.fsync(fd)
        return cls(path, fd), records

    def _write(self, record: Mapping[str, Any]) -> None:
        data = _dumps(record)
        written = os.write(self._fd, data)
        while written < len(data):  # os.write may write less on some file systems
            written += os.write(self._fd, data[written:])

    def sync(self) -> None:
        os.fsync(self._fd)
        self._last_sync = time.monotonic()

    def append(self, result: Mapping[str, Any]) -> None:
        """Record one finished item; once this returns, killing the process cannot lose it."""
        self._write(result)
        if time.monotonic() - self._last_sync >= self.sync_every:
            self.sync()

    def close(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


    @classmethod
    def read(cls, path: Path) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]], int]:
        """``(header, results by `KEY`, length in bytes of the whole lines)``.

        A last line that is incomplete or does not parse is a write cut short by a kill and is
        ignored; a bad line before the last one means the file was damaged otherwise, and raises.
        """
        data = Path(path).read_bytes()
        lines = data.split(b"\n")
        # After the last newline comes either nothing or a torn line.
        complete, tail = lines[:-1], lines[-1]
        header = None
        records: dict[int, dict[str, Any]] = {}
        offset = 0
        for n, raw in enumerate(complete):
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                if n == len(complete) - 1 and not tail:
                    break  # a torn line that happened to end in a newline byte of its own
                raise JournalError(
                    f"{path}: line {n + 1} is not valid JSON; the journal is damaged. Delete it to "
                    f"start over (finished items will be done again).") from None
            if n == 0:
                if not isinstance(record, dict) or record.get("kind") != cls.KIND:
                    raise JournalError(f"{path} is not a {cls.KIND} file")
                header = record
            else:
                records.setdefault(int(record[cls.KEY]), record)
            offset += len(raw) + 1
        return header, records, offset


def _explain_mismatch(path: Path, found: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    fj, ej = found.get("job", {}), expected.get("job", {})
    differing = sorted(k for k in set(fj) | set(ej) if fj.get(k) != ej.get(k))
    if found.get("version") != expected.get("version"):
        differing.insert(0, "journal version")
    return (f"{path} belongs to a different job (differs in: {', '.join(differing) or 'header'}). "
            f"Resume with the same input, model and options, or delete the journal (or drop "
            f"--resume) to start over.")
