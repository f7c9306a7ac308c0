"""tf.data input pipelines over labelled image files, with the runtime's exact preprocessing.

Evaluation pixels equal `Preprocess.apply(tfdefakeq.runtime.images.load_image(path, size))`
exactly, so a Keras model and its `.tflite` on the device see the same input:
- center crop with top = (H - h) // 2, left = (W - w) // 2 (as `runtime.images.center_crop`);
- JPEGs are decoded with libjpeg's accurate integer DCT, as Pillow does (TensorFlow's default,
  the fast DCT, differs from Pillow by up to ~10 grey levels);
- images TensorFlow would decode differently from Pillow (16-bit, CMYK, TIFF, GIF, ...) are
  decoded by the runtime's own Pillow loader inside the pipeline.

Every file is checked up front (cheap: Pillow header + `verify()`), so a missing, corrupt,
truncated or too-small image is a UserError naming the file before training starts rather than a
TensorFlow error without a file name halfway through an epoch.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from tfdefakeq.data.augment import AugmentConfig, augment as augment_image
from tfdefakeq.data.folders import Sample
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import Preprocess
from tfdefakeq.core.tfcompat import tf

# How a file is decoded in the graph; chosen per file by `check_image`.
DECODE_PNG, DECODE_JPEG, DECODE_PIL = 0, 1, 2
# Pillow modes TensorFlow's decoders turn into the same 8-bit RGB as Pillow's convert("RGB").
_TF_PNG_MODES = {"L", "LA", "RGB", "RGBA", "P"}
_TF_JPEG_MODES = {"L", "RGB"}


def _has_jpeg_end(path: Path, tail_bytes: int = 4096) -> bool:
    # Pillow's verify() does not read JPEG scan data; a cut-off file lacks its end-of-image marker.
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - tail_bytes))
        return b"\xff\xd9" in f.read()


def check_image(path, input_size: tuple[int, int]) -> tuple[int, int, int]:
    """Checks that `path` is a readable image at least `input_size` = (height, width).

    Returns (decoder, height, width) where decoder is DECODE_PNG, DECODE_JPEG or DECODE_PIL.
    Raises UserError naming the file when it is missing, not an image, corrupt, truncated or too small.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            fmt, mode, (width, height) = im.format, im.mode, im.size
            im.verify()
    except FileNotFoundError as e:
        raise UserError(f"{path}: no such image file") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from e
    if fmt == "JPEG" and not _has_jpeg_end(path):
        raise UserError(f"{path}: truncated JPEG (no end-of-image marker)")
    h, w = input_size
    if height < h or width < w:
        raise UserError(f"{path}: image is {width}x{height}, smaller than the model input {w}x{h}")
    if fmt == "PNG" and mode in _TF_PNG_MODES:
        return DECODE_PNG, height, width
    if fmt == "JPEG" and mode in _TF_JPEG_MODES:
        return DECODE_JPEG, height, width
    return DECODE_PIL, height, width


def check_images(paths: Sequence, input_size: tuple[int, int], threads: int = 8) -> list[tuple[int, int, int]]:
    """`check_image` over many files (threaded: it is I/O bound); the first bad file in order raises."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda p: check_image(p, input_size), paths))


def _pil_decode(path: bytes, height, width) -> np.ndarray:
    from tfdefakeq.runtime.images import load_image

    # a "center crop" to the full size is the whole image, decoded exactly as the runtime does
    return load_image(path.decode(), (int(height), int(width)))


def decode(path: tf.Tensor, decoder: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Reads and decodes one file: uint8 (height, width, 3), grayscale replicated, alpha dropped."""
    def png():
        return tf.io.decode_png(tf.io.read_file(path), channels=3, dtype=tf.uint8)

    def jpeg():
        return tf.io.decode_jpeg(tf.io.read_file(path), channels=3, dct_method="INTEGER_ACCURATE")

    def pil():
        return tf.numpy_function(_pil_decode, [path, height, width], tf.uint8, stateful=False)

    image = tf.switch_case(decoder, [png, jpeg, pil])
    return tf.reshape(image, tf.stack([height, width, 3]))


def center_crop(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """(H, W, 3) -> (h, w, 3) with top = (H - h) // 2, left = (W - w) // 2, as the runtime crops."""
    h, w = size
    top = (tf.shape(image)[0] - h) // 2
    left = (tf.shape(image)[1] - w) // 2
    return tf.ensure_shape(image[top : top + h, left : left + w, :], [h, w, 3])


def make_dataset(
    samples: list[Sample],
    input_size: tuple[int, int],
    batch_size: int,
    training: bool,
    preprocess: Preprocess = Preprocess(),
    seed: int = 0,
    augment: bool = True,
    augment_config: AugmentConfig = AugmentConfig(),
    drop_remainder: bool = False,
    epochs: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Batches of (images float32 (B, h, w, 3) = (pixel - mean) / std, labels float32 (B, 1)).

    training=True: reshuffled every epoch, CNNDetection augmentation (blur, JPEG, flip; when
    `augment`), then a random crop to `input_size` = (h, w). training=False: file order, center
    crop. Deterministic for a given seed (stateless random ops; a new draw each epoch).
    epochs=(first, end), training only: one dataset holding epochs first .. end-1 back to back,
    each epoch's order and draws a function of (seed, epoch) alone, so a run resumed at epoch
    `first` sees exactly the batches the uninterrupted run saw (iterate it with
    steps_per_epoch = ceil(len(samples) / batch_size)).
    Raises UserError naming the first unreadable or too-small file.
    """
    if not samples:
        raise UserError("no images to read (the sample list is empty)")
    if batch_size < 1:
        raise UserError(f"batch_size: must be >= 1, got {batch_size}")
    h, w = int(input_size[0]), int(input_size[1])
    checked = check_images([s.path for s in samples], (h, w))
    paths = [str(s.path) for s in samples]
    labels = np.array([[float(s.label)] for s in samples], dtype=np.float32)
    decoders, heights, widths = (np.array(col, dtype=np.int32) for col in zip(*checked))
    files = tf.data.Dataset.from_tensor_slices((paths, decoders, heights, widths, labels))
    mean, std = tf.constant(preprocess.mean, tf.float32), tf.constant(preprocess.std, tf.float32)

    bgr = preprocess.channel_order == "bgr"

    def normalise(image):
        image = tf.cast(image, tf.float32)
        return ((image[..., ::-1] if bgr else image) - mean) / std

    def load_train(file, element_seed):
        path, decoder, height, width, label = file
        image = decode(path, decoder, height, width)
        aug_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(element_seed, 2))
        if augment:
            image = augment_image(image, aug_seed, augment_config)
        image = tf.image.stateless_random_crop(image, [h, w, 3], crop_seed)
        return normalise(image), label

    if training and epochs is not None:
        n = len(samples)

        def load_epoch_element(epoch, position, index):
            # the element's draws depend on (seed, epoch, position in the epoch) only
            element_seed = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + epoch, position])
            path, decoder, height, width, label = (tf.gather(t, index) for t in table)
            return load_train((path, decoder, height, width, label), element_seed)

        def one_epoch(epoch):
            order = tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([tf.cast(seed, tf.int64), epoch])))
            positions = tf.data.Dataset.range(n)
            return tf.data.Dataset.zip((positions, tf.data.Dataset.from_tensor_slices(tf.cast(order, tf.int64)))).map(
                lambda position, index: load_epoch_element(epoch, position, index), num_parallel_calls=tf.data.AUTOTUNE)

        table = [tf.constant(paths), tf.constant(decoders), tf.constant(heights), tf.constant(widths), tf.constant(labels)]
        first, end = epochs
        ds = tf.data.Dataset.range(first, end).flat_map(
            lambda epoch: one_epoch(epoch).batch(batch_size, drop_remainder=drop_remainder))
        return ds.prefetch(tf.data.AUTOTUNE)
    if training:
        files = files.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
        # one [2] seed per element, redrawn each epoch, reproducible from `seed`
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        ds = tf.data.Dataset.zip((files, seeds)).map(load_train, num_parallel_calls=tf.data.AUTOTUNE)
    else:

        def load_eval(path, decoder, height, width, label):
            return normalise(center_crop(decode(path, decoder, height, width), (h, w))), label

        ds = files.map(load_eval, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
