"""FastAPI dependencies: the app's shared resources, made in the lifespan (auth: `auth.py`)."""

from __future__ import annotations

from fastapi import Request

from boxmask.server.budget import CallerBudget
from boxmask.server.limits import InferenceLimiter
from boxmask.server.metrics import ServerMetrics
from boxmask.server.registry import ModelRegistry
from boxmask.server.settings import ServerSettings


def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_limiter(request: Request) -> InferenceLimiter:
    return request.app.state.limiter


def get_metrics(request: Request) -> ServerMetrics:
    return request.app.state.metrics


def get_caller_budget(request: Request) -> CallerBudget:
    return request.app.state.caller_budget
