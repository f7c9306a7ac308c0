"""keras.applications weights load into our backbones: reference built offline with random weights
(BatchNorm statistics included), saved, loaded into ours (by name; unnamed layers in order), same
outputs on the same input."""

import numpy as np
import pytest

from tfdefakeq.backbones import backbone_info, build, list_backbones
from tfdefakeq.backbones.weights import load_keras_weights
from tfdefakeq.core.tfcompat import keras

WITH_KERAS = [n for n in list_backbones() if backbone_info(n).keras_application]
REFERENCE_KWARGS = {"MobileNetV3Small": dict(include_preprocessing=False),
                    "MobileNetV3Large": dict(include_preprocessing=False)}
SIZE = {"xception": 71}  # keras.applications' minimum


def _randomize(model, seed=0):
    """Random weights everywhere, positive variances: a load that misses a layer shows."""
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.weights:
        value = rng.normal(0, 0.1, w.shape).astype(np.float32)
        if "moving_variance" in w.name or w.name.endswith("variance:0"):
            value = rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
        elif "gamma" in w.name:
            value = rng.uniform(0.8, 1.2, w.shape).astype(np.float32)
        weights.append(value)
    model.set_weights(weights)


def test_keras_application_backbones_are_the_expected_set():
    assert {"resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "xception", "efficientnet_b0",
            "efficientnet_b4"} <= set(WITH_KERAS)


@pytest.mark.parametrize("name", WITH_KERAS)
def test_keras_application_weights_load(name, tmp_path):
    info = backbone_info(name)
    size = SIZE.get(name, 64)
    reference = getattr(keras.applications, info.keras_application)(
        input_shape=(size, size, 3), weights=None, classes=10, classifier_activation=None,
        **REFERENCE_KWARGS.get(info.keras_application, {}))
    _randomize(reference)
    path = tmp_path / "reference.h5"
    reference.save_weights(path)
    ours = build(name, input_shape=(size, size, 3), num_classes=10)
    mapping = load_keras_weights(ours, path)
    assert len(mapping) == sum(1 for layer in ours.layers if layer.weights)

    pixels = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    x = pixels / 127.5 - 1.0
    stem = [layer for layer in reference.layers if type(layer).__name__ == "Normalization"]
    if stem:  # EfficientNet: ours starts where keras' Rescaling + Normalization stem ends
        reference_input = pixels
        x = keras.Model(reference.input, stem[-1].output)(pixels).numpy()
    else:
        reference_input = x
    ref_logits = reference(reference_input, training=False).numpy()
    ref_probs = np.exp(ref_logits - ref_logits.max(axis=1, keepdims=True))
    ref_probs /= ref_probs.sum(axis=1, keepdims=True)
    our_probs = ours(x, training=False).numpy()  # ours end in softmax for num_classes > 1
    np.testing.assert_allclose(our_probs, ref_probs, rtol=1e-3, atol=1e-5)
