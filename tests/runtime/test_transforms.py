"""The runtime's numpy preprocessing must equal torchvision's GeneralizedRCNNTransform."""

from __future__ import annotations

import numpy as np
import pytest

from boxmask.runtime.transforms import (
    ResizeInfo,
    boxes_to_original,
    boxes_to_resized,
    preprocess,
    resized_size,
)

torch = pytest.importorskip("torch")
transform_mod = pytest.importorskip("torchvision.models.detection.transform")

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _torchvision(min_size: int, max_size: int):
    return transform_mod.GeneralizedRCNNTransform(min_size, max_size, list(MEAN), list(STD)).eval()


@pytest.mark.parametrize(
    ("h", "w", "min_size", "max_size"),
    [
        (480, 640, 800, 1333),
        (333, 501, 800, 1333),
        (1080, 1920, 800, 1333),
        (100, 3000, 800, 1333),
        (37, 53, 64, 96),
        (64, 96, 64, 96),
        (97, 61, 64, 96),
        (7, 11, 800, 1333),
        (1001, 999, 64, 96),
    ],
)
def test_resized_size_matches_torchvision(h: int, w: int, min_size: int, max_size: int) -> None:
    image = torch.zeros(3, h, w)
    with torch.no_grad():
        out, _ = transform_mod._resize_image_and_masks(image, min_size, max_size)
    assert resized_size(h, w, min_size, max_size) == tuple(out.shape[-2:])


@pytest.mark.parametrize(("h", "w"), [(48, 80), (70, 50), (64, 96), (200, 130)])
def test_preprocessed_pixels_match_torchvision_after_normalisation(h: int, w: int) -> None:
    rng = np.random.default_rng(h * w)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    batch, info = preprocess(image, 64, 96, 32, MEAN)

    with torch.no_grad():
        images, _ = _torchvision(64, 96)([torch.from_numpy(image).permute(2, 0, 1).float() / 255])
    expected = images.tensors.numpy()
    # What the graphs do first: normalise the 0..255 input.
    ours = (batch / 255 - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[
        :, None, None
    ]

    assert info.resized_size == tuple(images.image_sizes[0])
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=2e-4, rtol=0)
    # The padding is zero after normalisation, as torchvision's.
    nh, nw = info.resized_size
    assert (
        np.abs(ours[..., nh:, :]).max(initial=0) < 1e-6
        and np.abs(ours[..., :, nw:]).max(initial=0) < 1e-6
    )


def test_padding_reaches_a_multiple_of_size_divisible() -> None:
    batch, info = preprocess(np.zeros((50, 70, 3), np.uint8), 64, 96, 32)
    assert info.resized_size == (64, 89)  # s = min(64 / 50, 96 / 70) = 1.28; 70 * 1.28 = 89.6
    assert info.padded_size == batch.shape[-2:] == (64, 96)


def test_boxes_map_with_torchvisions_resize_boxes() -> None:
    info = ResizeInfo(original_size=(333, 501), resized_size=(800, 1203), padded_size=(800, 1216))
    boxes = np.array([[0, 0, 501, 333], [10.5, 20.25, 100, 300]], np.float32)
    expected_resized = transform_mod.resize_boxes(
        torch.from_numpy(boxes), (333, 501), (800, 1203)
    ).numpy()
    np.testing.assert_array_equal(boxes_to_resized(boxes, info), expected_resized)
    expected_back = transform_mod.resize_boxes(
        torch.from_numpy(expected_resized), (800, 1203), (333, 501)
    ).numpy()
    np.testing.assert_array_equal(boxes_to_original(expected_resized, info), expected_back)
