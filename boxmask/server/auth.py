"""The server's one token check: ``BOXMASK_API_TOKEN`` as a bearer token or a Basic password.

Every protected route (all but the probes and the demo page: docs/server.md lists them) goes
through `TokenCheck`. Two ways to carry
the token are accepted because two kinds of client exist: API clients send
``Authorization: Bearer <token>``, and Label Studio's "Use authentication" for an ML backend
sends HTTP Basic with the token as the password. The routers differ only in the challenge they
answer a 401 with (a Basic challenge on /v1 would make browsers open a login dialog).
"""

from __future__ import annotations

import base64
import binascii
import secrets

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from boxmask.server.errors import ApiError
from boxmask.server.settings import ServerSettings

# Only for the OpenAPI schema (the "Authorize" button); the header itself is read below.
# auto_error=False: a missing header gets our JSON error shape, not FastAPI's default 403.
_bearer_scheme = HTTPBearer(auto_error=False,
                            description="Needed when the server has BOXMASK_API_TOKEN.")


def presented_token(authorization: str) -> str | None:
    """The token an ``Authorization`` header carries: a bearer token, or the password of Basic
    credentials. None when the header carries none; never raises, whatever the bytes."""
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
        except (UnicodeError, binascii.Error, ValueError):
            return None
        _user, colon, password = decoded.partition(":")
        return password if colon else None
    return None


def carries_token(request: Request, settings: ServerSettings) -> bool:
    """Whether `request` presents the server's token (True when the server has none)."""
    if settings.api_token is None:
        return True
    given = presented_token(request.headers.get("Authorization", ""))
    return given is not None and _matches(given, settings.api_token.get_secret_value())


def _matches(given: str, token: str) -> bool:
    # Constant-time comparison: the answer's timing must not leak the token's prefix.
    return secrets.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


class TokenCheck:
    """A dependency that lets a request through when the server has no token, or when the
    request presents it (`presented_token`); else 401 with `challenge`. `check` is the same
    test as a plain call, for a route that makes it itself (`routing.RequestRoute`)."""

    def __init__(self, challenge: str, missing_hint: str) -> None:
        self.challenge = challenge
        self.missing_hint = missing_hint

    async def __call__(self, request: Request, _: object = Depends(_bearer_scheme)) -> None:
        # async: a plain `def` would run in the thread pool, a hand-off per request for a check
        # that never blocks. The bearer scheme is a dependency only for the OpenAPI schema.
        self.check(request)

    def check(self, request: Request) -> None:
        """Raise the 401 unless `request` may pass (the app's settings hold the token)."""
        settings: ServerSettings = request.app.state.settings
        if settings.api_token is None:
            return
        headers = {"WWW-Authenticate": self.challenge}
        given = presented_token(request.headers.get("Authorization", ""))
        if given is None:
            raise ApiError(401, "unauthorized", f"missing token: {self.missing_hint}", headers=headers)
        if not _matches(given, settings.api_token.get_secret_value()):
            raise ApiError(401, "unauthorized", "invalid token", headers=headers)


#: /v1 and /metrics: API clients and Prometheus send a bearer token.
require_token = TokenCheck("Bearer", "send 'Authorization: Bearer <token>'")
#: /labelstudio: Label Studio sends the token as the Basic-auth password. Also the API docs
#: (/docs, /redoc, /openapi.json): a Basic challenge makes a browser ask for it.
require_token_or_basic = TokenCheck(
    'Basic realm="boxmask"',
    "in the Label Studio model's settings enable authentication and use the server's token as "
    "the password (or send 'Authorization: Bearer <token>')")
