"""Random shapes pasted as teacher-only instances: exact masks, the pixels they replace and
nothing else, occluded masks trimmed and their boxes re-fitted, unseen instances untouched."""

import pytest
import torch

from boxmask.config import ConfigError, load_config
from boxmask.data.random_shapes import (
    TEACHER_ONLY,
    TEACHER_ONLY_LABEL,
    RandomShapes,
    random_shape_mask,
)
from boxmask.data.transforms import BackgroundHoles, RandomHorizontalFlip, training_transforms

# Pasted pixels lie in [0, 1]: an image of -1 shows exactly which pixels were replaced.
_UNTOUCHED = -1.0


def _tight(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0]


def _scene() -> tuple[torch.Tensor, dict]:
    """64x64: a seen instance (mask given) filling [4, 36) x [4, 36), an unseen one (box only)
    at [40, 60) x [40, 60)."""
    image = torch.full((3, 64, 64), _UNTOUCHED)
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 4:36, 4:36] = 1
    target = {"boxes": torch.tensor([[4.0, 4.0, 36.0, 36.0], [40.0, 40.0, 60.0, 60.0]]),
              "labels": torch.tensor([1, 2]), "masks": masks,
              "mask_valid": torch.tensor([True, False]), "iscrowd": torch.zeros(2, dtype=torch.int64),
              "area": torch.tensor([1024.0, 400.0]), "image_id": 7}
    return image, target


def test_nothing_is_pasted_with_probability_zero_but_the_flag_is_there():
    image, target = _scene()
    out_image, out = RandomShapes(0.0)(image, target)
    assert out_image is image
    assert torch.equal(out[TEACHER_ONLY], torch.zeros(2, dtype=torch.bool))
    assert all(out[k] is target[k] for k in target)
    assert TEACHER_ONLY not in target  # the input target is left alone


def test_pasted_masks_are_exactly_the_pixels_replaced_and_ride_as_teacher_only_instances():
    torch.manual_seed(0)
    pasted = 0
    for _ in range(30):
        image, target = _scene()
        out_image, out = RandomShapes(1.0, count=(1, 3))(image, target)
        n = len(out["boxes"])
        assert all(len(out[k]) == n for k in ("labels", "masks", "mask_valid", "iscrowd", "area",
                                              TEACHER_ONLY))
        extra = out[TEACHER_ONLY]
        assert not extra[:2].any() and extra[2:].all()
        pasted += n - 2
        shapes = out["masks"][extra].bool()
        replaced = (out_image != _UNTOUCHED).any(0)
        # The union of the pasted masks is every replaced pixel and nothing else, and the
        # pasted pixels are proper colours.
        assert torch.equal(replaced, shapes.any(0))
        assert ((out_image[:, replaced] >= 0) & (out_image[:, replaced] <= 1)).all()
        # Later shapes hide earlier ones: no pixel belongs to two instances.
        assert int(out["masks"].sum(0).max()) <= 1
        for box, mask, area in zip(out["boxes"][extra], shapes, out["area"][extra], strict=True):
            assert box.tolist() == _tight(mask) and area == mask.sum()
        assert (out["labels"][extra] == TEACHER_ONLY_LABEL).all()
        assert out["mask_valid"][extra].all() and (out["iscrowd"][extra] == 0).all()
        assert out["image_id"] == 7
    assert pasted >= 30  # one to three shapes an image, seldom none placed


def test_the_seen_mask_loses_what_is_pasted_over_it_and_its_box_is_refit():
    torch.manual_seed(1)
    trimmed = 0
    for _ in range(30):
        image, target = _scene()
        _, out = RandomShapes(1.0, count=(2, 3), min_keep=0.35)(image, target)
        shapes = out["masks"][out[TEACHER_ONLY]].bool().any(0)
        seen = out["masks"][0].bool()
        assert torch.equal(seen, target["masks"][0].bool() & ~shapes)
        assert seen.sum() >= 0.35 * 1024 and out["area"][0] == seen.sum()
        assert out["boxes"][0].tolist() == _tight(seen)
        trimmed += bool(seen.sum() < 1024)
    assert trimmed >= 5


def test_no_pasted_pixel_falls_inside_the_box_of_an_instance_without_a_mask():
    torch.manual_seed(2)
    for _ in range(30):
        image, target = _scene()
        out_image, out = RandomShapes(1.0, count=(3, 3))(image, target)
        assert (out_image[:, 40:60, 40:60] == _UNTOUCHED).all()
        assert torch.equal(out["boxes"][1], target["boxes"][1])
        assert not out["masks"][1].any() and not out["mask_valid"][1]
        assert out["area"][1] == 400.0


def test_the_same_seed_pastes_the_same_shapes():
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        image, target = _scene()
        outs.append(RandomShapes(1.0)(image, target))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1]["masks"], outs[1][1]["masks"])


def test_a_per_instance_key_it_cannot_extend_is_refused():
    image, target = _scene()
    with pytest.raises(ValueError, match="keypoints"):
        RandomShapes(1.0)(image, dict(target, keypoints=torch.zeros(2, 3, 3)))


def test_random_shapes_vary_and_stay_inside_their_radius():
    torch.manual_seed(3)
    areas = []
    for _ in range(40):
        mask = random_shape_mask(96, 96, 15.0, hole=0.5)
        areas.append(int(mask.sum()))
        if mask.any():
            ys, xs = torch.nonzero(mask, as_tuple=True)
            # A radius of at most 15, stretched by at most 1.4: the box is under 2 * 21 + 2.
            assert int(ys.max() - ys.min()) <= 44 and int(xs.max() - xs.min()) <= 44
    assert len(set(areas)) > 30


def test_the_transform_comes_last_in_the_pipeline_and_the_config_checks_its_range(tmp_path):
    pipeline = training_transforms(0.5, background_holes=0.3, random_shapes=0.5,
                                   random_shapes_count=(2, 4)).transforms
    assert [type(t) for t in pipeline] == [RandomHorizontalFlip, BackgroundHoles, RandomShapes]
    assert pipeline[-1].p == 0.5 and pipeline[-1].count == (2, 4)
    assert [type(t) for t in training_transforms(0.5).transforms] == [RandomHorizontalFlip]
    data = ["data.train_annotations=a.json", "data.train_images=img"]
    cfg = load_config(None, [*data, "data.random_shapes=0.5", "data.random_shapes_count=[1, 2]"])
    assert cfg.data.random_shapes == 0.5 and cfg.data.random_shapes_count == (1, 2)
    assert load_config(None, data).data.random_shapes == 0.0
    with pytest.raises(ConfigError, match="random_shapes_count"):
        load_config(None, [*data, "data.random_shapes_count=[3, 1]"])
    with pytest.raises(ConfigError, match="random_shapes"):
        load_config(None, [*data, "data.random_shapes=1.5"])
