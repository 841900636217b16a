"""What boxmask keeps of a Label Studio project: its annotations, its model versions, its jobs.

One SQLite file per project (`<data dir>/labelstudio/projects/<id>/store.sqlite`), in WAL mode
with full syncs: a webhook that was answered is on disk. One connection per store, behind one
lock: every write is one transaction, and there is one writer (the server process that owns
the data folder, `training.OwnerLock`).

Annotations are kept by Label Studio's id, so events are idempotent: the same event twice
changes nothing, an update replaces its annotation, an event older than the stored annotation
(by `updated_at`) is ignored, and a delete leaves a tombstone so that a late or replayed create
of the same id does not bring it back (Label Studio never reuses an id). Every change takes the
next number of the project's sequence (`seq`): "annotations new since the last round" is a
count of the rows above the round's number.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from boxmask.integrations.labelstudio.events import AnnotationRecord

STORE_NAME = "store.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    result TEXT NOT NULL,
    was_cancelled INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT,
    digest TEXT NOT NULL,
    seq INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS annotations_task ON annotations (task_id);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    name TEXT PRIMARY KEY,
    number INTEGER NOT NULL,
    state TEXT NOT NULL,
    path TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    base TEXT,
    figures TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    promoted_at REAL,
    has_files INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS jobs (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    version TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    snapshot_seq INTEGER,
    details TEXT NOT NULL DEFAULT '{}'
);
"""

# Version states. `served`: the project's predictions come from it (at most one; none = the
# base model). `kept`: promoted once, a rollback target while its files are kept. `candidate`:
# trained, not (yet) promoted. `refused`: the gate said no. `rolled_back`: served, then rolled
# back from.
SERVED, KEPT, CANDIDATE, REFUSED, ROLLED_BACK = "served", "kept", "candidate", "refused", "rolled_back"
# Job states; the last five are final.
QUEUED, PREPARING, TRAINING, SCORING = "queued", "preparing", "training", "scoring"
PROMOTED, NOT_PROMOTED, FAILED, INTERRUPTED = "promoted", "not_promoted", "failed", "interrupted"
FINAL_JOB_STATES = (PROMOTED, NOT_PROMOTED, REFUSED, FAILED, INTERRUPTED)


def _digest(record: AnnotationRecord) -> str:
    body = json.dumps({"task": record.task_id, "result": record.result,
                       "cancelled": record.was_cancelled}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _stamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else None


def is_older(incoming: str | None, stored: str | None) -> bool:
    """Whether an event's `updated_at` is older than the stored one's; False where either is
    missing or unreadable (the event is then taken, as the newer)."""
    a, b = _stamp(incoming), _stamp(stored)
    return a is not None and b is not None and a < b


@dataclass(frozen=True)
class StoredAnnotation:
    """An annotation the next round learns from, with its task's data."""

    id: str
    task_id: str
    result: list[Any]
    updated_at: str | None
    task_data: dict[str, Any] | None
    seq: int


@dataclass
class Version:
    name: str
    number: int
    state: str
    path: Path
    checkpoint: Path
    base: str | None
    figures: dict[str, Any]
    created_at: float
    promoted_at: float | None
    has_files: bool

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "base": self.base,
                "created_at": self.created_at, "promoted_at": self.promoted_at,
                "files_kept": self.has_files, "figures": self.figures}


@dataclass
class Job:
    id: str
    project: str
    number: int
    trigger: str
    state: str
    reason: str | None
    version: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    snapshot_seq: int | None
    details: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.state in FINAL_JOB_STATES

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "project": self.project, "trigger": self.trigger,
                "state": self.state, "reason": self.reason, "version": self.version,
                "created_at": self.created_at, "started_at": self.started_at,
                "finished_at": self.finished_at, **self.details}


class ProjectStore:
    """The SQLite store of one Label Studio project; thread-safe."""

    def __init__(self, folder: Path, project: str) -> None:
        self.folder = Path(folder)
        self.project = project
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / STORE_NAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=10.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        with self._write() as db:  # executescript would commit on its own
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock is taken up front)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @staticmethod
    def _next_seq(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        seq = (int(row[0]) if row else 0) + 1
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seq', ?)", (str(seq),))
        return seq

    # -- project facts ----------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def seq(self) -> int:
        return int(self.get_meta("seq") or 0)

    # -- annotations ------------------------------------------------------------------------

    def upsert(self, records: Sequence[AnnotationRecord]) -> dict[str, int]:
        """Store created or updated annotations (and their tasks' data); returns how many were
        `created`, `updated`, `unchanged`, `stale` (older than the stored one) or `deleted`
        (the annotation or its task was deleted before)."""
        counts = dict.fromkeys(("created", "updated", "unchanged", "stale", "deleted"), 0)
        with self._write() as db:
            for record in records:
                outcome = self._upsert_one(db, record)
                counts[outcome] += 1
        return counts

    def _upsert_one(self, db: sqlite3.Connection, record: AnnotationRecord) -> str:
        task = db.execute("SELECT deleted FROM tasks WHERE id = ?", (record.task_id,)).fetchone()
        if task is not None and task["deleted"]:
            return "deleted"
        if record.task_data is not None:
            db.execute("INSERT INTO tasks (id, data) VALUES (?, ?) ON CONFLICT (id) DO UPDATE "
                       "SET data = excluded.data",
                       (record.task_id, json.dumps(record.task_data, sort_keys=True)))
        row = db.execute("SELECT digest, updated_at, deleted FROM annotations WHERE id = ?",
                         (record.id,)).fetchone()
        digest = _digest(record)
        if row is not None:
            if row["deleted"]:
                return "deleted"
            if row["digest"] == digest:
                return "unchanged"
            if is_older(record.updated_at, row["updated_at"]):
                return "stale"
        db.execute(
            "INSERT OR REPLACE INTO annotations (id, task_id, result, was_cancelled, updated_at, "
            "digest, seq, deleted) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
            (record.id, record.task_id, json.dumps(record.result), int(record.was_cancelled),
             record.updated_at, digest, self._next_seq(db)))
        return "created" if row is None else "updated"

    def delete_annotations(self, ids: Sequence[str]) -> int:
        """Tombstone annotations by id (unknown ids too: a late create stays deleted)."""
        changed = 0
        with self._write() as db:
            for annotation_id in ids:
                row = db.execute("SELECT deleted FROM annotations WHERE id = ?",
                                 (annotation_id,)).fetchone()
                if row is not None and row["deleted"]:
                    continue
                seq = self._next_seq(db)
                if row is None:
                    db.execute("INSERT INTO annotations (id, task_id, result, digest, seq, "
                               "deleted) VALUES (?, '', '[]', '', ?, 1)", (annotation_id, seq))
                else:
                    db.execute("UPDATE annotations SET deleted = 1, seq = ? WHERE id = ?",
                               (seq, annotation_id))
                    changed += 1
        return changed

    def delete_tasks(self, ids: Sequence[str]) -> int:
        """Tombstone tasks and every annotation of theirs."""
        changed = 0
        with self._write() as db:
            for task_id in ids:
                db.execute("INSERT INTO tasks (id, data, deleted) VALUES (?, '{}', 1) "
                           "ON CONFLICT (id) DO UPDATE SET deleted = 1", (task_id,))
                rows = db.execute("SELECT id FROM annotations WHERE task_id = ? AND deleted = 0",
                                  (task_id,)).fetchall()
                for row in rows:
                    db.execute("UPDATE annotations SET deleted = 1, seq = ? WHERE id = ?",
                               (self._next_seq(db), row["id"]))
                    changed += 1
        return changed

    def annotation(self, annotation_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM annotations WHERE id = ?", (annotation_id,))
        if not rows:
            return None
        row = dict(rows[0])
        row["result"] = json.loads(row["result"])
        return row

    def live(self) -> list[StoredAnnotation]:
        """Every annotation a round may learn from: not deleted, not skipped, of a task that
        is not deleted; with the task's data where an event carried it."""
        rows = self._read(
            "SELECT a.id, a.task_id, a.result, a.updated_at, a.seq, t.data FROM annotations a "
            "LEFT JOIN tasks t ON t.id = a.task_id WHERE a.deleted = 0 AND a.was_cancelled = 0 "
            "AND (t.deleted IS NULL OR t.deleted = 0) ORDER BY a.seq")
        return [StoredAnnotation(id=r["id"], task_id=r["task_id"], result=json.loads(r["result"]),
                                 updated_at=r["updated_at"], seq=r["seq"],
                                 task_data=json.loads(r["data"]) if r["data"] else None)
                for r in rows]

    def count_live(self, since_seq: int = 0) -> int:
        rows = self._read(
            "SELECT COUNT(*) FROM annotations a LEFT JOIN tasks t ON t.id = a.task_id "
            "WHERE a.deleted = 0 AND a.was_cancelled = 0 AND (t.deleted IS NULL OR "
            "t.deleted = 0) AND a.seq > ?", (since_seq,))
        return int(rows[0][0])

    # -- versions ---------------------------------------------------------------------------

    def versions(self) -> list[Version]:
        rows = self._read("SELECT * FROM versions ORDER BY number")
        return [Version(name=r["name"], number=r["number"], state=r["state"], path=Path(r["path"]),
                        checkpoint=Path(r["checkpoint"]), base=r["base"],
                        figures=json.loads(r["figures"]), created_at=r["created_at"],
                        promoted_at=r["promoted_at"], has_files=bool(r["has_files"]))
                for r in rows]

    def version(self, name: str) -> Version | None:
        return next((v for v in self.versions() if v.name == name), None)

    def served(self) -> Version | None:
        return next((v for v in self.versions() if v.state == SERVED), None)

    def next_version_number(self) -> int:
        """One more than any version number used, by a version or by a round that failed
        before it made one (its folder may still be there)."""
        rows = self._read("SELECT MAX(number) FROM versions")
        used = [int(rows[0][0] or 0)]
        for (name,) in self._read("SELECT version FROM jobs WHERE version IS NOT NULL"):
            tail = str(name).rsplit("-v", 1)[-1]
            used.append(int(tail) if tail.isdigit() else 0)
        return max(used) + 1

    def add_version(self, version: Version) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO versions (name, number, state, path, checkpoint, base, "
                "figures, created_at, promoted_at, has_files) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (version.name, version.number, version.state, str(version.path),
                 str(version.checkpoint), version.base, json.dumps(version.figures),
                 version.created_at, version.promoted_at, int(version.has_files)))

    def set_version(self, name: str, **fields: Any) -> None:
        allowed = {"state", "figures", "promoted_at", "has_files"}
        assert set(fields) <= allowed, fields
        values = {k: json.dumps(v) if k == "figures" else v for k, v in fields.items()}
        with self._write() as db:
            db.execute(f"UPDATE versions SET {', '.join(f'{k} = ?' for k in values)} "
                       "WHERE name = ?", (*values.values(), name))

    def serve(self, name: str | None, previous_state: str = KEPT) -> None:
        """Make `name` the served version (None: the base model) in one transaction; the one
        served so far becomes `previous_state`."""
        with self._write() as db:
            db.execute("UPDATE versions SET state = ? WHERE state = ?", (previous_state, SERVED))
            if name is not None:
                db.execute("UPDATE versions SET state = ?, promoted_at = COALESCE(promoted_at, ?) "
                           "WHERE name = ?", (SERVED, time.time(), name))

    # -- jobs -------------------------------------------------------------------------------

    def _job(self, row: sqlite3.Row) -> Job:
        return Job(id=f"{self.project}-{row['number']}", project=self.project,
                   number=row["number"], trigger=row["trigger"], state=row["state"],
                   reason=row["reason"], version=row["version"], created_at=row["created_at"],
                   started_at=row["started_at"], finished_at=row["finished_at"],
                   snapshot_seq=row["snapshot_seq"], details=json.loads(row["details"]))

    def new_job(self, trigger: str) -> Job:
        with self._write() as db:
            cursor = db.execute("INSERT INTO jobs (trigger, state, created_at) VALUES (?, ?, ?)",
                                (trigger, QUEUED, time.time()))
            number = cursor.lastrowid
        assert number is not None  # set by the INSERT
        job = self.job(number)
        assert job is not None
        return job

    def job(self, number: int) -> Job | None:
        rows = self._read("SELECT * FROM jobs WHERE number = ?", (number,))
        return self._job(rows[0]) if rows else None

    def jobs(self, limit: int = 20) -> list[Job]:
        rows = self._read("SELECT * FROM jobs ORDER BY number DESC LIMIT ?", (limit,))
        return [self._job(r) for r in rows]

    def update_job(self, number: int, **fields: Any) -> None:
        allowed = {"state", "reason", "version", "started_at", "finished_at", "snapshot_seq",
                   "details"}
        assert set(fields) <= allowed, fields
        values = {k: json.dumps(v) if k == "details" else v for k, v in fields.items()}
        with self._write() as db:
            db.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in values)} "
                       "WHERE number = ?", (*values.values(), number))

    def interrupt_unfinished(self, reason: str) -> list[Job]:
        """Mark the jobs a stopped server left unfinished as interrupted (at start-up)."""
        unfinished = [j for j in self.jobs(limit=1000) if not j.final]
        for job in unfinished:
            self.update_job(job.number, state=INTERRUPTED, reason=reason, finished_at=time.time())
        return unfinished

    def counts_by_state(self) -> dict[str, int]:
        rows = self._read("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}
