"""Turning what a client sends (encoded bytes or an array) into an RGB uint8 image, and its key.

Decoding is Pillow's: EXIF orientation is applied (a phone photo is segmented the way a person
sees it), grayscale / palette / CMYK / RGBA are converted to RGB (alpha is dropped, not
composited), 16-bit images are scaled to 8 bits (Pillow's own conversion would clip them).
The pixel limit is checked from the header, before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from boxmask.runtime.errors import BadImage

DEFAULT_MAX_PIXELS = 50_000_000
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def image_key(image: bytes | np.ndarray) -> str:
    """sha256 hex of the encoded bytes, or of an array's shape, dtype and bytes."""
    digest = hashlib.sha256()
    if isinstance(image, np.ndarray):
        digest.update(f"ndarray{image.shape}{image.dtype.str}".encode())
        digest.update(np.ascontiguousarray(image).data)
    else:
        digest.update(image)
    return digest.hexdigest()


def _check_size(h: int, w: int, max_pixels: int | None) -> None:
    if h <= 0 or w <= 0:
        raise BadImage(f"image has no pixels ({w}x{h})")
    if max_pixels is not None and h * w > max_pixels:
        raise BadImage(f"image has {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}")


def _scale_16_bit(a: np.ndarray) -> np.ndarray:
    # 65535 / 257 = 255: the full 16-bit range onto the full 8-bit range.
    return (a.astype(np.uint32) // 257).astype(np.uint8)


def array_to_rgb(a: np.ndarray, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An `[H, W]`, `[H, W, 1|3|4]` uint8 or uint16 array as `[H, W, 3]` uint8 RGB.

    Arrays are taken as RGB(A) already (as the contract says): no channel swapping happens here.
    """
    if not isinstance(a, np.ndarray):
        raise BadImage(f"expected a numpy array or encoded image bytes, got {type(a).__name__}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise BadImage(f"image array must be HxW, HxWx3 or HxWx4, got shape {a.shape}")
    _check_size(a.shape[0], a.shape[1], max_pixels)
    if a.dtype == np.uint16:
        a = _scale_16_bit(a)
    elif a.dtype != np.uint8:
        raise BadImage(f"image array must be uint8 or uint16, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def decode_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, WebP, TIFF, BMP, GIF, ...) as `[H, W, 3]` uint8 RGB."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadImage(f"expected encoded image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise BadImage("empty image body")
    try:
        with warnings.catch_warnings():
            # Our own limit applies; Pillow's global one (a warning, then an error at 2x) is a
            # process-wide setting that a library must not change.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            _check_size(img.height, img.width, max_pixels)
            img.load()
            img = ImageOps.exif_transpose(img)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image: the bytes are in no format Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise BadImage(f"image has too many pixels: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # A cut-off file raises OSError("image file is truncated ...") or EOFError; a corrupt
        # one other OSErrors ("broken data stream", "decoder error"): say which.
        if isinstance(e, EOFError) or "truncated" in str(e).lower():
            raise BadImage(f"image file is truncated: {e}") from None
        raise BadImage(f"image could not be decoded (corrupt data): {e}") from None

    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "I":
        a = np.asarray(img)
        # Mode "I" also holds 16-bit PNGs on some Pillow versions: scale if values need it.
        a = _scale_16_bit(np.clip(a, 0, 65535)) if a.max(initial=0) > 255 else a.astype(np.uint8)
        return array_to_rgb(a, max_pixels)
    if img.mode == "F":
        return array_to_rgb(np.clip(np.asarray(img), 0, 255).astype(np.uint8), max_pixels)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def load_image(
    image: bytes | np.ndarray, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Either kind of input as `[H, W, 3]` uint8 RGB; raises `BadImage` with the reason."""
    if isinstance(image, np.ndarray):
        return array_to_rgb(image, max_pixels)
    return decode_image(image, max_pixels)
