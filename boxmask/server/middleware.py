"""Per-request context: a request id, an access log line and the route's metrics.

Pure ASGI (not ``BaseHTTPMiddleware``): it adds no task hop per request and keeps the context
variable that carries the request id visible to the route and its worker thread.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boxmask.server.errors import ErrorBody, ErrorResponse
from boxmask.server.logs import request_id_var
from boxmask.server.metrics import ServerMetrics

log = logging.getLogger("boxmask.server.access")

# A client's own id is kept when it is short and plain, so it cannot inject into log lines.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _CLIENT_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        status = 500
        status_sent = False
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status = message["status"]
                status_sent = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                # Answered here, not by Starlette's outermost error middleware, so that the
                # 500 carries X-Request-ID like every other error.
                if status_sent:
                    raise  # the response has begun: nothing else can be sent
                logging.getLogger("boxmask.server").exception("unhandled error",
                                                             extra={"path": scope["path"]})
                await _internal_error(send_with_id, request_id)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            # The route's template, never the raw path: random paths must not make new series.
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status, seconds)
            log.info("request", extra={"method": scope["method"], "path": scope["path"],
                                       "route": template, "status": status,
                                       "ms": round(seconds * 1000, 2)})
            request_id_var.reset(token)


async def _internal_error(send: Send, request_id: str) -> None:
    body = ErrorResponse(error=ErrorBody(
        code="internal_error",
        message="internal error; the request id identifies it in the server log"),
        request_id=request_id).model_dump_json(exclude_none=True).encode()
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
