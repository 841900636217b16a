"""`model.init_from`: categories matched by name, rows copied, new categories fresh, heads derived."""

from __future__ import annotations

import pytest
import torch

from boxmask.config import ConfigError, ModelConfig
from boxmask.model import build_model
from boxmask.model.init_from import init_from_checkpoint

TINY = {"backbone": "resnet18_fpn", "backbone_norm": "gn", "fpn_channels": 16, "mask_head_channels": 16,
            "representation_size": 32, "min_size": 64, "max_size": 64}


def _cats(names: list[str]) -> list[dict]:
    return [{"id": 10 + i, "name": n, "seen": True, "label": i + 1} for i, n in enumerate(names)]


def _checkpoint(mode: str, names: list[str], seed: int = 0, **model) -> dict:
    torch.manual_seed(seed)
    m = build_model(ModelConfig(mode=mode, **{**TINY, **model}), len(names), set(range(1, len(names) + 1)))
    return {"model": m.state_dict(), "categories": _cats(names)}


def test_matched_categories_keep_their_rows_and_new_ones_keep_fresh_rows():
    src = _checkpoint("oracle", ["cat", "dog", "bird"])
    target_names = ["Dog", "zebra", "cat"]  # other order, other case, one new, one dropped
    torch.manual_seed(1)
    model = build_model(ModelConfig(mode="oracle", **TINY), 3, {1, 2, 3})
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from_checkpoint(model, _cats(target_names), src)
    assert report.matched == {"Dog": "dog", "cat": "cat"}
    assert report.new == ["zebra"] and report.unused == ["bird"]
    sd, s = model.state_dict(), src["model"]
    logits = "roi_heads.mask_branch.student.predictor.mask_fcn_logits.weight"
    assert torch.equal(sd[logits][0], s[logits][1])  # Dog <- dog
    assert torch.equal(sd[logits][2], s[logits][0])  # cat <- cat
    # zebra's mask channel starts class-agnostic: the mean of the oracle's channels (box rows
    # below stay fresh).
    assert torch.allclose(sd[logits][1], s[logits].mean(0))
    assert not torch.allclose(sd[logits][1], fresh[logits][1])
    bias = logits.replace("weight", "bias")
    assert torch.allclose(sd[bias][1], s[bias].mean(0))
    assert report.agnostic_start == ["zebra"] and "class-agnostic" in report.summary()
    cls = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(sd[cls][0], s[cls][0]) and torch.equal(sd[cls][1], s[cls][2])
    assert torch.equal(sd[cls][2], fresh[cls][2])
    box = "roi_heads.box_predictor.bbox_pred.bias"
    assert torch.equal(sd[box][4:8], s[box][8:12]) and torch.equal(sd[box][8:12], fresh[box][8:12])
    for key in ("backbone.body.conv1.weight", "rpn.head.cls_logits.weight",
                "roi_heads.box_head.fc6.weight", "roi_heads.mask_branch.student.tower.0.0.weight"):
        assert torch.equal(sd[key], s[key])


def test_a_teacher_student_model_gets_its_teacher_from_an_oracles_student():
    src = _checkpoint("oracle", ["cat", "dog"])
    model = build_model(ModelConfig(mode="teacher_student", **TINY), 3, {1, 2})
    report = init_from_checkpoint(model, _cats(["cat", "dog", "zebra"]), src)
    sd, s = model.state_dict(), src["model"]
    assert torch.equal(sd["roi_heads.mask_branch.teacher.tower.3.0.weight"],
                       s["roi_heads.mask_branch.student.tower.3.0.weight"])
    mean = s["roi_heads.mask_branch.student.predictor.mask_fcn_logits.weight"].mean(0, keepdim=True)
    assert torch.allclose(sd["roi_heads.mask_branch.teacher.predictor.mask_fcn_logits.weight"], mean)
    assert "roi_heads.mask_branch.teacher.predictor.conv5_mask.weight" in report.derived
    assert not report.fresh


def test_a_deeper_teacher_that_cannot_be_derived_stays_fresh_and_is_reported():
    src = _checkpoint("oracle", ["cat"])
    model = build_model(ModelConfig(mode="teacher_student", teacher_convs=6, **TINY), 2, {1})
    report = init_from_checkpoint(model, _cats(["cat", "dog"]), src)
    assert "roi_heads.mask_branch.teacher.tower.5.0.weight" in report.fresh
    assert "fresh" in report.summary()


def test_a_student_starts_from_an_agnostic_teacher():
    src = _checkpoint("agnostic", ["cat", "dog"])
    model = build_model(ModelConfig(mode="teacher_student", **TINY), 2, {1, 2})
    init_from_checkpoint(model, _cats(["cat", "dog"]), src)
    sd, s = model.state_dict(), src["model"]
    key = "roi_heads.mask_branch.student.predictor.mask_fcn_logits.weight"
    teacher = s["roi_heads.mask_branch.teacher.predictor.mask_fcn_logits.weight"][0]
    assert torch.equal(sd[key][0], teacher) and torch.equal(sd[key][1], teacher)


def test_another_backbone_is_refused_with_the_keys():
    src = _checkpoint("oracle", ["cat"])
    model = build_model(ModelConfig(mode="oracle", **{**TINY, "fpn_channels": 32}), 1, {1})
    with pytest.raises(ConfigError, match="does not fit the config's model section"):
        init_from_checkpoint(model, _cats(["cat"]), src)


def test_no_shared_category_is_refused():
    src = _checkpoint("oracle", ["cat"])
    model = build_model(ModelConfig(mode="oracle", **TINY), 1, {1})
    with pytest.raises(ConfigError, match="none of its categories is named in the data"):
        init_from_checkpoint(model, _cats(["truck"]), src)


@pytest.mark.parametrize("heads", [
    {"rpn_conv_depth": 2, "box_head": "conv", "head_norm": "gn"},
    {"rpn_conv_depth": 2, "box_head": "conv", "head_norm": "bn"},
])
def test_the_v2_heads_train(heads):
    """The v2 architecture (2-conv RPN, conv box head, normed FPN and mask heads) trains: every
    loss is finite and every trainable parameter gets a gradient."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(mode="teacher_student", **{**TINY, **heads}), 2, {1}).train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 10:40] = 1
    masks[1, 30:60, 20:50] = 1
    target = {"boxes": torch.tensor([[10.0, 10, 40, 30], [20, 30, 50, 60]]),
              "labels": torch.tensor([1, 2]), "masks": masks,
              "mask_valid": torch.tensor([True, False])}
    losses = model(images, [target, target])
    assert {"loss_mask_teacher", "loss_mask_student"} <= set(losses)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    names = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not names, names[:5]
    assert any("box_head.0.1" in n for n, _ in model.named_parameters())  # the normed conv box head


def test_new_categories_mask_channels_start_from_the_checkpoints_teacher():
    """A teacher-student checkpoint has a class-agnostic teacher: a new category's student
    channel starts as that channel (what its pseudo-masks come from), not as noise."""
    src = _checkpoint("teacher_student", ["cat", "dog"])
    model = build_model(ModelConfig(mode="teacher_student", **TINY), 4, {1, 2})
    report = init_from_checkpoint(model, _cats(["cat", "dog", "zebra", "gnu"]), src)
    sd, s = model.state_dict(), src["model"]
    for part in ("weight", "bias"):
        key = f"roi_heads.mask_branch.student.predictor.mask_fcn_logits.{part}"
        teacher = s[f"roi_heads.mask_branch.teacher.predictor.mask_fcn_logits.{part}"][0]
        assert torch.equal(sd[key][0], s[key][0]) and torch.equal(sd[key][1], s[key][1])
        assert torch.equal(sd[key][2], teacher) and torch.equal(sd[key][3], teacher)
    assert report.agnostic_start == ["gnu", "zebra"]
