"""QMDD-style connected quantized block network (Tao et al., IJCAI 2025; see
shared/papers/METHODS.md): a ResNet-18-shaped detector whose blocks pair each quantized 3x3 conv with
a parameter-free full-precision shortcut, mixed by a learnable alpha:

    x_k = alpha_k * BN(QConv_k(x_{k-1})) + (1 - alpha_k) * S_k(x_{k-1}),   then PReLU

with three stages per block: channels down (S = channel average of adjacent pairs), spatial down
(S = 2x2 average pooling; identity at stride 1) and channels up (S = channel repeat). Each shortcut
is an op the converter and the Edge TPU take:
- channel average: a fixed, non-trainable 1x1 conv whose taps are 1/2 (exact at 8 bits, kept at 8 by
  plan_weight_bits). A strided channel slice would need TFOpLambda (tfmot rejects it) and drops half
  the channels instead of averaging them; a reshape + mean over a channel axis costs RESHAPE + MEAN
  ops and 5-D tensors the Edge TPU may refuse;
- average pooling: a fixed 2x2 stride-2 depthwise conv with taps 1/4 (common.spatial_average: TFLite
  DEPTHWISE_CONV_2D, requantized onto its own range exactly as Keras' FakeQuant does; an int8
  AVERAGE_POOL_2D rounds on its input's grid, which Keras cannot mirror);
- channel repeat: Concatenate of the same tensor with itself (TFLite CONCATENATION).
The alpha mix is common.AlphaMix (one weight, 8-bit; its products get their own int8 ranges). The
PReLU is common.DepthwisePReLU: keras' PReLU in float (same weight), and in int8 `x + (1 - a) relu(-x)`
as two 1x1 depthwise convs and an ADD, which XNNPACK runs (it has no int8 PRELU: at 224 px the 24
builtin PRELUs took 9.5 of the int8 model's 20.4 ms, int8/float32 0.73; with the depthwise form 0.37).
No published parameter count exists (the authors' code is not public): the registered reference is
our own count, a regression check.
"""

from __future__ import annotations

from tfdefakeq.backbones.common import (AlphaMix, DepthwisePReLU, channel_average, channel_repeat, classifier_head,
                                        front_end, layers, spatial_average)
from tfdefakeq.backbones.registry import register_backbone
from tfdefakeq.core.tfcompat import keras

_BN = dict(epsilon=1e-5)


def _prelu(x, name):
    # one slope per channel, as torch.nn.PReLU(C); int8 as depthwise convs + ADD, which XNNPACK runs
    return DepthwisePReLU(shared_axes=[1, 2], name=name)(x)


def _mixed_stage(x, quantized, shortcut, name):
    y = layers.BatchNormalization(name=name + "_bn", **_BN)(quantized)
    y = AlphaMix(name=name + "_mix")([y, shortcut])
    return _prelu(y, name + "_prelu")


def connected_quantized_block(x, filters_out, stride, name):
    """x (H, W, C) -> (H / stride, W / stride, filters_out). filters_out must be a multiple of C / 2."""
    channels = int(x.shape[-1])
    mid = channels // 2
    if channels % 2 or filters_out % mid:
        raise ValueError(f"{name}: channels {channels} -> {filters_out}: need even input channels and output a multiple of half")
    # 1. channels down C -> C/2
    q = layers.Conv2D(mid, 3, padding="same", use_bias=False, name=name + "_down_conv")(x)
    x = _mixed_stage(x, q, channel_average(x, 2, name + "_down_shortcut"), name + "_down")
    # 2. spatial down (stride), C/2 -> C/2
    if stride > 1:
        padded = layers.ZeroPadding2D(padding=1, name=name + "_spatial_pad")(x)
        q = layers.Conv2D(mid, 3, strides=stride, padding="valid", use_bias=False, name=name + "_spatial_conv")(padded)
        s = spatial_average(x, stride, name + "_spatial_shortcut")
    else:
        q = layers.Conv2D(mid, 3, padding="same", use_bias=False, name=name + "_spatial_conv")(x)
        s = x
    x = _mixed_stage(x, q, s, name + "_spatial")
    # 3. channels up C/2 -> filters_out
    q = layers.Conv2D(filters_out, 3, padding="same", use_bias=False, name=name + "_up_conv")(x)
    return _mixed_stage(x, q, channel_repeat(x, filters_out // mid, name + "_up_shortcut"), name + "_up")


@register_backbone("cqb_resnet18", family="cqb", reference_params=6_077_312, reference_source="ours (QMDD code is not public)")
def cqb_resnet18(input_shape=(224, 224, 3), num_classes=1, width: float = 1.0, dropout: float = 0.0, highpass=False):
    """ResNet-18 layout (7x7 stem, max-pool, 4 stages x 2 blocks at 64/128/256/512 channels) with
    connected quantized blocks in place of basic blocks; `width` scales channels (even counts)."""
    widths = [max(8, 2 * int(round(c * width / 2))) for c in (64, 128, 256, 512)]
    inputs = keras.Input(shape=input_shape, name="image")
    x = front_end(inputs, highpass)
    x = layers.ZeroPadding2D(padding=3, name="conv1_pad")(x)
    x = layers.Conv2D(widths[0], 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(name="conv1_bn", **_BN)(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.ZeroPadding2D(padding=1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, filters in enumerate(widths):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            x = connected_quantized_block(x, filters, stride, f"cqb{stage + 2}_block{block + 1}")
    outputs = classifier_head(x, num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name="cqb_resnet18")
