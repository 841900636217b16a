"""Running one request's inference: wait for a slot, compute in a thread, map runtime errors.

A runtime input error (bad image, bad boxes, unknown label or image) becomes its 4xx; a
backend failure marks the model failed (``/readyz`` then fails and its requests get 503 until a
reload works) and answers 503 itself. The process never goes down with the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from boxmask.runtime.errors import BackendUnavailable, ModelDirError, RuntimeInputError
from boxmask.server.errors import from_runtime_error
from boxmask.server.limits import InferenceLimiter
from boxmask.server.registry import ModelRegistry, ModelSlot

T = TypeVar("T")


async def run_inference(limiter: InferenceLimiter, registry: ModelRegistry, slot: ModelSlot,
                        fn: Callable[..., T], *args: object, inline: bool = False) -> T:
    try:
        return await limiter.run(fn, *args, inline=inline)
    except RuntimeInputError as exc:
        raise from_runtime_error(exc) from None
    except (BackendUnavailable, ModelDirError) as exc:
        registry.mark_failed(slot.name, exc)
        raise from_runtime_error(exc) from None
