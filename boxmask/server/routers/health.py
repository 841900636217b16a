"""``/healthz`` (the process answers), ``/readyz`` (a model can serve), ``/metrics``.

The probes are public: an orchestrator asks them without credentials. So when the server has a
token, a caller without it learns only whether the server is ready, not which models it holds
or why one failed; ``/metrics`` (per-route traffic, cache sizes) needs the token.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from boxmask.server.auth import carries_token, require_token
from boxmask.server.dependencies import get_metrics, get_registry, get_settings
from boxmask.server.metrics import ServerMetrics
from boxmask.server.redact import redact_paths
from boxmask.server.registry import ModelRegistry
from boxmask.server.schemas import Health, Readiness
from boxmask.server.settings import ServerSettings

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: 200 whenever the process serves HTTP, with or without a working model."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request, registry: ModelRegistry = Depends(get_registry),
                 settings: ServerSettings = Depends(get_settings)) -> JSONResponse:
    """Readiness: 200 when every model can serve; 503 with the reason (no model, a model that
    failed to load, a backend that failed) otherwise. Failed models are retried here. With
    BOXMASK_API_TOKEN set, the models and the reason are shown to callers with the token only."""
    # Reloading opens ONNX sessions and asking Triton is network I/O: not on the event loop.
    await run_in_threadpool(registry.check_backends)
    await run_in_threadpool(registry.retry_failed)
    ready, message, states = registry.readiness()
    if carries_token(request, settings):
        body = Readiness(status="ready" if ready else "not_ready",
                         message=redact_paths(message), models=states)
    else:
        body = Readiness(status="ready" if ready else "not_ready",
                         message="ready" if ready else "not ready: send the token for the reason")
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, dependencies=[Depends(require_token)],
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(m: ServerMetrics = Depends(get_metrics)) -> Response:
    """Prometheus text format: requests and latency per route, queue depth, cache counters."""
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
