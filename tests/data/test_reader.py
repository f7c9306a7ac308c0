from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfdefakeq.data.folders import Sample, scan_forensynths
from tfdefakeq.data.reader import DECODE_JPEG, DECODE_PIL, DECODE_PNG, check_image, make_dataset
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import Preprocess
from tfdefakeq.runtime.images import load_image


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 3, yy * 3, (xx + yy) * 2], axis=2) + rng.normal(0, 30, (h, w, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mixed_files(tmp_path_factory) -> list[Sample]:
    """Images in the formats and modes a user's folder may hold, with odd sizes (center-crop parity)."""
    d = tmp_path_factory.mktemp("mixed")
    rgb = _rgb(45, 51, 0)
    Image.fromarray(rgb).save(d / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(d / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 90, np.uint8)])).save(d / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png")
    Image.fromarray(rgb).save(d / "420.jpg", quality=80)
    Image.fromarray(rgb).save(d / "444.jpg", quality=95, subsampling=0)
    Image.fromarray(rgb[..., 1]).save(d / "gray.jpg", quality=90)
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg", quality=90)
    Image.fromarray((rgb[..., 2].astype(np.uint16) * 257)).save(d / "gray16.png")
    Image.fromarray(rgb).save(d / "rgb.tif")
    names = ["rgb.png", "gray.png", "rgba.png", "palette.png", "420.jpg", "444.jpg", "gray.jpg", "cmyk.jpg", "gray16.png", "rgb.tif"]
    return [Sample(d / n, i % 2, "mixed") for i, n in enumerate(names)]


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_eval_output_equals_runtime_preprocessing_exactly(mixed_files):
    preprocess = Preprocess(mean=100.0, std=57.0)
    x, y = _collect(make_dataset(mixed_files, (32, 37), batch_size=4, training=False, preprocess=preprocess))
    expected = preprocess.apply(np.stack([load_image(s.path, (32, 37)) for s in mixed_files]))
    assert x.dtype == np.float32 and x.shape == (len(mixed_files), 32, 37, 3)
    for i, sample in enumerate(mixed_files):
        assert np.array_equal(x[i], expected[i]), sample.path.name
    assert y.dtype == np.float32 and y.shape == (len(mixed_files), 1)
    assert y[:, 0].tolist() == [s.label for s in mixed_files]


def test_decoder_choice(mixed_files):
    decoders = {s.path.name: check_image(s.path, (8, 8))[0] for s in mixed_files}
    assert decoders["rgb.png"] == decoders["palette.png"] == DECODE_PNG
    assert decoders["420.jpg"] == decoders["gray.jpg"] == DECODE_JPEG
    assert decoders["cmyk.jpg"] == decoders["gray16.png"] == decoders["rgb.tif"] == DECODE_PIL
    assert check_image(mixed_files[0].path, (8, 8))[1:] == (45, 51)


def test_eval_on_generated_dataset(synthetic_root):
    samples = scan_forensynths(synthetic_root, "test")
    x, y = _collect(make_dataset(samples, (64, 64), batch_size=16, training=False))
    expected = Preprocess().apply(np.stack([load_image(s.path, (64, 64)) for s in samples]))
    assert np.array_equal(x, expected)
    assert y[:, 0].tolist() == [float(s.label) for s in samples]


def test_training_batches_are_random_crops_seeded_and_redrawn_each_epoch(mixed_files):
    samples = mixed_files[:4]
    ds = make_dataset(samples, (24, 24), batch_size=3, training=True, seed=7)
    epoch1, labels1 = _collect(ds)
    epoch2, _ = _collect(ds)
    assert epoch1.shape == (4, 24, 24, 3) and epoch1.dtype == np.float32
    assert labels1.shape == (4, 1) and sorted(labels1[:, 0]) == sorted(float(s.label) for s in samples)
    assert epoch1.min() >= -1.0 and epoch1.max() <= 1.0
    assert not np.array_equal(epoch1, epoch2)  # reshuffled / re-augmented
    again, _ = _collect(make_dataset(samples, (24, 24), batch_size=3, training=True, seed=7))
    assert np.array_equal(again, epoch1)  # same seed, same first epoch
    other, _ = _collect(make_dataset(samples, (24, 24), batch_size=3, training=True, seed=8))
    assert not np.array_equal(other, epoch1)


def test_training_without_augmentation_gives_crops_of_the_image(tmp_path):
    image = _rgb(40, 40, 1)
    Image.fromarray(image).save(tmp_path / "a.png")
    ds = make_dataset([Sample(tmp_path / "a.png", 1, "g")] * 6, (16, 16), 6, training=True, augment=False)
    crops = next(iter(ds))[0].numpy()
    normalised = Preprocess().apply(image)
    windows = {normalised[t : t + 16, l : l + 16].tobytes(): (t, l) for t in range(25) for l in range(25)}
    found = [windows.get(c.tobytes()) for c in crops]
    assert None not in found and len(set(found)) > 1  # every output is a crop; not always the same one


def _write_bytes(path: Path, data: bytes) -> Sample:
    path.write_bytes(data)
    return Sample(path, 0, "g")


def _png(h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_rgb(h, w, 2)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_rgb(h, w, 2)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, data, message",
    [
        pytest.param(name, data, message, id=name)
        for name, data, message in [
            ("small.png", _png(20, 40), "image is 40x20, smaller than the model input 32x32"),
            ("empty.png", b"", "not a readable image"),
            ("garbage.jpg", b"not an image at all" * 10, "not a readable image"),
            ("cut.png", _png(40, 40)[:300], "not a readable image"),
            ("cut.jpg", _jpeg(64, 64)[:-300], "truncated JPEG"),  # header intact, scan data cut
        ]
    ],
)
def test_bad_files_are_user_errors_naming_the_file(tmp_path, name, data, message):
    good = _write_bytes(tmp_path / "good.png", _png(40, 40))
    bad = _write_bytes(tmp_path / name, data)
    for training in (False, True):
        with pytest.raises(UserError, match=message) as exc:
            make_dataset([good, bad], (32, 32), 2, training=training)
        assert str(exc.value).startswith(f"{bad.path}: ")


def test_missing_file_and_empty_list(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'gone.png'}: no such image file"):
        make_dataset([Sample(tmp_path / "gone.png", 0, "g")], (8, 8), 1, training=False)
    with pytest.raises(UserError, match="empty"):
        make_dataset([], (8, 8), 1, training=False)
