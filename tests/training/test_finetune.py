"""Fine-tuning with ``model.init_from``: a model that knows some categories learns new, box-only
ones through the teacher's pseudo-masks (tests/training/finetune_scenario.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from tests.training.finetune_scenario import NEW, OLD, train_run, write_datasets
from tests.training.finetune_scenario import TINY_MODEL as TINY

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
@pytest.mark.timeout(4 * 3600)
@pytest.mark.skipif(os.environ.get("BOXMASK_QUALITY_TESTS") != "1",
                    reason="the fine-tune benchmark at its size (a 1680-iteration pretraining and "
                           "1500-iteration fine-tunes: hours on 2 cores): set "
                           "BOXMASK_QUALITY_TESTS=1 to run it")
def test_teacher_student_fine_tune_beats_box_and_agnostic_on_new_categories(tmp_path):
    """The paper's claim where a user meets it (issue "Teach it your classes"), seed 0 of
    benchmarks/finetune_quality.py: from a model pretrained with masks on the old shapes only,
    the box-only fine-tune's masks for the new shapes beat the box by 0.15, the agnostic
    fine-tune by 0.04 and the zero-shot agnostic head, box-prompted, and the old shapes stay
    within 0.01 of the pretrained model's."""
    import json
    import subprocess

    # The benchmark itself, run as its docs run it (tests do not import benchmarks/).
    repo = Path(__file__).resolve().parents[2]
    kept = tmp_path / "kept"
    subprocess.run([sys.executable, "benchmarks/finetune_quality.py", "--out", str(tmp_path / "runs"),
                    "--kept", str(kept), "--methods", "teacher_student_fit_clean_st_lwf_crf_sfit",
                    "agnostic"],
                   cwd=repo, check=True)
    result = {p.stem: json.loads(p.read_text()) for p in kept.glob("*.json")}
    # The recipe `boxmask finetune` uses: the paper's method with the pseudo-masks fitted to the
    # box, refined by the CRF and cleaned, four rounds of self-training, the old categories held
    # on every RoI, the box-taught categories' masks served fitted to their box.
    ts, agnostic = result["teacher_student_fit_clean_st_lwf_crf_sfit_s0"], result["agnostic_s0"]
    zero = result["zero_shot_agnostic"]
    assert ts["new"]["miou"] >= ts["new"]["box_miou"] + 0.15, ts["new"]
    assert ts["new"]["miou"] >= agnostic["new"]["miou"] + 0.04
    assert ts["new"]["miou"] > zero["new"]["miou"]
    assert ts["old"]["miou"] >= result["pretrained"]["old"]["miou"] - 0.01


def test_box_only_fine_tune_keeps_the_teacher_and_the_frozen_trunk_and_anchors_old_categories(
        tiny_data, tmp_path):
    """A user's box-only set (no mask at all, ``data.seen: auto``): the teacher comes from the
    checkpoint and stays as it is, frozen parts keep their weights, and the old categories'
    box-only instances are taught by a frozen copy of the checkpoint's student."""
    from boxmask.model.checkpoint import load_checkpoint

    pre = train_run(tiny_data, "pretrain", tmp_path / "pre",
                    {"mode": "teacher_student", "mask_pixel_channels": 4}, epochs=1)
    fine = train_run(tiny_data, "boxes", tmp_path / "fine",
                     {"mode": "teacher_student", "init_from": str(pre), "mask_pixel_channels": 4,
                      "teacher_ignore_unseen_boxes": True, "known_targets": "checkpoint",
                      "frozen": ["backbone", "pixel_stem"], "clean_with_known_masks": True,
                      "pseudo_mask_fit": "box"}, epochs=1, seen="auto")
    before, after = load_checkpoint(pre)["model"], load_checkpoint(fine)["model"]
    for prefix in ("backbone.", "roi_heads.mask_branch.teacher.",
                   "roi_heads.mask_branch.pixel_stem."):
        keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
        assert keys and all(torch.equal(before[k], after[k]) for k in keys), prefix
    # The anchor is the checkpoint's student; the student itself moved.
    student = "roi_heads.mask_branch.student."
    for k in (k for k in before if k.startswith(student)):
        if "mask_fcn_logits" in k:
            continue  # the anchor has the fine-tune's category rows
        assert torch.equal(after[k.replace(student, "roi_heads.mask_branch.anchor.")], before[k])
    assert not torch.equal(after[STUDENT_LOGITS], after[
        STUDENT_LOGITS.replace("student", "anchor")])
    ckpt = load_checkpoint(fine)
    known = after["roi_heads.mask_branch.known_labels"]
    assert sorted(c["name"] for c in ckpt["categories"] if known[c["label"]]) == sorted(OLD)


def test_seen_auto_follows_the_instances_that_have_masks(tiny_data, tmp_path):
    """Masks where annotators gave them: ``seen: auto`` decodes every annotation that has a
    mask, of any category, and none of those that have not."""
    import json

    from boxmask.config import load_config
    from boxmask.data.build import build_dataset

    coco = json.loads(tiny_data["boxes"].read_text())
    # One new-category instance gets its mask back.
    full = {a["id"]: a for a in json.loads(
        (tiny_data["val"].parents[1] / "annotations" / "instances_train.json").read_text())["annotations"]}
    new_ids = {c["id"] for c in coco["categories"] if c["name"] in NEW}
    chosen = next(a for a in coco["annotations"] if a["category_id"] in new_ids)
    chosen["segmentation"] = full[chosen["id"]]["segmentation"]
    path = tmp_path / "k1.json"
    path.write_text(json.dumps(coco))
    cfg = load_config(None, base={"data": {"train_annotations": str(path),
                                           "train_images": str(tiny_data["images"]),
                                           "seen": "auto"},
                                  "model": {}, "train": {}})
    dataset = build_dataset(cfg.data, "train")
    assert dataset.seen_ids == {chosen["category_id"]}
    valid = 0
    for image_id in dataset.ids:
        target = dataset.load_target(image_id)
        valid += int(target["mask_valid"].sum())
        if image_id == chosen["image_id"]:
            assert target["mask_valid"].any()
    assert valid == 1


def test_known_masks_join_the_cleaning_and_never_the_supervision() -> None:
    """model.clean_with_known_masks: a box-only instance of a known category gets the anchor's
    mask on its box, valid for the cleaning; the others are left as they are."""
    from boxmask.config import ModelConfig
    from boxmask.model import build_model

    cfg = ModelConfig(**{**TINY, "mode": "teacher_student", "known_targets": "checkpoint",
                         "clean_with_known_masks": True})
    torch.manual_seed(0)
    model = build_model(cfg, 3, {1}).eval()
    branch = model.roi_heads.mask_branch
    branch.anchor_known({2})
    with torch.no_grad():  # a confident anchor: every cell foreground
        branch.anchor.predictor.mask_fcn_logits.bias.fill_(10.0)
    image = torch.rand(3, 64, 64)
    features, resized = model.encode(image)
    masks = torch.zeros(3, *resized, dtype=torch.uint8)
    masks[0, 2:20, 2:20] = 1
    target = {"boxes": torch.tensor([[2.0, 2.0, 20.0, 20.0], [30.0, 30.0, 50.0, 60.0],
                                     [10.0, 40.0, 30.0, 60.0]]),
              "labels": torch.tensor([1, 2, 3]), "masks": masks,
              "mask_valid": torch.tensor([True, False, False])}
    out = branch._with_known_masks(features, [target], [resized])[0]
    assert out["mask_valid"].tolist() == [True, True, False]
    assert out["masks"][1, 32:58, 32:48].all() and not out["masks"][1, :28].any()
    assert torch.equal(out["masks"][0], masks[0]) and not out["masks"][2].any()
    assert target["mask_valid"].tolist() == [True, False, False]  # the batch's own is untouched


def test_teacher_box_loss_keeps_the_teacher_training_on_box_only_data(tiny_data, tmp_path):
    """model.teacher_box_loss: on box-only data the teacher is not frozen; BoxInst's terms on
    its masks of the box-only instances are logged and move it."""
    import json

    from boxmask.model.checkpoint import load_checkpoint

    pre = train_run(tiny_data, "pretrain", tmp_path / "pre", {"mode": "teacher_student"}, epochs=1)
    fine = train_run(tiny_data, "boxes", tmp_path / "fine",
                     {"mode": "teacher_student", "init_from": str(pre),
                      "known_targets": "checkpoint", "teacher_box_loss": "boxinst",
                      "box_pairwise_warmup_iters": 1}, epochs=1, seen="auto")
    record = json.loads((Path(fine).parent / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["loss_teacher_projection"] > 0 and "loss_teacher_pairwise" in record
    before, after = load_checkpoint(pre)["model"], load_checkpoint(fine)["model"]
    teacher = [k for k in before if k.startswith("roi_heads.mask_branch.teacher.")
               and before[k].is_floating_point()]
    assert any(not torch.equal(before[k], after[k]) for k in teacher)
