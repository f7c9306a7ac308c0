"""LSQ weight quantizer and learned activation ranges: levels, gradients, and the grid the
converter stores."""

import numpy as np
import pytest

from tfdefakeq.quant.grids import WEIGHT_LEVELS, mse_step
from tfdefakeq.quant.quantizers import LearnedActivationQuantizer, LSQWeightQuantizer
from tfdefakeq.core.tfcompat import keras, tf


def _kernel(seed=0, shape=(3, 3, 8, 4)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_training_and_inference_paths_give_the_same_grid(bits):
    q = LSQWeightQuantizer(bits)
    w = tf.constant(_kernel())
    step = tf.constant(mse_step(w.numpy(), bits, per_axis=True))
    trained = q(w, training=True, weights={"step_var": step}).numpy()
    deployed = q(w, training=False, weights={"step_var": step}).numpy()
    np.testing.assert_allclose(trained, deployed, atol=1e-5)
    ints = deployed / step.numpy()
    np.testing.assert_allclose(ints, np.round(ints), atol=1e-3)
    qmin, qmax = WEIGHT_LEVELS[bits]
    assert ints.min() >= qmin - 1e-3 and ints.max() <= qmax + 1e-3
    if bits <= 4:  # every level in use; below 4 bits the full signed range (2 bits = {-2, -1, 0, 1})
        assert set(np.round(ints).astype(int).ravel()) == set(range(qmin, qmax + 1))


def test_lsq_gradients():
    q = LSQWeightQuantizer(2, per_axis=False)
    w = tf.constant([[-3.0, -0.4, 0.26, 0.9, 5.0]])
    step = tf.Variable(1.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(w)
        out = q(w, training=True, weights={"step_var": step})
        loss = tf.reduce_sum(out)
    # straight-through inside [-2 s, 1 s], zero outside
    np.testing.assert_allclose(tape.gradient(loss, w).numpy(), [[0, 1, 1, 1, 0]])
    # d/ds: qmin below, round(v) - v inside, qmax above; scaled by 1/sqrt(N * qmax)
    expected = (-2 + (0 + 0.4) + (0 - 0.26) + (1 - 0.9) + 1) / np.sqrt(5 * 1)
    np.testing.assert_allclose(tape.gradient(loss, step).numpy(), expected, rtol=1e-5)


def test_mse_step_beats_max_scaling():
    w = np.random.default_rng(1).standard_t(3, size=(3, 3, 16, 8)).astype(np.float32)
    for bits in (4, 3, 2):
        qmin, qmax = WEIGHT_LEVELS[bits]
        step = mse_step(w, bits, per_axis=True)
        naive = np.abs(w.reshape(-1, 8)).max(axis=0) / max(-qmin, qmax)

        def mse(s):
            return ((np.clip(np.floor(w / s + 0.5), qmin, qmax) * s - w) ** 2).mean(axis=(0, 1, 2))

        assert np.all(mse(step) <= mse(naive) + 1e-9)


def test_learned_activation_range_gets_gradients():
    layer = keras.layers.Layer()
    q = LearnedActivationQuantizer()
    qvars = q.build((None, 4), "act", layer)
    qvars["max_var"].assign(1.0)
    x = tf.constant([[0.5, 2.0, 3.0, -0.1]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(q(x, training=True, weights=qvars))
    grads = tape.gradient(loss, [qvars["min_var"], qvars["max_var"]])
    assert grads[1].numpy() == pytest.approx(2.0)  # two inputs clipped at the top pull max up
    assert all(v.trainable for v in qvars.values())


@pytest.mark.parametrize("bits", [3, 2])
def test_converter_stores_the_learned_sub4bit_integers(tmp_path, bits):
    """A conv on the 3- or 2-bit grid is stored as exactly those integers (INT4 container, or INT2
    after repacking) with exactly the learned steps, not re-rounded onto int4."""
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.quant import quantize
    from tfdefakeq.quant.qat import weight_bits
    from tfdefakeq.runtime.unpack import INT2, INT4, pack_int2, unpack_values

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="stem")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, name="body")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, name="head")(x)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    qat = quantize(model, f"lsq_w{bits}a8", images)
    assert weight_bits(qat) == {"stem": 8, "body": bits, "head": 8}
    wrapper = qat.get_layer("quant_body")
    (kernel, quantizer, qvars), = wrapper._weight_vars
    step = np.abs(qvars["step_var"].numpy()) + 1e-9
    expected = np.clip(np.floor(kernel.numpy() / step + 0.5), *WEIGHT_LEVELS[bits]).astype(np.int8)
    flatbuffer, repacked = pack_int2(to_tflite(qat, "int4", images))
    assert repacked == (1 if bits == 2 else 0)
    from ai_edge_litert import schema_py_generated as schema

    model_t = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    packed = [t for t in model_t.subgraphs[0].tensors if t.type in (INT4, INT2)]
    assert len(packed) == 1
    tensor = packed[0]
    values = unpack_values(model_t.buffers[tensor.buffer].data, int(np.prod(tensor.shape)), 4 if tensor.type == INT4 else 2)
    # TFLite's conv filter layout is (out, h, w, in); Keras' is (h, w, in, out)
    np.testing.assert_array_equal(values.reshape(tensor.shape), np.transpose(expected, (3, 0, 1, 2)))
    np.testing.assert_allclose(tensor.quantization.scale, step, rtol=1e-6)


def test_depthwise_kernels_get_a_step_per_channel(tmp_path):
    """LSQ on a depthwise kernel: one step per channel (not one for the whole kernel), stored as a
    per-channel INT4 DEPTHWISE_CONV_2D filter."""
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.quant import quantize
    from tfdefakeq.runtime.unpack import INT4

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 1, name="stem")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(x))
    kernel, bias = model.get_layer("dw").get_weights()
    kernel *= np.linspace(0.05, 5, 8).reshape(1, 1, 8, 1)  # channel ranges 100x apart
    model.get_layer("dw").set_weights([kernel, bias])
    images = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    qat = quantize(model, "lsq_w4a8", images, bit_plan={"stem": 8, "dw": 4, "head": 8})
    (_, quantizer, qvars), = qat.get_layer("quant_dw")._weight_vars
    steps = qvars["step_var"].numpy()
    assert quantizer.depthwise and steps.shape == (8,) and steps[-1] / steps[0] > 50
    from ai_edge_litert import schema_py_generated as schema

    model_t = schema.ModelT.InitFromPackedBuf(to_tflite(qat, "int4", images), 0)
    dw = [t for t in model_t.subgraphs[0].tensors if t.type == INT4 and t.shape[0] == 1]
    assert len(dw) == 1 and dw[0].quantization.quantizedDimension == 3
    np.testing.assert_allclose(dw[0].quantization.scale, steps, rtol=1e-6)
