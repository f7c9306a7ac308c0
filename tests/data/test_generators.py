from __future__ import annotations

import numpy as np
import pytest

from tfdefakeq.data import generators as G


def _photo_crops(n: int = 24, size: int = 64) -> np.ndarray:
    """Real 64 px crops of two shipped photos (uint8 (n, size, size, 3))."""
    from tfdefakeq.data.synthetic import SyntheticConfig, cut_crops, load_photos

    photos, _ = load_photos(("astronaut", "coffee"))
    crops = [c.image for p in photos for c in cut_crops(p, SyntheticConfig(size=size, scales=(1,)))]
    return np.stack(crops[:: max(1, len(crops) // n)][:n])


def _nyquist_peak(images: np.ndarray) -> float:
    """Mean log-spectrum at the period-2 frequencies minus its value 2 bins away (0 = no peak)."""
    gray = images.astype(np.float64).mean(axis=3)
    spec = np.mean([np.log(np.abs(np.fft.fft2(g - g.mean())) + 1e-6) for g in gray], axis=0)
    n = spec.shape[0] // 2
    peak = np.mean([spec[n, 0], spec[0, n], spec[n, n]])
    beside = np.mean([spec[n - 2, 0], spec[n + 2, 0], spec[0, n - 2], spec[0, n + 2], spec[n - 2, n - 2], spec[n + 2, n + 2]])
    return float(peak - beside)


def _high_freq_energy(images: np.ndarray) -> float:
    gray = images.astype(np.float64).mean(axis=3)
    return float(np.mean(np.abs(np.diff(gray, axis=2))))


@pytest.mark.parametrize("kind", G.UPSAMPLING_KINDS)
def test_autoencoder_is_fully_convolutional_with_its_upsampling(kind):
    from tfdefakeq.core.tfcompat import keras

    model = G.build_autoencoder(kind)
    for size in (32, 64):
        assert model(np.zeros((2, size, size, 3), np.float32)).shape == (2, size, size, 3)
    types = [type(layer).__name__ for layer in model.layers]
    assert types.count("Conv2D") >= 2  # two strided convs down
    assert all(not isinstance(layer, keras.Model) for layer in model.layers)  # flat
    if kind == "transposed":
        assert types.count("Conv2DTranspose") == 2
    else:
        ups = [layer for layer in model.layers if isinstance(layer, keras.layers.UpSampling2D)]
        assert len(ups) == 2 and all(u.interpolation == kind for u in ups)


def test_build_autoencoder_rejects_unknown_kind():
    with pytest.raises(ValueError, match="upsampling"):
        G.build_autoencoder("pixelshuffle")


def test_train_autoencoder_is_seeded_and_learns():
    crops = list(_photo_crops(8))
    a, loss_a = G.train_autoencoder(crops, "transposed", steps=25, seed=3)
    b, loss_b = G.train_autoencoder(crops, "transposed", steps=25, seed=3)
    c, _ = G.train_autoencoder(crops, "transposed", steps=25, seed=4)
    assert loss_a == loss_b
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert not all(np.array_equal(x, y) for x, y in zip(a.get_weights(), c.get_weights()))
    fakes = G.apply_autoencoder(a, np.stack(crops))
    assert fakes.dtype == np.uint8 and fakes.shape == np.stack(crops).shape
    assert np.array_equal(fakes, G.apply_autoencoder(b, np.stack(crops)))
    # after 25 steps it reconstructs better than a constant grey image would
    assert np.abs(fakes.astype(int) - np.stack(crops)).mean() < np.abs(np.stack(crops).astype(int) - 128).mean()


def test_bilinear_kernel_upsamples_without_artifacts():
    kernel = G.bilinear_kernel()
    assert kernel.shape == (4, 4) and np.isclose(kernel.sum(), 4.0)  # each output phase sums to 1
    flat = np.full((8, 8, 3), 100.0)
    assert np.allclose(G.transposed_conv2x(flat, kernel), 100.0)
    ramp = np.tile(np.arange(8.0)[None, :, None], (8, 1, 1))
    up = G.transposed_conv2x(ramp, kernel)[0, 1:-1, 0]
    # bilinear with half-pixel centres: a linear ramp stays linear (slope halves) away from the edges
    assert np.allclose(np.diff(up), 0.5)


def test_perturbed_upsample_shape_dtype_and_seeding():
    image = _photo_crops(1)[0]
    out = G.perturbed_upsample(image, 0.05, np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, G.perturbed_upsample(image, 0.05, np.random.default_rng(1)))
    assert not np.array_equal(out, G.perturbed_upsample(image, 0.05, np.random.default_rng(2)))
    with pytest.raises(ValueError, match="even"):
        G.perturbed_upsample(image[:63], 0.05, np.random.default_rng(0))


def test_perturbed_upsample_leaves_a_spectral_peak_that_survives_jpeg():
    reals = _photo_crops(24)
    rng = np.random.default_rng(0)
    fakes = np.stack([G.perturbed_upsample(x, 0.02, rng) for x in reals])
    plain = np.stack([G.perturbed_upsample(x, 0.0, rng) for x in reals])  # exact bilinear: no peak
    assert _nyquist_peak(reals) < 0.5
    assert _nyquist_peak(plain) < 0.5
    assert _nyquist_peak(fakes) > _nyquist_peak(reals) + 1.5
    jpegged = np.stack([G.jpeg(x, 85) for x in fakes])
    assert _nyquist_peak(jpegged) > _nyquist_peak(np.stack([G.jpeg(x, 85) for x in reals])) + 1.0


def test_jpeg_round_trip():
    image = _photo_crops(1)[0]
    low, high = G.jpeg(image, 30), G.jpeg(image, 95)
    assert low.shape == image.shape and low.dtype == np.uint8
    assert not np.array_equal(high, image)
    assert np.abs(high.astype(int) - image).mean() < np.abs(low.astype(int) - image).mean()
    assert np.array_equal(G.jpeg(image, 80), G.jpeg(image, 80))


def test_launder_resamples_and_removes_fine_detail():
    images = _photo_crops(8)
    laundered = np.stack([G.launder(x) for x in images])
    assert laundered.shape == images.shape and laundered.dtype == np.uint8
    assert _high_freq_energy(laundered) < 0.8 * _high_freq_energy(images)
    assert np.abs(laundered.astype(int) - images).mean() < 20  # same picture, resampled
