"""Horizontal flips move image, boxes and masks together; background holes change only the
supervised instance they cut, and keep its box tight."""

import pytest
import torch

from boxmask.data.coco import CocoInstances
from boxmask.data.transforms import (
    BackgroundHoles,
    RandomHorizontalFlip,
    hflip,
    training_transforms,
)


def _mask_box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0]


def test_flip_keeps_boxes_on_their_masks_and_undoes_itself(tiny_synth):
    root, _ = tiny_synth
    ds = CocoInstances(root / "images/train", root / "annotations/instances_train.json",
                       seen_ids={1, 2, 3, 4, 5, 6, 7, 8})
    image, target = ds[0]
    fimage, ftarget = hflip(image, target)
    assert torch.equal(fimage, image.flip(-1))
    assert torch.equal(ftarget["labels"], target["labels"])
    for box, mask in zip(ftarget["boxes"], ftarget["masks"], strict=True):
        assert box.tolist() == _mask_box(mask)  # synthetic boxes are tight around the mask
    # The masked pixels keep their colours: the image and masks moved together.
    for mask, fmask in zip(target["masks"], ftarget["masks"], strict=True):
        assert torch.equal((image * mask).flip(-1), fimage * fmask)
    back_image, back = hflip(fimage, ftarget)
    assert torch.equal(back_image, image) and torch.equal(back["boxes"], target["boxes"])
    assert torch.equal(back["masks"], target["masks"])
    assert target["boxes"] is not ftarget["boxes"]  # the input target is left alone


def test_random_flip_respects_its_probability():
    image = torch.arange(6.0).reshape(1, 1, 6).expand(3, 2, 6)
    target = {"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "masks": torch.zeros(1, 2, 6)}
    torch.manual_seed(0)
    assert torch.equal(RandomHorizontalFlip(1.0)(image, target)[1]["boxes"],
                       torch.tensor([[4.0, 0.0, 6.0, 2.0]]))
    assert RandomHorizontalFlip(0.0)(image, target)[0] is image
    flips = sum(bool(RandomHorizontalFlip(0.5)(image, target)[0][0, 0, 0] == 5) for _ in range(200))
    assert 60 < flips < 140
    assert training_transforms(0.0).transforms == []


def _scene() -> tuple[torch.Tensor, dict]:
    """A 40x40 image: grey background with a gradient, a red seen square (mask given) at
    [4, 14) x [4, 14) and a blue unseen square (no mask) at [24, 34) x [24, 34)."""
    image = torch.full((3, 40, 40), 0.5)
    image[0] += torch.linspace(0, 0.2, 40)[None, :]  # background drifts left to right
    image[:, 4:14, 4:14] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    image[:, 24:34, 24:34] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
    masks = torch.zeros(2, 40, 40, dtype=torch.uint8)
    masks[0, 4:14, 4:14] = 1
    target = {"boxes": torch.tensor([[4.0, 4.0, 14.0, 14.0], [24.0, 24.0, 34.0, 34.0]]),
              "labels": torch.tensor([1, 2]), "masks": masks,
              "mask_valid": torch.tensor([True, False]), "area": torch.tensor([100.0, 100.0])}
    return image, target


def test_background_holes_cut_only_the_supervised_mask_and_copy_background_into_it():
    image, target = _scene()
    holes = BackgroundHoles(1.0)
    cut = 0
    for seed in range(30):
        torch.manual_seed(seed)
        out_image, out = holes(image, target)
        removed = target["masks"][0].bool() & ~out["masks"][0].bool()
        assert not (out["masks"][0].bool() & ~target["masks"][0].bool()).any()  # only removes
        if not removed.any():
            continue
        cut += 1
        kept = int(out["masks"][0].sum())
        assert kept >= 0.4 * 100 and out["area"][0] == kept
        # What was cut shows background now (no red left), and nothing else in the image moved.
        assert (out_image[0, removed] < 0.8).all() and (out_image[2, removed] == 0.5).all()
        assert torch.equal(out_image[:, ~removed], image[:, ~removed])
        # The box is re-fitted tight around what is left; the unseen one is left alone.
        assert out["boxes"][0].tolist() == _mask_box(out["masks"][0])
        assert torch.equal(out["boxes"][1], target["boxes"][1])
        assert torch.equal(out["masks"][1], target["masks"][1])
    assert cut >= 20  # with p = 1 nearly every try cuts (a few find too big a blob)
    # The input is never modified.
    fresh_image, fresh = _scene()
    assert torch.equal(image, fresh_image) and torch.equal(target["masks"], fresh["masks"])
    assert torch.equal(target["boxes"], fresh["boxes"])


def test_background_holes_skip_what_they_cannot_do():
    image, target = _scene()
    assert BackgroundHoles(0.0)(image, target)[1] is target
    # No supervised mask: nothing to cut.
    unsupervised = dict(target, mask_valid=torch.tensor([False, False]))
    assert BackgroundHoles(1.0)(image, unsupervised)[1] is unsupervised
    # Boxes over the whole image: no background to copy from.
    covered = dict(target, boxes=torch.tensor([[0.0, 0.0, 40.0, 40.0], [24.0, 24.0, 34.0, 34.0]]))
    assert BackgroundHoles(1.0)(image, covered)[1] is covered
    with pytest.raises(ValueError, match="probability"):
        BackgroundHoles(1.5)
    pipeline = training_transforms(0.5, background_holes=0.3).transforms
    assert [type(t) for t in pipeline] == [RandomHorizontalFlip, BackgroundHoles]
