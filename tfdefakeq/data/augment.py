"""CNNDetection training augmentation as TensorFlow graph ops, for use inside `tf.data` map functions.

Wang et al. (CNNDetection, "CNN-generated images are surprisingly easy to spot... for now") train
with Gaussian blur (p=0.5, sigma ~ U[0, 3]) then JPEG (p=0.5, quality ~ U{30..100}) so the detector
does not lean on cues that blur or recompression destroy; then a random crop and a horizontal flip.
The crop lives in `tfdefakeq.data.reader`; the rest is here.

All randomness is stateless: every function takes a `seed` tensor of shape [2] (int32/int64), so a
tf.data pipeline is reproducible with parallel map calls. Images are uint8 tensors (H, W, 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tfdefakeq.core.tfcompat import tf


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the CNNDetection augmentation (its defaults)."""

    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.0, 3.0)  # px, uniform
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)  # inclusive, uniform integer
    flip: bool = True


def gaussian_kernel1d(sigma, radius: int) -> tf.Tensor:
    """Normalised 1-D Gaussian taps, float32 shape (2*radius+1,); sigma may be a scalar tensor.

    sigma -> 0 gives a delta (the exp underflows to 0 off-centre), i.e. no blur.
    """
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.maximum(tf.cast(sigma, tf.float32), 1e-6)
    taps = tf.exp(-0.5 * tf.square(x / sigma))
    return taps / tf.reduce_sum(taps)


def gaussian_blur(image: tf.Tensor, sigma, max_sigma: float = 3.0, truncate: float = 4.0) -> tf.Tensor:
    """Separable Gaussian blur: float32 (H, W, C) -> float32 (H, W, C).

    The kernel has a fixed radius ceil(truncate * max_sigma) (12 px for sigma <= 3, as
    scipy.ndimage.gaussian_filter's truncate=4) so one graph serves every sampled sigma; its taps are
    built from `sigma`. Borders are mirrored (scipy's "reflect" = tf "SYMMETRIC"), which needs
    H and W of at least the radius.
    """
    radius = int(math.ceil(truncate * max_sigma))
    channels = image.shape[-1]
    k = gaussian_kernel1d(sigma, radius)
    kernel_y = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, channels, 1])  # (2r+1, 1, C, 1)
    kernel_x = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, channels, 1])  # (1, 2r+1, C, 1)
    x = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    x = tf.nn.depthwise_conv2d(x, kernel_y, strides=[1, 1, 1, 1], padding="VALID")
    x = tf.nn.depthwise_conv2d(x, kernel_x, strides=[1, 1, 1, 1], padding="VALID")
    return x[0]


def _to_uint8(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def random_blur(image: tf.Tensor, seed, prob: float = 0.5, sigma_range=(0.0, 3.0)) -> tf.Tensor:
    """With probability `prob`, Gaussian blur with sigma ~ U[sigma_range]: uint8 (H, W, 3) -> uint8."""
    coin_seed, sigma_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    sigma = tf.random.stateless_uniform([], sigma_seed, sigma_range[0], sigma_range[1])
    apply = tf.random.stateless_uniform([], coin_seed) < prob
    blurred = lambda: _to_uint8(gaussian_blur(tf.cast(image, tf.float32), sigma, max_sigma=max(sigma_range[1], 1e-3)))
    return tf.cond(apply, blurred, lambda: tf.identity(image))


def random_jpeg(image: tf.Tensor, seed, prob: float = 0.5, quality_range=(30, 100)) -> tf.Tensor:
    """With probability `prob`, JPEG round trip at quality ~ U{quality_range} (inclusive): uint8 -> uint8."""
    coin_seed, quality_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    quality = tf.random.stateless_uniform(
        [], quality_seed, quality_range[0], quality_range[1] + 1, dtype=tf.int32
    )
    apply = tf.random.stateless_uniform([], coin_seed) < prob
    compressed = lambda: tf.image.adjust_jpeg_quality(image, quality)
    out = tf.cond(apply, compressed, lambda: tf.identity(image))
    return tf.ensure_shape(out, image.shape)


def augment(image: tf.Tensor, seed, config: AugmentConfig = AugmentConfig()) -> tf.Tensor:
    """Blur (p=0.5, sigma U[0,3]) -> JPEG (p=0.5, quality U{30..100}) -> random horizontal flip.

    image: uint8 (H, W, 3) (static or dynamic H, W); seed: int tensor of shape [2]. Returns uint8
    of the same shape. Deterministic for a given (image, seed).
    """
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise TypeError(f"augment expects a uint8 image, got {image.dtype.name}")
    blur_seed, jpeg_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    x = random_blur(image, blur_seed, config.blur_prob, config.blur_sigma)
    x = random_jpeg(x, jpeg_seed, config.jpeg_prob, config.jpeg_quality)
    if config.flip:
        x = tf.image.stateless_random_flip_left_right(x, flip_seed)
    return tf.ensure_shape(x, image.shape)
