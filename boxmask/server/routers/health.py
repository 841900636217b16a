"""``/healthz`` (the process answers), ``/readyz`` (a model can serve), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from boxmask.server.dependencies import get_metrics, get_registry
from boxmask.server.metrics import ServerMetrics
from boxmask.server.redact import redact_paths
from boxmask.server.registry import ModelRegistry
from boxmask.server.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: 200 whenever the process serves HTTP, with or without a working model."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(registry: ModelRegistry = Depends(get_registry)) -> JSONResponse:
    """Readiness: 200 when every model can serve; 503 with the reason (no model, a model that
    failed to load, a backend that failed) otherwise. Failed models are retried here."""
    # Reloading opens ONNX sessions and asking Triton is network I/O: not on the event loop.
    await run_in_threadpool(registry.check_backends)
    await run_in_threadpool(registry.retry_failed)
    ready, message, states = registry.readiness()
    body = Readiness(status="ready" if ready else "not_ready", message=redact_paths(message),
                     models=states)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(m: ServerMetrics = Depends(get_metrics)) -> Response:
    """Prometheus text format: requests and latency per route, queue depth, cache counters."""
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
