"""Xception (Chollet 2017), DeepfakeBench's default detector and FaceForensics++'s baseline, mirroring
keras.applications.Xception layer for layer: 22,910,480 parameters at 1000 classes.

keras.applications leaves the four residual 1x1 convs and their BatchNorms unnamed (their names
depend on how many layers the session made before); ours are named `blockN_residual_conv` /
`blockN_residual_bn`, and backbones.weights.load_keras_weights maps the unnamed ones in order.
SeparableConv2D layers stay as they are (their weights load by name); the folded quantization
schemes split each into a depthwise and a 1x1 conv (quant.fold.split_separable).
"""

from __future__ import annotations

from tfdefakeq.backbones.common import classifier_head, front_end, layers
from tfdefakeq.backbones.registry import register_backbone
from tfdefakeq.core.tfcompat import keras


def _sep_bn(x, filters, name, relu_before: bool):
    if relu_before:
        x = layers.Activation("relu", name=name + "_act")(x)
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    return layers.BatchNormalization(name=name + "_bn")(x)


def _downsample_block(x, filters_1, filters_2, block, relu_first: bool):
    residual = layers.Conv2D(filters_2, 1, strides=2, padding="same", use_bias=False, name=f"block{block}_residual_conv")(x)
    residual = layers.BatchNormalization(name=f"block{block}_residual_bn")(residual)
    x = _sep_bn(x, filters_1, f"block{block}_sepconv1", relu_before=relu_first)
    x = _sep_bn(x, filters_2, f"block{block}_sepconv2", relu_before=True)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{block}_pool")(x)
    return layers.Add(name=f"block{block}_add")([x, residual])


@register_backbone("xception", family="xception", reference_params=22_910_480, keras_application="Xception")
def xception(input_shape=(299, 299, 3), num_classes=1, width: float = 1.0, middle_blocks: int = 8, dropout: float = 0.0,
             highpass=False):
    """Xception; `width` scales every channel count and `middle_blocks` (8) the middle flow (tests use
    small values; only width 1 / 8 blocks load keras.applications weights). Native input 299 px."""

    def c(n):
        return max(8, int(round(n * width)))

    inputs = keras.Input(shape=input_shape, name="image")
    x = front_end(inputs, highpass)
    x = layers.Conv2D(c(32), 3, strides=2, use_bias=False, name="block1_conv1")(x)
    x = layers.BatchNormalization(name="block1_conv1_bn")(x)
    x = layers.Activation("relu", name="block1_conv1_act")(x)
    x = layers.Conv2D(c(64), 3, use_bias=False, name="block1_conv2")(x)
    x = layers.BatchNormalization(name="block1_conv2_bn")(x)
    x = layers.Activation("relu", name="block1_conv2_act")(x)
    x = _downsample_block(x, c(128), c(128), 2, relu_first=False)
    x = _downsample_block(x, c(256), c(256), 3, relu_first=True)
    x = _downsample_block(x, c(728), c(728), 4, relu_first=True)
    for i in range(middle_blocks):
        prefix = f"block{i + 5}"
        residual = x
        for j in (1, 2, 3):
            x = _sep_bn(x, c(728), f"{prefix}_sepconv{j}", relu_before=True)
        x = layers.Add(name=prefix + "_add")([x, residual])
    x = _downsample_block(x, c(728), c(1024), 13, relu_first=True)
    x = layers.SeparableConv2D(c(1536), 3, padding="same", use_bias=False, name="block14_sepconv1")(x)
    x = layers.BatchNormalization(name="block14_sepconv1_bn")(x)
    x = layers.Activation("relu", name="block14_sepconv1_act")(x)
    x = layers.SeparableConv2D(c(2048), 3, padding="same", use_bias=False, name="block14_sepconv2")(x)
    x = layers.BatchNormalization(name="block14_sepconv2_bn")(x)
    x = layers.Activation("relu", name="block14_sepconv2_act")(x)
    outputs = classifier_head(x, num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name="xception")
