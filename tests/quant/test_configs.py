"""The zoo's custom layers and their QuantizeConfigs: float behaviour, and what tfmot builds."""

import numpy as np
import pytest

from tfdefakeq.backbones.common import AlphaMix, DepthwisePReLU, HardSigmoid, channel_average, channel_repeat, front_end
from tfdefakeq.quant.fold import fold_batchnorm, split_separable
from tfdefakeq.core.tfcompat import keras

layers = keras.layers


def test_hard_sigmoid_is_relu6_of_x_plus_3_over_6():
    x = np.linspace(-5, 5, 41, dtype=np.float32)[None]
    np.testing.assert_allclose(HardSigmoid()(x).numpy(), np.clip(x + 3, 0, 6) / 6, atol=1e-7)


def test_alpha_mix_mixes_with_one_learnable_weight():
    mix = AlphaMix(alpha_init=0.25)
    a, b = np.ones((1, 2, 2, 4), np.float32), np.full((1, 2, 2, 4), 5.0, np.float32)
    np.testing.assert_allclose(mix([a, b]).numpy(), 0.25 * 1 + 0.75 * 5)
    assert [w.shape for w in mix.trainable_weights] == [()]


SLOPES = np.array([-0.5, 0.0, 0.25, 1.0, 1.7, 0.1], np.float32)  # any slope, below 0 and above 1 too


def test_depthwise_prelu_is_keras_prelu_with_its_weights():
    """Same function, weight and config as keras PReLU(shared_axes=[1, 2]), so trained slopes load."""
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 6)).astype(np.float32)
    reference = layers.PReLU(shared_axes=[1, 2])
    reference.build(x.shape)
    reference.set_weights([SLOPES.reshape(1, 1, 6)])
    ours = DepthwisePReLU(shared_axes=[1, 2])
    ours.build(x.shape)
    ours.set_weights(reference.get_weights())
    np.testing.assert_allclose(ours(x).numpy(), reference(x).numpy(), atol=1e-7)
    np.testing.assert_allclose(ours(x).numpy(), np.where(x >= 0, x, SLOPES * x), atol=1e-6)
    assert DepthwisePReLU.from_config(ours.get_config()).shared_axes == [1, 2]
    with pytest.raises(ValueError, match="one slope per channel"):
        DepthwisePReLU()(keras.Input((3, 3, 6)))  # a slope per pixel too: not a depthwise op


@pytest.mark.parametrize("scheme", ["tfmot_int8", "w4a8"])
def test_depthwise_prelu_converts_to_delegated_int8_ops_and_matches_keras(scheme, tmp_path):
    """int8: no PRELU (XNNPACK in ai-edge-litert 2.3.0 has no int8 PRELU), only DEPTHWISE_CONV_2D and
    ADD, every op taken by XNNPACK; the TFLite output within 1 LSB of the Keras QAT model for slopes
    below 0, in [0, 1] and above 1."""
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.quant import quantize
    from tfdefakeq.runtime.latency import profile_model
    from tfdefakeq.runtime.modelinfo import read_model_info

    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    model = keras.Model(inputs, DepthwisePReLU(shared_axes=[1, 2], name="prelu")(x))
    model.get_layer("prelu").set_weights([SLOPES.reshape(1, 1, 6)])
    images = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    qat = quantize(model, scheme, images)
    assert len(qat.get_layer("quant_prelu").layer.term_quantizers) == 2
    path = tmp_path / "prelu.tflite"
    path.write_bytes(to_tflite(qat, "int8", images))
    info = read_model_info(path)
    assert "PRELU" not in info.op_counts and info.op_counts["DEPTHWISE_CONV_2D"] == 2 and info.op_counts["ADD"] == 1
    assert all(row["delegated"] is not False for row in profile_model(path, runs=2))

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    got = []
    for image in images:
        interpreter.set_tensor(inp["index"], np.clip(np.round(image / in_scale + in_zero), -128, 127).astype(np.int8)[None])
        interpreter.invoke()
        got.append((interpreter.get_tensor(out["index"]).astype(np.float32) - out_zero) * out_scale)
    expected = qat(images).numpy()
    assert np.abs(np.concatenate(got) - expected).max() <= out_scale * 1.001
    # and the QAT model is the PReLU: off the float model by rounding only (conv output, relu(-x), the
    # slope term, the sum: half a step each, each step at most the output's; plus the conv's weight
    # grid). Measured 1.6-1.8 LSB; a wrong slope term (0.9 - alpha for 1 - alpha) gives 10.
    off = np.abs(expected - model(images).numpy()).max() / out_scale
    assert off <= 3.0, f"{scheme}: QAT vs float {off:.2f} output LSB"
    assert np.ptp(expected) / out_scale > 100  # the output spans the grid: a 1-LSB bound is tight


def test_parameter_free_shortcuts():
    inputs = keras.Input((4, 4, 8))
    down = channel_average(inputs, 2, "down")
    up = channel_repeat(down, 4, "up")
    model = keras.Model(inputs, [down, up])
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 8)).astype(np.float32)
    d, u = model(x)
    np.testing.assert_allclose(d.numpy(), (x[..., 0::2] + x[..., 1::2]) / 2, atol=1e-6)
    np.testing.assert_allclose(u.numpy(), np.concatenate([d.numpy()] * 4, axis=-1))
    assert not model.trainable_weights


def test_srm_front_end_gives_nine_residual_maps_of_a_flat_image_zero():
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, front_end(inputs, "srm"))
    out = model(np.full((1, 16, 16, 3), 0.5, np.float32)).numpy()
    assert out.shape == (1, 16, 16, 9)
    np.testing.assert_allclose(out[:, 2:-2, 2:-2], 0, atol=1e-6)  # residual filters sum to zero
    with pytest.raises(ValueError, match="unknown front end"):
        front_end(inputs, "dct")


def test_split_separable_then_fold_keeps_outputs():
    inputs = keras.Input((8, 8, 4))
    x = layers.SeparableConv2D(6, 3, padding="same", use_bias=False, name="sep")(inputs)
    x = layers.BatchNormalization(name="sep_bn")(x)
    model = keras.Model(inputs, layers.ReLU()(x))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) if "variance" not in w.name
                       else rng.uniform(0.5, 2, w.shape).astype(np.float32) for w in model.weights])
    split = split_separable(model)
    assert [type(l).__name__ for l in split.layers[1:3]] == ["DepthwiseConv2D", "Conv2D"]
    folded = fold_batchnorm(model)
    assert not any(isinstance(l, layers.BatchNormalization) for l in folded.layers)
    x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scheme", ["tfmot_int8", "w4a8"])
def test_custom_layers_get_their_quantize_configs(scheme):
    """Multiply, HardSigmoid, PReLU and AlphaMix (no tfmot config) quantize under both schemes, and
    calibration reaches the AlphaMix products' ranges."""
    from tfdefakeq.quant import quantize
    from tfdefakeq.quant.calibrate import _ema_range_vars

    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    gate = HardSigmoid(name="hsig")(layers.Conv2D(8, 1, name="gate_conv")(x))
    x = layers.Multiply(name="mul")([x, gate])
    y = layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = AlphaMix(name="mix")([y, x])
    x = layers.PReLU(shared_axes=[1, 2], name="prelu")(x)
    outputs = layers.Dense(1, name="predictions")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32)
    qat = quantize(model, scheme, images)
    wrapped = {l.layer.name: l for l in qat.layers if hasattr(l, "quantize_config")}
    assert {"hsig", "mul", "mix", "prelu"} <= set(wrapped)
    assert wrapped["hsig"].layer.quantize_inner
    assert len(wrapped["mix"].layer.term_quantizers) == 2
    ranges = [(lo.numpy(), hi.numpy()) for lo, hi in _ema_range_vars(qat)]
    assert all(lo > -6 or hi < 6 for lo, hi in ranges)  # every range calibrated away from tfmot's +-6
    # The QAT output may differ from the float output only by rounding: at most half a step at each of
    # the quantizers on the path, counted in the output's step (predictions' 8-bit range / 255), with
    # the weight steps (2^8-1)/(2^b-1) times coarser at b weight bits. A config that drops a term,
    # a gate or a range moves the output by a share of its whole range, far beyond this.
    from tfdefakeq.engine.parity import quantized_taps
    from tfdefakeq.quant import weight_bits

    taps = quantized_taps(qat)
    lo, hi = {t.name: t.qrange for t in taps}["predictions"]
    out_lsb = (hi - lo) / 255
    coarser = 255 / (2 ** min(weight_bits(qat).values()) - 1)
    bound = 0.5 * len(taps) * out_lsb * coarser
    diff = np.abs(qat(images).numpy() - model(images).numpy()).max()
    assert diff <= bound, f"{scheme}: QAT output off the float one by {diff:.3g} > {bound:.3g} ({diff / out_lsb:.1f} output LSB)"
