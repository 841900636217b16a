"""Decoding: EXIF orientation, colour modes, 16-bit, and clear errors for bad images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from boxmask.runtime.errors import BadImage
from boxmask.runtime.images import image_key, load_image


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _rgb(h: int = 12, w: int = 20) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_bytes_decode_to_the_same_rgb_array() -> None:
    rgb = _rgb()
    assert np.array_equal(load_image(_encode(Image.fromarray(rgb))), rgb)


def test_exif_orientation_is_applied() -> None:
    rgb = _rgb(12, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = load_image(_encode(Image.fromarray(rgb), "JPEG", exif=exif, quality=100))
    assert decoded.shape == (20, 12, 3)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "1"])
def test_other_colour_modes_become_rgb(mode: str) -> None:
    image = Image.fromarray(_rgb()).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = load_image(_encode(image, fmt))
    assert decoded.shape == (12, 20, 3) and decoded.dtype == np.uint8


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    a = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    decoded = load_image(_encode(Image.fromarray(a)))
    assert decoded[0, :, 0].tolist() == [0, 100, 255]


@pytest.mark.parametrize(
    ("array", "expected_shape"),
    [
        (np.zeros((5, 6), np.uint8), (5, 6, 3)),
        (np.zeros((5, 6, 4), np.uint8), (5, 6, 3)),
        (np.zeros((5, 6, 1), np.uint16), (5, 6, 3)),
    ],
)
def test_arrays_of_other_layouts_become_rgb(
    array: np.ndarray, expected_shape: tuple[int, ...]
) -> None:
    assert load_image(array).shape == expected_shape


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image"),
        (np.zeros((5, 6, 2), np.uint8), "HxW"),
        (np.zeros((5, 6, 3), np.float32), "uint8"),
        (np.zeros((0, 6, 3), np.uint8), "no pixels"),
    ],
)
def test_bad_inputs_raise_bad_image(data: object, message: str) -> None:
    with pytest.raises(BadImage, match=message):
        load_image(data)  # type: ignore[arg-type]


def test_truncated_image_raises_bad_image() -> None:
    data = _encode(Image.fromarray(_rgb(64, 64)), "JPEG")
    with pytest.raises(BadImage, match=r"truncated|corrupt"):
        load_image(data[: len(data) // 2])


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = _encode(Image.new("L", (4000, 3000)))
    with pytest.raises(BadImage, match="more than the limit"):
        load_image(data, max_pixels=1_000_000)
    with pytest.raises(BadImage, match="more than the limit"):
        load_image(np.zeros((2000, 1000, 3), np.uint8), max_pixels=1_000_000)
    assert load_image(data, max_pixels=None).shape == (3000, 4000, 3)


def test_key_is_the_sha256_of_the_bytes_and_distinguishes_array_shapes() -> None:
    import hashlib

    data = _encode(Image.fromarray(_rgb()))
    assert image_key(data) == hashlib.sha256(data).hexdigest()
    a = np.zeros((4, 6, 3), np.uint8)
    assert image_key(a) != image_key(a.reshape(6, 4, 3))
    assert image_key(a) == image_key(a.copy())


def test_arrays_that_differ_only_in_their_last_rows_get_different_keys() -> None:
    # The batch labeler and CVAT hand the predictor decoded arrays: a key over only part of
    # the pixels would serve one image's cached features for another of the same size.
    a = np.zeros((256, 256, 3), np.uint8)
    b = a.copy()
    b[-1, -1, -1] = 1
    assert image_key(a) != image_key(b)
    c = a.copy()
    c[128:] = 255  # the whole lower half, far past any prefix of the buffer
    assert image_key(a) != image_key(c)
    # Views that are not contiguous are keyed by their pixels too.
    assert image_key(a[:, ::2]) != image_key(c[:, ::2])
