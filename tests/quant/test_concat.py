"""A multi-source Concatenate is quantized once, at the concat, in Keras as in TFLite.

TFLite's CONCATENATION is a same-scale op: the converter writes each input of the concat at the
concat's one scale and drops any FakeQuant range of the inputs' own. A Keras QAT graph that rounds
each branch at its own range first computes something TFLite never does (MesoInception-4's
inception modules were 1-4 LSB off op by op). Toy: stem -> two branches (conv + BN + ReLU | conv +
BN) -> concat -> conv -> pool -> logit, under every scheme family.
"""

import numpy as np
import pytest

from tests.support import random_images, set_batchnorm_statistics_like_trained

SCHEMES = [("tfmot_int8", "int8"), ("w8a8", "int8"), ("w4a8", "int4"), ("lsq_w4a8", "int4"), ("adaptive", "int4")]


def _toy_model():
    from tfdefakeq.core.tfcompat import keras

    L = keras.layers
    keras.utils.set_random_seed(5)
    inputs = keras.Input((32, 32, 3), name="image")
    x = L.ReLU(name="stem_relu")(L.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs))
    a = L.ReLU(name="a_relu")(L.BatchNormalization(name="a_bn")(L.Conv2D(4, 1, name="a")(x)))
    b = L.BatchNormalization(name="b_bn")(L.Conv2D(4, 3, padding="same", name="b")(x))
    x = L.Concatenate(name="cat")([a, b])
    x = L.ReLU(name="after_relu")(L.Conv2D(8, 3, padding="same", name="after")(x))
    outputs = L.Dense(1, name="logit")(L.GlobalAveragePooling2D(name="pool")(x))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(5)
    set_batchnorm_statistics_like_trained(model, rng)  # as after training
    return model


def _output_quantized(layer) -> bool:
    """The QAT wrapper rounds its output: an output quantizer or a post-activation FakeQuant."""
    return bool(layer._output_quantizers) or any(a._should_post_quantize() for a in layer._quantize_activations)


def test_concat_fed_layers_are_the_concats_only_quantizing_inputs():
    from tfdefakeq.quant.fold import fold_batchnorm
    from tfdefakeq.quant.schemes import concat_fed_layers

    assert concat_fed_layers(fold_batchnorm(_toy_model())) == {"a_relu", "b"}
    assert concat_fed_layers(_toy_model()) == {"a_relu"}  # b_bn is not a type the folded schemes quantize


@pytest.mark.parametrize("scheme,fmt", SCHEMES)
def test_concat_inputs_are_quantized_once_and_match_tflite(scheme, fmt, tmp_path):
    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.engine.parity import layer_parity, per_layer_verdict
    from tfdefakeq.quant import quantize
    from tfdefakeq.quant.calibrate import snap_biases

    images, _ = random_images(16, 32, seed=2)
    x = Preprocess().apply(images)
    qat = quantize(_toy_model(), scheme, x)
    wrappers = {layer.layer.name: layer for layer in qat.layers if hasattr(layer, "_output_quantizers")}
    feeding = ["a", "a_relu", "b"] + (["a_bn", "b_bn"] if scheme == "tfmot_int8" else [])
    assert not [name for name in feeding if _output_quantized(wrappers[name])]
    assert wrappers["cat"]._output_quantizers  # the one rounding, at the concat
    assert _output_quantized(wrappers["after_relu"]) or _output_quantized(wrappers["after"])  # elsewhere as before
    snap_biases(qat)  # what convert_model does before converting
    path = tmp_path / f"toy_{scheme}.tflite"
    path.write_bytes(to_tflite(qat, fmt, x))
    table = layer_parity(qat, path, images, use_xnnpack=True).set_index("keras_layer")
    assert table.loc["cat", "op"] == "CONCATENATION" and table.loc["cat", "match"] != "none", table
    verdict = per_layer_verdict(table.reset_index(), max_local_lsb=1.0)
    assert verdict["agrees"], table
