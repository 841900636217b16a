"""Mask pasting equals torchvision's; RLE, polygon and PNG encodings round-trip."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from boxmask.runtime.masks import (
    from_png,
    from_rle,
    paste_mask,
    paste_mask_probs,
    paste_masks,
    polygons_to_mask,
    to_png,
    to_polygons,
    to_rle,
)


def _random_case(seed: int, n: int, h: int, w: int, r: int = 28) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.random((n, r, r), dtype=np.float32)
    x1 = rng.uniform(-20, w, n)
    y1 = rng.uniform(-20, h, n)
    x2 = np.maximum(x1 + rng.uniform(0.2, w, n), 1.5)
    y2 = np.maximum(y1 + rng.uniform(0.2, h, n), 1.5)
    # Every box overlaps the image, as the runtime guarantees (torchvision itself fails on a box
    # wholly above or left of the image: its negative slice indices wrap around).
    return probs, np.stack([x1, y1, x2, y2], 1).astype(np.float32)


@pytest.mark.parametrize(("seed", "h", "w"), [(0, 60, 80), (1, 33, 47), (2, 200, 120), (3, 5, 7)])
def test_pasted_masks_equal_the_torch_models_paste(seed: int, h: int, w: int) -> None:
    torch = pytest.importorskip("torch")
    paste = pytest.importorskip("boxmask.model.paste")
    torch.set_num_threads(1)
    probs, boxes = _random_case(seed, 40, h, w)
    # Boxes with integer corners, tiny boxes and boxes past the border are the edge cases.
    boxes[:5] = np.round(boxes[:5])
    boxes[5] = [3.0, 3.0, 3.4, 3.2]
    boxes[6] = [-5.0, -7.0, w + 9.0, h + 3.0]

    expected = paste.paste_masks(
        torch.from_numpy(probs)[:, None], torch.from_numpy(boxes), (h, w)
    )[:, 0].numpy()
    ours = paste_mask_probs(probs, boxes, h, w)

    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    decided = np.abs(expected - 0.5) > 1e-5  # pixels a float rounding cannot flip
    assert np.array_equal(paste_masks(probs, boxes, h, w)[decided], (expected > 0.5)[decided])


def test_paste_is_grid_sample_with_zeros_outside_the_grid() -> None:
    """Detectron2's paste: pixel centres read the box's grid with grid_sample(align_corners=False)."""
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("torch.nn.functional")
    probs, boxes = _random_case(7, 6, 40, 50)
    ours = paste_mask_probs(probs, boxes, 40, 50)
    for i in range(len(boxes)):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        gx = (torch.arange(50) + 0.5 - x1) / (x2 - x1) * 2 - 1
        gy = (torch.arange(40) + 0.5 - y1) / (y2 - y1) * 2 - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
        ref = functional.grid_sample(torch.from_numpy(probs[i])[None, None], grid,
                                     align_corners=False)[0, 0].numpy()
        np.testing.assert_allclose(ours[i], ref, atol=1e-5, rtol=0)


def test_a_mask_cropped_aligned_onto_its_box_pastes_back_whole() -> None:
    """Crop a true mask onto its box as training does (roi_align aligned=True) and paste it:
    the mask comes back (torchvision's paste moved such masks by up to a pixel)."""
    torch = pytest.importorskip("torch")
    pseudo = pytest.importorskip("boxmask.model.pseudo_masks")
    yy, xx = np.mgrid[:64, :80]
    disc = ((yy - 30.3) ** 2 + (xx - 41.7) ** 2 < 13.0**2).astype(np.uint8)
    square = np.zeros((64, 80), np.uint8)
    square[10:38, 13:41] = 1
    for mask in (disc, square):
        ys, xs = np.nonzero(mask)
        box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        cells = pseudo.project_masks_on_rois(torch.from_numpy(mask)[None], torch.from_numpy(box),
                                             torch.tensor([0]), 28).numpy()
        back = paste_masks(cells, box, 64, 80)[0]
        iou = (back & (mask > 0)).sum() / (back | (mask > 0)).sum()
        assert iou > 0.99, iou


def test_a_torchvision_grid_mask_pastes_back_with_the_half_pixel_offset() -> None:
    """torchvision's targets sit half a pixel down-right of the aligned grid: pasted at the box
    they lose a rim, pasted at the box moved by grid_offset they come back."""
    torch = pytest.importorskip("torch")
    pseudo = pytest.importorskip("boxmask.model.pseudo_masks")
    paste = pytest.importorskip("boxmask.model.paste")
    yy, xx = np.mgrid[:64, :80]
    disc = ((yy - 30.3) ** 2 + (xx - 41.7) ** 2 < 9.0**2).astype(np.uint8)
    ys, xs = np.nonzero(disc)
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    cells = pseudo.project_masks_on_rois(torch.from_numpy(disc)[None], torch.from_numpy(box),
                                         torch.tensor([0]), 28, aligned=False).numpy()

    def iou(mask: np.ndarray) -> float:
        return (mask & (disc > 0)).sum() / (mask | (disc > 0)).sum()

    offset = paste.grid_offset(False, (64, 80), (64, 80))
    assert offset == (0.5, 0.5)
    assert paste.grid_offset(False, (100, 200), (50, 100)) == (1.0, 1.0)  # resized pixels
    assert paste.grid_offset(True, (64, 80), (32, 40)) == (0.0, 0.0)
    shifted = iou(paste_mask(cells[0], box[0], 64, 80, offset=offset))
    assert shifted > 0.95 and shifted > iou(paste_mask(cells[0], box[0], 64, 80)) + 0.05
    ours = paste.paste_masks(torch.from_numpy(cells)[:, None], torch.from_numpy(box), (64, 80),
                             offset)[0, 0].numpy() > 0.5
    assert np.array_equal(ours, paste_mask(cells[0], box[0], 64, 80, offset=offset))


def test_paste_masks_accepts_torchvision_layout_and_zero_masks() -> None:
    probs, boxes = _random_case(4, 3, 20, 30)
    assert np.array_equal(
        paste_masks(probs[:, None], boxes, 20, 30), paste_masks(probs, boxes, 20, 30)
    )
    assert paste_masks(
        np.zeros((0, 28, 28), np.float32), np.zeros((0, 4), np.float32), 20, 30
    ).shape == (0, 20, 30)


def test_a_box_outside_the_image_pastes_nothing() -> None:
    out = paste_masks(
        np.ones((1, 28, 28), np.float32), np.array([[50, 50, 60, 60]], np.float32), 20, 30
    )
    assert not out.any()


def test_full_mask_fills_its_box() -> None:
    out = paste_masks(
        np.ones((1, 28, 28), np.float32), np.array([[10, 5, 20, 15]], np.float32), 30, 40
    )[0]
    ys, xs = np.nonzero(out)
    # The one-pixel padding fades the border; the inside of the box is all set.
    assert out[6:15, 11:20].all()
    assert ys.min() >= 4 and ys.max() <= 16 and xs.min() >= 9 and xs.max() <= 21


def _shapes(h: int = 40, w: int = 60, k: int = 1) -> np.ndarray:
    """A disc and a separate rectangle, `k` times larger than on a 40 x 60 canvas."""
    yy, xx = np.mgrid[: h * k, : w * k] / k
    mask = (yy - 15) ** 2 + (xx - 20) ** 2 < 100
    mask |= (yy > 28) & (yy < 36) & (xx > 40) & (xx < 55)
    return mask


def test_rle_round_trip_is_exact() -> None:
    mask = _shapes()
    rle = to_rle(mask)
    assert rle["size"] == [40, 60] and isinstance(rle["counts"], str)
    assert np.array_equal(from_rle(rle), mask)
    assert np.array_equal(from_rle(to_rle(np.zeros((3, 4), bool))), np.zeros((3, 4), bool))


def test_uncompressed_rle_is_read() -> None:
    mask = np.zeros((3, 4), bool)
    mask[1, 1:3] = True
    # Column-major runs: 4 zeros, 1 one, 2 zeros, 1 one, 4 zeros.
    assert np.array_equal(from_rle({"size": [3, 4], "counts": [4, 1, 2, 1, 4]}), mask)


def test_polygons_round_trip_closely_and_one_per_component() -> None:
    mask = _shapes(k=4)
    polygons = to_polygons(mask)
    assert len(polygons) == 2
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
    back = polygons_to_mask(polygons, *mask.shape)
    # A polygon through boundary pixel centres covers half of each boundary pixel: what is lost
    # is a thin rim (relatively larger for small shapes), and nothing outside the mask is added.
    assert (back & mask).sum() / (back | mask).sum() > 0.95
    assert not (back & ~mask).any()


def test_degenerate_contours_are_dropped() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2, 2] = True  # a single pixel: contour of one point
    mask[5, 3:8] = True  # a one-pixel line: contour of two points
    assert to_polygons(mask) == []
    assert to_polygons(np.zeros((5, 5), bool)) == []
    # A zigzag one pixel wide has a contour of many points and no area: pycocotools decodes it
    # to nothing (a labeler once wrote such "masked" annotations).
    zigzag = np.zeros((12, 8), bool)
    for row, col in enumerate([2, 3, 2, 3, 2, 2, 2]):
        zigzag[3 + row, col] = True
    assert to_polygons(zigzag) == []
    # Beside a real shape, only the shape's polygon is kept, and it decodes to pixels.
    zigzag[0:3, 5:8] = True
    kept = to_polygons(zigzag)
    assert len(kept) == 1 and polygons_to_mask(kept, 12, 8).any()


@pytest.mark.parametrize("bits", [1, 8])
def test_png_round_trip(bits: int) -> None:
    mask = _shapes()
    data = to_png(mask, bits=bits)
    assert data.startswith(b"\x89PNG")
    with Image.open(__import__("io").BytesIO(data)) as image:
        assert image.mode == ("1" if bits == 1 else "L")
        assert image.size == (60, 40)
    assert np.array_equal(from_png(data), mask)


def test_bad_mask_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="one mask"):
        to_rle(np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError, match="bits"):
        to_png(np.zeros((2, 2), bool), bits=4)


def test_the_tight_box_covers_exactly_the_masks_pixels() -> None:
    """xyxy around the set pixels, pixel (x, y) covering [x, x+1) x [y, y+1): COCO's bbox of
    the same mask, as xyxy; None for an empty mask; only the box's own pixels are read."""
    from boxmask.runtime.masks import mask_box

    mask = np.zeros((20, 30), bool)
    assert mask_box(mask) is None
    mask[5, 3] = True
    assert mask_box(mask) == (3.0, 5.0, 4.0, 6.0)
    mask[9:12, 7:20] = True
    assert mask_box(mask) == (3.0, 5.0, 20.0, 12.0)
    x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))
    assert mask_box(mask) == (x, y, x + w, y + h)
    # Read within a box (a mask cropped to it: `paste_mask`), the answer is the same.
    assert mask_box(mask, np.array([2.5, 4.2, 21.0, 12.5])) == (3.0, 5.0, 20.0, 12.0)
    assert mask_box(mask, np.array([6.0, 8.0, 25.0, 15.0])) == (7.0, 9.0, 20.0, 12.0)


def test_a_cropped_mask_encodes_to_the_planes_rle() -> None:
    """RLE from a box's pixels alone is the string pycocotools makes of the whole plane: windows
    anywhere, the image's full height or width (a run crossing from one column to the next),
    the last pixel set, empty and full windows."""
    from boxmask.runtime.masks import CroppedMask

    rng = np.random.default_rng(0)
    for _ in range(600):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        y1, x1 = int(rng.integers(y0, h + 1)), int(rng.integers(x0, w + 1))
        if rng.random() < 0.3:
            y0, y1 = 0, h
        if rng.random() < 0.2:
            x0, x1 = 0, w
        pixels = rng.random((y1 - y0, x1 - x0)) < rng.choice([0.0, 0.3, 0.9, 1.0])
        cropped = CroppedMask(pixels, y0, x0, (h, w))
        plane = cropped.full()
        assert to_rle(cropped) == to_rle(plane)


def test_a_pasted_crop_is_the_pasted_plane() -> None:
    """`paste_cropped_mask` (the box's pixels read off its grid) is `paste_masks`' plane cut to
    the box, with and without a grid offset; `paste_mask` is its plane; RLE and tight box agree."""
    from boxmask.runtime.masks import box_pixels, mask_box, paste_cropped_mask

    probs, boxes = _random_case(11, 30, 50, 70)
    boxes[0] = [-5.0, -7.0, 79.0, 53.0]  # the whole image
    boxes[1] = [10.0, 0.0, 30.0, 50.0]  # its full height
    boxes[2] = [3.0, 3.0, 3.4, 3.2]  # thinner than the offset
    for offset in ((0.0, 0.0), (0.5, 0.5)):
        shift = np.array([*offset, *offset], np.float32)
        pasted = paste_masks(probs, boxes + shift, 50, 70)
        for prob, box, whole in zip(probs, boxes, pasted, strict=True):
            y0, y1, x0, x1 = box_pixels(box, 50, 70)
            expected = np.zeros_like(whole)
            expected[y0:y1, x0:x1] = whole[y0:y1, x0:x1]
            cropped = paste_cropped_mask(prob, box, 50, 70, offset=offset)
            assert cropped.shape == (50, 70)
            assert np.array_equal(cropped.full(), expected)
            assert np.array_equal(paste_mask(prob, box, 50, 70, offset=offset), expected)
            assert to_rle(cropped) == to_rle(expected)
            assert mask_box(cropped) == mask_box(expected, box)
