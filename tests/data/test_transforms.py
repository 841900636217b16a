"""Horizontal flips move image, boxes and masks together."""

import torch

from boxmask.data.coco import CocoInstances
from boxmask.data.transforms import RandomHorizontalFlip, hflip, training_transforms


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
    for box, mask in zip(ftarget["boxes"], ftarget["masks"]):
        assert box.tolist() == _mask_box(mask)  # synthetic boxes are tight around the mask
    # The masked pixels keep their colours: the image and masks moved together.
    for mask, fmask in zip(target["masks"], ftarget["masks"]):
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
