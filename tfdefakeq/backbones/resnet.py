"""ResNet family. ResNet-18/34 use basic blocks (He et al. 2016, 11,689,512 / 21,797,672 params at
1000 classes, torchvision's counts); layer names follow keras.applications' ResNet50 scheme
(`conv2_block1_1_conv`, ...). ResNet-50 (CNNDetection's detector, Wang et al. 2020) mirrors
keras.applications.ResNet50 layer for layer: 25,636,712 parameters, its ImageNet weights load by name.

`torch_layout="torchvision"` builds the twins of torchvision's models for `tfdefakeq.port`: BatchNorm
epsilon 1e-5 and, for ResNet-50, torchvision's v1.5 bottleneck (stride on the 3x3, explicitly padded,
no conv biases); `torch_normalize=[mean, std]` puts torch's input normalisation in front
(common.torch_normalize). The default graphs are unchanged.
"""

from __future__ import annotations

from tfdefakeq.backbones.common import (BN_EPSILON, TORCH_BN_EPSILON, classifier_head, front_end, highpass_front, layers,
                                        torch_input)
from tfdefakeq.backbones.registry import register_backbone
from tfdefakeq.core.tfcompat import keras


def _check_layout(torch_layout):
    if torch_layout not in (None, "torchvision"):
        raise ValueError(f"torch_layout {torch_layout!r}: ResNets know None or 'torchvision'")


def _conv_bn(x, filters, kernel, stride, name, relu=True, eps=BN_EPSILON):
    if stride > 1 and kernel > 1:
        # Explicit symmetric padding (as torchvision), not TF's asymmetric 'same' for even inputs.
        x = layers.ZeroPadding2D(padding=kernel // 2, name=name + "_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name + "_conv")(x)
    x = layers.BatchNormalization(epsilon=eps, name=name + "_bn")(x)
    if relu:
        x = layers.ReLU(name=name + "_relu")(x)
    return x


def _basic_block(x, filters, stride, name, eps=BN_EPSILON):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, name + "_0", relu=False, eps=eps)
    y = _conv_bn(x, filters, 3, stride, name + "_1", eps=eps)
    y = _conv_bn(y, filters, 3, 1, name + "_2", relu=False, eps=eps)
    y = layers.Add(name=name + "_add")([shortcut, y])
    return layers.ReLU(name=name + "_out")(y)


def _resnet_basic(depths, name, input_shape, num_classes, width, dropout, highpass, torch_layout=None,
                  torch_normalize=None):
    _check_layout(torch_layout)
    eps = TORCH_BN_EPSILON if torch_layout else BN_EPSILON
    widths = [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]
    inputs = keras.Input(shape=input_shape, name="image")
    x = torch_input(inputs, torch_normalize)
    x = highpass_front(x) if highpass else x
    x = _conv_bn(x, widths[0], 7, 2, "conv1", eps=eps)
    x = layers.ZeroPadding2D(padding=1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (blocks, filters) in enumerate(zip(depths, widths)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, f"conv{stage + 2}_block{block + 1}", eps=eps)
    outputs = classifier_head(x, num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name=name)


@register_backbone("resnet18", family="resnet", reference_params=11_689_512, reference_counts="trainable")
def resnet18(input_shape=(224, 224, 3), num_classes=1, width: float = 1.0, dropout: float = 0.0, highpass: bool = False,
             torch_layout: str | None = None, torch_normalize=None):
    """ResNet-18; `width` scales every stage's channels (0.5 -> a 2.8 M-parameter detector);
    `highpass` puts a fixed high-pass filter in front (see common.HighPassKernel); `torch_layout` /
    `torch_normalize`: torchvision's twin (module docstring)."""
    return _resnet_basic([2, 2, 2, 2], "resnet18", input_shape, num_classes, width, dropout, highpass, torch_layout,
                         torch_normalize)


@register_backbone("resnet34", family="resnet", reference_params=21_797_672, reference_counts="trainable")
def resnet34(input_shape=(224, 224, 3), num_classes=1, width: float = 1.0, dropout: float = 0.0, highpass: bool = False,
             torch_layout: str | None = None, torch_normalize=None):
    return _resnet_basic([3, 4, 6, 3], "resnet34", input_shape, num_classes, width, dropout, highpass, torch_layout,
                         torch_normalize)


def _bottleneck(x, filters, stride, name, conv_shortcut):
    """keras.applications.resnet.block1: 1x1 (stride) -> 3x3 -> 1x1 x4, biased convs, BN, ReLU."""
    if conv_shortcut:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=name + "_0_conv")(x)
        shortcut = layers.BatchNormalization(epsilon=BN_EPSILON, name=name + "_0_bn")(shortcut)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, strides=stride, name=name + "_1_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=name + "_1_bn")(x)
    x = layers.Activation("relu", name=name + "_1_relu")(x)
    x = layers.Conv2D(filters, 3, padding="same", name=name + "_2_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=name + "_2_bn")(x)
    x = layers.Activation("relu", name=name + "_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, name=name + "_3_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=name + "_3_bn")(x)
    x = layers.Add(name=name + "_add")([shortcut, x])
    return layers.Activation("relu", name=name + "_out")(x)


@register_backbone("resnet50", family="resnet", reference_params=25_636_712, reference_counts="all",
                   keras_application="ResNet50")
def resnet50(input_shape=(224, 224, 3), num_classes=1, width: float = 1.0, dropout: float = 0.0, highpass=False,
             torch_layout: str | None = None, torch_normalize=None):
    """ResNet-50 as keras.applications.ResNet50 (reference: its count_params, BN statistics included;
    torchvision's has no conv biases: 25,557,032). `width` scales channels (tests use 1/8); `highpass`:
    False, True/'highpass' or 'srm' (see common.front_end). `torch_layout="torchvision"`: torchvision's
    v1.5 graph instead (module docstring)."""
    _check_layout(torch_layout)
    if torch_layout:
        return _resnet50_torchvision(input_shape, num_classes, width, dropout, highpass, torch_normalize)
    widths = [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]
    inputs = keras.Input(shape=input_shape, name="image")
    x = front_end(torch_input(inputs, torch_normalize), highpass)
    x = layers.ZeroPadding2D(padding=3, name="conv1_pad")(x)
    x = layers.Conv2D(widths[0], 7, strides=2, name="conv1_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(padding=1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (blocks, filters) in enumerate(zip([3, 4, 6, 3], widths)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _bottleneck(x, filters, stride, f"conv{stage + 2}_block{block + 1}", conv_shortcut=block == 0)
    outputs = classifier_head(x, num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name="resnet50")


def _bottleneck_torchvision(x, filters, stride, name, conv_shortcut):
    """torchvision's Bottleneck (v1.5): 1x1 -> 3x3 (stride, symmetric padding) -> 1x1 x4, no conv biases."""
    eps = TORCH_BN_EPSILON
    shortcut = _conv_bn(x, 4 * filters, 1, stride, name + "_0", relu=False, eps=eps) if conv_shortcut else x
    x = _conv_bn(x, filters, 1, 1, name + "_1", eps=eps)
    x = _conv_bn(x, filters, 3, stride, name + "_2", eps=eps)
    x = _conv_bn(x, 4 * filters, 1, 1, name + "_3", relu=False, eps=eps)
    x = layers.Add(name=name + "_add")([shortcut, x])
    return layers.ReLU(name=name + "_out")(x)


def _resnet50_torchvision(input_shape, num_classes, width, dropout, highpass, torch_normalize):
    widths = [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]
    inputs = keras.Input(shape=input_shape, name="image")
    x = front_end(torch_input(inputs, torch_normalize), highpass)
    x = _conv_bn(x, widths[0], 7, 2, "conv1", eps=TORCH_BN_EPSILON)
    x = layers.ZeroPadding2D(padding=1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (blocks, filters) in enumerate(zip([3, 4, 6, 3], widths)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _bottleneck_torchvision(x, filters, stride, f"conv{stage + 2}_block{block + 1}", conv_shortcut=block == 0)
    outputs = classifier_head(x, num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name="resnet50")
