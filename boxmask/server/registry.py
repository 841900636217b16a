"""The models a server holds, by name, with the state of each one's backend.

A model directory is either one exported model directory (it has a card) or a folder of
them (`runtime.contract.find_model_dirs`). Each is loaded once (the runtime's ``Predictor.from_dir``) and served under its card's
``name``. A model that fails to load, or whose backend fails while serving, is kept in the
registry as *failed* with the reason: the process stays up, ``/readyz`` says what is wrong, its
requests get 503, and ``/readyz`` retries it every ``reload_interval_s``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boxmask.runtime import Predictor
from boxmask.runtime.contract import CARD_NAME, HOW_TO_GET_A_MODEL, find_model_dirs
from boxmask.server.errors import ApiError
from boxmask.server.settings import ServerSettings

log = logging.getLogger("boxmask.server.registry")


@dataclass
class ModelSlot:
    """One model: where it lives, its card, and either a predictor or the reason it has none."""

    name: str
    path: Path
    card: dict[str, Any]
    predictor: Predictor | None = None
    error: str | None = None
    failed_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # A version trained from Label Studio's annotations: the base model's name. Versions are
    # served by name but never become the default model.
    version_of: str | None = None

    @property
    def ready(self) -> bool:
        return self.predictor is not None and self.error is None


class ModelRegistry:
    """Loads and holds the models; thread-safe (loading happens in worker threads)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        # Built once: every model this registry loads runs with these.
        self.options = settings.predictor_options()
        self.slots: dict[str, ModelSlot] = {}
        self.problem: str | None = None  # why there is no model at all, if there is none

    # -- loading ----------------------------------------------------------------------------

    def discover(self) -> None:
        """Read the cards under ``settings.model_dir``; a card that cannot be read is reported."""
        root = Path(self.settings.model_dir)
        for path in find_model_dirs(root):
            try:
                card = json.loads((path / CARD_NAME).read_text())
                name = str(card["name"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("unreadable model card", extra={"path": str(path), "error": str(exc)})
                continue
            if self.settings.models is not None and name not in self.settings.models:
                continue
            if name in self.slots:
                log.error("two models share a name; keeping the first",
                          extra={"model": name, "path": str(path)})
                continue
            self.slots[name] = ModelSlot(name=name, path=path, card=card)
        if self.settings.models is not None:
            missing = sorted(set(self.settings.models) - set(self.slots))
            if missing:
                self.problem = (f"models {missing} were asked for but not found in {root} "
                                f"(found: {sorted(self.slots) or 'none'})")
        if not self.slots:
            self.problem = self.problem or f"no model found in {root}; {HOW_TO_GET_A_MODEL}"
        if self.settings.default_model and self.settings.default_model not in self.slots:
            self.problem = (f"default model {self.settings.default_model!r} is not in {root} "
                            f"(found: {sorted(self.slots) or 'none'})")

    def load_all(self) -> None:
        for slot in self.slots.values():
            self._load(slot)

    def _load(self, slot: ModelSlot) -> None:
        options = self.options
        if slot.version_of is not None:
            # A trained version is an ONNX bundle on this machine, not in Triton's repository.
            options = options.replace(backend="onnxruntime", triton_url=None)
        with slot.lock:
            try:
                slot.predictor = Predictor.from_dir(slot.path, options)
                slot.error = None
                log.info("model loaded", extra={"model": slot.name, "path": str(slot.path),
                                                "backend": self.settings.effective_backend})
            except Exception as exc:  # noqa: BLE001 - any load failure is reported, not fatal
                slot.predictor = None
                slot.error = f"{type(exc).__name__}: {exc}"
                slot.failed_at = time.monotonic()
                log.error("model failed to load", extra={"model": slot.name, "error": slot.error})

    def check_backends(self) -> None:
        """Ask remote sessions (Triton) whether their models are still ready; an in-process
        ONNX Runtime session has no such question and is taken as ready."""
        for slot in self.slots.values():
            if not slot.ready:
                continue
            for graph in ("encoder", "decoder"):
                is_ready = getattr(getattr(slot.predictor, graph, None), "is_ready", None)
                if callable(is_ready) and not is_ready():
                    self.mark_failed(slot.name, RuntimeError(f"the backend's {graph} is not ready"))
                    break

    def retry_failed(self) -> None:
        """Reload failed models whose last failure is older than ``reload_interval_s``."""
        now = time.monotonic()
        for slot in self.slots.values():
            if not slot.ready and now - slot.failed_at >= self.settings.reload_interval_s:
                self._load(slot)

    def add_version(self, name: str, path: Path, version_of: str) -> ModelSlot:
        """Load a model version (a Label Studio round's export) and serve it under `name`.

        Loaded before it is published, so no request ever sees it half-loaded; raises (and
        publishes nothing) when it cannot load. `slots` is replaced, never changed in place: a
        thread iterating the old dict (readiness, metrics) is not disturbed."""
        if name in self.slots and self.slots[name].version_of is None:
            raise ValueError(f"{name!r} is the name of a model in {self.settings.model_dir}")
        card = json.loads((Path(path) / CARD_NAME).read_text())
        slot = ModelSlot(name=name, path=Path(path), card=card, version_of=version_of)
        self._load(slot)
        if not slot.ready:
            raise RuntimeError(f"model version {name!r} failed to load: {slot.error}")
        self.slots = {**self.slots, name: slot}
        return slot

    def remove_version(self, name: str) -> None:
        """Stop serving a version by name. Requests that hold its slot finish on it; its
        predictor goes with the last of them."""
        slot = self.slots.get(name)
        if slot is not None and slot.version_of is not None:
            self.slots = {k: v for k, v in self.slots.items() if k != name}

    def mark_failed(self, name: str, exc: BaseException) -> None:
        """A backend failed while serving: refuse this model's requests until a reload works."""
        slot = self.slots.get(name)
        if slot is None:  # a version removed while the failing request held it
            return
        slot.error = f"{type(exc).__name__}: {exc}"
        slot.failed_at = time.monotonic()
        log.error("model backend failed", extra={"model": name, "error": slot.error})

    def close(self) -> None:
        for slot in self.slots.values():
            close = getattr(slot.predictor, "close", None)
            if callable(close):
                close()
            slot.predictor = None

    # -- serving ----------------------------------------------------------------------------

    @property
    def default_name(self) -> str | None:
        if self.settings.default_model in self.slots:
            return self.settings.default_model
        models = [name for name, slot in self.slots.items() if slot.version_of is None]
        return min(models) if models else None

    def slot(self, name: str | None) -> ModelSlot:
        """The model a request asked for (or the default); 404 / 503 when it cannot serve."""
        if not self.slots:
            raise ApiError(503, "no_model", self.problem or f"no model; {HOW_TO_GET_A_MODEL}",
                           headers={"Retry-After": str(max(1, int(self.settings.reload_interval_s)))})
        key = name if name is not None else self.default_name
        if key not in self.slots:
            raise ApiError(404, "unknown_model", f"unknown model {name!r}; known models: "
                           f"{', '.join(sorted(self.slots))}", {"known_models": sorted(self.slots)})
        slot = self.slots[key]
        if not slot.ready:
            raise ApiError(503, "backend_unavailable",
                           f"model {slot.name!r} is not available: {slot.error}",
                           headers={"Retry-After": str(max(1, int(self.settings.reload_interval_s)))})
        return slot

    def readiness(self) -> tuple[bool, str, dict[str, str]]:
        states = {name: ("ready" if slot.ready else "failed") for name, slot in self.slots.items()}
        if self.problem and not self.slots:
            return False, self.problem, states
        failed = {n: s.error for n, s in self.slots.items() if not s.ready}
        if failed:
            reasons = "; ".join(f"{n}: {e}" for n, e in sorted(failed.items()))
            return False, f"{len(failed)} of {len(self.slots)} models unavailable: {reasons}", states
        if self.problem:
            return False, self.problem, states
        return True, f"{len(self.slots)} model(s) ready", states

    def cache_stats(self) -> dict[str, dict[str, float]]:
        """Per model, the runtime cache's counters (read at scrape time)."""
        out: dict[str, dict[str, float]] = {}
        for name, slot in self.slots.items():
            if slot.predictor is not None:
                stats = slot.predictor.cache_stats()
                out[name] = {"hits": stats.hits, "misses": stats.misses, "bytes": stats.bytes,
                             "entries": stats.entries, "capacity_bytes": stats.max_bytes}
        return out

