"""``GET /v1/models``: the models this server holds, with their cards and state."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from boxmask.server.auth import require_token
from boxmask.server.dependencies import get_registry, get_settings
from boxmask.server.errors import ApiError, ErrorResponse
from boxmask.server.redact import public_card, redact_paths
from boxmask.server.registry import ModelRegistry, ModelSlot
from boxmask.server.schemas import Category, ModelInfo, ModelsResponse
from boxmask.server.settings import ServerSettings

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(require_token)])


@router.get("/models", response_model=ModelsResponse, responses={401: {"model": ErrorResponse}})
async def list_models(registry: ModelRegistry = Depends(get_registry),
                      settings: ServerSettings = Depends(get_settings)) -> ModelsResponse:
    """Each model's name, whether it is ready, its categories (for labels in /v1/segment) and
    its model card (model.json), local file paths reduced to their last component."""
    default = registry.default_name
    models = []
    for name, slot in sorted(registry.slots.items()):
        categories = [Category(id=c["id"], name=c["name"], seen=c.get("seen"))
                      for c in slot.card.get("categories", [])
                      if isinstance(c, dict) and "id" in c and "name" in c]
        samples = [f"/v1/models/{name}/samples/{p.name}" for p in sample_files(slot)]
        models.append(ModelInfo(name=name, default=name == default,
                                status="ready" if slot.ready else "failed",
                                error=redact_paths(slot.error) if slot.error else None,
                                backend=settings.effective_backend, categories=categories,
                                samples=samples, card=public_card(slot.card),
                                mask_refine=getattr(slot.predictor, "mask_refine", None)))
    return ModelsResponse(default=default, models=models)


SAMPLES_DIR = "samples"
SAMPLE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
MAX_SAMPLES = 12


def sample_files(slot: ModelSlot) -> list[Path]:
    """Images of the model's own domain shipped in its directory (``samples/``), for the demo
    page's one-click examples: plain files only (no links out of the model directory), at most
    :data:`MAX_SAMPLES`, in name order."""
    folder = slot.path / SAMPLES_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    files = [p for p in sorted(folder.iterdir())
             if p.suffix.lower() in SAMPLE_TYPES and p.is_file() and not p.is_symlink()]
    return files[:MAX_SAMPLES]


@router.get("/models/{name}/samples/{filename}", response_class=FileResponse,
            responses={200: {"content": {t: {} for t in set(SAMPLE_TYPES.values())}},
                       401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})
async def model_sample(name: str, filename: str,
                       registry: ModelRegistry = Depends(get_registry)) -> FileResponse:
    """One sample image listed under the model's ``samples`` in ``GET /v1/models``."""
    slot = registry.slots.get(name)
    if slot is None:
        raise ApiError(404, "unknown_model", f"unknown model {name!r}; known models: "
                       f"{', '.join(sorted(registry.slots)) or 'none'}")
    # Served only when it is one of the listed files: no path from the request reaches the disk.
    match = next((p for p in sample_files(slot) if p.name == filename), None)
    if match is None:
        raise ApiError(404, "unknown_sample", f"model {name!r} has no sample {filename!r}; "
                       "GET /v1/models lists its samples")
    return FileResponse(match, media_type=SAMPLE_TYPES[match.suffix.lower()])
