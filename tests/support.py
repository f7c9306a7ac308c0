"""Shared test helpers: the one export check every model test calls (after keras-hub's
`run_litert_export_test`): build -> train briefly -> QAT -> convert -> invoke in ai-edge-litert ->
compare."""

from __future__ import annotations

import os

import numpy as np


def random_images(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (n, size, size, 3), float32 labels (n, 1)).

    Smooth random structure plus noise; odd images carry a faint 2-pixel checkerboard, the trace an
    upsampling layer leaves, so a detector can learn the labels in a few steps.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 127 + 80 * np.sin(2 * np.pi * (xx[None, ..., None] * rng.uniform(0.5, 3, (n, 1, 1, 3))
                                          + yy[None, ..., None] * rng.uniform(0.5, 3, (n, 1, 1, 3))))
    labels = (np.arange(n) % 2).astype(np.float32)
    checker = ((np.indices((size, size)).sum(axis=0) % 2) * 2 - 1)[None, ..., None] * 12.0
    images = base + rng.normal(0, 10, (n, size, size, 3)) + labels[:, None, None, None] * checker
    return np.clip(images, 0, 255).astype(np.uint8), labels[:, None]


def set_batchnorm_statistics_like_trained(model, rng: np.random.Generator, spread: float = 0.3) -> None:
    """Every BatchNormalization's gamma, beta, moving mean and variance drawn away from the identity,
    as after training (gamma in [0.5, 1.5], beta and mean ~ N(0, spread), variance in [0.5, 2])."""
    from tfdefakeq.core.tfcompat import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, spread, c), rng.normal(0, spread, c), rng.uniform(0.5, 2, c)])


def export_and_compare(model, scheme: str, fmt: str, tmp_path, images_uint8: np.ndarray, labels: np.ndarray,
                       backbone: str = "test", float_steps: int = 800, qat_epochs: int = 1, require_parity: bool = True):
    """Trains float `model` on (images, labels) for `float_steps` steps, enough for the BatchNorm
    moving statistics to settle (an untrained net's logits are tiny and output LSBs meaningless), quantizes it under `scheme` (or keeps it float), fine-tunes,
    converts to `fmt` through tfdefakeq.convert (which raises ParityError on disagreement, unless
    `require_parity` is False: the manifest then records it).

    Returns (written manifest, .tflite path, Keras model that was converted).
    """
    from tfdefakeq.engine.export import convert_model
    from tfdefakeq.core.manifest import Manifest, Preprocess
    from tfdefakeq.quant import quantize, weight_bits
    from tfdefakeq.core.tfcompat import keras

    x = Preprocess().apply(images_uint8)

    def fit(m, lr, epochs, batch_size=8, eager=False):
        m.compile(keras.optimizers.Adam(lr), keras.losses.BinaryCrossentropy(from_logits=True), run_eagerly=eager)
        m.fit(x, labels, batch_size=batch_size, epochs=epochs, verbose=0)

    if float_steps:
        fit(model, 1e-3, epochs=-(-float_steps * 4 // len(x)), batch_size=4)
    qat = model if scheme == "float" else quantize(model, scheme, x)
    if scheme != "float" and qat_epochs:
        # eager: these few steps cost less than tracing the QAT graph's training step (measured on the tiny
        # MobileNetV3-Large of the zoo test, 4 steps: 3.2 CPU s eager, 13.9 traced); the same updates
        fit(qat, 1e-4, qat_epochs, eager=len(x) * qat_epochs <= 8 * 16)
    manifest = Manifest(backbone=backbone, input_shape=list(x.shape[1:]), format="keras", scheme=scheme,
                        weight_bits=weight_bits(qat) if scheme != "float" else {})
    path = tmp_path / f"{backbone}_{scheme}_{fmt}.tflite"
    written = convert_model(qat, manifest, fmt, images_uint8, path, require_parity=require_parity)
    return written, path, qat


def fail_os_replace_on_call(monkeypatch, n: int) -> list:
    """os.replace fails on its n-th call (1-based), as a full disk or a kill would; returns the list the
    destinations of every call are recorded in."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == n:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def load_benchmark(name: str):
    """The module benchmarks/<name>.py (not a package), imported for its helpers."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
