"""Vertical direction: salient channels by saliency, and the two-conv split."""

import numpy as np
import pytest

from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.modelinfo import model_info_from_bytes
from tfdefakeq.quant.vertical import ChannelGather, channel_runs, channel_saliency, pick_salient, random_salient, split_salient
from tfdefakeq.core.tfcompat import keras, tf


def _model():
    inputs = keras.Input((8, 8, 6))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(x))


def test_saliency_ranks_the_channel_the_logit_reads():
    model = _model()
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[:] = 0.01
    kernel[:, :, 4, :] = 1.0  # input channel 4 drives the detector
    model.get_layer("conv").set_weights([kernel, bias])
    images = np.abs(np.random.default_rng(0).normal(size=(12, 8, 8, 6))).astype(np.float32)
    saliency = channel_saliency(model, ["conv"], images)
    assert saliency["conv"].shape == (6,)
    assert int(np.argmax(saliency["conv"])) == 4
    assert pick_salient(saliency, 1 / 6) == {"conv": [4]}
    assert len(random_salient({"conv": 6}, 0.5)["conv"]) == 3


def test_split_computes_what_the_conv_computed():
    model = _model()
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 6)).astype(np.float32)
    split = split_salient(model, {"conv": [1, 4]})
    names = [layer.name for layer in split.layers]
    assert {"conv", "conv_salient", "conv_sum", "conv_rest_in", "conv_salient_in"} <= set(names)
    assert split.get_layer("conv").get_weights()[0].shape == (3, 3, 4, 4)
    assert split.get_layer("conv_salient").get_weights()[0].shape == (3, 3, 2, 4)
    np.testing.assert_allclose(split.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels, message", [([7], "must be distinct, in \\[0, 6\\)"), (list(range(6)), "fewer than all")])
def test_bad_channel_lists_are_refused(channels, message):
    with pytest.raises(UserError, match=message):
        split_salient(_model(), {"conv": channels})


def test_only_convs_split():
    with pytest.raises(UserError, match="layer head: only plain Conv2D"):
        split_salient(_model(), {"head": [0]})
    with pytest.raises(UserError, match="'nope', which is not a layer"):
        split_salient(_model(), {"nope": [0]})


def test_channel_runs_cover_every_channel_once():
    assert channel_runs([1, 2, 5], 7) == [(False, 0, 1), (True, 1, 3), (False, 3, 5), (True, 5, 6), (False, 6, 7)]
    assert channel_runs([0, 1], 2) == [(True, 0, 2)]
    assert channel_runs([2, 1], 4) is None and channel_runs([1, 1], 4) is None and channel_runs([4], 4) is None


@pytest.mark.parametrize("indices", [[0, 2, 3, 6], [5], [1, 2, 3, 4, 5, 6, 7], [3, 0, 6]])
def test_a_training_gather_gives_tf_gathers_values_and_gradients(indices):
    """Training takes increasing indices as slices (a custom gradient), inference traces tf.gather
    (TFLite's GATHER): both must agree exactly, and so must the gradients reaching the input."""
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 3, 3, 8)).astype(np.float32))
    w = tf.constant(np.random.default_rng(3).normal(size=(2, 3, 3, len(indices))).astype(np.float32))
    layer = ChannelGather(indices)
    results = {}
    for training in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * w)
        results[training] = (y.numpy(), tape.gradient(loss, x).numpy())
    np.testing.assert_array_equal(results[True][0], tf.gather(x, indices, axis=-1).numpy())
    np.testing.assert_array_equal(results[True][0], results[False][0])
    np.testing.assert_array_equal(results[True][1], results[False][1])
    assert np.count_nonzero(results[True][1].reshape(-1, 8).any(axis=0)) == len(set(indices))


def test_the_converted_split_still_gathers():
    """The training fast path must not leak into the .tflite: its channel selections stay GATHER ops."""
    model = _model()
    split = split_salient(model, {"conv": [1, 4]})
    ops = model_info_from_bytes(tf.lite.TFLiteConverter.from_keras_model(split).convert()).op_counts
    assert ops["GATHER"] == 2 and ops["STRIDED_SLICE"] == 0 and ops["CONCATENATION"] == 0
