"""The RoI pools' pyramid scales are fixed at build time, not inferred from the first image."""

import torch

from boxmask.config import ModelConfig
from boxmask.model import build_model

torch.set_num_threads(1)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18_fpn", backbone_norm="gn", fpn_channels=16,
                      mask_head_channels=16, representation_size=64, min_size=64, max_size=128,
                      box_detections_per_img=20)
    return build_model(cfg, num_classes=3).eval()


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def test_the_pools_know_the_pyramid_strides_before_any_image() -> None:
    model = _model()
    heads = model.roi_heads
    for pool in (heads.box_roi_pool, heads.mask_branch.roi_pool):
        assert pool.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
        # A 224-px box goes to P4 (canonical level 4), a 56-px one to P2: torchvision's rule.
        boxes = [torch.tensor([[0.0, 0.0, 224.0, 224.0], [0.0, 0.0, 56.0, 56.0]])]
        assert pool.map_levels(boxes).tolist() == [2, 0]


def test_a_short_first_image_does_not_shift_every_later_one() -> None:
    # 20 x 128 is not resized (64 / 20 > 128 / 128) and is padded to 32 x 128: torchvision's
    # inference gives P2 8 / 20 = 0.4 -> 1/2, and would keep that for every later image.
    boxes = [torch.tensor([[8.0, 10.0, 40.0, 50.0], [30.0, 5.0, 60.0, 30.0]])]
    labels = [torch.tensor([1, 2])]
    later = [_image(64, 64, seed=1)]
    fresh = _model().segment_boxes(later, boxes, labels)[0]

    primed = _model()
    primed.segment_boxes([_image(20, 128, seed=2)], [torch.tensor([[4.0, 2.0, 30.0, 18.0]])])
    assert primed.roi_heads.box_roi_pool.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    assert torch.allclose(primed.segment_boxes(later, boxes, labels)[0], fresh, atol=1e-6)
