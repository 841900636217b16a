"""The export-time rewrites compute what the eager operators compute."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import poolers

from boxmask.export.rewrites import (
    PixelShuffleDeconv,
    export_rewrites,
    merge_levels_by_gather,
)


def test_pixel_shuffle_deconv_equals_the_2x2_stride_2_deconvolution():
    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(6, 5, 2, 2, 0)
    x = torch.randn(3, 6, 7, 7)
    torch.testing.assert_close(PixelShuffleDeconv(deconv)(x), deconv(x), atol=1e-5, rtol=1e-5)


def test_gather_merge_equals_torchvisions_scatter_merge():
    torch.manual_seed(0)
    levels = torch.tensor([2, 0, 1, 0, 3, 2, 2])
    unmerged = [torch.randn(int((levels == lv).sum()), 4, 3, 3) for lv in range(4)]
    torch.testing.assert_close(merge_levels_by_gather(levels, unmerged),
                               poolers._onnx_merge_levels(levels, unmerged))
    empty = torch.zeros(0, dtype=torch.int64)
    assert merge_levels_by_gather(empty, [torch.zeros(0, 4, 3, 3)] * 4).shape == (0, 4, 3, 3)


def test_rewrites_are_undone_after_the_export():
    head = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ConvTranspose2d(4, 4, 2, 2, 0),
                         nn.ConvTranspose2d(4, 4, 3, 1, 1))
    merge = poolers._onnx_merge_levels
    with export_rewrites(head):
        assert isinstance(head[1], PixelShuffleDeconv)
        assert isinstance(head[2], nn.ConvTranspose2d)  # overlapping windows: left alone
        assert poolers._onnx_merge_levels is merge_levels_by_gather
    assert isinstance(head[1], nn.ConvTranspose2d) and poolers._onnx_merge_levels is merge


def test_group_norm_heads_export_and_run_on_zero_boxes(tmp_path):
    """GroupNorm heads (model.head_norm: gn) in ONNX Runtime, zero boxes included: torch's own
    export of group norm reshapes to [N, G, -1], which ONNX Runtime cannot do for N = 0."""
    from boxmask.config import BoxMaskConfig
    from boxmask.export.exporter import export_onnx
    from boxmask.export.parity import check_parity
    from boxmask.model import build_model
    from boxmask.model.heads import GroupNorm

    torch.manual_seed(0)
    cfg = BoxMaskConfig.model_validate({
        "data": {"train_annotations": "a.json", "train_images": "i", "seen": ["a"]},
        "model": {"backbone": "resnet18_fpn", "backbone_norm": "gn", "fpn_channels": 16,
                  "mask_head_channels": 16, "representation_size": 32, "head_norm": "gn",
                  "box_head": "conv", "mode": "teacher_student", "min_size": 64, "max_size": 64,
                  "box_score_thresh": 0.0}})
    model = build_model(cfg.model, 3, {1}).eval()
    assert any(isinstance(m, GroupNorm) for m in model.roi_heads.mask_branch.modules())
    x = torch.randn(5, 16, 14, 14)
    gn = GroupNorm(8, 16)
    torch.testing.assert_close(gn(x), nn.functional.group_norm(x, 8, gn.weight, gn.bias))
    export_onnx(model, cfg, tmp_path)
    parity = check_parity(model, tmp_path, cfg, box_counts=(0, 1, 7), raise_on_failure=False)
    assert parity.passed, parity.failures
