from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.images import center_crop, load_image, load_images


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_is_center_cropped_exactly(tmp_path):
    image = _rgb(45, 52)
    Image.fromarray(image).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png", (32, 31))
    assert out.dtype == np.uint8 and out.shape == (32, 31, 3)
    assert np.array_equal(out, image[6:38, 10:41])  # top = 13 // 2, left = 21 // 2
    assert out.flags["C_CONTIGUOUS"]


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _rgb(20, 20)[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png", (20, 20))
    assert out.shape == (20, 20, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))


def test_rgba_drops_alpha_and_palette_expands(tmp_path):
    image = _rgb(16, 16)
    Image.fromarray(np.dstack([image, np.full((16, 16), 7, np.uint8)])).save(tmp_path / "a.png")
    assert np.array_equal(load_image(tmp_path / "a.png", (16, 16)), image)
    pal = Image.fromarray(image).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    assert np.array_equal(load_image(tmp_path / "p.png", (16, 16)), np.asarray(pal.convert("RGB")))


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    image = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    Image.fromarray(image).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    out = load_image(tmp_path / "c.jpg", (16, 16))
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - image).max() < 12


def test_16_bit_grayscale_keeps_the_top_8_bits(tmp_path):
    gray8 = _rgb(12, 12)[..., 0]
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # 0..65535
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")
    out = load_image(tmp_path / "g16.png", (12, 12))
    assert out.dtype == np.uint8 and np.array_equal(out[..., 1], gray8)
    # 16-bit files holding only 8-bit values are not darkened to 0
    Image.fromarray(gray8.astype(np.uint16)).save(tmp_path / "low16.png")
    assert np.array_equal(load_image(tmp_path / "low16.png", (12, 12))[..., 0], gray8)


def _jpeg_bytes(h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_rgb(h, w)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, data",
    [("empty.png", b""), ("cut.jpg", _jpeg_bytes(64, 64)[:-400]), ("text.png", b"hello, not a picture")],
    ids=["zero-byte", "truncated", "not-an-image"],
)
def test_unreadable_files_are_user_errors_naming_the_file(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(UserError, match="not a readable image") as exc:
        load_image(tmp_path / name, (8, 8))
    assert str(exc.value).startswith(f"{tmp_path / name}: ")
    assert "\n" not in str(exc.value)


def test_missing_and_too_small(tmp_path):
    with pytest.raises(UserError, match=f"^{tmp_path / 'nope.png'}: no such image file"):
        load_image(tmp_path / "nope.png", (8, 8))
    Image.fromarray(_rgb(10, 30)).save(tmp_path / "small.png")
    with pytest.raises(UserError, match=f"^{tmp_path / 'small.png'}: image is 30x10, smaller than the model input 16x16"):
        load_image(tmp_path / "small.png", (16, 16))
    with pytest.raises(UserError, match="smaller"):
        center_crop(_rgb(10, 30), (12, 12))


def test_load_images_stacks(tmp_path):
    for i in range(3):
        Image.fromarray(_rgb(20, 24, i)).save(tmp_path / f"{i}.png")
    batch = load_images([tmp_path / f"{i}.png" for i in range(3)], (16, 16))
    assert batch.shape == (3, 16, 16, 3) and batch.dtype == np.uint8
    assert load_images([], (16, 16)).shape == (0, 16, 16, 3)
