"""Label Studio's ML backend protocol at /labelstudio: the routes, over the app's
`LabelStudioBackends` (`server/labelstudio_backends.py`).

Label Studio (read from its 1.23 `ml/api_connector.py` and the label-studio-ml-backend's
`api.py`) calls, relative to the backend URL a user enters (`http://HOST:PORT/labelstudio`):

- `GET /health` (1 s timeout) and `GET /`: `{"status": "UP", ...}`; with the Basic
  credentials of the model's "Use authentication" when both its user and password are set;
- `POST /setup` (3 s) `{project: "<id>.<ts>", schema, hostname, access_token, extra_params}`
  -> `{"model_version"}`; sent again on every `GET /api/ml/{id}`;
- `POST /predict` (100 s) `{tasks, project, label_config, params: {context}}`
  -> `{"results": [...]}` with one entry per task;
- `POST /webhook` for project events and "Start training" -> 201: the training loop's
  (`routers/labelstudio_training.py`, with `GET /jobs` and `POST /rollback`).

Bodies are JSON objects at most 32 levels deep (`payloads.json_object`), checked against
`integrations.labelstudio.protocol`'s schemas (422 naming the field otherwise), which are also
the OpenAPI schema's. The translation (tasks and regions to boxes, masks to brush/polygon
results) is the integration's backend, which knows nothing of this server; the server adds the
transport: the one token check (`auth.require_token_or_basic`: Label Studio's "Use
authentication" sends the token as a Basic password), the work budgets, the inference slots and
the mapping of errors to the server's JSON errors. The health check is public and says only
"UP" or "DOWN": it is what a probe, and Label Studio before its credentials are set, may ask.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from boxmask.integrations.labelstudio.protocol import SCHEMAS, PredictBody, SetupBody
from boxmask.server.auth import require_token_or_basic
from boxmask.server.budget import caller_of
from boxmask.server.dependencies import Services, get_registry, get_services
from boxmask.server.errors import ErrorResponse
from boxmask.server.labelstudio_backends import LabelStudioBackends, get_backends, project_of
from boxmask.server.openapi import json_body_schema
from boxmask.server.payloads import json_body
from boxmask.server.registry import ModelRegistry

router = APIRouter(prefix="/labelstudio", tags=["label studio"])

#: The body schemas, for the app's OpenAPI components.
BODY_SCHEMAS = SCHEMAS
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 415, 422, 429, 503)}
# The bodies, read and checked once per request (dependencies).
setup_body = json_body(SetupBody)
predict_body = json_body(PredictBody)


@router.get("/", summary="Label Studio health check")
@router.get("/health", summary="Label Studio health check")
def health(registry: ModelRegistry = Depends(get_registry)) -> dict[str, str]:
    """Public, so it says nothing but "UP" or "DOWN": why a model is down (which may name
    files) is for `/readyz` with the token, and the server log."""
    ready, _, _ = registry.readiness()
    return {"status": "UP" if ready else "DOWN", "model_class": "boxmask"}


@router.post("/setup", dependencies=[Depends(require_token_or_basic)], responses=ERRORS,
             summary="Label Studio project set-up", openapi_extra=json_body_schema(SetupBody))
async def setup(body: SetupBody = Depends(setup_body),
                backends: LabelStudioBackends = Depends(get_backends)) -> dict[str, str]:
    return backends.for_project(project_of(body.project)).setup(body)


@router.post("/predict", dependencies=[Depends(require_token_or_basic)], responses=ERRORS,
             summary="Label Studio predictions", openapi_extra=json_body_schema(PredictBody))
async def predict(
    request: Request,
    body: PredictBody = Depends(predict_body),
    backends: LabelStudioBackends = Depends(get_backends),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    """One prediction (or error) per task: each task's image downloaded outside the inference
    slots, its masks made in one. At most `BOXMASK_LABELSTUDIO_MAX_TASKS` tasks a call, within
    the caller's mask-pixel budget."""
    return await backends.predict(body, caller_of(request), services.budget, services.limiter)
