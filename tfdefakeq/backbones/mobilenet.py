"""MobileNet family. MobileNetV2 (Sandler et al. 2018) mirrors keras.applications.MobileNetV2 layer
for layer (same names, same padding), so its ImageNet weights load by name: 3,538,984 parameters at
alpha 1.0 and 1000 classes.
"""

from __future__ import annotations

from tfdefakeq.backbones.common import classifier_head, highpass_front, layers
from tfdefakeq.backbones.registry import register_backbone
from tfdefakeq.tfcompat import keras

_BN = dict(epsilon=1e-3, momentum=0.999)
# (expansion, output channels, stride) per inverted residual block, as in the paper's Table 2.
_V2_BLOCKS = [(1, 16, 1)] + [(6, 24, 2), (6, 24, 1)] + [(6, 32, 2)] + [(6, 32, 1)] * 2 + [(6, 64, 2)] + [
    (6, 64, 1)
] * 3 + [(6, 96, 1)] * 3 + [(6, 160, 2)] + [(6, 160, 1)] * 2 + [(6, 320, 1)]


def make_divisible(value: float, divisor: int = 8) -> int:
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:  # never round down by more than 10%
        new_value += divisor
    return new_value


def _correct_pad(x, kernel_size: int):
    """Zero padding that makes a stride-2 'valid' conv match the reference (keras.applications)."""
    adjust = [1 - int(d) % 2 for d in x.shape[1:3]]
    half = kernel_size // 2
    return ((half - adjust[0], half), (half - adjust[1], half))


def _inverted_residual(x, expansion, stride, alpha, filters, block_id):
    in_channels = x.shape[-1]
    pointwise_filters = make_divisible(int(filters * alpha), 8)
    inputs = x
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    if block_id:
        x = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False, name=prefix + "expand")(x)
        x = layers.BatchNormalization(name=prefix + "expand_BN", **_BN)(x)
        x = layers.ReLU(6.0, name=prefix + "expand_relu")(x)
    if stride == 2:
        x = layers.ZeroPadding2D(padding=_correct_pad(x, 3), name=prefix + "pad")(x)
    x = layers.DepthwiseConv2D(
        3, strides=stride, use_bias=False, padding="same" if stride == 1 else "valid", name=prefix + "depthwise"
    )(x)
    x = layers.BatchNormalization(name=prefix + "depthwise_BN", **_BN)(x)
    x = layers.ReLU(6.0, name=prefix + "depthwise_relu")(x)
    x = layers.Conv2D(pointwise_filters, 1, padding="same", use_bias=False, name=prefix + "project")(x)
    x = layers.BatchNormalization(name=prefix + "project_BN", **_BN)(x)
    if in_channels == pointwise_filters and stride == 1:
        return layers.Add(name=prefix + "add")([inputs, x])
    return x


@register_backbone("mobilenet_v2", family="mobilenet", reference_params=3_538_984, keras_application="MobileNetV2")
def mobilenet_v2(input_shape=(224, 224, 3), num_classes=1, alpha: float = 1.0, dropout: float = 0.0, highpass: bool = False):
    """MobileNetV2 with width multiplier `alpha` (keras.applications' values: 0.35 ... 1.4);
    `highpass` puts a fixed high-pass filter in front (see common.HighPassKernel)."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = highpass_front(inputs) if highpass else inputs
    x = layers.Conv2D(make_divisible(32 * alpha, 8), 3, strides=2, padding="same", use_bias=False, name="Conv1")(x)
    x = layers.BatchNormalization(name="bn_Conv1", **_BN)(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    for block_id, (expansion, filters, stride) in enumerate(_V2_BLOCKS):
        x = _inverted_residual(x, expansion, stride, alpha, filters, block_id)
    last_filters = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = layers.Conv2D(last_filters, 1, use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(name="Conv_1_bn", **_BN)(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    outputs = classifier_head(x, num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name="mobilenet_v2")
