"""``GET /v1/models``: the models this server holds, with their cards and state."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from boxmask.server.dependencies import get_registry, get_settings, require_token
from boxmask.server.errors import ErrorResponse
from boxmask.server.registry import ModelRegistry
from boxmask.server.schemas import Category, ModelInfo, ModelsResponse
from boxmask.server.settings import ServerSettings

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(require_token)])


@router.get("/models", response_model=ModelsResponse, responses={401: {"model": ErrorResponse}})
async def list_models(registry: ModelRegistry = Depends(get_registry),
                      settings: ServerSettings = Depends(get_settings)) -> ModelsResponse:
    """Each model's name, whether it is ready, its categories (for labels in /v1/segment) and
    its full model card (model.json)."""
    default = registry.default_name
    models = []
    for name, slot in sorted(registry.slots.items()):
        categories = [Category(id=c["id"], name=c["name"], seen=c.get("seen"))
                      for c in slot.card.get("categories", [])
                      if isinstance(c, dict) and "id" in c and "name" in c]
        models.append(ModelInfo(name=name, default=name == default,
                                status="ready" if slot.ready else "failed", error=slot.error,
                                backend=settings.effective_backend, categories=categories,
                                card=slot.card))
    return ModelsResponse(default=default, models=models)
