"""FastAPI dependencies: the app's shared resources, made in the lifespan (auth: `auth.py`).

`async def`, though they only read an attribute: FastAPI runs a plain `def` dependency in its
thread pool, and the five of a `/v1/segment` request (with the token check, six) were six
thread hand-offs before its inference's own, a measured part of a cached box's cost.
"""

from __future__ import annotations

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


async def get_limiter(request: Request) -> InferenceLimiter:
    return request.app.state.limiter


async def get_metrics(request: Request) -> ServerMetrics:
    return request.app.state.metrics


async def get_caller_budget(request: Request) -> CallerBudget:
    return request.app.state.caller_budget
