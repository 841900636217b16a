"""`RequestRoute`: a FastAPI route served without FastAPI's per-request machinery.

FastAPI documents a route from what it declares (response model, error answers, request body,
security) and serves it through a request handler that solves its dependencies, then validates
and serialises what it returns. On a cached ``/v1/segment`` box that handler was the largest
single step of the server's own work (docs/benchmarks.md: 0.3-0.45 ms, before and after the
endpoint, of about 1.3 ms around a 4-5 ms decoder call; benchmarks/server_layers.py times each
layer of the app in process), though the route needs none
of it: it reads its body itself (``payloads.py``), its one check is the token, and its answer is
a pydantic model that serialises itself.

A `RequestRoute` keeps the documentation and hands the request straight to the endpoint:

* the endpoint takes the `Request` alone and returns a `Response`;
* it declares no dependencies (route or router): nothing would solve them. Its checks are calls
  it makes itself (``auth.require_token.check(request)``), and its security is declared for the
  OpenAPI schema with `bearer_security` in ``openapi_extra``.

Both are checked when the route is made, so a dependency added later fails at import rather than
being skipped. (Dependencies given to ``include_router`` for such a router would not run either:
the app includes it without any, and the token tests send every protected route a request
without the token.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel


class RequestRoute(APIRoute):
    """An `APIRoute` whose endpoint is its handler: ``async (Request) -> Response``."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        params = list(inspect.signature(endpoint).parameters.values())
        if (not inspect.iscoroutinefunction(endpoint) or len(params) != 1
                or params[0].name != "request"):
            raise TypeError(f"{endpoint.__qualname__}: a RequestRoute's endpoint is "
                            "`async def f(request: Request) -> Response`")
        if kwargs.get("dependencies"):
            raise TypeError(f"{endpoint.__qualname__}: a RequestRoute runs no dependencies; "
                            "call the check in the endpoint (and declare its security with "
                            "openapi_extra)")
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


def json_response(answer: BaseModel, status_code: int = 200) -> Response:
    """`answer` as its JSON (pydantic's serialiser, as FastAPI would write it for a
    ``response_model`` of its own type), without FastAPI validating it again."""
    return Response(answer.model_dump_json(), status_code=status_code,
                    media_type="application/json")


def bearer_security() -> dict[str, Any]:
    """``openapi_extra`` declaring the token (the scheme the other /v1 routes' dependency
    registers as ``HTTPBearer``) for a `RequestRoute` that checks it itself."""
    return {"security": [{"HTTPBearer": []}]}
