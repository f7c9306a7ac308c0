"""Image decoding for the runtime: Pillow + numpy, no TensorFlow.

Training (`tfdefakeq.data.reader`) and evaluation both center-crop to the model input and normalise
with the manifest's `Preprocess`, so Keras and TFLite see the same pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError


def load_image(path, size: tuple[int, int]) -> np.ndarray:
    """Decodes `path` to uint8 RGB and center-crops it to `size` = (height, width).

    Grayscale, RGBA, palette, CMYK and 16-bit images are converted to 8-bit RGB. Raises UserError
    naming the file when it cannot be decoded or is smaller than `size`.
    """
    return center_crop(decode_image(path), size, Path(path))


def decode_image(path) -> np.ndarray:
    """Decodes `path` to a uint8 RGB array (H, W, 3) at its full size (see `load_image`)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale: keep the top 8 bits rather than letting PIL clip to 255.
                arr16 = np.asarray(im, dtype=np.uint32)
                gray = (arr16 >> 8 if arr16.max() > 255 else arr16).astype(np.uint8)
                arr = np.repeat(gray[..., None], 3, axis=2)
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as e:
        raise UserError(f"{path}: no such image file") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from e
    return arr


def center_crop(arr: np.ndarray, size: tuple[int, int], path=None) -> np.ndarray:
    h, w = size
    if arr.shape[0] < h or arr.shape[1] < w:
        raise UserError(
            f"{path or 'image'}: image is {arr.shape[1]}x{arr.shape[0]}, smaller than the model input {w}x{h}"
        )
    top = (arr.shape[0] - h) // 2
    left = (arr.shape[1] - w) // 2
    return np.ascontiguousarray(arr[top : top + h, left : left + w, :3])


def load_images(paths, size: tuple[int, int]) -> np.ndarray:
    """Stack of `load_image` results: uint8 array of shape (N, height, width, 3)."""
    return np.stack([load_image(p, size) for p in paths]) if paths else np.zeros((0, *size, 3), np.uint8)
