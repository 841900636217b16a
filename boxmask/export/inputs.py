"""The inputs the graphs are traced, checked and calibrated with: images as the runtime sends them,
and random boxes on them.

Shared by the exporter (tracing), the parity check and int8 calibration, so all three feed the
graphs what `boxmask.runtime` will: resized as torchvision's transform does, RGB 0..255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.models.detection.transform import _resize_image_and_masks

from boxmask.config import BoxMaskConfig
from boxmask.model import BoxMaskRCNN


def example_image(cfg: BoxMaskConfig, seed: int = 0) -> torch.Tensor:
    """A real training image when the data is at hand, else noise, as a ``[3, H, W]`` tensor.

    Only the trace needs it: every axis that varies is declared dynamic.
    """
    d = cfg.data
    if d.train_images is not None and Path(d.train_images).is_dir():
        files = sorted(p for p in Path(d.train_images).iterdir()
                       if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if files:
            img = np.asarray(Image.open(files[0]).convert("RGB"), dtype=np.float32) / 255.0
            return torch.from_numpy(img).permute(2, 0, 1).contiguous()
    g = torch.Generator().manual_seed(seed)
    h = cfg.model.min_size
    return torch.rand(3, h, int(h * 1.25), generator=g)


def resized_input(model: BoxMaskRCNN, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """The ``image`` input the runtime would send: resized, 0..255, ``[1, 3, h, w]``."""
    t = model.transform
    resized, _ = _resize_image_and_masks(image, float(t.min_size[-1]), float(t.max_size), None,
                                         t.fixed_size)
    return (resized * 255.0)[None], (int(resized.shape[-2]), int(resized.shape[-1]))


def random_boxes(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, 4]`` boxes of at least 4 px inside an ``h x w`` image."""
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([w - 4.0, h - 4.0])
    wh = 4 + torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.6, h * 0.6])
    x2y2 = torch.minimum(xy + wh, torch.tensor([float(w), float(h)]))
    return torch.cat([xy, x2y2], dim=1)
