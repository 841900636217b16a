"""torchvision's COCO Mask R-CNN state dicts -> boxmask checkpoints (``boxmask import torchvision``).

torchvision publishes two COCO Mask R-CNN ResNet-50-FPN files that anyone can download:
``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth`` (v1) and ``maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth``
(v2: 2-conv RPN head, 4-conv + 1-fc box head, BatchNorm after every FPN and head conv). Both are
the oracle of the paper (a class-specific mask head trained on every category's masks), so the
imported checkpoint is an ``oracle`` model whose student head is COCO's mask predictor; it
exports, serves and labels as it is, and ``model.init_from`` fine-tunes it on new categories.

torchvision indexes its 91 outputs by COCO category id (0 = background, ``N/A`` for the ids COCO
never used); boxmask's labels are contiguous. The rows of ``cls_score``, ``bbox_pred`` and
``mask_fcn_logits`` are taken at the 80 real ids, in id order, so label ``l`` is the l-th COCO
category and the card keeps its COCO id. The ``N/A`` outputs are dropped: they never receive a
positive in COCO training, so their softmax share is negligible in the published weights.

Files are read with ``torch.load(..., weights_only=True)``: a pickle that would run code is
refused, never executed.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from boxmask.config import BoxMaskConfig, ConfigError, ModelConfig
from boxmask.files import sha256_file

# Keys every torchvision Mask R-CNN state dict has; the first tells Mask from Faster R-CNN.
_MASK_LOGITS = "roi_heads.mask_predictor.mask_fcn_logits.weight"
_V1_MARKER = "roi_heads.box_head.fc6.weight"
_V2_MARKER = "roi_heads.box_head.0.0.weight"
COCO_OUTPUTS = 91  # torchvision's COCO heads: background + ids 1..90, 10 of them "N/A"


class WeightsFileError(ConfigError):
    """A weights file that cannot be imported; the message says why and what to do."""


@dataclass(frozen=True)
class TorchvisionArch:
    """One of torchvision's Mask R-CNN builders, as boxmask builds it.

    ``model``: the ``model`` config keys that make boxmask's model torchvision's, layer for
    layer. ``weights``: the name of torchvision's weights enum (its metadata names COCO's
    categories and the published AP; reading it downloads nothing). ``schedule``: torchvision's
    published training recipe, kept in the checkpoint's ``train`` section as provenance.
    """

    name: str
    weights: str
    model: dict[str, Any]
    schedule: dict[str, Any]

    def weights_meta(self) -> tuple[str, dict[str, Any]]:
        """(file name, metadata) of torchvision's published COCO weights."""
        from torchvision.models import detection

        w = getattr(detection, self.weights).COCO_V1
        return w.url.rsplit("/", 1)[-1], w.meta


ARCHS: dict[str, TorchvisionArch] = {
    "maskrcnn_resnet50_fpn": TorchvisionArch(
        name="maskrcnn_resnet50_fpn",
        weights="MaskRCNN_ResNet50_FPN_Weights",
        # torchvision's weights learnt its half-pixel mask target grid: the paste compensates.
        model={"rpn_conv_depth": 1, "box_head": "mlp", "head_norm": "none",
               "mask_target_aligned": False},
        # references/detection: 8 GPUs x 2 images, 26 epochs, lr x0.1 after 16 and 22.
        schedule={"epochs": 26, "lr_steps": [16, 22], "lr": 0.02, "batch_size": 2,
                  "weight_decay": 1e-4, "warmup_iters": 1000},
    ),
    "maskrcnn_resnet50_fpn_v2": TorchvisionArch(
        name="maskrcnn_resnet50_fpn_v2",
        weights="MaskRCNN_ResNet50_FPN_V2_Weights",
        model={"rpn_conv_depth": 2, "box_head": "conv", "head_norm": "bn",
               "mask_target_aligned": False},
        # pytorch/vision#5773: 32 GPUs x 2 images, 400 epochs with large-scale jitter, lr 0.1
        # x0.1 after 352 and 384, weight decay 4e-5, SyncBN.
        schedule={"epochs": 400, "lr_steps": [352, 384], "lr": 0.1, "batch_size": 2,
                  "weight_decay": 4e-5, "warmup_iters": 1000},
    ),
}


def coco_categories(arch: str = "maskrcnn_resnet50_fpn") -> list[dict[str, Any]]:
    """COCO's 80 categories as torchvision's weights metadata lists them, without a download.

    Returns ``[{"id", "name", "seen": True, "label"}]``: ``id`` the COCO id (the index in
    torchvision's 91 outputs), ``label`` 1..80 in id order.
    """
    _, meta = ARCHS[arch].weights_meta()
    names = meta["categories"]
    cats = []
    for coco_id, name in enumerate(names):
        if coco_id == 0 or name == "N/A":
            continue
        cats.append({"id": coco_id, "name": name, "seen": True, "label": len(cats) + 1})
    return cats


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision weights file -> its state dict, or a :class:`WeightsFileError`.

    Accepts a plain state dict (what torchvision publishes) and a dict holding one under
    ``model`` or ``state_dict``. Refuses: a missing file, a truncated or corrupt file, a pickle
    holding anything but tensors and containers (``weights_only=True`` never runs its code), a
    file whose name carries torchvision's hash prefix that its sha256 does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{str(path)!r} does not exist")
    _check_hash_prefix(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            first = str(exc).strip().splitlines()[0]
            raise WeightsFileError(
                f"{str(path)!r} holds Python objects that are not tensors, and loading them could "
                "run code: refused (boxmask reads weights with torch.load(weights_only=True)). "
                f"Save the model's state_dict() alone. torch said: {first}") from exc
        raise WeightsFileError(f"{str(path)!r} is not a readable torch file (truncated or "
                               f"corrupt? download it again): {exc}") from exc
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, IndexError) as exc:
        raise WeightsFileError(f"{str(path)!r} is not a readable torch file (truncated or "
                               f"corrupt? download it again): {exc}") from exc
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping) and not isinstance(obj.get(key), torch.Tensor):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsFileError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict "
                               "(a mapping of parameter names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsFileError(f"{str(path)!r} is not a state dict: {bad[0]!r} is not a tensor")
    return dict(obj)


def _check_hash_prefix(path: Path) -> None:
    """torchvision names its files ``NAME-<first 8+ hex of sha256>.pth``: check it, as
    torchvision's own ``check_hash`` does, so a truncated download is named as such."""
    m = re.search(r"-([0-9a-f]{8,64})\.pth?$", path.name)
    if m is None:
        return
    digest = sha256_file(path)
    if not digest.startswith(m.group(1)):
        raise WeightsFileError(
            f"{str(path)!r}: its sha256 starts {digest[:len(m.group(1))]}, but its name says "
            f"{m.group(1)}: the download is truncated or corrupt, fetch it again")


def detect_arch(state: Mapping[str, torch.Tensor]) -> str:
    """Which of :data:`ARCHS` a torchvision state dict is, or a :class:`WeightsFileError`."""
    if _MASK_LOGITS not in state:
        hint = (" (it has a box head: a Faster R-CNN? boxmask needs Mask R-CNN's mask head)"
                if "roi_heads.box_predictor.cls_score.weight" in state else "")
        raise WeightsFileError(f"not a torchvision Mask R-CNN state dict: no {_MASK_LOGITS}{hint}")
    if _V2_MARKER in state:
        return "maskrcnn_resnet50_fpn_v2"
    if _V1_MARKER in state:
        return "maskrcnn_resnet50_fpn"
    raise WeightsFileError("a Mask R-CNN state dict with a box head boxmask does not know "
                           f"(neither {_V1_MARKER} nor {_V2_MARKER})")


def imported_model_config(arch: str, overrides: Mapping[str, Any] | None = None) -> ModelConfig:
    """The ``model`` section that builds torchvision's ``arch`` as a boxmask ``oracle`` model.

    Inference settings are torchvision's defaults (not the paper's 512 proposals / 150
    detections), so the imported model detects exactly as torchvision's does. ``overrides``
    (e.g. ``min_size``) are applied on top and validated.
    """
    spec = ARCHS[arch]
    base = {
        "backbone": "resnet50_fpn",
        # torchvision freezes v1's body BN; v2 trained its BN, which in eval is the same affine
        # map: frozen BN serves both, and keeps a fine-tune at 2 images per GPU stable.
        "backbone_norm": "frozen_bn",
        "trainable_backbone_layers": 3,
        "mode": "oracle",
        "fpn_channels": 256, "mask_head_channels": 256, "representation_size": 1024,
        "min_size": 800, "max_size": 1333,
        "rpn_pre_nms_top_n_train": 2000, "rpn_post_nms_top_n_train": 2000,
        "rpn_pre_nms_top_n_test": 1000, "rpn_post_nms_top_n_test": 1000,
        "box_batch_size_per_image": 512, "box_score_thresh": 0.05, "box_nms_thresh": 0.5,
        "box_detections_per_img": 100,
        **spec.model,
    }
    fixed = set(spec.model) | {"backbone", "mode", "fpn_channels", "mask_head_channels",
                               "representation_size"}
    for key, value in (overrides or {}).items():
        if key in fixed and value != base[key]:
            raise WeightsFileError(f"model.{key} cannot be changed on import: the weights are "
                                   f"{arch}'s ({key}={base[key]!r})")
        base[key] = value
    try:
        return ModelConfig.model_validate(base)
    except Exception as exc:  # pydantic's ValidationError: name the bad override
        raise WeightsFileError(f"invalid model override: {exc}") from exc


def convert_state_dict(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                       coco_ids: list[int]) -> dict[str, torch.Tensor]:
    """torchvision's Mask R-CNN keys and 91 class rows -> boxmask's keys and ``len(coco_ids)``.

    Args:
        state: torchvision's state dict.
        target: the state dict of the boxmask model to load (its keys and shapes).
        coco_ids: the COCO id of boxmask's label 1, 2, ... (rows kept from the 91 outputs).
    Raises:
        WeightsFileError: naming the missing, unexpected or misshapen keys.
    """
    n_out = state[_MASK_LOGITS].shape[0]
    if n_out != COCO_OUTPUTS:
        raise WeightsFileError(f"the mask predictor has {n_out} outputs, not COCO's {COCO_OUTPUTS}: "
                               "boxmask imports torchvision's COCO checkpoints (fine-tune one "
                               "with model.init_from to add your own categories)")
    ids = torch.tensor(coco_ids, dtype=torch.long)
    with_bg = torch.cat([torch.zeros(1, dtype=torch.long), ids])
    box_rows = (with_bg[:, None] * 4 + torch.arange(4)).reshape(-1)
    renames: list[tuple[str, str]] = [
        ("roi_heads.mask_head.", "roi_heads.mask_branch.student.tower."),
        ("roi_heads.mask_predictor.", "roi_heads.mask_branch.student.predictor."),
    ]
    rows: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "roi_heads.box_predictor.cls_score.": lambda t: t[with_bg],
        "roi_heads.box_predictor.bbox_pred.": lambda t: t[box_rows],
        "roi_heads.mask_predictor.mask_fcn_logits.": lambda t: t[ids],
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        for old_prefix, new_prefix in renames:
            if key.startswith(old_prefix):
                new = new_prefix + key[len(old_prefix):]
        for prefix, select in rows.items():
            if key.startswith(prefix):
                value = select(value)
        out[new] = value
    # BatchNorm's step counter: frozen BN has none, and a file saved from frozen BN lacks it
    # where trainable BN wants one. It only matters for momentum=None, which nobody uses here.
    for key in [k for k in out if k.endswith("num_batches_tracked") and k not in target]:
        del out[key]
    for key in [k for k in target if k.endswith("num_batches_tracked") and k not in out]:
        out[key] = target[key].clone()
    missing = sorted(set(target) - set(out))
    unexpected = sorted(set(out) - set(target))
    shapes = [f"{k} {tuple(out[k].shape)} vs {tuple(target[k].shape)}" for k in target
              if k in out and out[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys ({', '.join(missing[:3])}, ...)")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys ({', '.join(unexpected[:3])}, ...)")
        if shapes:
            parts.append(f"{len(shapes)} shapes differ ({'; '.join(shapes[:3])})")
        raise WeightsFileError("the weights do not fit torchvision's ResNet-50-FPN Mask R-CNN: "
                               + "; ".join(parts))
    return out


def import_torchvision(path: Path, arch: str, out: Path,
                       overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write a boxmask checkpoint from a torchvision Mask R-CNN state dict; returns it.

    The checkpoint has the keys of a ``boxmask train`` checkpoint (``model``, ``config``,
    ``categories``, ``epoch`` 0, no optimizer state) plus ``source``: where the weights came
    from. ``boxmask export``, ``eval`` and ``model.init_from`` read it; ``--resume`` does not
    (there is no run to resume).
    """
    from boxmask.files import atomic_output
    from boxmask.model.build import build_model

    if arch not in ARCHS:
        raise WeightsFileError(f"unknown arch {arch!r}; choose {', '.join(ARCHS)}")
    path = Path(path)
    state = read_state_dict(path)
    found = detect_arch(state)
    if found != arch:
        raise WeightsFileError(f"{str(path)!r} is a {found} state dict, not {arch}: "
                               f"pass --arch {found}")
    model_cfg = imported_model_config(arch, overrides)
    categories = coco_categories(arch)
    model = build_model(model_cfg, len(categories))
    converted = convert_state_dict(state, model.state_dict(), [c["id"] for c in categories])
    model.load_state_dict(converted)
    file_name, meta = ARCHS[arch].weights_meta()
    digest = sha256_file(path)
    published = path.name == file_name and digest.startswith(file_name.rsplit("-", 1)[1][:8])
    cfg = BoxMaskConfig.model_validate({
        # torchvision trained on COCO train2017; the paths say so and are not needed to serve.
        "data": {"train_annotations": "coco/annotations/instances_train2017.json",
                 "train_images": "coco/train2017",
                 "val_annotations": "coco/annotations/instances_val2017.json",
                 "val_images": "coco/val2017", "seen": "all"},
        "model": model_cfg.model_dump(mode="json"),
        "train": ARCHS[arch].schedule,
    })
    ckpt = {
        "model": model.state_dict(),
        "config": cfg.model_dump(mode="json"),
        "categories": categories,
        "epoch": 0,
        "iteration": 0,
        "optimizer": None,
        "lr_scheduler": None,
        "source": {
            "framework": "torchvision",
            "arch": arch,
            "file": path.name,
            "sha256": digest,
            # The published figures belong to the published file only.
            "published_metrics": meta.get("_metrics") if published else None,
            "recipe": meta.get("recipe"),
        },
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out, "wb") as f:
        torch.save(ckpt, f)
    return ckpt
