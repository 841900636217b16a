"""FastAPI dependencies: the app's shared resources (made in the lifespan) and bearer auth."""

from __future__ import annotations

import secrets

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from boxmask.server.errors import ApiError
from boxmask.server.limits import InferenceLimiter
from boxmask.server.metrics import ServerMetrics
from boxmask.server.registry import ModelRegistry
from boxmask.server.settings import ServerSettings

# auto_error=False: a missing header gets our JSON error shape, not FastAPI's default 403.
_bearer = HTTPBearer(auto_error=False, description="Needed when the server has BOXMASK_API_TOKEN.")


def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_limiter(request: Request) -> InferenceLimiter:
    return request.app.state.limiter


def get_metrics(request: Request) -> ServerMetrics:
    return request.app.state.metrics


def require_token(
    settings: ServerSettings = Depends(get_settings),
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> None:
    """Check ``Authorization: Bearer <token>`` when the server has a token; else allow all."""
    if settings.api_token is None:
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "unauthorized", "missing bearer token: send "
                       "'Authorization: Bearer <token>'", headers=challenge)
    # Constant-time comparison: the answer's timing must not leak the token's prefix.
    if not secrets.compare_digest(credentials.credentials.encode(),
                                  settings.api_token.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "invalid bearer token", headers=challenge)
