"""Reading a training checkpoint back into a model (docs/contracts.md §3).

`boxmask train` writes checkpoints (`boxmask.training.checkpoint`); evaluation, export and
training's own resume read them here, so that nothing downstream of the model has to import
training (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from boxmask.config import BoxMaskConfig, ConfigError, ModelConfig
from boxmask.model.build import build_model
from boxmask.model.rcnn import BoxMaskRCNN

# What np.random.get_state() pickles to: an array (rebuilt by _reconstruct) of a dtype.
_NUMPY_ARRAY_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                        getattr(np, "_core", np.core).multiarray._reconstruct]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU, with a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    try:
        # The restricted unpickler: a checkpoint is data, and one from elsewhere must not run
        # code. Checkpoints written before the RNG states became tensors hold NumPy arrays;
        # those few NumPy types (and nothing callable beyond them) are allowed as data.
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise ConfigError(f"{str(path)!r} is not a readable checkpoint: {exc}") from exc
    missing = [k for k in ("model", "epoch", "iteration", "optimizer", "lr_scheduler")
               if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ConfigError(f"{str(path)!r} is not a boxmask training checkpoint "
                          f"(missing {', '.join(missing)})")
    config = ckpt.get("config")
    model_section = config.get("model") if isinstance(config, dict) else None
    if isinstance(model_section, dict) and "mask_target_aligned" not in model_section:
        # Written before the key existed: trained on torchvision's half-pixel target grid (the
        # config's default is the aligned grid). The paste compensates (model/paste.py).
        model_section["mask_target_aligned"] = False
    return ckpt


def checkpoint_categories(ckpt: dict[str, Any], source: str | Path = "checkpoint") -> list[dict]:
    """The checkpoint's categories sorted by contiguous label; an error if it has none."""
    for key in ("config", "categories"):
        if key not in ckpt:
            raise ConfigError(f"checkpoint {str(source)!r} has no {key!r}: it was not written "
                              "by `boxmask train`")
    return sorted(ckpt["categories"], key=lambda c: int(c["label"]))


def model_from_checkpoint(ckpt: dict[str, Any], model_cfg: ModelConfig | None = None,
                          source: str | Path = "checkpoint") -> tuple[BoxMaskRCNN, list[dict]]:
    """Rebuild the model a checkpoint was trained as, with its weights, in eval mode on CPU.

    The one place that turns a training checkpoint back into a model: ``boxmask eval`` and
    ``boxmask export`` both call it.

    Args:
        ckpt: a dict from :func:`load_checkpoint`.
        model_cfg: a ``model`` config section to build instead of the stored one (it must fit
            the weights); the stored one when ``None``.
        source: the checkpoint's path, for error messages.
    Returns:
        (model, categories sorted by label).
    Raises:
        ConfigError: not a ``boxmask train`` checkpoint, or weights that do not fit the model.
    """
    categories = checkpoint_categories(ckpt, source)
    if model_cfg is None:
        model_cfg = BoxMaskConfig.model_validate(ckpt["config"]).model
    # The checkpoint holds every weight: the ImageNet file named for training is not needed
    # (and usually absent) where the model is evaluated or exported.
    model_cfg = model_cfg.model_copy(update={"backbone_weights": None})
    # Labels whose masks were learnt from: checked by build_model, not stored in the weights.
    mask_labels = {int(c["label"]) for c in categories
                   if c["seen"] or model_cfg.mode == "oracle"}
    model = build_model(model_cfg, len(categories), mask_labels or None)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ConfigError(f"checkpoint {str(source)!r} does not fit the model of the config "
                          f"(was it trained with another model section?): {exc}") from exc
    if model_cfg.served_mask_fit == "box" or model_cfg.served_box_guard != "none":
        # The categories learned from boxes alone are served fitted to their box and/or
        # guarded against masks worse than the box.
        model.roi_heads.mask_branch.set_served_fit(
            {int(c["label"]) for c in categories if _taught_by_boxes(c)})
    return model.eval(), categories


def _taught_by_boxes(category: dict[str, Any]) -> bool:
    """Whether a checkpoint's category was learned from pseudo-masks alone (older checkpoints
    record only ``seen``)."""
    if "taught_by" in category:
        return category["taught_by"] == "pseudo_masks"
    return not category.get("seen", True)
