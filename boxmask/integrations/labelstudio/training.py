"""Label Studio's training loop: annotations in, a new model version out when it is better.

`TrainingLoop` keeps each project's annotations (`store.ProjectStore`, fed by the webhook's
events), and runs training rounds, one at a time for the whole server, in a worker thread:

1. **Prepare**: the project's annotations become COCO files (`dataset.write_round`), the task
   images fetched through the predictions' fence and kept in an on-disk cache with a budget
   (`image_cache.ImageCache`); some tasks with masks are held out.
2. **Train**: `boxmask finetune` from the checkpoint of the version the project is served now
   (the first round: `BOXMASK_LABELSTUDIO_BASE_CHECKPOINT`, which must be the one the served
   model was exported from), in its own process under a memory limit, a lower priority and a
   wall-clock limit (`job_process`). It exports the new version to `versions/<name>/model`.
3. **Gate**: the new version and the served one are scored on the held-out tasks
   (`gate.score`); only a better one is promoted. Without held-out masks the version is
   trained and exported but promoted only if the operator allows it.
4. **Swap**: the new version is loaded next to the old one, the store records it as served,
   and the project's pointer moves to it in one assignment: requests already running finish on
   the version they started with (they hold it), later ones get the new one. The three most
   recent promoted versions keep their files, for a rollback (`rollback`).

A job that fails or is killed leaves the served version as it was, and says why in the store.
The next trigger starts a new round; when the project's annotations and the base are the
same as the failed round's, it reuses that round's folder and `boxmask finetune` resumes from
its last checkpoint. A server that stops during a round finds the job `interrupted` on
start-up (its process died with it: `job_process`).

The loop knows nothing of HTTP or of the server's registry: the server gives it `Hooks` to load
and unload a version, to load a predictor for scoring, and to fetch a task's image.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boxmask.files import sha256_file
from boxmask.integrations.labelstudio import gate
from boxmask.integrations.labelstudio.config import LabelConfig, LabelConfigError
from boxmask.integrations.labelstudio.dataset import Categories, write_round
from boxmask.integrations.labelstudio.events import START_TRAINING, WebhookEvent
from boxmask.integrations.labelstudio.image_cache import ImageCache, cache_key, image_size
from boxmask.integrations.labelstudio.store import (
    CANDIDATE,
    FAILED,
    INTERRUPTED,
    KEPT,
    NOT_PROMOTED,
    PREPARING,
    PROMOTED,
    REFUSED,
    ROLLED_BACK,
    SCORING,
    SERVED,
    TRAINING,
    Job,
    ProjectStore,
    Version,
)
from boxmask.runtime.card import ModelCard

log = logging.getLogger("boxmask.integrations.labelstudio.training")

#: Versions whose files are kept: the served one and the ones promoted just before it.
KEEP_VERSIONS = 3
BASE = "base"
# `boxmask finetune` says how many iterations it will run before it starts.
_ITERATIONS_LINE = re.compile(rb"(\d+) iterations on")


class TrainingError(RuntimeError):
    """A request to the loop that cannot be done (the message says why)."""


class OwnerBusy(TrainingError):
    """Another process owns the data folder."""


class _JobFailed(Exception):
    def __init__(self, reason: str, state: str = FAILED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.state = state


@dataclass
class TrainingOptions:
    """How rounds run (the server fills it from `LabelStudioSettings`)."""

    root: Path
    base_checkpoint: Path | None = None
    train_every: int | None = None
    iterations: int | None = None
    overrides: Sequence[str] = ()
    threads: int | None = None
    memory_bytes: int = 8 << 30
    timeout_s: float = 3 * 3600.0
    nice: int = 10
    heldout_percent: float = 20.0
    min_gain: float = 0.0
    promote_without_heldout: bool = False
    image_cache_bytes: int = 2 << 30
    max_image_pixels: int = 40_000_000
    int8: bool = False
    # The command that runs `boxmask finetune` (its arguments follow): the server's own Python
    # by default; another environment's `boxmask` where the server's has no torch.
    command: Sequence[str] = field(default_factory=lambda: (sys.executable, "-m", "boxmask"))
    label_map: Mapping[str, str | int] = field(default_factory=dict)


@dataclass
class Hooks:
    """What the loop needs from the server that holds it."""

    #: (name, model directory) of the model a project without a version is served.
    base_model: Callable[[], tuple[str, Path]]
    #: Load a version's model directory under its name, ready to serve (raises if it cannot).
    load_version: Callable[[str, Path], None]
    #: Drop a version that is no longer served (requests holding it finish first).
    unload_version: Callable[[str], None]
    #: A fresh predictor of a model directory, as the server would serve it (for scoring).
    load_predictor: Callable[[Path], Any]
    #: A task image's bytes: (project, URL, task id) -> bytes, through the fetch fence.
    fetch_image: Callable[[str, str, str], bytes]
    #: The Label Studio a project's relative URLs belong to (part of the image cache's key).
    image_origin: Callable[[str], str] = lambda project: ""


class OwnerLock:
    """An exclusive lock on the data folder: one server process writes its stores and runs
    its jobs (`boxmask serve --workers 2` would otherwise run two jobs and two writers)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "owner.lock"
        self._file = open(self.path, "a+")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise OwnerBusy(f"another process owns {root} (a second server worker?): Label "
                            "Studio training needs one server process (--workers 1)") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


@dataclass
class _Running:
    project: str
    job: Job
    stage: str = PREPARING
    progress: float = 0.0
    iterations: int | None = None
    version: str | None = None
    process: subprocess.Popen | None = None
    started: float = field(default_factory=time.time)


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_bytes()[-8000:].decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def _last_iteration(metrics: Path) -> int | None:
    try:
        text = metrics.read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("iteration"), int):
            return record["iteration"]
    return None


class TrainingLoop:
    """Each project's store, versions and rounds; one round at a time. Thread-safe."""

    def __init__(self, options: TrainingOptions, hooks: Hooks) -> None:
        self.options = options
        self.hooks = hooks
        self.root = Path(options.root)
        self.images = ImageCache(self.root / "images", options.image_cache_bytes,
                                 options.max_image_pixels)
        self._lock = threading.Condition(threading.RLock())
        self._swap_lock = threading.RLock()
        self._stores: dict[str, ProjectStore] = {}
        self._served: dict[str, str | None] = {}
        self._queue: deque[tuple[str, int]] = deque()
        self._running: _Running | None = None
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._owner: OwnerLock | None = None
        self.finished: dict[str, int] = {}

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        """Own the data folder, open the projects found in it, mark the rounds a stopped
        server left unfinished as interrupted, serve each project's version, start the worker."""
        self._owner = OwnerLock(self.root)
        projects = self.root / "projects"
        for folder in sorted(projects.iterdir()) if projects.is_dir() else []:
            if not folder.is_dir():
                continue
            store = self.store(folder.name)
            for job in store.interrupt_unfinished("the server stopped during this round"):
                log.warning("training round interrupted by a server stop",
                            extra={"project": folder.name, "job": job.id})
            served = store.served()
            if served is not None:
                try:
                    self.hooks.load_version(served.name, served.model_dir)
                    self._served[folder.name] = served.name
                except Exception as exc:  # noqa: BLE001 - the base model serves instead
                    log.error("served version failed to load; the project is served the base "
                              "model", extra={"project": folder.name, "version": served.name,
                                              "error": f"{type(exc).__name__}: {exc}"})
        self._worker = threading.Thread(target=self._work, name="labelstudio-training",
                                        daemon=True)
        self._worker.start()

    def close(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            running = self._running
            self._lock.notify_all()
        if running is not None and running.process is not None:
            _kill(running.process)
        if self._worker is not None:
            self._worker.join(timeout_s)
        for store in list(self._stores.values()):
            store.close()
        if self._owner is not None:
            self._owner.release()

    def store(self, project: str) -> ProjectStore:
        with self._lock:
            store = self._stores.get(project)
            if store is None:
                store = ProjectStore(self.root / "projects" / project, project)
                self._stores[project] = store
            return store

    def projects(self) -> list[str]:
        with self._lock:
            return sorted(self._stores)

    def served_version(self, project: str | None) -> str | None:
        """The name of the version a project is served now; None: the base model."""
        if project is None:
            return None
        return self._served.get(project)

    # -- events -----------------------------------------------------------------------------

    def handle(self, event: WebhookEvent) -> dict[str, Any]:
        """Store what a webhook event says; start a round where it asks for one. The answer is
        what the webhook replies (for START_TRAINING, `job`: Label Studio records it)."""
        assert event.project is not None
        store = self.store(event.project)
        if event.label_config:
            store.set_meta("label_config", event.label_config)
        answer: dict[str, Any] = {"status": "ok", "action": event.action,
                                  "project": event.project}
        if event.action == START_TRAINING:
            job = self.trigger(event.project, START_TRAINING)
            return {**answer, "job": job.id, "job_state": job.state}
        if event.annotations:
            answer["annotations"] = store.upsert(event.annotations)
        if event.deleted_annotations:
            answer["deleted"] = store.delete_annotations(event.deleted_annotations)
        if event.deleted_tasks:
            answer["deleted"] = store.delete_tasks(event.deleted_tasks)
        every = self.options.train_every
        if every:
            since = int(store.get_meta("snapshot_seq") or 0)
            new = store.count_live(since)
            if new >= every:
                job = self.trigger(event.project, f"{new} new annotations (every {every})")
                answer["job"] = job.id
        return answer

    def trigger(self, project: str, reason: str) -> Job:
        """Queue a round for `project`; a round already queued for it is the answer instead."""
        store = self.store(project)
        with self._lock:
            for queued_project, number in self._queue:
                if queued_project == project:
                    job = store.job(number)
                    assert job is not None
                    return job
            job = store.new_job(reason)
            self._queue.append((project, job.number))
            self._lock.notify_all()
        log.info("training round queued", extra={"project": project, "job": job.id,
                                                 "trigger": reason})
        return job

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no round runs or waits (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._queue or self._running is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.2))
        return True

    # -- the worker -------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                project, number = self._queue.popleft()
                job = self.store(project).job(number)
                if job is None:
                    continue
                self._running = _Running(project=project, job=job)
            try:
                self._run(self._running)
            except Exception:
                log.exception("training round crashed", extra={"project": project})
            finally:
                with self._lock:
                    self._running = None
                    self._lock.notify_all()

    def _stage(self, running: _Running, stage: str, **fields: Any) -> None:
        running.stage = stage
        self.store(running.project).update_job(running.job.number, state=stage, **fields)

    def _run(self, running: _Running) -> None:
        project, store, number = running.project, self.store(running.project), running.job.number
        details: dict[str, Any] = {}
        state, reason, version = FAILED, "", None
        try:
            self._stage(running, PREPARING, started_at=time.time())
            state, reason, version = self._round(running, details)
        except _JobFailed as exc:
            state, reason = exc.state, exc.reason
        except Exception as exc:
            log.exception("training round failed", extra={"project": project})
            state, reason = FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            if self._stopping and state == FAILED:
                state, reason = INTERRUPTED, "the server stopped during this round"
            store.update_job(number, state=state, reason=reason, finished_at=time.time(),
                             details=details, **({"version": version} if version else {}))
            with self._lock:
                self.finished[state] = self.finished.get(state, 0) + 1
            (log.info if state in (PROMOTED, NOT_PROMOTED, REFUSED) else log.warning)(
                "training round ended", extra={"project": project, "job": running.job.id,
                                               "state": state, "reason": reason})
            try:
                self._prune(store, keep_also={running.version} if running.version else set())
            except OSError as exc:
                log.warning("pruning old versions failed", extra={"error": str(exc)})

    def _round(self, running: _Running, details: dict[str, Any]) -> tuple[str, str, str]:
        project, store = running.project, self.store(running.project)
        snapshot = store.seq
        store.set_meta("snapshot_seq", str(snapshot))
        store.update_job(running.job.number, snapshot_seq=snapshot)
        served = store.served()
        base_name, base_dir = self.hooks.base_model()
        served_dir = served.model_dir if served is not None else base_dir
        checkpoint = served.checkpoint if served is not None else self.options.base_checkpoint
        if checkpoint is None:
            raise _JobFailed("no checkpoint to train from: set BOXMASK_LABELSTUDIO_BASE_CHECKPOINT "
                             "to the checkpoint the served model was exported from")
        if not Path(checkpoint).is_file():
            raise _JobFailed(f"the checkpoint to train from is missing: {checkpoint}")
        card = ModelCard.model_validate_json((served_dir / "model.json").read_text())
        if served is None:
            recorded = (card.provenance or {}).get("checkpoint_sha256")
            if recorded and recorded != sha256_file(Path(checkpoint)):
                raise _JobFailed(f"BOXMASK_LABELSTUDIO_BASE_CHECKPOINT ({checkpoint}) is not the "
                                 f"checkpoint the served model {base_name!r} was exported from "
                                 "(its card records another sha256)")
        details["base"] = served.name if served is not None else BASE
        details["base_checkpoint"] = str(checkpoint)

        # 1. the round's data
        image_key = self._image_key(store)
        staging = store.folder / "data" / "_staging"
        shutil.rmtree(staging, ignore_errors=True)
        needed: set[str] = set()

        def image_of(task_id: str, data: Mapping[str, Any]) -> Path:
            url = data.get(image_key)
            if not isinstance(url, str) or not url:
                raise ValueError(f"task data has no {image_key!r}")
            key = cache_key(self.hooks.image_origin(project), url)
            needed.add(key)
            return self.images.get(key, lambda: self.hooks.fetch_image(project, url, task_id),
                                   pinned=needed)

        annotations = store.live()
        try:
            data = write_round(project, annotations, image_of,
                               Categories(card, self.options.label_map),
                               self.options.heldout_percent, staging, image_size)
        except ValueError as exc:
            raise _JobFailed(str(exc)) from None
        details["dataset"] = {**data.summary(), "annotations": len(annotations)}
        request = {"digest": data.digest, "checkpoint": str(checkpoint),
                   "iterations": self.options.iterations, "overrides": list(self.options.overrides),
                   "int8": self.options.int8}
        name = self._resumable(store, request) or (
            f"{base_name}-p{project}-v{store.next_version_number()}")
        details["request"] = request
        running.version = name
        store.update_job(running.job.number, version=name, details=details)
        number = int(name.rsplit("-v", 1)[1])
        data_dir = store.folder / "data" / name
        data_dir.mkdir(parents=True, exist_ok=True)
        for staged in staging.iterdir():
            os.replace(staged, data_dir / staged.name)
        if data.heldout is None:  # left by an earlier attempt of this version
            (data_dir / "heldout.json").unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        heldout = data_dir / "heldout.json" if data.heldout is not None else None

        # 2. train
        out = store.folder / "versions" / name
        self._stage(running, TRAINING)
        self._finetune(running, checkpoint=Path(checkpoint), train=data_dir / "train.json",
                       images=data.images, heldout=heldout, out=out)
        evaluation = None
        if (out / "evaluation.json").is_file():
            evaluation = json.loads((out / "evaluation.json").read_text())
        figures: dict[str, Any] = {"finetune_evaluation": evaluation,
                                   "dataset": details["dataset"]}
        version = Version(name=name, number=number, state=CANDIDATE, path=out,
                          checkpoint=out / "train" / "checkpoint_last.pt", base=details["base"],
                          figures=figures, created_at=time.time(), promoted_at=None,
                          has_files=True)
        store.add_version(version)

        # 3. gate
        self._stage(running, SCORING)
        running.progress = 1.0
        if heldout is None:
            if not self.options.promote_without_heldout:
                store.set_version(name, state=CANDIDATE)
                why = ("trained and exported, not promoted: no held-out task with masks to "
                       "score it on (BOXMASK_LABELSTUDIO_PROMOTE_WITHOUT_HELDOUT=true promotes "
                       "such versions)")
                return NOT_PROMOTED, why, name
            ok, why = True, "promoted without a held-out score (PROMOTE_WITHOUT_HELDOUT)"
        else:
            new = gate.score(self.hooks.load_predictor(version.model_dir), heldout, data.images)
            old = gate.score(self.hooks.load_predictor(served_dir), heldout, data.images)
            figures.update({"heldout": new, "served_heldout": old,
                            "served": served.name if served is not None else BASE})
            ok, why = gate.decide(new, old, self.options.min_gain)
        store.set_version(name, figures=figures)
        details["figures"] = {k: figures.get(k) for k in ("heldout", "served_heldout")}
        if not ok:
            store.set_version(name, state=REFUSED)
            return REFUSED, why, name

        # 4. swap
        self._swap(project, store.version(name))
        return PROMOTED, why, name

    def _image_key(self, store: ProjectStore) -> str:
        config = store.get_meta("label_config")
        if config:
            try:
                return LabelConfig.parse(config).image_key
            except LabelConfigError as exc:
                raise _JobFailed(f"the project's labelling config: {exc}") from None
        return "image"

    def _resumable(self, store: ProjectStore, request: dict[str, Any]) -> str | None:
        """The version of the latest round if it failed or was interrupted on this same
        request, and its folder is still there: rerunning it resumes its training."""
        for job in store.jobs(limit=5):
            if self._running is not None and job.number == self._running.job.number:
                continue
            if job.state in (FAILED, INTERRUPTED) and job.version and \
                    job.details.get("request") == request and \
                    store.version(job.version) is None and \
                    (store.folder / "versions" / job.version).is_dir():
                return job.version
            return None
        return None

    def _finetune(self, running: _Running, checkpoint: Path, train: Path, images: Path,
                  heldout: Path | None, out: Path) -> None:
        o = self.options
        args = [*o.command, "finetune", "--from", str(checkpoint), "--coco", str(train),
                "--images", str(images), "--out", str(out), "--int8" if o.int8 else "--no-int8",
                # A project's version keeps the served model's other categories.
                "--keep-categories"]
        if heldout is not None:
            args += ["--val-coco", str(heldout), "--val-images", str(images)]
        if o.iterations:
            args += ["--iterations", str(o.iterations)]
        overrides = list(o.overrides)
        if o.threads:
            overrides.append(f"train.threads={o.threads}")
        args += overrides
        launcher = [sys.executable, "-m", "boxmask.integrations.labelstudio.job_process",
                    "--memory-bytes", str(o.memory_bytes), "--nice", str(o.nice),
                    "--parent", str(os.getpid()), "--", *args]
        # The job needs neither the server's token nor Label Studio's key.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BOXMASK_", "LABEL_STUDIO_"))}
        env.update({"BOXMASK_NO_PROGRESS": "1", "MALLOC_ARENA_MAX": "2",
                    "PYTHONUNBUFFERED": "1"})
        if o.threads:
            env["OMP_NUM_THREADS"] = str(o.threads)
        log_path = out.parent / f"{out.name}.log"
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            log_file.write(f"\n$ {' '.join(args)}\n".encode())
            log_file.flush()
            with self._lock:
                if self._stopping:
                    raise _JobFailed("the server stopped during this round", INTERRUPTED)
                running.process = subprocess.Popen(
                    launcher, stdout=log_file, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, cwd=out.parent, env=env, start_new_session=True)
        process = running.process
        deadline = time.monotonic() + o.timeout_s
        while True:
            try:
                code = process.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            self._progress(running, log_path, out)
            if time.monotonic() > deadline:
                _kill(process)
                raise _JobFailed(f"the round ran past its time limit of {o.timeout_s:.0f} s "
                                 "(BOXMASK_LABELSTUDIO_TRAIN_TIMEOUT_S) and was stopped")
        running.process = None
        if code != 0:
            if code == -signal.SIGKILL:
                why = ("boxmask finetune was killed (SIGKILL: the system's out-of-memory killer, "
                       "or someone stopped it)")
            elif code < 0:
                why = f"boxmask finetune was killed (signal {-code})"
            else:
                why = f"boxmask finetune exited with {code}"
            if b"MemoryError" in log_path.read_bytes()[-20000:]:
                why += (" after running out of its memory limit "
                        "(BOXMASK_LABELSTUDIO_TRAIN_MEMORY_BYTES)")
            raise _JobFailed(f"{why}; the served model is unchanged. Last output: "
                             f"{_tail(log_path)}")
        if not (out / "model" / "model.json").is_file():
            raise _JobFailed(f"boxmask finetune exported no model to {out / 'model'}")

    def _progress(self, running: _Running, log_path: Path, out: Path) -> None:
        if running.iterations is None:
            try:
                found = _ITERATIONS_LINE.findall(log_path.read_bytes()[-20000:])
            except OSError:
                found = []
            if found:
                running.iterations = int(found[-1])
        done = _last_iteration(out / "train" / "metrics.jsonl")
        if running.iterations and done is not None:
            running.progress = min(done / running.iterations, 1.0)

    # -- swap and rollback ------------------------------------------------------------------

    def _swap(self, project: str, target: Version | None, previous_state: str = KEPT) -> None:
        """Serve `target` (None: the base model) to the project: load it first (a version that
        fails to load is never served), record it, move the pointer, drop the old one."""
        store = self.store(project)
        with self._swap_lock:
            old = self._served.get(project)
            if target is not None:
                self.hooks.load_version(target.name, target.model_dir)
            store.serve(target.name if target is not None else None, previous_state)
            self._served[project] = target.name if target is not None else None
            if old is not None and old != (target.name if target is not None else None):
                self.hooks.unload_version(old)
        log.info("served version changed", extra={
            "project": project, "from": old or BASE,
            "to": target.name if target is not None else BASE})

    def rollback(self, project: str, to: str | None = None) -> str | None:
        """Serve an earlier version: `to` by name, "base" for the base model, or None for the
        version promoted before the served one (the base model when there is none). Returns
        the version now served (None: the base model)."""
        if project not in self.projects() and not (self.root / "projects" / project).is_dir():
            raise TrainingError(f"project {project!r} has no training history here")
        store = self.store(project)
        with self._swap_lock:
            target = rollback_target(store, to)
            self._swap(project, target, previous_state=ROLLED_BACK)
            self._prune(store, keep_also=set())
        return target.name if target is not None else None

    def _prune(self, store: ProjectStore, keep_also: set[str]) -> None:
        """Delete the files of versions beyond the last `KEEP_VERSIONS` promoted ones (and
        of failed rounds), keeping `keep_also` (this round's, for a look or a resume)."""
        keep = set(keep_also) | kept_versions(store)
        running = self._running
        if running is not None and running.version:
            keep.add(running.version)
        for folder_name in ("versions", "data"):
            folder = store.folder / folder_name
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                name = path.name.removesuffix(".log")
                if name in keep or name.startswith("_"):
                    continue
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        for version in store.versions():
            if version.has_files and version.name not in keep:
                store.set_version(version.name, has_files=False)

    # -- status -----------------------------------------------------------------------------

    def status(self, project: str | None = None, limit: int = 20) -> dict[str, Any]:
        with self._lock:
            running = self._running
            queued = [f"{p}-{n}" for p, n in self._queue]
        current = None
        if running is not None:
            # The job's row as it is now (the job as it started, should the row be gone).
            job = self.store(running.project).job(running.job.number) or running.job
            current = {**job.public(),
                       "stage": running.stage, "progress": round(running.progress, 4),
                       "iterations": running.iterations,
                       "elapsed_s": round(time.time() - running.started, 1)}
        projects = {}
        for name in self.projects():
            if project is not None and name != project:
                continue
            store = self.store(name)
            since = int(store.get_meta("snapshot_seq") or 0)
            projects[name] = {
                "served": self._served.get(name) or BASE,
                "annotations": store.count_live(),
                "new_since_last_round": store.count_live(since),
                "versions": [v.public() for v in reversed(store.versions())],
                "jobs": [j.public() for j in store.jobs(limit)],
            }
        return {"running": current, "queued": queued, "projects": projects}

    def stats(self) -> dict[str, Any]:
        """Figures for the metrics: jobs by final state, the running job, per project."""
        with self._lock:
            running = self._running
            queued = len(self._queue)
            finished = dict(self.finished)
        per_project = {}
        for name in self.projects():
            store = self.store(name)
            served = store.served()
            heldout = (served.figures.get("heldout") or {}) if served is not None else {}
            per_project[name] = {"annotations": store.count_live(),
                                 "version": served.name if served is not None else BASE,
                                 "mean_iou": heldout.get("mean_iou"),
                                 "box_mean_iou": heldout.get("box_mean_iou")}
        return {"running": 1 if running is not None else 0,
                "progress": running.progress if running is not None else 0.0,
                "queued": queued, "finished": finished, "projects": per_project}


def kept_versions(store: ProjectStore) -> set[str]:
    """The served version and the versions promoted just before it: `KEEP_VERSIONS` in all."""
    promoted = sorted((v for v in store.versions() if v.promoted_at is not None
                       and v.state in (SERVED, KEPT, ROLLED_BACK)),
                      key=lambda v: v.promoted_at or 0.0, reverse=True)
    served = [v.name for v in promoted if v.state == SERVED]
    others = [v.name for v in promoted if v.state != SERVED]
    return set(served + others[:KEEP_VERSIONS - len(served)])


def rollback_target(store: ProjectStore, to: str | None) -> Version | None:
    """The version a rollback serves (None: the base model); `TrainingError` if there is none."""
    served = store.served()
    if to == BASE:
        return None
    if to is not None:
        target = store.version(to)
        if target is None or target.promoted_at is None:
            raise TrainingError(f"{to!r} is not a version this project was served; its versions: "
                                f"{', '.join(v.name for v in store.versions()) or 'none'}")
        if not target.has_files or not target.model_dir.is_dir():
            raise TrainingError(f"{to!r}'s files are no longer kept (the last {KEEP_VERSIONS} "
                                "versions are)")
        if served is not None and target.name == served.name:
            raise TrainingError(f"{to!r} is already served")
        return target
    if served is None:
        raise TrainingError("the project is served the base model: there is nothing to roll "
                            "back")
    earlier = sorted((v for v in store.versions() if v.promoted_at is not None
                      and v.state in (KEPT, ROLLED_BACK) and v.has_files
                      and (v.promoted_at or 0) < (served.promoted_at or 0)),
                     key=lambda v: v.promoted_at or 0.0, reverse=True)
    return earlier[0] if earlier else None


def _kill(process: subprocess.Popen) -> None:
    """Kill a job's process group (the launcher exec'd into the job, which may have children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)

