"""ResNet family. ResNet-18/34 use basic blocks (He et al. 2016, 11,689,512 / 21,797,672 params at
1000 classes, torchvision's counts); layer names follow keras.applications' ResNet50 scheme
(`conv2_block1_1_conv`, ...). CNNDetection's detector is ResNet-50 (zoo issue).
"""

from __future__ import annotations

from tfdefakeq.backbones.common import BN_EPSILON, classifier_head, highpass_front, layers
from tfdefakeq.backbones.registry import register_backbone
from tfdefakeq.tfcompat import keras


def _conv_bn(x, filters, kernel, stride, name, relu=True):
    if stride > 1 and kernel > 1:
        # Explicit symmetric padding (as torchvision), not TF's asymmetric 'same' for even inputs.
        x = layers.ZeroPadding2D(padding=kernel // 2, name=name + "_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name + "_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=name + "_bn")(x)
    if relu:
        x = layers.ReLU(name=name + "_relu")(x)
    return x


def _basic_block(x, filters, stride, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, name + "_0", relu=False)
    y = _conv_bn(x, filters, 3, stride, name + "_1")
    y = _conv_bn(y, filters, 3, 1, name + "_2", relu=False)
    y = layers.Add(name=name + "_add")([shortcut, y])
    return layers.ReLU(name=name + "_out")(y)


def _resnet_basic(depths, name, input_shape, num_classes, width, dropout, highpass):
    widths = [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]
    inputs = keras.Input(shape=input_shape, name="image")
    x = highpass_front(inputs) if highpass else inputs
    x = _conv_bn(x, widths[0], 7, 2, "conv1")
    x = layers.ZeroPadding2D(padding=1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (blocks, filters) in enumerate(zip(depths, widths)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, f"conv{stage + 2}_block{block + 1}")
    outputs = classifier_head(x, num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name=name)


@register_backbone("resnet18", family="resnet", reference_params=11_689_512)
def resnet18(input_shape=(224, 224, 3), num_classes=1, width: float = 1.0, dropout: float = 0.0, highpass: bool = False):
    """ResNet-18; `width` scales every stage's channels (0.5 -> a 2.8 M-parameter detector);
    `highpass` puts a fixed high-pass filter in front (see common.HighPassKernel)."""
    return _resnet_basic([2, 2, 2, 2], "resnet18", input_shape, num_classes, width, dropout, highpass)


@register_backbone("resnet34", family="resnet", reference_params=21_797_672)
def resnet34(input_shape=(224, 224, 3), num_classes=1, width: float = 1.0, dropout: float = 0.0, highpass: bool = False):
    return _resnet_basic([3, 4, 6, 3], "resnet34", input_shape, num_classes, width, dropout, highpass)
