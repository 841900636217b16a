"""The teacher-student mask branch: who is supervised by what, and what inference uses."""

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

import boxmask.model.mask_branch as mb
from boxmask.config import ModelConfig
from boxmask.model import build_model
from boxmask.model.mask_branch import TeacherStudentMaskBranch
from boxmask.model.pseudo_masks import project_masks_on_rois

torch.set_num_threads(1)

H = W = 32
NUM_CLASSES = 3


def _features(seed: int = 0) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict((str(i), torch.randn(1, 8, H // 2 ** (i + 2), W // 2 ** (i + 2), generator=g))
                       for i in range(4))


def _target(unseen_mask_value: int = 0) -> dict:
    """Two instances: label 1 (seen, real mask) and label 3 (unseen: mask_valid False)."""
    masks = torch.zeros(2, H, W, dtype=torch.uint8)
    masks[0, 4:20, 4:20] = 1
    masks[1] = unseen_mask_value  # whatever lies here must never be read
    return {
        "boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0], [10.0, 10.0, 30.0, 30.0]]),
        "labels": torch.tensor([1, 3]),
        "masks": masks,
        "mask_valid": torch.tensor([True, False]),
    }


def _branch(mode: str = "teacher_student", sigma: str = "threshold") -> TeacherStudentMaskBranch:
    torch.manual_seed(0)
    pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
    return TeacherStudentMaskBranch(pool, 8, 8, NUM_CLASSES, mode=mode, sigma=sigma)


def _losses(branch, target):
    rois = [target["boxes"].clone()]
    return branch.losses(_features(), rois, [(H, W)], [torch.tensor([0, 1])], [target])


@pytest.mark.parametrize("mode", ["agnostic", "teacher_student", "oracle"])
def test_unseen_masks_never_reach_the_loss(mode):
    branch = _branch(mode)
    clean = _losses(branch, _target(unseen_mask_value=0))
    poisoned = _losses(branch, _target(unseen_mask_value=1))
    assert clean.keys() == poisoned.keys()
    for k in clean:
        assert torch.equal(clean[k], poisoned[k]), k


def test_teacher_is_trained_on_seen_instances_only(monkeypatch):
    seen_calls = []
    real = mb.mask_bce

    def spy(logits, targets):
        seen_calls.append((logits.shape[0], targets.clone()))
        return real(logits, targets)

    monkeypatch.setattr(mb, "mask_bce", spy)
    losses = _losses(_branch("teacher_student"), _target())
    assert set(losses) == {"loss_mask_teacher", "loss_mask_student"}
    n_teacher, _ = seen_calls[0]
    n_student, _ = seen_calls[1]
    assert n_teacher == 1  # the seen instance only
    assert n_student == 2  # seen with ground truth, unseen with a pseudo-mask


def test_student_targets_are_gt_for_seen_and_cleaned_pseudo_masks_for_unseen(monkeypatch):
    branch = _branch("teacher_student")
    # A teacher that says "foreground" everywhere: the pseudo-mask is then exactly what the
    # cleaning rules leave, which we can compute by hand.
    last = branch.teacher.predictor.mask_fcn_logits
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, 10.0)
    captured = {}
    real = mb.mask_bce

    def spy(logits, targets):
        captured.setdefault("calls", []).append(targets.clone())
        return real(logits, targets)

    monkeypatch.setattr(mb, "mask_bce", spy)
    _losses(branch, _target())
    student_targets = captured["calls"][1]
    seen_t, unseen_t = student_targets[0], student_targets[1]
    t = _target()
    # Seen: its own ground-truth mask on the RoI.
    assert torch.equal(seen_t, project_masks_on_rois(t["masks"][:1], t["boxes"][:1], torch.tensor([0]), 28)[0])
    # Unseen RoI = its box (10..30); the seen mask covers 10..20 x 10..20 of it -> background,
    # the rest of the box stays foreground.
    assert (unseen_t[:12, :12] == 0).all()
    assert (unseen_t[16:, :] == 1).all() and (unseen_t[:, 16:] == 1).all()
    seen_on = project_masks_on_rois(t["masks"][:1], t["boxes"][1:], torch.tensor([0]), 28)[0]
    assert torch.equal(unseen_t, (seen_on < 0.5).float())


def test_pseudo_mask_cleaning_uses_the_instance_box_not_the_proposal(monkeypatch):
    """A proposal that sticks out of its instance's box: the cells outside the instance's
    ground-truth box become background, though they lie inside the proposal."""
    branch = _branch("teacher_student")
    last = branch.teacher.predictor.mask_fcn_logits
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, 10.0)  # the teacher says "foreground" everywhere
    captured = []
    real = mb.mask_bce

    def spy(logits, targets):
        captured.append(targets.clone())
        return real(logits, targets)

    monkeypatch.setattr(mb, "mask_bce", spy)
    t = _target()
    t["masks"][0] = 0  # no seen pixels: only the box rule can clean
    roi = torch.tensor([[2.0, 2.0, 30.0, 30.0]])  # the unseen box is 10..30: 8 px more left/top
    branch.losses(_features(), [roi], [(H, W)], [torch.tensor([1])], [t])
    pseudo = captured[-1][0]  # the student's only target: the unseen instance's pseudo-mask
    # RoI cells are 1 px wide: the first 8 rows and columns lie outside the instance's box.
    assert (pseudo[:8, :] == 0).all() and (pseudo[:, :8] == 0).all()
    assert (pseudo[8:, 8:] == 1).all()


def test_student_loss_reaches_only_each_instance_label_channel():
    branch = _branch("teacher_student")
    losses = _losses(branch, _target())
    losses["loss_mask_student"].backward()
    grad = branch.student.predictor.mask_fcn_logits.weight.grad  # [C, D, 1, 1]
    per_channel = grad.abs().flatten(1).sum(1)
    assert per_channel[0] > 0 and per_channel[2] > 0  # labels 1 and 3
    assert per_channel[1] == 0  # label 2 has no instance


def test_pseudo_masks_carry_no_gradient_to_the_teacher():
    branch = _branch("teacher_student", sigma="interact")
    losses = _losses(branch, _target())
    losses["loss_mask_student"].backward()
    assert branch.teacher.predictor.mask_fcn_logits.weight.grad is None or \
        branch.teacher.predictor.mask_fcn_logits.weight.grad.abs().sum() == 0


def test_images_without_seen_positives_give_a_zero_teacher_loss():
    branch = _branch("teacher_student")
    t = _target()
    t["mask_valid"] = torch.tensor([False, False])
    losses = _losses(branch, t)
    assert losses["loss_mask_teacher"].item() == 0.0
    assert losses["loss_mask_teacher"].requires_grad


# Each mode's mask losses.
MODE_MASK_LOSSES = [
    ("agnostic", {"loss_mask_teacher"}),
    ("teacher_student", {"loss_mask_teacher", "loss_mask_student"}),
    ("oracle", {"loss_mask_student"}),
]


def _tiny_cfg(**kw) -> ModelConfig:
    base = {"backbone": "resnet18_fpn", "fpn_channels": 16, "mask_head_channels": 8,
                "representation_size": 32, "min_size": 64, "max_size": 64, "box_batch_size_per_image": 16,
                "rpn_batch_size_per_image": 16, "rpn_post_nms_top_n_test": 50, "box_detections_per_img": 10}
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("mode,keys", MODE_MASK_LOSSES)
def test_loss_is_box_losses_plus_the_mode_mask_losses(mode, keys):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(mode=mode), NUM_CLASSES, {1})
    model.train()
    img = torch.rand(3, 64, 64)
    t = _target()
    t["masks"] = torch.nn.functional.pad(t["masks"], (0, 32, 0, 32))
    losses = model([img], [t])
    box = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert set(losses) == box | keys


def test_inference_uses_the_student_alone():
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(mode="teacher_student"), NUM_CLASSES, {1}).eval()
    img = torch.rand(3, 64, 64)
    boxes = [torch.tensor([[4.0, 4.0, 40.0, 40.0]])]
    labels = [torch.tensor([2])]
    before = model.segment_boxes([img], boxes, labels)[0]
    with torch.no_grad():
        for p in model.roi_heads.mask_branch.teacher.parameters():
            p.add_(torch.randn_like(p))
    after = model.segment_boxes([img], boxes, labels)[0]
    assert torch.equal(before, after)


def test_deeper_and_high_resolution_teacher_options():
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(mode="agnostic", teacher_convs=12, teacher_resolution=56),
                        NUM_CLASSES, {1}).eval()
    branch = model.roi_heads.mask_branch
    assert len([m for m in branch.teacher.tower.modules() if isinstance(m, torch.nn.Conv2d)]) == 12
    assert branch.output_resolution == 56
    probs, _, _ = model.decode_in_image(torch.rand(3, 64, 64), torch.tensor([[1.0, 1, 30, 30]]),
                                        torch.tensor([1]))
    assert probs.shape == (1, 1, 56, 56)


def test_boxes_without_label_use_the_predicted_class():
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(), NUM_CLASSES, {1}).eval()
    with torch.no_grad():
        _, scores, used = model.decode_in_image(
            torch.rand(3, 64, 64), torch.tensor([[1.0, 1, 30, 30], [5.0, 5, 50, 60]]),
            torch.tensor([0, 2]))
    assert used[1].item() == 2
    assert used[0].item() == scores[0, 1:].argmax().item() + 1
    assert torch.allclose(scores.sum(1), torch.ones(2))


@pytest.mark.parametrize("backbone", ["resnet18_fpn", "resnet50_fpn", "mobilenet_v3_fpn"])
def test_every_backbone_gives_four_levels_at_strides_4_to_32(backbone):
    model = build_model(_tiny_cfg(backbone=backbone), NUM_CLASSES, {1}).eval()
    with torch.no_grad():
        feats, size = model.encode(torch.rand(3, 64, 64))
    assert size == (64, 64)
    assert [f.shape[-1] for f in feats.values()] == [16, 8, 4, 2]


def test_a_split_without_seen_categories_is_refused():
    with pytest.raises(ValueError, match="no seen category"):
        build_model(_tiny_cfg(), NUM_CLASSES, set())


def test_local_backbone_weights_load_and_mismatches_are_errors(tmp_path):
    from torchvision.models import resnet18

    good = tmp_path / "r18.pth"
    torch.save(resnet18(weights=None).state_dict(), good)
    build_model(_tiny_cfg(backbone_weights=good), NUM_CLASSES, {1})
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises((ValueError, RuntimeError)):
        build_model(_tiny_cfg(backbone_weights=bad), NUM_CLASSES, {1})


def test_interact_uses_threshold_during_its_warm_up_and_counts_steps():
    pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
    branch = TeacherStudentMaskBranch(pool, 8, 8, NUM_CLASSES, mode="teacher_student",
                                      sigma="interact", interact_warmup_iters=2)
    assert branch.current_sigma == "threshold"
    for _ in range(2):
        _losses(branch, _target())
    assert int(branch.train_steps) == 2 and branch.current_sigma == "threshold"
    _losses(branch, _target())
    assert branch.current_sigma == "interact"
    assert "train_steps" in branch.state_dict()
    # Other sigmas keep the state dict of torchvision-style heads unchanged.
    assert "train_steps" not in _branch("teacher_student", "threshold").state_dict()


def test_a_collapsed_student_makes_interact_pseudo_masks_empty():
    """Why the warm-up exists: a student at 0 needs a teacher above 1 to add a pixel."""
    from boxmask.model.pseudo_masks import apply_sigma

    teacher = torch.full((1, 4, 4), 0.9)
    assert apply_sigma("interact", teacher, torch.zeros(1, 4, 4)).sum() == 0
    assert apply_sigma("threshold", teacher).sum() == 16


@pytest.mark.parametrize("backbone", ["resnet18_fpn", "mobilenet_v3_fpn"])
def test_detection_from_encoded_features_equals_the_full_forward(backbone):
    """The exported detector runs over the encoder's four levels; the RPN's extra level and the
    padded size it reads must come out as in the model's own forward (48x64: padded to 64)."""
    from boxmask.model.paste import paste_masks

    torch.manual_seed(0)
    model = build_model(_tiny_cfg(backbone=backbone, box_score_thresh=0.0), NUM_CLASSES,
                        {1}).eval()
    img = torch.rand(3, 48, 64)
    with torch.no_grad():
        ref = model([img])[0]
        features, size = model.encode(img)
        got = model.detect_features(features, size)
    assert size == (48, 64) and len(ref["boxes"]) > 0
    assert torch.allclose(got["boxes"], ref["boxes"], atol=1e-4)
    assert torch.equal(got["labels"], ref["labels"])
    assert torch.allclose(got["scores"], ref["scores"], atol=1e-5)
    pasted = paste_masks(got["masks"], got["boxes"], (48, 64))
    assert torch.allclose(pasted, ref["masks"], atol=1e-5)


def _half_mask_target() -> dict:
    """The seen instance's mask fills only the top half of its box; the unseen instance's box
    covers the lower right of it."""
    t = _target()
    t["masks"][0] = 0
    t["masks"][0, 4:12, 4:20] = 1
    return t


def test_teacher_ignore_unseen_boxes_drops_only_cells_inside_unseen_boxes():
    from torch.nn import functional as F

    from boxmask.model.pseudo_masks import box_interior_on_rois

    t = _half_mask_target()
    plain = _branch("agnostic")
    ignoring = _branch("agnostic")
    ignoring.teacher_ignore_unseen_boxes = True
    got = _losses(ignoring, t)["loss_mask_teacher"]

    # By hand on the one seen positive (RoI 0, its own box).
    roi = t["boxes"][:1]
    x = ignoring.roi_pool(_features(), [roi], [(H, W)])
    logits = ignoring.teacher(x)[:, 0]
    size = logits.shape[-1]
    gt = project_masks_on_rois(t["masks"][:1], roi, torch.tensor([0]), size)
    inside_unseen = box_interior_on_rois(roi, t["boxes"][1:2], size)
    keep = ~inside_unseen | (gt >= 0.5)
    assert 0 < int((~keep).sum()) < keep.numel()  # some background cells are dropped
    expected = F.binary_cross_entropy_with_logits(logits[keep], gt[keep])
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, _losses(plain, t)["loss_mask_teacher"])


def test_teacher_ignore_unseen_boxes_changes_nothing_without_unseen_instances():
    t = _half_mask_target()
    t["mask_valid"] = torch.tensor([True, True])
    t["labels"] = torch.tensor([1, 2])
    t["masks"][1, 10:30, 10:30] = 1
    plain, ignoring = _branch("teacher_student"), _branch("teacher_student")
    ignoring.teacher_ignore_unseen_boxes = True
    a, b = _losses(plain, t), _losses(ignoring, t)
    assert torch.allclose(a["loss_mask_teacher"], b["loss_mask_teacher"], atol=1e-7)
    assert torch.equal(a["loss_mask_student"], b["loss_mask_student"])


def test_teacher_ignore_unseen_boxes_is_a_model_setting():
    model = build_model(_tiny_cfg(teacher_ignore_unseen_boxes=True), NUM_CLASSES, {1})
    assert model.roi_heads.mask_branch.teacher_ignore_unseen_boxes
    assert not ModelConfig().teacher_ignore_unseen_boxes


@pytest.mark.parametrize("cap", [None, 2])
def test_mask_rois_per_image_caps_the_mask_heads_training_rois(cap, monkeypatch):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(mode="teacher_student", mask_rois_per_image=cap), NUM_CLASSES, {1})
    model.train()
    heads = model.roi_heads
    seen: dict[str, list] = {}
    real_losses = heads.mask_branch.losses
    real_select = heads.select_training_samples

    def select(proposals, targets):
        out = real_select(proposals, targets)
        seen["positive"] = [int((lab > 0).sum()) for lab in out[2]]
        seen["positive_boxes"] = [p[lab > 0] for p, lab in zip(out[0], out[2], strict=True)]
        return out

    def losses(features, proposals, image_shapes, matched_idxs, targets, images):
        seen["mask_rois"] = list(proposals)
        return real_losses(features, proposals, image_shapes, matched_idxs, targets, images)

    monkeypatch.setattr(heads, "select_training_samples", select)
    monkeypatch.setattr(heads.mask_branch, "losses", losses)
    img = torch.rand(3, 64, 64)
    t = _target()
    t["masks"] = torch.nn.functional.pad(t["masks"], (0, 32, 0, 32))
    model([img, img], [t, t])
    (n0, n1) = seen["positive"]
    assert n0 > 2 and n1 > 2  # the ground-truth boxes and their near-copies: more than the cap
    got = [len(p) for p in seen["mask_rois"]]
    assert got == ([n0, n1] if cap is None else [2, 2])
    # A subset of each image's positives, in their order.
    for rois, pos in zip(seen["mask_rois"], seen["positive_boxes"], strict=True):
        idx = [int(torch.where((pos == r).all(dim=1))[0][0]) for r in rois]
        assert idx == sorted(set(idx))


@pytest.mark.parametrize("mode,keys", MODE_MASK_LOSSES)
def test_pixel_fused_heads_train_through_the_stem_in_every_mode(mode, keys):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(mode=mode, mask_pixel_channels=4), NUM_CLASSES, {1})
    branch = model.roi_heads.mask_branch
    assert branch.pixel_stem is not None
    model.train()
    t = _target()
    t["masks"] = torch.nn.functional.pad(t["masks"], (0, 32, 0, 32))
    losses = model([torch.rand(3, 64, 64)], [t])
    assert keys <= set(losses)
    sum(losses[k] for k in keys).backward()
    # The mask losses reach the stem: its crops are part of each head's input.
    grads = [p.grad for p in branch.pixel_stem.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_pixel_fused_masks_follow_the_image_inside_the_box():
    """Two images whose FPN levels are the same but whose pixels differ inside the box give
    different masks only when the heads fuse pixel features."""
    torch.manual_seed(0)
    img = torch.rand(3, 64, 64)
    other = img.clone()
    other[:, 10:20, 10:20] = 1.0 - other[:, 10:20, 10:20]
    box, label = torch.tensor([[4.0, 4.0, 40.0, 40.0]]), torch.tensor([2])
    for channels in (0, 4):
        model = build_model(_tiny_cfg(mode="teacher_student", mask_pixel_channels=channels),
                            NUM_CLASSES, {1}).eval()
        features, size = model.encode(img)
        assert ("pixels" in features) == bool(channels)
        changed, _ = model.encode(other)
        levels = ("0", "1", "2", "3")
        swapped = OrderedDict([*((k, features[k]) for k in levels),
                               *((k, v) for k, v in changed.items() if k not in levels)])
        with torch.no_grad():
            a, _, _ = model.roi_heads.decode_boxes(features, box, label, size)
            b, _, _ = model.roi_heads.decode_boxes(swapped, box, label, size)
        assert torch.equal(a, b) == (channels == 0)


def test_pixel_fused_detection_from_encoded_features_equals_the_full_forward():
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(mode="oracle", mask_pixel_channels=4, box_score_thresh=0.0),
                        NUM_CLASSES, {1}).eval()
    img = torch.rand(3, 48, 64)
    with torch.no_grad():
        ref = model([img])[0]
        features, size = model.encode(img)
        got = model.detect_features(features, size)
    assert len(ref["boxes"]) > 0
    from boxmask.model.paste import paste_masks
    assert torch.allclose(paste_masks(got["masks"], got["boxes"], (48, 64)), ref["masks"],
                          atol=1e-5)


def test_a_pixel_fused_head_without_its_crops_is_an_error():
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(mask_pixel_channels=4), NUM_CLASSES, {1}).eval()
    features, size = model.encode(torch.rand(3, 64, 64))
    del features["pixels"]
    with pytest.raises(ValueError, match="pixel"):
        model.roi_heads.decode_boxes(features, torch.tensor([[1.0, 1, 30, 30]]),
                                     torch.tensor([1]), size)


def test_mask_dice_is_one_minus_dice_per_instance_averaged():
    logits = torch.full((2, 4, 4), -30.0)
    logits[0, :2] = 30.0  # instance 0: exactly its target
    targets = torch.zeros(2, 4, 4)
    targets[0, :2] = 1.0
    targets[1, :, :2] = 1.0  # instance 1: predicted empty, target 8 cells
    loss = mb.mask_dice(logits, targets, eps=1.0)
    expected = ((1 - 17 / 17) + (1 - 1 / 9)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    empty = mb.mask_dice(torch.zeros(0, 4, 4, requires_grad=True), torch.zeros(0, 4, 4))
    assert empty.item() == 0.0 and empty.requires_grad


def test_the_dice_weight_adds_a_student_dice_term_on_the_bce_instances(monkeypatch):
    seen = []
    real = mb.mask_dice

    def spy(logits, targets, eps=1.0):
        seen.append((logits.shape[0], targets.clone()))
        return real(logits, targets, eps)

    monkeypatch.setattr(mb, "mask_dice", spy)
    assert "loss_mask_dice" not in _losses(_branch("teacher_student"), _target())
    assert not seen
    branch = _branch("teacher_student")
    branch.mask_dice_weight = 2.0
    losses = _losses(branch, _target())
    n, targets = seen[0]
    assert n == 2  # the seen instance and the unseen one with its pseudo-mask, as the BCE
    assert losses["loss_mask_dice"].item() == pytest.approx(
        2.0 * real(_student_logits_for(branch), targets).item(), rel=1e-5)
    model = build_model(ModelConfig(backbone="resnet18_fpn", fpn_channels=8, mask_head_channels=8,
                                    representation_size=8, mask_dice_weight=0.5), 3, {1, 2})
    assert model.roi_heads.mask_branch.mask_dice_weight == 0.5


def _student_logits_for(branch: TeacherStudentMaskBranch) -> torch.Tensor:
    """The student's logits of the label's channel on :func:`_target`'s two RoIs."""
    t = _target()
    rois = [t["boxes"].clone()]
    x = branch.roi_pool(_features(), rois, [(H, W)])
    all_logits = branch.run_student(x, _features(), rois)
    return all_logits[torch.arange(2), t["labels"] - 1]
