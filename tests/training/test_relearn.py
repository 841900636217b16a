"""``model.known_pseudo_targets: refit``: a second round of self-training, in which the
categories a checkpoint learned from pseudo-masks are taught again by its own student's masks
made into pseudo-masks (fitted to the box, cleaned), while the categories it learned from masks
keep their soft targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.training.finetune_scenario import NEW, OLD, train_run, write_datasets
from tests.training.finetune_scenario import TINY_MODEL as TINY


def _branch(refit: bool, clean: bool = True):
    from boxmask.config import ModelConfig
    from boxmask.model import build_model

    cfg = ModelConfig(**{**TINY, "mode": "teacher_student", "known_targets": "checkpoint",
                         "clean_with_known_masks": clean, "pseudo_mask_fit": "box",
                         "known_pseudo_targets": "refit" if refit else "soft"})
    torch.manual_seed(0)
    model = build_model(cfg, 3, {1}).eval()
    branch = model.roi_heads.mask_branch
    branch.anchor_known({2, 3}, relearn={3})
    with torch.no_grad():  # a confident anchor: every cell foreground, for every category
        branch.anchor.predictor.mask_fcn_logits.bias.fill_(10.0)
    return model, branch


def _student_targets(model, branch, monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(the student's targets, their instances' labels) for one image: a masked label-1
    instance, a box-only label-2 (soft) and a box-only label-3 (relearned) one that overlaps it."""
    import boxmask.model.mask_branch as mb

    seen: dict[str, torch.Tensor] = {}
    real = mb.mask_bce

    def spy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] == mb.STUDENT_RESOLUTION and targets.shape[0] == 3:
            seen["targets"] = targets.detach().clone()
        return real(logits, targets)

    monkeypatch.setattr(mb, "mask_bce", spy)
    image = torch.rand(3, 64, 64)
    features, resized = model.encode(image)
    masks = torch.zeros(3, *resized, dtype=torch.uint8)
    masks[0, 2:20, 2:20] = 1
    boxes = torch.tensor([[2.0, 2.0, 20.0, 20.0], [20.0, 20.0, 40.0, 40.0],
                          [30.0, 30.0, 50.0, 50.0]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 2, 3]), "masks": masks,
              "mask_valid": torch.tensor([True, False, False])}
    branch.train()
    with torch.no_grad():
        branch.losses(features, [boxes.clone()], [resized], [torch.arange(3)], [target],
                      images=None)
    return seen["targets"], target["labels"]


def test_refit_turns_the_anchor_of_relearned_categories_into_cleaned_pseudo_masks(monkeypatch):
    model, branch = _branch(refit=True)
    targets, _ = _student_targets(model, branch, monkeypatch)
    soft, relearned = targets[1], targets[2]
    # The label-2 instance (learned from masks): the anchor's probabilities, inside its box.
    assert soft.max() < 1.0 and soft.max() > 0.99
    # The label-3 instance: a hard pseudo-mask, the box fitted, cleaned of the known label-2
    # instance's mask where they overlap (its box's top-left quarter: 20..40 on a 30..50 box).
    assert set(relearned.unique().tolist()) <= {0.0, 1.0}
    assert relearned.sum() > 0
    assert relearned[:14, :14].sum() <= 2  # the overlap (30..40 of 30..50) is cleaned
    assert relearned[15:, :].all() and relearned[:, 15:].all()  # the rest is the object's


def test_soft_keeps_every_known_category_on_soft_targets(monkeypatch):
    model, branch = _branch(refit=False)
    targets, _ = _student_targets(model, branch, monkeypatch)
    assert targets[2].max() < 1.0 and targets[2].max() > 0.99
    assert not bool(branch.relearn_labels.any())


def test_relearned_categories_never_clean_their_own_instances():
    """The cleaning reads the anchor's masks of the categories it learned from masks only."""
    model, branch = _branch(refit=True)
    image = torch.rand(3, 64, 64)
    features, resized = model.encode(image)
    target = {"boxes": torch.tensor([[20.0, 20.0, 40.0, 40.0], [30.0, 30.0, 50.0, 50.0]]),
              "labels": torch.tensor([2, 3]),
              "masks": torch.zeros(2, *resized, dtype=torch.uint8),
              "mask_valid": torch.tensor([False, False])}
    out = branch._with_known_masks(features, [target], [resized])[0]
    assert out["mask_valid"].tolist() == [True, False]


def test_relearn_must_be_known():
    _, branch = _branch(refit=True)
    with pytest.raises(ValueError, match="not a known one"):
        branch.anchor_known({2}, relearn={3})


def test_two_rounds_from_box_only_data(tmp_path):
    """Round one learns the new categories from the teacher (the checkpoint records them as
    not seen); round two, from round one's checkpoint, relearns them from its student."""
    from boxmask.model.checkpoint import load_checkpoint

    paths = write_datasets(tmp_path / "data", num_train=6, num_val=2, size=64)
    pre = train_run(paths, "pretrain", tmp_path / "pre", {"mode": "teacher_student"}, epochs=1)
    recipe = {"mode": "teacher_student", "known_targets": "checkpoint",
              "pseudo_mask_fit": "box", "clean_with_known_masks": True}
    one = train_run(paths, "boxes", tmp_path / "one", {**recipe, "init_from": str(pre)},
                    epochs=1, seen="auto")
    cats = load_checkpoint(one)["categories"]
    # No masks in round one's data: the old categories were taught by the pretrained student
    # (which learned them from masks), the new ones by pseudo-masks.
    assert {c["name"]: c["taught_by"] for c in cats} == {
        **{n: "masks" for n in OLD}, **{n: "pseudo_masks" for n in NEW}}
    two = train_run(paths, "boxes", tmp_path / "two",
                    {**recipe, "init_from": str(one), "known_pseudo_targets": "refit"},
                    epochs=1, seen="auto")
    record = json.loads((Path(two).parent / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["loss_mask_student"] > 0
    ckpt = load_checkpoint(two)
    assert ckpt["config"]["model"]["known_pseudo_targets"] == "refit"
    assert {c["name"]: c["taught_by"] for c in ckpt["categories"]} == {
        c["name"]: c["taught_by"] for c in cats}


def test_distill_all_ties_every_positive_to_the_anchor_on_its_kept_channels():
    """model.known_distill: all: loss_mask_distill reads the known (not relearned) channels of
    every positive, and is 0 where the student already says what the anchor says."""
    from boxmask.config import ModelConfig
    from boxmask.model import build_model

    cfg = ModelConfig(**{**TINY, "mode": "teacher_student", "known_targets": "checkpoint",
                         "known_pseudo_targets": "refit", "known_distill": "all"})
    torch.manual_seed(0)
    model = build_model(cfg, 3, {1}).eval()
    branch = model.roi_heads.mask_branch
    branch.anchor_known({1, 2, 3}, relearn={3})
    features, resized = model.encode(torch.rand(3, 64, 64))
    boxes = torch.tensor([[2.0, 2.0, 30.0, 30.0], [20.0, 20.0, 60.0, 60.0]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 3]),
              "masks": torch.ones(2, *resized, dtype=torch.uint8),
              "mask_valid": torch.tensor([True, False])}
    branch.train()

    def distill() -> float:
        with torch.no_grad():
            losses = branch.losses(features, [boxes.clone()], [resized], [torch.arange(2)],
                                   [target])
        return float(losses["loss_mask_distill"])

    same = distill()  # the anchor is the student's copy: only the targets' own entropy is left
    with torch.no_grad():
        branch.student.predictor.mask_fcn_logits.bias[:2] += 5.0  # the kept channels move
    moved = distill()
    assert moved > same + 0.5
    with torch.no_grad():
        branch.student.predictor.mask_fcn_logits.bias[:2] -= 5.0
        branch.student.predictor.mask_fcn_logits.bias[2] += 5.0  # the relearned one: not read
    assert abs(distill() - same) < 1e-6


def test_self_training_rounds_inside_one_run(monkeypatch):
    """model.self_train_every: N: at every N-th step the student is copied into the round head,
    whose masks then stand in for the teacher's as the source of the pseudo-masks."""
    from boxmask.config import ModelConfig
    from boxmask.model import build_model

    cfg = ModelConfig(**{**TINY, "mode": "teacher_student", "pseudo_mask_fit": "box",
                         "self_train_every": 2})
    torch.manual_seed(0)
    model = build_model(cfg, 3, {1}).eval()
    branch = model.roi_heads.mask_branch
    features, resized = model.encode(torch.rand(3, 64, 64))
    boxes = torch.tensor([[2.0, 2.0, 30.0, 30.0], [20.0, 20.0, 60.0, 60.0]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 3]),
              "masks": torch.ones(2, *resized, dtype=torch.uint8),
              "mask_valid": torch.tensor([True, False])}
    sources: list[torch.Tensor] = []
    real = branch._pseudo_masks

    def spy(source, *args, **kwargs):
        sources.append(source.detach().clone())
        return real(source, *args, **kwargs)

    monkeypatch.setattr(branch, "_pseudo_masks", spy)
    branch.train()

    def step() -> None:
        with torch.no_grad():
            branch.losses(features, [boxes.clone()], [resized], [torch.arange(2)], [target])

    x = branch.roi_pool(features, [boxes[1:]], [resized])
    teacher = branch.run_teacher(x, features, [boxes[1:]])[:, 0]
    step()
    assert not bool(branch.round_ready) and torch.allclose(sources[-1], teacher, atol=1e-4)
    with torch.no_grad():
        branch.student.predictor.mask_fcn_logits.bias[2] += 7.0  # round one's student moves
    step()  # step 2 ends round one: the student is copied before its targets are made
    assert bool(branch.round_ready)
    student = branch.run_student(x, features, [boxes[1:]])[:, 2]
    assert torch.allclose(sources[-1], student, atol=1e-4)
    with torch.no_grad():
        branch.student.predictor.mask_fcn_logits.bias[2] += 7.0  # the student moves on ...
    step()
    assert torch.allclose(sources[-1], student, atol=1e-4)  # ... the round head does not
    assert int(branch.train_steps) == 3


def test_a_finetune_from_a_self_trained_checkpoint_starts_its_own_rounds(tmp_path):
    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint

    paths = write_datasets(tmp_path / "data", num_train=4, num_val=2, size=64)
    recipe = {"mode": "teacher_student", "pseudo_mask_fit": "box", "self_train_every": 1}
    one = train_run(paths, "finetune", tmp_path / "one", recipe, epochs=1, seen="auto")
    ckpt = load_checkpoint(one)
    assert bool(ckpt["model"]["roi_heads.mask_branch.round_ready"])
    model, _ = model_from_checkpoint(ckpt)  # the round head is part of the weights
    assert model.roi_heads.mask_branch.round_head is not None
    from boxmask.config import ModelConfig
    from boxmask.model import build_model
    from boxmask.model.init_from import init_from_checkpoint

    fresh = build_model(ModelConfig(**{**TINY, **recipe, "self_train_every": 5}), 8, {1})
    init_from_checkpoint(fresh, ckpt["categories"], ckpt)
    branch = fresh.roi_heads.mask_branch
    assert not bool(branch.round_ready) and int(branch.train_steps) == 0
