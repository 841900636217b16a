"""FastAPI dependencies: the app's shared resources, made in the lifespan (auth: `auth.py`).

`async def`, though they only read an attribute: FastAPI runs a plain `def` dependency in its
thread pool, and the five of a `/v1/segment` request (with the token check, six) were six
thread hand-offs before its inference's own, a measured part of a cached box's cost.

The inference routes take the five as one `Services` (`get_services`): FastAPI solves each
`Depends` anew on every request (its signature checks included), and on a cached box that was
the largest single share of the event loop's time (a cProfile of the app driven in-process:
about a fifth of it; the saving, 0.05-0.1 ms of about 1 ms). ``/v1/segment`` and
``/v1/detect`` go further: they solve no dependencies at all (``routing.RequestRoute``) and
read the same `Services` with `services_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from boxmask.server.budget import CallerBudget
from boxmask.server.limits import InferenceLimiter
from boxmask.server.metrics import ServerMetrics
from boxmask.server.registry import ModelRegistry
from boxmask.server.settings import ServerSettings


async def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_metrics(request: Request) -> ServerMetrics:
    return request.app.state.metrics


@dataclass(frozen=True)
class Services:
    """What an inference route uses, made once in the lifespan (the limiter needs the loop)."""

    settings: ServerSettings
    registry: ModelRegistry
    limiter: InferenceLimiter
    metrics: ServerMetrics
    budget: CallerBudget


async def get_services(request: Request) -> Services:
    return services_of(request)


def services_of(request: Request) -> Services:
    """The app's `Services`, for a route that takes the request alone (`routing.RequestRoute`)."""
    return request.app.state.services
