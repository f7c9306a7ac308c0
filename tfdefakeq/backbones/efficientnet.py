"""EfficientNet B0/B4 (Tan & Le 2019) mirroring keras.applications.EfficientNetB0/B4 layer for layer:
swish activations, squeeze-excite, stochastic depth, same names, so ImageNet weights load by name.

Differences from keras.applications, all forced by tfmot / TFLite:
- No Rescaling + Normalization stem. Keras feeds stem_conv `z_c = (pixel / 255 - mean_c) / std_c`;
  ours gets our Preprocess `u = (pixel - 128) / 128`, so `z_c = a_c * u + b_c` with
  `a_c = 128 / (255 std_c)`, `b_c = (128 / 255 - mean_c) / std_c`. For ImageNet weights either set
  Preprocess(mean=255 mean_c, std=255 std_c) per channel, or fold the affine into stem_conv with
  `fold_input_affine` (exact except on the zero-padded border pixels); fine-tuning absorbs the rest.
  The reference counts (5,330,571 / 19,466,823) include Normalization's 7 statistics (3 means,
  3 variances, 1 count), which our graph does not hold.
- SE convs with a fused activation become Conv2D + Activation (`*_se_reduce_activation`,
  `*_se_expand_activation`): our quantizers need the activation as its own layer; no weights move.
- The SE Reshape is GlobalAveragePooling2D(keepdims=True) (same tensor, one op fewer).
- swish is built as x * sigmoid(x) from two layers (`swish`): TFLite computes it as LOGISTIC + MUL
  with an int8 gate in between, and only a layer of its own lets Keras round the gate as TFLite
  does (quant.configs.SigmoidQuantizeConfig). Same function, same names on the products.

Twins of torch models for `tfdefakeq.port` (same layer names, BatchNorm epsilon 1e-3 as there):
- `torch_layout="efficientnet_pytorch"`: efficientnet_pytorch's EfficientNet, whose convs pad like TF
  'same' but for the image size the model was built with (`torch_image_size`, default its native 224
  / 380), not the size it runs at: explicit ZeroPadding2D from that size (common.static_same_pad).
- `torch_layout="deepfakebench"`: DeepfakeBench's EfficientNet-B4, the same network with its stem
  replaced by an unpadded `nn.Conv2d(3, 48, 3, stride=2)`.
`torch_normalize=[mean, std]`: see common.torch_normalize.
"""

from __future__ import annotations

import math

import numpy as np

from tfdefakeq.backbones.common import front_end, layers, static_same_pad, torch_input
from tfdefakeq.backbones.mobilenet import _correct_pad
from tfdefakeq.backbones.registry import register_backbone
from tfdefakeq.core.tfcompat import keras

# (kernel, repeats, filters_in, filters_out, expand_ratio, strides) per stage; se_ratio 0.25 everywhere
_BLOCKS = [(3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
           (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1)]
_BN = dict(epsilon=1e-3, momentum=0.99)  # keras.layers.BatchNormalization defaults, as keras.applications


def swish(x, name: str):
    """x * sigmoid(x) (keras' swish) as a sigmoid Activation named `name`_gate and a Multiply named `name`."""
    gate = layers.Activation("sigmoid", name=name + "_gate")(x)
    return layers.Multiply(name=name)([x, gate])


def _round_filters(filters, width_coefficient, divisor=8):
    filters *= width_coefficient
    new_filters = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new_filters < 0.9 * filters:
        new_filters += divisor
    return int(new_filters)


def _activation(x, activation: str, name: str):
    return swish(x, name) if activation == "swish" else layers.Activation(activation, name=name)(x)


def _block(x, drop_rate, name, filters_in, filters_out, kernel_size, strides, expand_ratio, se_ratio=0.25,
           activation="swish", static_size=None):
    inputs = x
    filters = filters_in * expand_ratio
    if expand_ratio != 1:
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=name + "expand_conv")(x)
        x = layers.BatchNormalization(name=name + "expand_bn", **_BN)(x)
        x = _activation(x, activation, name + "expand_activation")
    if strides == 2:
        pad = (static_same_pad(static_size, kernel_size, 2),) * 2 if static_size else _correct_pad(x, kernel_size)
        x = layers.ZeroPadding2D(padding=pad, name=name + "dwconv_pad")(x)
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="valid" if strides == 2 else "same",
                               use_bias=False, name=name + "dwconv")(x)
    x = layers.BatchNormalization(name=name + "bn", **_BN)(x)
    x = _activation(x, activation, name + "activation")
    filters_se = max(1, int(filters_in * se_ratio))
    se = layers.GlobalAveragePooling2D(keepdims=True, name=name + "se_squeeze")(x)
    se = layers.Conv2D(filters_se, 1, padding="same", name=name + "se_reduce")(se)
    se = _activation(se, activation, name + "se_reduce_activation")
    se = layers.Conv2D(filters, 1, padding="same", name=name + "se_expand")(se)
    se = layers.Activation("sigmoid", name=name + "se_expand_activation")(se)
    x = layers.Multiply(name=name + "se_excite")([x, se])
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=name + "project_conv")(x)
    x = layers.BatchNormalization(name=name + "project_bn", **_BN)(x)
    if strides == 1 and filters_in == filters_out:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
        x = layers.Add(name=name + "add")([x, inputs])
    return x


def _efficientnet(width_coefficient, depth_coefficient, dropout, name, input_shape, num_classes, width, depth,
                  drop_connect_rate, highpass, torch_layout=None, torch_normalize=None, torch_image_size=None):
    if torch_layout not in (None, "efficientnet_pytorch", "deepfakebench"):
        raise ValueError(f"torch_layout {torch_layout!r}: EfficientNet knows None, 'efficientnet_pytorch' or 'deepfakebench'")
    width_coefficient *= width
    depth_coefficient *= depth
    inputs = keras.Input(shape=input_shape, name="image")
    x = front_end(torch_input(inputs, torch_normalize), highpass)
    static = int(torch_image_size) if torch_layout else None  # efficientnet_pytorch's build-time image size
    if torch_layout == "efficientnet_pytorch":
        x = layers.ZeroPadding2D(padding=(static_same_pad(static, 3, 2),) * 2, name="stem_conv_pad")(x)
    elif torch_layout is None:
        x = layers.ZeroPadding2D(padding=_correct_pad(x, 3), name="stem_conv_pad")(x)
    static = -(-static // 2) if static else None
    x = layers.Conv2D(_round_filters(32, width_coefficient), 3, strides=2, padding="valid", use_bias=False,
                      name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn", **_BN)(x)
    x = swish(x, "stem_activation")
    repeats = [int(math.ceil(depth_coefficient * r)) for _, r, *_ in _BLOCKS]
    total, b = float(sum(repeats)), 0
    for i, ((kernel, _, f_in, f_out, expand, strides), n) in enumerate(zip(_BLOCKS, repeats)):
        f_in, f_out = _round_filters(f_in, width_coefficient), _round_filters(f_out, width_coefficient)
        for j in range(n):
            stride = strides if j == 0 else 1
            x = _block(x, drop_connect_rate * b / total, f"block{i + 1}{chr(j + 97)}_", f_in if j == 0 else f_out, f_out,
                       kernel, stride, expand, static_size=static)
            static = -(-static // stride) if static else None
            b += 1
    x = layers.Conv2D(_round_filters(1280, width_coefficient), 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(name="top_bn", **_BN)(x)
    x = swish(x, "top_activation")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="top_dropout")(x)
    activation = None if num_classes == 1 else "softmax"
    outputs = layers.Dense(num_classes, activation=activation, name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


@register_backbone("efficientnet_b0", family="efficientnet", reference_params=5_330_571, keras_application="EfficientNetB0",
                   params_outside_graph=7, reference_source="keras.applications (its Normalization: 7 statistics)")
def efficientnet_b0(input_shape=(224, 224, 3), num_classes=1, width: float = 1.0, depth: float = 1.0,
                    dropout: float = 0.2, drop_connect_rate: float = 0.2, highpass=False, torch_layout: str | None = None,
                    torch_normalize=None, torch_image_size: int = 224):
    """EfficientNet-B0; `width` / `depth` multiply the compound coefficients (tests use small ones);
    `torch_layout` / `torch_normalize` / `torch_image_size`: torch twins (module docstring)."""
    return _efficientnet(1.0, 1.0, dropout, "efficientnet_b0", input_shape, num_classes, width, depth,
                         drop_connect_rate, highpass, torch_layout, torch_normalize, torch_image_size)


@register_backbone("efficientnet_b4", family="efficientnet", reference_params=19_466_823, keras_application="EfficientNetB4",
                   params_outside_graph=7, reference_source="keras.applications (its Normalization: 7 statistics)")
def efficientnet_b4(input_shape=(380, 380, 3), num_classes=1, width: float = 1.0, depth: float = 1.0,
                    dropout: float = 0.4, drop_connect_rate: float = 0.2, highpass=False, torch_layout: str | None = None,
                    torch_normalize=None, torch_image_size: int = 380):
    """EfficientNet-B4 (native 380 px; the detector of many DeepfakeBench / SBI entries);
    `torch_layout` / `torch_normalize` / `torch_image_size`: torch twins (module docstring)."""
    return _efficientnet(1.4, 1.8, dropout, "efficientnet_b4", input_shape, num_classes, width, depth,
                         drop_connect_rate, highpass, torch_layout, torch_normalize, torch_image_size)


def fold_input_affine(model, scale, offset, conv_name: str = "stem_conv", bn_name: str = "stem_bn") -> None:
    """Makes `model` (weights loaded from keras.applications) accept our Preprocess output u where the
    weights expect `z = scale * u + offset` (per input channel): scales stem_conv's kernel by `scale`
    and moves the constant `offset` term into stem_bn's moving mean. Exact except on the border
    pixels that zero padding touches. In place."""
    conv, bn = model.get_layer(conv_name), model.get_layer(bn_name)
    kernel = conv.get_weights()[0]
    scale = np.asarray(scale, np.float32).reshape(1, 1, -1, 1)
    offset = np.asarray(offset, np.float32).reshape(1, 1, -1, 1)
    constant = (kernel * offset).sum(axis=(0, 1, 2))  # conv of a constant image, per output channel
    conv.set_weights([kernel * scale] + conv.get_weights()[1:])
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma, beta, mean - constant, var])
