from __future__ import annotations

import numpy as np
import pytest

from tfdefakeq.data.augment import AugmentConfig, augment, gaussian_blur, gaussian_kernel1d, random_blur, random_jpeg
from tfdefakeq.core.tfcompat import tf

OFF = dict(blur_prob=0.0, jpeg_prob=0.0, flip=False)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 48x40 uint8 photo-like image: smooth gradients plus texture (not symmetric)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:40]
    base = np.stack([xx * 5, yy * 4, (xx + yy) * 2], axis=2) + rng.normal(0, 25, (48, 40, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def _seed(i: int):
    return tf.constant([i, 12345], tf.int64)


def _detail(x) -> float:
    return float(np.mean(np.abs(np.diff(np.asarray(x, np.float64), axis=1))))


def test_gaussian_kernel():
    k = gaussian_kernel1d(2.0, 12).numpy()
    assert k.shape == (25,) and np.isclose(k.sum(), 1.0) and k.argmax() == 12
    delta = gaussian_kernel1d(0.0, 12).numpy()
    assert delta[12] == 1.0 and delta.sum() == 1.0


def test_gaussian_blur_matches_scipy(image):
    from scipy.ndimage import gaussian_filter

    x = image.astype(np.float32)
    ours = gaussian_blur(tf.constant(x), tf.constant(1.7)).numpy()
    ref = gaussian_filter(x, sigma=(1.7, 1.7, 0), mode="reflect", truncate=4.0)
    assert ours.shape == x.shape
    assert np.abs(ours - ref).max() < 0.05


def test_each_step_applies_with_probability_one_and_skips_with_zero(image):
    blurred = random_blur(tf.constant(image), _seed(0), prob=1.0, sigma_range=(2.0, 3.0)).numpy()
    assert blurred.dtype == np.uint8 and blurred.shape == image.shape
    assert _detail(blurred) < 0.5 * _detail(image)
    assert np.array_equal(random_blur(tf.constant(image), _seed(0), prob=0.0).numpy(), image)
    jpegged = random_jpeg(tf.constant(image), _seed(0), prob=1.0, quality_range=(30, 30)).numpy()
    assert jpegged.dtype == np.uint8 and not np.array_equal(jpegged, image)
    assert np.array_equal(random_jpeg(tf.constant(image), _seed(0), prob=0.0).numpy(), image)


def test_flip_only_mirrors(image):
    outs = [augment(image, _seed(i), AugmentConfig(blur_prob=0.0, jpeg_prob=0.0, flip=True)).numpy() for i in range(16)]
    assert all(np.array_equal(o, image) or np.array_equal(o, image[:, ::-1]) for o in outs)
    assert any(np.array_equal(o, image) for o in outs) and any(np.array_equal(o, image[:, ::-1]) for o in outs)
    assert np.array_equal(augment(image, _seed(0), AugmentConfig(**OFF)).numpy(), image)


def test_augment_keeps_dtype_and_shape_changes_images_and_is_seeded(image):
    outs = [augment(image, _seed(i)).numpy() for i in range(24)]
    assert all(o.dtype == np.uint8 and o.shape == image.shape for o in outs)
    changed = sum(not np.array_equal(o, image) for o in outs)
    assert 16 <= changed < 24  # untouched only when no blur, no JPEG and no flip were drawn (p = 1/8)
    assert np.array_equal(augment(image, _seed(5)).numpy(), outs[5])
    with pytest.raises(TypeError, match="uint8"):
        augment(tf.zeros((8, 8, 3)), _seed(0))


def test_augment_runs_in_a_parallel_tf_data_map(image):
    ds = tf.data.Dataset.from_tensors(image).repeat(8)
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=1).batch(2)))
    ds = ds.map(lambda x, s: augment(x, s), num_parallel_calls=4)
    first = [x.numpy() for x in ds]
    second = [x.numpy() for x in ds]
    assert len(first) == 8 and all(x.shape == image.shape and x.dtype == np.uint8 for x in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))  # same seed, same draws
    assert ds.element_spec.shape == image.shape


def test_augment_accepts_dynamic_shapes(image):
    fn = tf.function(lambda x, s: augment(x, s), input_signature=[
        tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int64)])
    out = fn(tf.constant(image), _seed(3)).numpy()
    assert out.shape == image.shape and out.dtype == np.uint8
