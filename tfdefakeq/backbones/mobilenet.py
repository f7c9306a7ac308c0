"""MobileNet family. MobileNetV2 (Sandler et al. 2018) mirrors keras.applications.MobileNetV2 layer
for layer (same names, same padding), so its ImageNet weights load by name: 3,538,984 parameters at
alpha 1.0 and 1000 classes. MobileNetV3 Small/Large (Howard et al. 2019) mirror
keras.applications.MobileNetV3Small/Large with include_preprocessing=False (2,554,968 / 5,507,432
parameters): squeeze-excite blocks and hard-swish, built from our HardSigmoid layer instead of
keras' TFOpLambda arithmetic. Our Preprocess (pixel - 128) / 128 is keras' Rescaling(1/127.5, -1)
up to a 0.4% scale: ImageNet weights load as they are.

`mobilenet_v2(torch_layout="torchvision")` is the twin of torchvision's MobileNetV2 for
`tfdefakeq.port`: symmetric padding on the stride-2 stem and depthwise convs (keras pads those
asymmetrically), BatchNorm epsilon 1e-5; `torch_normalize=[mean, std]`: see common.torch_normalize.
"""

from __future__ import annotations

from tfdefakeq.backbones.common import (TORCH_BN_EPSILON, HardSigmoid, classifier_head, front_end, hard_swish, highpass_front,
                                        layers, torch_input)
from tfdefakeq.backbones.registry import register_backbone
from tfdefakeq.core.tfcompat import keras

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


def _inverted_residual(x, expansion, stride, alpha, filters, block_id, torch_layout=None):
    in_channels = x.shape[-1]
    pointwise_filters = make_divisible(int(filters * alpha), 8)
    inputs = x
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    bn = dict(_BN, epsilon=TORCH_BN_EPSILON) if torch_layout else _BN
    if block_id:
        x = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False, name=prefix + "expand")(x)
        x = layers.BatchNormalization(name=prefix + "expand_BN", **bn)(x)
        x = layers.ReLU(6.0, name=prefix + "expand_relu")(x)
    if stride == 2:
        x = layers.ZeroPadding2D(padding=1 if torch_layout else _correct_pad(x, 3), name=prefix + "pad")(x)
    x = layers.DepthwiseConv2D(
        3, strides=stride, use_bias=False, padding="same" if stride == 1 else "valid", name=prefix + "depthwise"
    )(x)
    x = layers.BatchNormalization(name=prefix + "depthwise_BN", **bn)(x)
    x = layers.ReLU(6.0, name=prefix + "depthwise_relu")(x)
    x = layers.Conv2D(pointwise_filters, 1, padding="same", use_bias=False, name=prefix + "project")(x)
    x = layers.BatchNormalization(name=prefix + "project_BN", **bn)(x)
    if in_channels == pointwise_filters and stride == 1:
        return layers.Add(name=prefix + "add")([inputs, x])
    return x


@register_backbone("mobilenet_v2", family="mobilenet", reference_params=3_538_984, keras_application="MobileNetV2")
def mobilenet_v2(input_shape=(224, 224, 3), num_classes=1, alpha: float = 1.0, dropout: float = 0.0, highpass: bool = False,
                 torch_layout: str | None = None, torch_normalize=None):
    """MobileNetV2 with width multiplier `alpha` (keras.applications' values: 0.35 ... 1.4);
    `highpass` puts a fixed high-pass filter in front (see common.HighPassKernel); `torch_layout` /
    `torch_normalize`: torchvision's twin (module docstring)."""
    if torch_layout not in (None, "torchvision"):
        raise ValueError(f"torch_layout {torch_layout!r}: MobileNetV2 knows None or 'torchvision'")
    bn = dict(_BN, epsilon=TORCH_BN_EPSILON) if torch_layout else _BN
    inputs = keras.Input(shape=input_shape, name="image")
    x = torch_input(inputs, torch_normalize)
    x = highpass_front(x) if highpass else x
    if torch_layout:
        x = layers.ZeroPadding2D(padding=1, name="Conv1_pad")(x)
    x = layers.Conv2D(make_divisible(32 * alpha, 8), 3, strides=2, padding="valid" if torch_layout else "same",
                      use_bias=False, name="Conv1")(x)
    x = layers.BatchNormalization(name="bn_Conv1", **bn)(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    for block_id, (expansion, filters, stride) in enumerate(_V2_BLOCKS):
        x = _inverted_residual(x, expansion, stride, alpha, filters, block_id, torch_layout)
    last_filters = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = layers.Conv2D(last_filters, 1, use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(name="Conv_1_bn", **bn)(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    outputs = classifier_head(x, num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def _v3_activation(kind: str, x, name: str):
    if kind == "relu":
        return layers.ReLU(name=name + "_relu")(x)
    return hard_swish(x, name)


def _v3_se_block(inputs, filters, se_ratio, prefix):
    x = layers.GlobalAveragePooling2D(keepdims=True, name=prefix + "squeeze_excite/AvgPool")(inputs)
    x = layers.Conv2D(make_divisible(filters * se_ratio), 1, padding="same", name=prefix + "squeeze_excite/Conv")(x)
    x = layers.ReLU(name=prefix + "squeeze_excite/Relu")(x)
    x = layers.Conv2D(filters, 1, padding="same", name=prefix + "squeeze_excite/Conv_1")(x)
    x = HardSigmoid(name=prefix + "squeeze_excite/hsigmoid")(x)
    return layers.Multiply(name=prefix + "squeeze_excite/Mul")([inputs, x])


def _v3_block(x, expansion, filters, kernel_size, stride, se_ratio, activation, block_id):
    shortcut = x
    prefix = f"expanded_conv_{block_id}/" if block_id else "expanded_conv/"
    in_filters = int(x.shape[-1])
    if block_id:
        x = layers.Conv2D(make_divisible(in_filters * expansion), 1, padding="same", use_bias=False, name=prefix + "expand")(x)
        x = layers.BatchNormalization(name=prefix + "expand/BatchNorm", **_BN)(x)
        x = _v3_activation(activation, x, prefix + "expand")
    if stride == 2:
        x = layers.ZeroPadding2D(padding=_correct_pad(x, kernel_size), name=prefix + "depthwise/pad")(x)
    x = layers.DepthwiseConv2D(kernel_size, strides=stride, padding="same" if stride == 1 else "valid", use_bias=False,
                               name=prefix + "depthwise")(x)
    x = layers.BatchNormalization(name=prefix + "depthwise/BatchNorm", **_BN)(x)
    x = _v3_activation(activation, x, prefix + "depthwise")
    if se_ratio:
        x = _v3_se_block(x, make_divisible(in_filters * expansion), se_ratio, prefix)
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=prefix + "project")(x)
    x = layers.BatchNormalization(name=prefix + "project/BatchNorm", **_BN)(x)
    if stride == 1 and in_filters == filters:
        x = layers.Add(name=prefix + "Add")([shortcut, x])
    return x


# (expansion, filters, kernel, stride, squeeze-excite, activation) as keras.applications' stack_fn
_V3_SMALL = [(1, 16, 3, 2, True, "relu"), (72 / 16, 24, 3, 2, False, "relu"), (88 / 24, 24, 3, 1, False, "relu"),
             (4, 40, 5, 2, True, "hswish"), (6, 40, 5, 1, True, "hswish"), (6, 40, 5, 1, True, "hswish"),
             (3, 48, 5, 1, True, "hswish"), (3, 48, 5, 1, True, "hswish"), (6, 96, 5, 2, True, "hswish"),
             (6, 96, 5, 1, True, "hswish"), (6, 96, 5, 1, True, "hswish")]
_V3_LARGE = [(1, 16, 3, 1, False, "relu"), (4, 24, 3, 2, False, "relu"), (3, 24, 3, 1, False, "relu"),
             (3, 40, 5, 2, True, "relu"), (3, 40, 5, 1, True, "relu"), (3, 40, 5, 1, True, "relu"),
             (6, 80, 3, 2, False, "hswish"), (2.5, 80, 3, 1, False, "hswish"), (2.3, 80, 3, 1, False, "hswish"),
             (2.3, 80, 3, 1, False, "hswish"), (6, 112, 3, 1, True, "hswish"), (6, 112, 3, 1, True, "hswish"),
             (6, 160, 5, 2, True, "hswish"), (6, 160, 5, 1, True, "hswish"), (6, 160, 5, 1, True, "hswish")]


def _mobilenet_v3(blocks, last_point_ch, name, input_shape, num_classes, alpha, dropout, highpass):
    inputs = keras.Input(shape=input_shape, name="image")
    x = front_end(inputs, highpass)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="Conv")(x)
    x = layers.BatchNormalization(name="Conv/BatchNorm", **_BN)(x)
    x = hard_swish(x, "Conv")
    for block_id, (expansion, filters, kernel, stride, se, activation) in enumerate(blocks):
        x = _v3_block(x, expansion, make_divisible(filters * alpha), kernel, stride, 0.25 if se else None, activation,
                      block_id)
    last_conv_ch = make_divisible(int(x.shape[-1]) * 6)
    if alpha > 1.0:
        last_point_ch = make_divisible(last_point_ch * alpha)
    x = layers.Conv2D(last_conv_ch, 1, padding="same", use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(name="Conv_1/BatchNorm", **_BN)(x)
    x = hard_swish(x, "Conv_1")
    x = layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x)
    x = layers.Conv2D(last_point_ch, 1, padding="same", use_bias=True, name="Conv_2")(x)
    x = hard_swish(x, "Conv_2")
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Conv2D(num_classes, 1, padding="same", name="Logits")(x)
    x = layers.Flatten(name="flatten")(x)
    if num_classes > 1:
        x = layers.Activation("softmax", name="Predictions")(x)
    return keras.Model(inputs, x, name=name)


@register_backbone("mobilenet_v3_small", family="mobilenet", reference_params=2_554_968,
                   keras_application="MobileNetV3Small", reference_source="keras.applications, include_preprocessing=False")
def mobilenet_v3_small(input_shape=(224, 224, 3), num_classes=1, alpha: float = 1.0, dropout: float = 0.2, highpass=False):
    """MobileNetV3-Small (keras.applications layout: SE + hard-swish, 1x1-conv classifier 'Logits')."""
    return _mobilenet_v3(_V3_SMALL, 1024, "mobilenet_v3_small", input_shape, num_classes, alpha, dropout, highpass)


@register_backbone("mobilenet_v3_large", family="mobilenet", reference_params=5_507_432,
                   keras_application="MobileNetV3Large", reference_source="keras.applications, include_preprocessing=False")
def mobilenet_v3_large(input_shape=(224, 224, 3), num_classes=1, alpha: float = 1.0, dropout: float = 0.2, highpass=False):
    """MobileNetV3-Large (keras.applications layout: SE + hard-swish, 1x1-conv classifier 'Logits')."""
    return _mobilenet_v3(_V3_LARGE, 1280, "mobilenet_v3_large", input_shape, num_classes, alpha, dropout, highpass)
