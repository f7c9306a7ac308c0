"""Vertical direction: salient channels by saliency, and the two-conv split."""

import numpy as np
import pytest

from tfdefakeq.core.errors import UserError
from tfdefakeq.quant.vertical import channel_saliency, pick_salient, random_salient, split_salient
from tfdefakeq.core.tfcompat import keras


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
