"""Xception (Chollet 2017), DeepfakeBench's default detector and FaceForensics++'s baseline, mirroring
keras.applications.Xception layer for layer: 22,910,480 parameters at 1000 classes.

keras.applications leaves the four residual 1x1 convs and their BatchNorms unnamed (their names
depend on how many layers the session made before); ours are named `blockN_residual_conv` /
`blockN_residual_bn`, and backbones.weights.load_keras_weights maps the unnamed ones in order.
SeparableConv2D layers stay as they are (their weights load by name); the folded quantization
schemes split each into a depthwise and a 1x1 conv (quant.fold.split_separable).

`torch_layout="deepfakebench"` is the twin of DeepfakeBench's Xception (the Cadene/pretrainedmodels
layout) for `tfdefakeq.port`: BatchNorm epsilon 1e-5, and torch's MaxPool2d(3, 2, padding=1), which
on an even side pads before where TF's 'same' pads after (common.torch_max_pool);
`torch_normalize=[mean, std]`: see common.torch_normalize.
"""

from __future__ import annotations

from tfdefakeq.backbones.common import TORCH_BN_EPSILON, classifier_head, front_end, layers, torch_input, torch_max_pool
from tfdefakeq.backbones.registry import register_backbone
from tfdefakeq.core.tfcompat import keras


_KERAS_BN_EPSILON = 1e-3  # keras.layers.BatchNormalization's default, as keras.applications.Xception


def _sep_bn(x, filters, name, relu_before: bool, eps=_KERAS_BN_EPSILON):
    if relu_before:
        x = layers.Activation("relu", name=name + "_act")(x)
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    return layers.BatchNormalization(epsilon=eps, name=name + "_bn")(x)


def _downsample_block(x, filters_1, filters_2, block, relu_first: bool, torch_layout=None):
    eps = TORCH_BN_EPSILON if torch_layout else _KERAS_BN_EPSILON
    residual = layers.Conv2D(filters_2, 1, strides=2, padding="same", use_bias=False, name=f"block{block}_residual_conv")(x)
    residual = layers.BatchNormalization(epsilon=eps, name=f"block{block}_residual_bn")(residual)
    x = _sep_bn(x, filters_1, f"block{block}_sepconv1", relu_before=relu_first, eps=eps)
    x = _sep_bn(x, filters_2, f"block{block}_sepconv2", relu_before=True, eps=eps)
    if torch_layout:
        x = torch_max_pool(x, f"block{block}_pool")
    else:
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{block}_pool")(x)
    return layers.Add(name=f"block{block}_add")([x, residual])


@register_backbone("xception", family="xception", reference_params=22_910_480, keras_application="Xception")
def xception(input_shape=(299, 299, 3), num_classes=1, width: float = 1.0, middle_blocks: int = 8, dropout: float = 0.0,
             highpass=False, torch_layout: str | None = None, torch_normalize=None):
    """Xception; `width` scales every channel count and `middle_blocks` (8) the middle flow (tests use
    small values; only width 1 / 8 blocks load keras.applications weights). Native input 299 px.
    `torch_layout` / `torch_normalize`: DeepfakeBench's twin (module docstring)."""
    if torch_layout not in (None, "deepfakebench"):
        raise ValueError(f"torch_layout {torch_layout!r}: Xception knows None or 'deepfakebench'")
    eps = TORCH_BN_EPSILON if torch_layout else _KERAS_BN_EPSILON

    def c(n):
        return max(8, int(round(n * width)))

    inputs = keras.Input(shape=input_shape, name="image")
    x = front_end(torch_input(inputs, torch_normalize), highpass)
    x = layers.Conv2D(c(32), 3, strides=2, use_bias=False, name="block1_conv1")(x)
    x = layers.BatchNormalization(epsilon=eps, name="block1_conv1_bn")(x)
    x = layers.Activation("relu", name="block1_conv1_act")(x)
    x = layers.Conv2D(c(64), 3, use_bias=False, name="block1_conv2")(x)
    x = layers.BatchNormalization(epsilon=eps, name="block1_conv2_bn")(x)
    x = layers.Activation("relu", name="block1_conv2_act")(x)
    x = _downsample_block(x, c(128), c(128), 2, relu_first=False, torch_layout=torch_layout)
    x = _downsample_block(x, c(256), c(256), 3, relu_first=True, torch_layout=torch_layout)
    x = _downsample_block(x, c(728), c(728), 4, relu_first=True, torch_layout=torch_layout)
    for i in range(middle_blocks):
        prefix = f"block{i + 5}"
        residual = x
        for j in (1, 2, 3):
            x = _sep_bn(x, c(728), f"{prefix}_sepconv{j}", relu_before=True, eps=eps)
        x = layers.Add(name=prefix + "_add")([x, residual])
    x = _downsample_block(x, c(728), c(1024), 13, relu_first=True, torch_layout=torch_layout)
    x = layers.SeparableConv2D(c(1536), 3, padding="same", use_bias=False, name="block14_sepconv1")(x)
    x = layers.BatchNormalization(epsilon=eps, name="block14_sepconv1_bn")(x)
    x = layers.Activation("relu", name="block14_sepconv1_act")(x)
    x = layers.SeparableConv2D(c(2048), 3, padding="same", use_bias=False, name="block14_sepconv2")(x)
    x = layers.BatchNormalization(epsilon=eps, name="block14_sepconv2_bn")(x)
    x = layers.Activation("relu", name="block14_sepconv2_act")(x)
    outputs = classifier_head(x, num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name="xception")
