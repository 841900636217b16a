"""``train.loss_weights``: a loss weighted 0 trains nothing, a bad weight is refused by name."""

from __future__ import annotations

import pytest
import torch

from boxmask.config import ConfigError
from boxmask.model.checkpoint import load_checkpoint
from boxmask.training.trainer import train, weighted_loss

_MASK_HEAD = "roi_heads.mask_branch.student."


def test_weighted_loss_multiplies_the_named_losses_and_keeps_the_rest() -> None:
    losses = {"loss_classifier": torch.tensor(2.0), "loss_mask_student": torch.tensor(3.0)}
    assert weighted_loss(losses, {}).item() == 5.0
    assert weighted_loss(losses, {"mask_student": 0.0}).item() == 2.0
    assert weighted_loss(losses, {"classifier": 0.5}).item() == 4.0
    with pytest.raises(ConfigError, match=r"mask_teacher.*classifier"):
        weighted_loss(losses, {"mask_teacher": 0.0})


def test_negative_weight_is_refused_when_the_config_loads(tiny_cfg) -> None:
    with pytest.raises(ConfigError, match="loss_weights"):
        tiny_cfg("train.loss_weights={mask_student: -1}")


def test_a_box_only_stage_leaves_the_mask_head_as_it_found_it(tiny_cfg, tmp_path) -> None:
    """The synthetic experiment's first stage: every loss but the mask's trains."""
    first = train(tiny_cfg("model.mode=oracle", f"train.output_dir={tmp_path / 'a'}"))
    second = train(tiny_cfg("model.mode=oracle", f"model.init_from={first}",
                            "train.weight_decay=0", "train.loss_weights={loss_mask_student: 0}",
                            f"train.output_dir={tmp_path / 'b'}"))
    before, after = load_checkpoint(first)["model"], load_checkpoint(second)["model"]
    mask = [k for k in before if k.startswith(_MASK_HEAD) and before[k].is_floating_point()]
    assert mask, "the oracle has a student mask head"
    for k in mask:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    others = [k for k in before if k.startswith("roi_heads.box_head.")]
    assert any(not torch.equal(after[k], before[k]) for k in others), "the box head trained"
