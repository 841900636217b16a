"""The mask-quality head (model.mask_quality): shapes, what it learns from, what it never changes."""

from __future__ import annotations

import torch

from boxmask.model.mask_quality import MaskQualityHead, mask_iou, quality_loss


def test_the_head_gives_one_iou_in_0_1_per_mask_and_handles_no_mask() -> None:
    head = MaskQualityHead(in_channels=8, conv_channels=8, roi_size=14, fc_channels=16)
    out = head(torch.randn(5, 8, 14, 14), torch.rand(5, 1, 28, 28))
    assert out.shape == (5,) and bool(((out >= 0) & (out <= 1)).all())
    assert head(torch.randn(0, 8, 14, 14), torch.rand(0, 1, 28, 28)).shape == (0,)


def test_mask_iou_binarises_at_a_half_and_two_empty_masks_agree() -> None:
    a = torch.zeros(3, 4, 4)
    b = torch.zeros(3, 4, 4)
    a[0, :2] = 0.9
    b[0, :1] = 0.6
    a[1, :2] = 0.4  # below 0.5: empty
    b[1, :2] = 1.0
    assert torch.allclose(mask_iou(a, b), torch.tensor([0.5, 0.0, 1.0]))


def test_the_loss_reaches_the_head_and_nothing_it_reads() -> None:
    head = MaskQualityHead(in_channels=8, conv_channels=8, roi_size=14, fc_channels=16)
    features = torch.randn(4, 8, 14, 14, requires_grad=True)
    mask = torch.rand(4, 28, 28, requires_grad=True)
    truth = (torch.rand(4, 28, 28) > 0.5).float()
    loss = quality_loss(head, features.detach(), [mask], truth)
    loss.backward()
    assert features.grad is None and mask.grad is None
    assert all(p.grad is not None for p in head.parameters())


def test_a_model_with_the_head_trains_it_on_instances_with_masks_and_serves_the_same_masks(
        tiny_dataset, tmp_path) -> None:
    """Training with the head on: ``loss_mask_quality`` is logged; at inference the head's IoU
    comes with each mask, and the masks equal those of the same weights without the head."""
    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint
    from boxmask.training.trainer import train
    from tests.conftest import tiny_train_config

    torch.set_num_threads(1)
    ckpt = train(tiny_train_config(tiny_dataset, tmp_path / "run", "model.mask_quality=true"))
    model, _ = model_from_checkpoint(load_checkpoint(ckpt))
    model.eval()
    image = torch.rand(3, 64, 64)
    boxes = torch.tensor([[4.0, 4.0, 40.0, 44.0], [20.0, 10.0, 60.0, 50.0]])
    features, resized = model.encode(image)
    labels = torch.tensor([1, 3])
    with torch.no_grad():
        logits, _, _, quality = model.roi_heads.decode_boxes_with_quality(
            features, boxes, labels, resized)
        plain = model.roi_heads.mask_branch.mask_logits(features, [boxes], [resized], [labels])
    assert quality is not None and quality.shape == (2,)
    assert torch.equal(logits, plain)
    import json

    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["loss_mask_quality"] > 0


def test_the_heads_widths_come_from_the_config_and_default_to_narrow() -> None:
    """``model.mask_quality_channels`` / ``_fc`` set its convs and fcs (0: the mask head's width);
    the default is narrow, so the label-given decoder pays little for it."""
    from boxmask.config import ModelConfig
    from boxmask.model import build_model

    def widths(**model: object) -> tuple[int, int]:
        cfg = ModelConfig.model_validate({
            "backbone": "mobilenet_v3_fpn", "fpn_channels": 16, "mask_head_channels": 24,
            "representation_size": 32, "mask_quality": True, **model})
        head = build_model(cfg, num_classes=3).roi_heads.mask_branch.quality
        convs = [m for m in head.convs if isinstance(m, torch.nn.Conv2d)]
        fcs = [m for m in head.fcs if isinstance(m, torch.nn.Linear)]
        assert {c.out_channels for c in convs} == {convs[0].out_channels}
        assert convs[0].in_channels == 16 + 1  # the RoI features and the mask
        assert fcs[-1].out_features == 1
        return convs[0].out_channels, fcs[0].out_features

    assert widths() == (32, 128)
    assert widths(mask_quality_channels=8, mask_quality_fc=12) == (8, 12)
    assert widths(mask_quality_channels=0) == (24, 128)
