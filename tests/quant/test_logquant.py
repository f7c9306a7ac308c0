"""QMDD's shifted log activation quantizer: its levels, its straight-through gradients, and its int8
LUT realisation (ADD + LOG + EXP + SUB) converted from a small cqb_resnet18 and run in ai-edge-litert."""

import numpy as np
import pytest

from tfdefakeq.quant import logquant as lq
from tfdefakeq.core.tfcompat import keras, tf


def _quantizer(offset=0.3, top=6.0, num_bits=4, realisation="lut"):
    """A quantizer with its variables on a bare layer: PReLU-like range [-0.2, 6]."""
    q = lq.ShiftedLogActivationQuantizer(num_bits, realisation=realisation)
    qvars = q.build((None,), "act", keras.layers.Layer())
    qvars["offset"].assign(offset)
    qvars["top"].assign(top)
    return q, qvars


def _levels(q, qvars):
    low, high = q.output_range(qvars)
    x = np.linspace(low - 1, high + 1, 20001, dtype=np.float32)
    return np.unique(q(x, False, qvars).numpy()), low, high


def test_levels_are_denser_near_zero_than_uniform_and_sit_on_the_int8_grid():
    q, qvars = _quantizer()
    levels, low, high = _levels(q, qvars)
    assert len(levels) == 16
    span = high - low
    uniform = np.linspace(low, high, 16)
    near_zero = lambda v: int(np.sum(np.abs(v) <= 0.1 * span))  # noqa: E731
    assert near_zero(levels) >= 2 * near_zero(uniform)  # 8 log levels vs 3 uniform within +-10% of the range
    gaps = np.diff(levels)
    assert gaps[0] < np.diff(uniform)[0] / 4 and gaps[-1] > np.diff(uniform)[0]  # fine at the bottom, coarse at the top
    step = span / 255  # every level is a code of the int8 tensor; 1.5 steps apart before snapping, >= 1 after
    codes = (levels - low) / step
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    assert gaps.min() >= 0.999 * step
    # without int8 snapping ("float") the same 16 levels move by less than one int8 step
    q.realisation = "float"
    float_levels, _, _ = _levels(q, qvars)
    assert len(float_levels) == 16 and np.abs(float_levels - levels).max() <= step
    assert lq.ShiftedLogActivationQuantizer.from_config(q.get_config()) == q


def test_auto_ratio_keeps_every_level_apart_on_int8():
    assert 45 < lq.auto_ratio(4) < 55
    for bits in (2, 3, 4, 5):
        q, qvars = _quantizer(num_bits=bits)
        assert len(_levels(q, qvars)[0]) == 2 ** bits
    with pytest.raises(ValueError, match="6-bit"):
        lq.auto_ratio(6)


def test_gradients_flow_straight_through_to_inputs_and_parameters():
    q, qvars = _quantizer()
    x = tf.constant(np.linspace(-1.0, 8.0, 901, dtype=np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = q(x, True, qvars)
        loss = tf.reduce_sum(y * y)
    grad_x = tape.gradient(y, x).numpy()
    low, high = q.output_range(qvars)
    bottom = low + (high - low) / q.ratio  # -Off + tau: below it every x takes the lowest level
    inside = (x.numpy() > bottom + 0.05) & (x.numpy() < high - 0.05)
    assert np.all((grad_x[inside] > 0.7) & (grad_x[inside] < 1.4))  # exp(round(log v)) / v: 1 within a log step
    assert np.all(grad_x[x.numpy() > high + 0.05] == 0) and np.all(grad_x[x.numpy() < bottom - 0.05] == 0)
    grad_offset, grad_top = tape.gradient(loss, [qvars["offset"], qvars["top"]])
    assert np.isfinite(grad_offset.numpy()) and np.isfinite(grad_top.numpy())
    assert grad_offset.numpy() != 0 and grad_top.numpy() > 0  # clipped values above top pull top up
    # the forward pass in training is the deployed int8 computation
    np.testing.assert_allclose(y.numpy(), q(x, False, qvars).numpy(), atol=1e-6)  # s + (d - s) in float32


def test_cqb_resnet18_converts_with_the_lut_realisation_and_matches_keras(tmp_path):
    from tests.support import random_images
    from tfdefakeq.backbones import build
    from tfdefakeq.engine.export import MAX_LOGIT_LSB, to_tflite
    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.quant.calibrate import snap_biases
    from tfdefakeq.runtime.interpreter import TFLiteModel
    from tfdefakeq.runtime.modelinfo import read_model_info

    images, labels = random_images(32, 32)
    x = Preprocess().apply(images)
    keras.utils.set_random_seed(0)
    model = build("cqb_resnet18", input_shape=(32, 32, 3), width=0.125, highpass=True)
    for layer in model.layers:  # BN statistics settle within the 150 steps (momentum 0.99 would not)
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x, labels, batch_size=4, epochs=19, verbose=0)

    lq_model = lq.realise(lq.quantize_log(model, x), "lut")
    found = lq.log_quantizers(lq_model)
    assert len(found) == 25  # 24 PReLU + the stem's ReLU
    snap_biases(lq_model)
    keras_logits = lq_model.predict(x, verbose=0).reshape(-1)
    path = tmp_path / "cqb_log.tflite"
    path.write_bytes(to_tflite(lq_model, "int8", x))

    info = read_model_info(path)
    assert info.input_types == info.output_types == ["INT8"]
    assert "FLOAT32" not in info.weight_bytes and not {"QUANTIZE", "DEQUANTIZE"} & set(info.op_counts)
    assert info.op_counts["LOG"] == info.op_counts["EXP"] == info.op_counts["SUB"] == 25

    # The realisation adds no error: each LOG/EXP chain reproduces the Keras levels bit for bit.
    errors = lq.lut_layer_errors(lq_model, path, x[:2])
    assert len(errors) == 25 and max(errors.values()) < 0.01  # float32 rounding of the dequantized values

    # End to end, TFLite's int8 kernels before each quantizer flip ~1-4% of their outputs by 1 LSB
    # (export.MAX_LOGIT_LSB budgets that for an int8 model); a flip on a level boundary moves the
    # 4-bit output by a whole level gap, 255 / 15 = 17 int8 steps on average (1 at the bottom, ~58 at
    # the top). So the bound is the int8 budget times that mean amplification, 102 LSB. Measured:
    # 25-29 LSB (this test; benchmarks/results/logquant.md on 1,508 images), vs 7 for w8a8.
    bound = MAX_LOGIT_LSB * 255 / 15
    tfl = TFLiteModel(path)
    tfl_logits = tfl.predict_logits(images, Preprocess())
    max_lsb = np.abs(tfl_logits - keras_logits).max() / tfl.output_quant[0]
    print(f"\ncqb_resnet18 log4 lut: max {max_lsb:.1f} LSB (bound {bound:.0f}), "
          f"decisions agree {np.mean((tfl_logits > 0) == (keras_logits > 0)):.0%}")
    assert max_lsb <= bound
    assert np.mean((tfl_logits > 0) == (keras_logits > 0)) >= 0.9

    # The fallback realisation: plain int8 activations, no LOG/EXP left.
    lq.realise(lq_model, "uniform8")
    path8 = tmp_path / "cqb_uniform8.tflite"
    path8.write_bytes(to_tflite(lq_model, "int8", x))
    ops8 = read_model_info(path8).op_counts
    assert "LOG" not in ops8 and "EXP" not in ops8 and ops8["ADD"] == info.op_counts["ADD"] - 25
