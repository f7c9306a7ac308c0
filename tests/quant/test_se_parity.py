"""Squeeze-excite parity: the SE block's first 1x1 conv computes in Keras what it computes in TFLite.

Two export faults, each found on MobileNetV3 at 32 px with tfdefakeq.diagnose and reproduced here on
one MobileNetV3 SE block (the zoo's own `_v3_se_block`) after a hard-swish stem:
- tfmot_int8: tfmot's LayerReLUQuantize gives the SE conv (Conv2D with bias -> ReLU, no BatchNorm) a
  NoOpQuantizeConfig, so Keras used its float kernel while the converter quantizes it per channel;
  `calibrate.snap_biases` now puts kernel and bias on the converter's grids.
- a 1x1 map (late blocks at small inputs): the converter removes the identity MEAN together with
  the pool's own FakeQuant range; the pool now keeps its input's grid (configs.custom_quantize_config).
"""

import numpy as np
import pytest

from tests.support import random_images, set_batchnorm_statistics_like_trained

LOCAL_SHARE = 1e-3  # float32 tie noise is ~1e-5; a real discrepancy is 1e-2 and more
SE = "se/squeeze_excite/"


def _se_model(pixels: int):
    """32 px -> conv + BN + hard-swish to a `pixels` x `pixels` map -> SE block -> project -> logit."""
    from tfdefakeq.backbones.common import hard_swish
    from tfdefakeq.backbones.mobilenet import _v3_se_block
    from tfdefakeq.core.tfcompat import keras

    L = keras.layers
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3), name="image")
    x = L.Conv2D(24, 32 // pixels, strides=32 // pixels, use_bias=False, name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = hard_swish(x, "stem")
    x = _v3_se_block(x, 24, 0.25, "se/")
    x = L.Conv2D(16, 1, use_bias=False, name="project")(x)
    x = L.BatchNormalization(name="project_bn")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(1, name="logit")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(pixels)
    set_batchnorm_statistics_like_trained(model, rng)  # as after training
    for name in ("se/squeeze_excite/Conv", "se/squeeze_excite/Conv_1"):  # trained SE biases are not zero
        conv = model.get_layer(name)
        conv.bias.assign(rng.normal(0, 0.1, conv.bias.shape).astype(np.float32))
    return model


def _drift_pool_ranges(qat, factor=0.5):
    """Narrows any FakeQuant range a global pool owns, as calibration / QAT can leave it relative to
    its input's (measured on MobileNetV3-Small: pool max 0.001 vs its input's 0.012). A pool over a
    1x1 map must own none: the converter would drop it."""
    import tensorflow_model_optimization as tfmot

    for layer in qat.layers:
        if isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2) and "AvgPool" in layer.name and layer._output_quantizers:
            qvars = layer._output_quantizer_vars
            qvars["max_var"].assign(qvars["max_var"] * factor)


def _export(scheme, fmt, pixels, tmp_path):
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.quant import quantize
    from tfdefakeq.quant.calibrate import snap_biases

    images, _ = random_images(16, 32, seed=pixels)
    x = Preprocess().apply(images)
    qat = quantize(_se_model(pixels), scheme, x)
    if pixels == 1:
        _drift_pool_ranges(qat)
    snap_biases(qat)  # what convert_model does before converting
    path = tmp_path / f"se_{scheme}_{pixels}.tflite"
    path.write_bytes(to_tflite(qat, fmt, x))
    return qat, path, images


@pytest.mark.parametrize("scheme,fmt,pixels", [("tfmot_int8", "int8", 4), ("tfmot_int8", "int8", 1), ("w4a8", "int4", 1)])
def test_squeeze_excite_conv_matches_tflite(scheme, fmt, pixels, tmp_path):
    from tfdefakeq.engine.parity import layer_parity

    qat, path, images = _export(scheme, fmt, pixels, tmp_path)
    table = layer_parity(qat, path, images, use_xnnpack=True).set_index("keras_layer")
    se_conv = table.loc[SE + "Relu"]  # the SE conv's int8 output (conv + ReLU fused)
    assert se_conv["match"] != "none" and se_conv["op"] == "CONV_2D"
    assert se_conv["local_max_lsb"] <= 1.0 + 1e-3, table
    assert se_conv["local_share_differ"] <= LOCAL_SHARE, table
    matched = table[table["match"] != "none"]
    assert matched["local_share_differ"].fillna(0).max() <= LOCAL_SHARE, matched
    from tfdefakeq.runtime.modelinfo import read_model_info

    assert not {"QUANTIZE", "DEQUANTIZE"} & set(read_model_info(path).op_counts)  # the pass-through pools stay int8


def test_tfmot_int8_se_conv_is_snapped_to_the_converters_grid(tmp_path):
    """The NoOp-configured SE conv: kernel on a symmetric per-channel int8 grid (max tap at 127 steps)."""
    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.quant import quantize
    from tfdefakeq.quant.calibrate import snap_biases

    images, _ = random_images(8, 32)
    qat = quantize(_se_model(4), "tfmot_int8", Preprocess().apply(images))
    wrapper = qat.get_layer("quant_" + SE + "Conv")
    assert not wrapper._weight_vars  # tfmot left it unquantized: the case snap_biases covers
    snap_biases(qat)
    kernel = wrapper.layer.kernel.numpy().reshape(-1, wrapper.layer.filters)
    steps = kernel / (np.abs(kernel).max(axis=0) / 127.0)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)


def test_one_pixel_global_pool_keeps_its_inputs_grid():
    from tfdefakeq.quant.configs import PassThroughQuantizeConfig, custom_quantize_config

    one, four = _se_model(1), _se_model(4)
    assert isinstance(custom_quantize_config(one.get_layer(SE + "AvgPool")), PassThroughQuantizeConfig)
    assert custom_quantize_config(four.get_layer(SE + "AvgPool")) is None  # a real MEAN: its own range
    assert isinstance(custom_quantize_config(one.get_layer("pool")), PassThroughQuantizeConfig)  # keepdims=False too
