"""Limits that keep one server alive under any client: body size and bounded inference.

* ``BodySizeLimitMiddleware`` refuses a body over ``max_body_bytes`` with 413, from the
  ``Content-Length`` header when there is one and by counting the streamed bytes otherwise, so
  a chunked upload cannot get past it either.
* ``InferenceLimiter`` lets ``max_concurrency`` requests compute at once, each in a worker
  thread (the predictor is CPU-bound and would block the event loop), keeps up to ``max_queue``
  more waiting, and answers 503 with ``Retry-After`` beyond that, or when a request waited
  longer than ``queue_timeout_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boxmask.server.errors import ApiError, ErrorBody, ErrorResponse
from boxmask.server.metrics import ServerMetrics

T = TypeVar("T")


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large",
                         f"request body is larger than the limit of {limit} bytes "
                         "(BOXMASK_MAX_BODY_BYTES)")


class BodySizeLimitMiddleware:
    """Pure ASGI middleware: a 413 before the app reads an oversized body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route's body read; the app's ApiError handler answers.
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        err = BodyTooLarge(self.max_bytes)
        request_id = scope.get("state", {}).get("request_id")
        body = ErrorResponse(error=ErrorBody(code=err.code, message=err.message),
                             request_id=request_id).model_dump_json(exclude_none=True).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class InferenceLimiter:
    """A semaphore of inference slots with a bounded, timed wait in front of it."""

    def __init__(self, max_concurrency: int, max_queue: int, queue_timeout_s: float,
                 retry_after_s: int, metrics: ServerMetrics) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self._slots = asyncio.Semaphore(max_concurrency)
        self.waiting = 0

    async def _wait_for_slot(self) -> None:
        """Queue for a slot: refused at once when the queue is full, or after
        ``queue_timeout_s``."""
        if self.waiting >= self.max_queue:
            raise self._overloaded(f"server busy: {self.max_concurrency} requests computing and "
                                   f"{self.waiting} waiting; retry after {self.retry_after_s} s")
        self.waiting += 1
        self.metrics.queue_depth.inc()
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.queue_timeout_s)
        except asyncio.TimeoutError:
            raise self._overloaded(f"server busy: waited {self.queue_timeout_s} s for a slot; "
                                   f"retry after {self.retry_after_s} s") from None
        finally:
            self.waiting -= 1
            self.metrics.queue_depth.dec()

    def _overloaded(self, why: str) -> ApiError:
        self.metrics.rejected.labels("overloaded").inc()
        return ApiError(503, "overloaded", why, headers={"Retry-After": str(self.retry_after_s)})

    async def run(self, fn: Callable[..., T], *args: object, inline: bool = False) -> T:
        """Run ``fn(*args)`` in a worker thread once a slot is free (``inline``: on the event
        loop itself, for work as short as the hand-off to a thread; ServerSettings'
        ``inline_boxes``)."""
        if self._slots.locked():
            await self._wait_for_slot()
        else:
            # A free slot (and nobody waiting: `locked` says so) is taken at once; wait_for
            # would wrap the acquire in a task and a trip round the loop for nothing.
            await self._slots.acquire()
        self.metrics.in_flight.inc()
        try:
            if inline:
                return fn(*args)
            return await run_in_threadpool(fn, *args)
        finally:
            self.metrics.in_flight.dec()
            self._slots.release()
