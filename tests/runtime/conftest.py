"""Fixtures for the runtime tests: tiny .tflite detectors (float32 and full int8) with manifests,
and a tiny ForenSynths tree of PNGs. Built once per session; only this file imports TensorFlow."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

IMAGE_SIZE = 16  # model input (16, 16, 3)
FILE_SIZE = 20  # PNGs are larger, so evaluation exercises the center crop
GENERATORS = ("gan_a", "gan_b")
PER_CLASS = 5


def synthetic_images(n: int, fake: bool, size: int, seed: int) -> np.ndarray:
    """Real: smooth colour gradients; fake: the same plus strong checkerboard-like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        base = np.stack([a * xx + b * yy + c for a, b, c in rng.uniform(-0.5, 0.5, (3, 3))], axis=-1)
        img = 128 + 100 * base
        if fake:
            img = img + rng.normal(0, 35, img.shape) * ((xx + yy) * size % 2)[..., None]
        else:
            img = img + rng.normal(0, 3, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="session")
def forensynths_root(tmp_path_factory) -> Path:
    """root/test/{gan_a,gan_b}/{0_real,1_fake}/*.png, 5 images per class, 20x20 pixels."""
    from PIL import Image

    root = tmp_path_factory.mktemp("forensynths")
    for g, generator in enumerate(GENERATORS):
        for label, folder in enumerate(("0_real", "1_fake")):
            d = root / "test" / generator / folder
            d.mkdir(parents=True)
            images = synthetic_images(PER_CLASS, bool(label), FILE_SIZE, seed=100 + 10 * g + label)
            for i, img in enumerate(images):
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """{"float32": path, "int8": path, "images": uint8 (8,16,16,3), "keras_logits": (8,)}.

    A small conv net (input 16x16x3, one logit, no sigmoid) fitted a few epochs on synthetic
    real/fake images, converted to float32 and to full int8 (int8 input and output), each with a
    sidecar manifest. Built once per session (tests.conftest.build_once).
    """
    from tests.conftest import build_once

    out = build_once(tmp_path_factory, "runtime_tiny_models", _build_tiny_models)
    arrays = np.load(out / "arrays.npz")
    return {"float32": out / "tiny_float32.tflite", "int8": out / "tiny_int8.tflite",
            "images": arrays["images"], "keras_logits": arrays["keras_logits"]}


def _build_tiny_models(out: Path) -> None:
    from tfdefakeq.core.manifest import Manifest, Preprocess, manifest_path
    from tfdefakeq.core.tfcompat import keras, tf

    preprocess = Preprocess()
    keras.utils.set_random_seed(0)
    real = synthetic_images(32, False, IMAGE_SIZE, seed=1)
    fake = synthetic_images(32, True, IMAGE_SIZE, seed=2)
    x = preprocess.apply(np.concatenate([real, fake]))
    y = np.r_[np.zeros(32), np.ones(32)].astype(np.float32)

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    logits = keras.layers.Dense(1)(h)
    model = keras.Model(inputs, logits)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=15, verbose=0, shuffle=True)

    def convert(int8: bool) -> bytes:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            def representative():
                for i in range(len(x)):
                    yield [x[i : i + 1]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Statistics for quantized inputs ..."
            return converter.convert()

    for fmt in ("float32", "int8"):
        path = out / f"tiny_{fmt}.tflite"
        path.write_bytes(convert(fmt == "int8"))
        Manifest(
            backbone="tiny_cnn",
            input_shape=[IMAGE_SIZE, IMAGE_SIZE, 3],
            format=fmt,
            scheme="float" if fmt == "float32" else "ptq_int8",
            preprocess=preprocess,
            size_bytes=path.stat().st_size,
        ).save(manifest_path(path))
    test_images = np.concatenate([synthetic_images(4, False, IMAGE_SIZE, 7), synthetic_images(4, True, IMAGE_SIZE, 8)])
    np.savez(out / "arrays.npz", images=test_images,
             keras_logits=model.predict(preprocess.apply(test_images), verbose=0).reshape(-1))
