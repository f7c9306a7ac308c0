"""The QMDD connected quantized block's parameter-free shortcuts (backbones/cqb.py, common.py)."""

import numpy as np
import pytest

from tfdefakeq.backbones import build
from tfdefakeq.backbones.common import SpatialAverageKernel, spatial_average
from tfdefakeq.core.tfcompat import keras


def test_spatial_average_is_average_pooling_as_a_fixed_depthwise_conv():
    inputs = keras.Input((8, 8, 6))
    pooled = spatial_average(inputs, 2, "pool")
    model = keras.Model(inputs, [pooled, keras.layers.AveragePooling2D(2)(inputs)])
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 6)).astype(np.float32)
    ours, reference = model.predict(x, verbose=0)
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    layer = model.get_layer("pool")
    assert type(layer) is keras.layers.DepthwiseConv2D and not layer.trainable and not layer.trainable_weights
    # every tap is its channel's max: on the per-channel weight grid at any bit-width
    assert np.all(layer.get_weights()[0] == 0.25)


def test_spatial_average_kernel_rejects_other_shapes():
    with pytest.raises(ValueError, match="depthwise kernel"):
        SpatialAverageKernel()((2, 3, 4, 1))
    with pytest.raises(ValueError, match="depthwise kernel"):
        SpatialAverageKernel()((2, 2, 4, 2))


def test_cqb_blocks_pool_their_spatial_shortcut_through_the_fixed_conv():
    model = build("cqb_resnet18", input_shape=(32, 32, 3), width=0.125)
    shortcuts = [l for l in model.layers if l.name.endswith("_spatial_shortcut")]
    assert [l.name for l in shortcuts] == ["cqb3_block1_spatial_shortcut", "cqb4_block1_spatial_shortcut",
                                           "cqb5_block1_spatial_shortcut"]  # the stride-2 blocks
    assert not any(isinstance(l, keras.layers.AveragePooling2D) for l in model.layers)
    for layer in shortcuts:
        assert not layer.trainable and layer.strides == (2, 2) and not layer.trainable_weights
