"""What a request may cost, and what a caller may cost over time.

The work of a request grows with its masks: each is a full-image plane pasted and encoded, so
the cost is counted in mask pixels, boxes x image pixels (an image the request brings, or a
task image fetched for it, counts as one more plane: it is decoded). Two budgets bound it:

* per request, ``max_mask_pixels``: a request over it is refused with 422 before it queues
  (the box policy's limit, `boxmask.runtime.boxes`, applied on arrival);
* per caller, a token bucket of mask pixels (`CallerBudget`): refilled at
  ``caller_mask_pixels_per_minute`` and holding at most ``caller_mask_pixels_burst``. A request
  that needs more than its caller has left is refused with 429 and ``Retry-After``, before it
  queues, so a caller sending many costly requests at once cannot fill the queue or hold every
  inference slot: what it has in flight is bounded by its burst.

A caller is a client address (`caller_of`). Behind a reverse proxy every request comes from the
proxy: run uvicorn with ``--proxy-headers`` and ``--forwarded-allow-ips`` so that the client's
own address is the one seen here.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from fastapi import Request

from boxmask.runtime import Predictor
from boxmask.server.errors import ApiError
from boxmask.server.metrics import ServerMetrics
from boxmask.server.payloads import ImageInput, check_image_header

# Callers remembered at most; buckets that are full again (idle callers) are dropped first.
MAX_CALLERS = 10_000


def caller_of(request: Request) -> str:
    """The caller a request's cost is charged to: its client address."""
    return request.client.host if request.client is not None else "unknown"


def image_plane(image: ImageInput, predictor: Predictor, max_image_pixels: int
                ) -> tuple[int, int] | None:
    """`(width, height)` of a request's image before it queues: from the header of the bytes
    it brings (413 / 422 for an image too large or unreadable, as the encoder would), or from
    the cache for an `image_id`; None for an id the cache does not hold (the request's 404)."""
    if image.data is not None:
        return check_image_header(image.data, max_image_pixels)
    assert image.image_id is not None
    # A look, not a use: the request counts its cache lookup when it runs.
    entry = predictor.cache.peek(image.image_id)
    if entry is None:
        return None
    height, width = entry.info.original_size
    return width, height


class CallerBudget:
    """A token bucket of mask pixels per caller; thread-safe (Label Studio's tasks are charged
    from worker threads). ``per_minute`` 0: no budget, every call is a no-op."""

    def __init__(self, per_minute: int, burst: int, metrics: ServerMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0  # pixels per second
        self.burst = burst
        self.metrics = metrics
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (pixels left, at)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _left(self, caller: str, now: float) -> float:
        left, at = self._buckets.get(caller, (float(self.burst), now))
        return min(float(self.burst), left + (now - at) * self.rate)

    def _set(self, caller: str, left: float, now: float) -> None:
        if caller not in self._buckets and len(self._buckets) >= MAX_CALLERS:
            self._forget_idle(now)
        self._buckets[caller] = (left, now)

    def _forget_idle(self, now: float) -> None:
        full = [c for c in self._buckets if self._left(c, now) >= self.burst]
        for c in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[c]

    def take(self, caller: str, pixels: int) -> None:
        """Charge `pixels` to `caller`, or 429 when it has less left (a cost above the burst
        needs a full bucket, so it is slow but possible)."""
        if not self.enabled or pixels <= 0:
            return
        with self._lock:
            now = self.clock()
            left = self._left(caller, now)
            needed = min(float(pixels), float(self.burst))
            if left < needed:
                raise self._exhausted(caller, pixels, (needed - left) / self.rate)
            self._set(caller, left - pixels, now)

    def charge(self, caller: str, pixels: int) -> None:
        """Charge work already under way: never refuses, may leave the caller in debt (its next
        requests wait until the bucket refills)."""
        if not self.enabled or pixels <= 0:
            return
        with self._lock:
            now = self.clock()
            self._set(caller, self._left(caller, now) - pixels, now)

    def refund(self, caller: str, pixels: int) -> None:
        """Give back what a request was charged and did not use (detections below the estimate)."""
        if not self.enabled or pixels <= 0:
            return
        with self._lock:
            now = self.clock()
            self._set(caller, min(float(self.burst), self._left(caller, now) + pixels), now)

    def check(self, caller: str) -> None:
        """429 unless `caller` has something left: for work whose cost is known only once it
        runs (a Label Studio task), charged then with `charge`."""
        if not self.enabled:
            return
        with self._lock:
            left = self._left(caller, self.clock())
        if left <= 0:
            raise self._exhausted(caller, None, (1.0 - left) / self.rate)

    def _exhausted(self, caller: str, pixels: int | None, wait_s: float) -> ApiError:
        self.metrics.rejected.labels("caller_budget").inc()
        retry_after = max(1, math.ceil(wait_s))
        per_minute = round(self.rate * 60)
        needs = f"; this request needs {pixels:,}" if pixels is not None else ""
        return ApiError(
            429, "caller_budget_exhausted",
            f"this client has used its budget of {per_minute:,} mask pixels per minute (at most "
            f"{self.burst:,} at once; BOXMASK_CALLER_MASK_PIXELS_PER_MINUTE, "
            f"BOXMASK_CALLER_MASK_PIXELS_BURST){needs}: retry after {retry_after} s",
            {"caller": caller, "mask_pixels": pixels, "per_minute": per_minute,
             "burst": self.burst, "retry_after_s": retry_after},
            headers={"Retry-After": str(retry_after)})
