"""``create_app(settings)``: the FastAPI application, its lifespan and its middleware.

The lifespan loads the models once (in a worker thread, so a slow Triton or a large ONNX file
does not freeze the loop), creates the inference limiter and the Label Studio backend; routes
reach them through dependencies. Nothing lives in module globals, so tests build as many apps as they like.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from boxmask import __version__
from boxmask.server.budget import CallerBudget
from boxmask.server.dependencies import Services
from boxmask.server.errors import install_error_handlers
from boxmask.server.limits import BodySizeLimitMiddleware, InferenceLimiter
from boxmask.server.metrics import ServerMetrics
from boxmask.server.middleware import RequestContextMiddleware
from boxmask.server.openapi import install_openapi
from boxmask.server.registry import ModelRegistry
from boxmask.server.routers import demo, docs, health, images, models, segment
from boxmask.server.schemas import DetectRequest, RollbackRequest, SegmentParams, SegmentRequest
from boxmask.server.settings import LabelStudioSettings, ServerSettings

log = logging.getLogger("boxmask.server")

DESCRIPTION = """Boxes in, class-specific instance masks out (teacher-student Mask R-CNN).

Upload an image once (`POST /v1/images`), then send boxes (`POST /v1/segment`): the image is
encoded once and every later box costs only the mask decoder. Errors are JSON of one shape:
`{"error": {"code", "message", "details"}, "request_id"}`.
"""


def create_app(settings: ServerSettings | None = None,
               labelstudio_settings: LabelStudioSettings | None = None) -> FastAPI:
    """The app; `labelstudio_settings` None: read from the environment at start-up."""
    settings = settings or ServerSettings()
    registry = ModelRegistry(settings)
    metrics = ServerMetrics(cache_stats=registry.cache_stats)
    labelstudio = _labelstudio_router()
    if labelstudio is not None:
        from boxmask.server import labelstudio_backends
        from boxmask.server.routers import labelstudio_training

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry.discover()
        await run_in_threadpool(registry.load_all)
        ready, message, _ = registry.readiness()
        (log.info if ready else log.warning)("server started", extra={
            "ready": ready, "detail": message, "model_dir": str(settings.model_dir),
            "backend": settings.effective_backend})
        # Made inside the running loop: asyncio primitives belong to the loop that uses them.
        app.state.limiter = InferenceLimiter(settings.max_concurrency, settings.max_queue,
                                             settings.queue_timeout_s, settings.retry_after_s,
                                             metrics)
        app.state.services = Services(settings, registry, app.state.limiter, metrics,
                                      app.state.caller_budget)
        if labelstudio is not None:
            app.state.labelstudio = labelstudio_backends.LabelStudioBackends.start(
                registry, labelstudio_settings)
            # It loads each project's promoted version: a worker thread.
            app.state.labelstudio_training = await run_in_threadpool(
                labelstudio_training.LabelStudioTraining.start, app.state.labelstudio, registry,
                settings, metrics)
        try:
            yield
        finally:
            if labelstudio is not None:
                await run_in_threadpool(app.state.labelstudio_training.close)
            await run_in_threadpool(registry.close)

    # FastAPI's own docs routes answer anyone: the app serves them itself (routers/docs.py).
    app = FastAPI(title="boxmask", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.caller_budget = CallerBudget(settings.caller_mask_pixels_per_minute,
                                           settings.caller_mask_pixels_burst, metrics)

    install_error_handlers(app)
    for router in (segment.router, images.router, models.router, health.router, docs.router):
        app.include_router(router)
    if labelstudio is not None:
        # The prefix is the router's own: with include_router(prefix=...) this FastAPI nests
        # the router, and a route's template (the metrics' `route` label) would lose it.
        app.include_router(labelstudio.router)
        app.include_router(labelstudio_training.router)
    if settings.demo:
        app.include_router(demo.router)
        app.mount("/static", StaticFiles(directory=demo.STATIC_DIR), name="static")
    install_openapi(app, [SegmentRequest, SegmentParams, DetectRequest,
                          *((*labelstudio.BODY_SCHEMAS, RollbackRequest)
                            if labelstudio is not None else ())])

    # Added innermost first: the body limit sits inside CORS, and the request context is
    # outermost so every answer, even a refused one, has a request id and is counted.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app


def _labelstudio_router() -> ModuleType | None:
    """The Label Studio router module (mounted at /labelstudio) when its extra is installed."""
    try:
        from boxmask.server.routers import labelstudio
    except ImportError as exc:  # `boxmask[integrations]` not installed: serve without it
        log.info("Label Studio backend disabled", extra={"reason": str(exc)})
        return None
    return labelstudio
