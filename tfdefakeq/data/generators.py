"""Fake-image generators with real upsampling artifacts, and the post-processing that hides the easy cues.

Two families, after the observation (ForenSynths, AutoGAN) that what betrays a generated image is
its upsampling: the periodic spectral peaks left by transposed convolutions or interpolation.

- `train_autoencoder` / `apply_autoencoder`: an AutoGAN-style tf-keras autoencoder (2 strided convs
  down, 2 upsampling steps up) trained with L1 reconstruction on real patches; fake = AE(real).
- `perturbed_upsample`: numpy, 2x area down then a stride-2 transposed conv whose bilinear 4x4
  kernel gets per-tap Gaussian noise; `sigma` sets how visible the checkerboard is.

Post-processing applied when the dataset is written (`tfdefakeq.data.synthetic`):
`jpeg` at quality 75-95 on both classes, and `launder` (bicubic 2x down-up) on half the reals, so
that neither "was compressed" nor "was resampled" alone means fake.

TensorFlow is imported only by the autoencoder functions; the rest is numpy + Pillow.
All images are uint8 arrays of shape (H, W, 3) unless said otherwise.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np

UPSAMPLING_KINDS = ("transposed", "nearest", "bilinear")


# --- autoencoder -------------------------------------------------------------------------------


def build_autoencoder(upsampling: str = "transposed", width: int = 32, name: str | None = None):
    """AutoGAN-style autoencoder: (None, None, 3) in [-1, 1] -> same shape, linear output.

    Down: Conv 3x3 stride 2 (`width` ch), Conv 3x3 stride 2 (2*`width` ch). Up, twice by 2x:
    "transposed" = Conv2DTranspose 4x4 stride 2; "nearest"/"bilinear" = UpSampling2D + Conv 3x3.
    The last upsampling step outputs the 3 colour channels itself, so its artifacts are not
    smoothed away by a later layer. Fully convolutional: any H, W divisible by 4.
    """
    from tfdefakeq.core.tfcompat import keras

    if upsampling not in UPSAMPLING_KINDS:
        raise ValueError(f"upsampling must be one of {UPSAMPLING_KINDS}, got {upsampling!r}")
    layers = keras.layers
    x_in = keras.Input((None, None, 3), name="image")
    x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name="down1")(x_in)
    x = layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu", name="down2")(x)
    for i, (channels, activation) in enumerate([(width, "relu"), (3, None)], start=1):
        if upsampling == "transposed":
            x = layers.Conv2DTranspose(
                channels, 4, strides=2, padding="same", activation=activation, name=f"up{i}"
            )(x)
        else:
            x = layers.UpSampling2D(2, interpolation=upsampling, name=f"up{i}_{upsampling}")(x)
            x = layers.Conv2D(channels, 3, padding="same", activation=activation, name=f"up{i}_conv")(x)
    return keras.Model(x_in, x, name=name or f"autoencoder_{upsampling}")


def sample_patches(images: Sequence[np.ndarray], count: int, patch_size: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random patches (uint8, shape (count, patch_size, patch_size, 3)) from `images`.

    A photo is picked with probability proportional to its area, so large photos are not
    under-sampled; images smaller than the patch are skipped.
    """
    usable = [im for im in images if im.shape[0] >= patch_size and im.shape[1] >= patch_size]
    if not usable:
        raise ValueError(f"no training image is at least {patch_size}x{patch_size}")
    areas = np.array([im.shape[0] * im.shape[1] for im in usable], dtype=np.float64)
    which = rng.choice(len(usable), size=count, p=areas / areas.sum())
    out = np.empty((count, patch_size, patch_size, 3), np.uint8)
    for k, i in enumerate(which):
        im = usable[i]
        top = rng.integers(0, im.shape[0] - patch_size + 1)
        left = rng.integers(0, im.shape[1] - patch_size + 1)
        out[k] = im[top : top + patch_size, left : left + patch_size, :3]
    return out


def train_autoencoder(
    images: Sequence[np.ndarray],
    upsampling: str = "transposed",
    steps: int = 600,
    batch_size: int = 32,
    patch_size: int = 32,
    learning_rate: float = 2e-3,
    seed: int = 0,
    width: int = 32,
    progress=None,
):
    """Trains `build_autoencoder(upsampling)` with L1 reconstruction on random patches of `images`.

    images: uint8 (H, W, 3) real training photos (the train split only, so the generator never
    sees test photos). Deterministic for a given seed on a given machine: weights come from
    `keras.utils.set_random_seed(seed)` and the patches from a numpy generator seeded the same way.
    progress: optional callable(step_done) (e.g. a tqdm `update`).
    Returns (model, final_l1) where final_l1 is the mean L1 over the last 50 steps, in [0, 1] units.
    """
    from tfdefakeq.core.tfcompat import keras, tf

    keras.utils.set_random_seed(seed)
    model = build_autoencoder(upsampling, width=width)
    optimizer = keras.optimizers.Adam(learning_rate)
    rng = np.random.default_rng([seed, 0xAE])

    @tf.function(reduce_retracing=True)
    def train_step(x):
        with tf.GradientTape() as tape:
            # L1 in [-1, 1] units; halved below to report it in [0, 1] pixel units.
            loss = tf.reduce_mean(tf.abs(model(x, training=True) - x))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    losses = []
    for _ in range(steps):
        batch = sample_patches(images, batch_size, patch_size, rng)
        x = batch.astype(np.float32) / 127.5 - 1.0
        losses.append(float(train_step(tf.constant(x))))
        if progress is not None:
            progress(1)
    final_l1 = float(np.mean(losses[-50:])) / 2 if losses else float("nan")
    return model, final_l1


def apply_autoencoder(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """fake = AE(real): uint8 (N, H, W, 3) -> uint8 (N, H, W, 3); H, W divisible by 4."""
    images = np.asarray(images, dtype=np.uint8)
    out = np.empty_like(images)
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].astype(np.float32) / 127.5 - 1.0
        y = np.asarray(model(x, training=False))
        out[start : start + batch_size] = np.clip(np.rint((y + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return out


# --- perturbed upsampler -----------------------------------------------------------------------


def bilinear_kernel() -> np.ndarray:
    """The 4x4 stride-2 transposed-conv kernel that performs exact bilinear 2x upsampling."""
    k = np.array([0.25, 0.75, 0.75, 0.25])
    return np.outer(k, k)


def area_downsample(image: np.ndarray, factor: int = 2) -> np.ndarray:
    """Box (area) downsample: float (H, W, C) -> float (H//factor, W//factor, C); edges trimmed."""
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    x = np.asarray(image[:h, :w], dtype=np.float64)
    return x.reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))


def transposed_conv2x(low: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Stride-2 transposed conv, 4x4 kernel, padding 1: float (h, w, C) -> float (2h, 2w, C).

    out[2i]   = k[1] * low[i] + k[3] * low[i-1]
    out[2i+1] = k[2] * low[i] + k[0] * low[i+1]      (per axis; edges replicated)
    With `bilinear_kernel()` this is bilinear upsampling; any deviation of the taps makes the four
    output phases differ, the periodic pattern real generators leave.
    """
    p = np.pad(low, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = low.shape[:2]
    # per output parity: [(kernel tap, offset into the padded array)] along one axis
    taps = {0: [(1, 1), (3, 0)], 1: [(2, 1), (0, 2)]}
    out = np.empty((2 * h, 2 * w, low.shape[2]), dtype=np.float64)
    for py in (0, 1):
        for px in (0, 1):
            acc = np.zeros_like(low, dtype=np.float64)
            for ky, oy in taps[py]:
                for kx, ox in taps[px]:
                    acc += kernel[ky, kx] * p[oy : oy + h, ox : ox + w]
            out[py::2, px::2] = acc
    return out


def perturbed_upsample(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """2x area down, then 2x up by a transposed conv with a freshly perturbed bilinear kernel.

    image: uint8 (H, W, 3), H and W even. sigma: std of the Gaussian noise added to each of the 16
    taps (the bilinear taps are 0.0625-0.5625); 0 gives plain bilinear resampling. One kernel per
    image, shared by the colour channels. Returns uint8 of the same shape.
    """
    image = np.asarray(image)
    if image.shape[0] % 2 or image.shape[1] % 2:
        raise ValueError(f"image height and width must be even, got {image.shape[:2]}")
    kernel = bilinear_kernel() + rng.normal(0.0, sigma, size=(4, 4))
    up = transposed_conv2x(area_downsample(image, 2), kernel)
    return np.clip(np.rint(up), 0, 255).astype(np.uint8)


# --- post-processing ---------------------------------------------------------------------------


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip in memory with Pillow (4:2:0 chroma, its default): uint8 (H, W, 3) -> same."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def launder(image: np.ndarray, factor: int = 2) -> np.ndarray:
    """Bicubic down by `factor` then back up (Pillow, antialiased): uint8 (H, W, 3) -> same shape.

    Applied to half of the REAL images, so that resampling traces alone do not mean fake.
    """
    from PIL import Image

    h, w = image.shape[:2]
    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    small = im.resize((max(1, w // factor), max(1, h // factor)), Image.Resampling.BICUBIC)
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC).convert("RGB"), dtype=np.uint8)
