"""QuantizeConfigs for the layers of a BN-folded detector."""

from __future__ import annotations

import tensorflow_model_optimization as tfmot

from tfdefakeq.core.errors import UserError
from tfdefakeq.quant.quantizers import (
    FixedRangeActivationQuantizer,
    LearnedActivationQuantizer,
    LearnedRangeWeightQuantizer,
    LogitQuantizer,
    LSQWeightQuantizer,
)
from tfdefakeq.core.tfcompat import keras

QuantizeConfig = tfmot.quantization.keras.QuantizeConfig
MovingAverageQuantizer = tfmot.quantization.keras.quantizers.MovingAverageQuantizer


def activation_quantizer(learned: bool = False, logit: bool = False):
    """8-bit asymmetric per-tensor activation quantizer (TFLite's int8 activation format): tfmot's
    moving-average one, or with `learned` a range trained by gradient (the LSQ schemes); with both
    `learned` and `logit` (the model's output) quantizers.LogitQuantizer."""
    if learned and logit:
        return LogitQuantizer(num_bits=8)
    if learned:
        return LearnedActivationQuantizer(num_bits=8)
    return MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


@keras.utils.register_keras_serializable(package="tfdefakeq")
class WeightBitsQuantizeConfig(QuantizeConfig):
    """Quantizes one weight of a Conv2D / DepthwiseConv2D / Dense at `num_bits` with a learned range,
    and its output at 8 bits unless the next layer (a ReLU) quantizes it.

    The layer's own activation must be linear: activations are separate layers in our backbones, so
    the FakeQuant lands after ReLU, where the converter expects it.
    """

    def __init__(self, weight_attr: str = "kernel", num_bits: int = 4, per_axis: bool = True, quantize_output: bool = True,
                 lsq: bool = False, logit: bool = False):
        self.weight_attr = weight_attr
        self.num_bits = int(num_bits)
        self.per_axis = bool(per_axis)
        self.quantize_output = bool(quantize_output)
        self.lsq = bool(lsq)  # LSQ step sizes (8/4/3/2 bits) and learned activation ranges
        self.logit = bool(logit)  # the layer computes the model's output: quantizers.LogitQuantizer (with lsq)

    def get_weights_and_quantizers(self, layer):
        activation = getattr(layer, "activation", None)
        if activation is not None and activation.__name__ != "linear":
            raise UserError(f"layer {layer.name}: fused activation {activation.__name__!r} is not supported; use a separate activation layer")
        if self.lsq:
            quantizer = LSQWeightQuantizer(self.num_bits, self.per_axis, depthwise=self.weight_attr == "depthwise_kernel")
        else:
            quantizer = LearnedRangeWeightQuantizer(self.num_bits, self.per_axis)
        return [(getattr(layer, self.weight_attr), quantizer)]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        setattr(layer, self.weight_attr, quantize_weights[0])

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [activation_quantizer(self.lsq, self.logit)] if self.quantize_output else []

    def get_config(self):
        return {
            "weight_attr": self.weight_attr,
            "num_bits": self.num_bits,
            "per_axis": self.per_axis,
            "quantize_output": self.quantize_output,
            "lsq": self.lsq,
            "logit": self.logit,
        }


LastValueQuantizer = tfmot.quantization.keras.quantizers.LastValueQuantizer


def scalar_weight_quantizer():
    """8-bit symmetric per-tensor weight quantizer (tfmot's default weight format)."""
    return LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True, narrow_range=True)


class _NoWeightsConfig(QuantizeConfig):
    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_config(self):
        return {}


@keras.utils.register_keras_serializable(package="tfdefakeq")
class OutputQuantizeConfig(_NoWeightsConfig):
    """A weight-free layer whose output TFLite computes as one int8 op: Multiply (the squeeze-excite
    gate product and keras.applications' hard-swish product), which tfmot's registry lacks; and,
    with `learned`, ReLU / Add / pooling outputs under the LSQ schemes."""

    def __init__(self, learned: bool = False):
        self.learned = bool(learned)

    def get_output_quantizers(self, layer):
        return [activation_quantizer(self.learned)]

    def get_config(self):
        return {"learned": self.learned}


# TFLite's int8 LOGISTIC output grid: scale 1/256, zero point -128.
SIGMOID_RANGE = (0.0, 255.0 / 256.0)


@keras.utils.register_keras_serializable(package="tfdefakeq")
class SigmoidQuantizeConfig(_NoWeightsConfig):
    """Activation("sigmoid"): its output on TFLite's fixed LOGISTIC grid ([0, 255/256] in 256 steps).
    tfmot's registry leaves a sigmoid's output unquantized, while the converter stores it as an int8
    tensor: the MUL after it (swish, the squeeze-excite gate) then read rounded gates in TFLite and
    exact ones in Keras. Measured on EfficientNet-B0 at test size (tfmot_int8, XNNPACK): 1-LSB
    differences on 1-36% of the outputs of every swish and SE product, up to 0.4 LSB away from any
    rounding tie; with the gate rounded in Keras too, only ties remain."""

    def get_output_quantizers(self, layer):
        return [FixedRangeActivationQuantizer(*SIGMOID_RANGE)]


@keras.utils.register_keras_serializable(package="tfdefakeq")
class HardSigmoidQuantizeConfig(_NoWeightsConfig):
    """common.HardSigmoid: fixed [0, 6] range inside (set on the layer), learned 8-bit range at the
    output (calibrated to ~[0, 1])."""

    def set_quantize_activations(self, layer, quantize_activations):
        layer.quantize_inner = True

    def get_output_quantizers(self, layer):
        return [activation_quantizer()]


@keras.utils.register_keras_serializable(package="tfdefakeq")
class PReLUQuantizeConfig(QuantizeConfig):
    """keras PReLU -> TFLite PRELU: the per-channel slopes as an 8-bit per-tensor constant, the output
    at 8 bits."""

    def get_weights_and_quantizers(self, layer):
        return [(layer.alpha, scalar_weight_quantizer())]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.alpha = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [activation_quantizer()]

    def get_config(self):
        return {}


@keras.utils.register_keras_serializable(package="tfdefakeq")
class AlphaMixQuantizeConfig(PReLUQuantizeConfig):
    """common.AlphaMix: alpha as an 8-bit constant (as PReLU's slopes); `alpha * q` and
    `(1 - alpha) * s` each get a learned 8-bit range (the operands of TFLite's int8 ADD), the sum another."""

    def set_quantize_activations(self, layer, quantize_activations):
        # The two products are inside the layer, so their quantizers are too
        set_term_quantizers(layer, ("quantized_term", "shortcut_term"))


@keras.utils.register_keras_serializable(package="tfdefakeq")
class DepthwisePReLUQuantizeConfig(_NoWeightsConfig):
    """common.DepthwisePReLU -> DEPTHWISE_CONV_2D(+RELU), DEPTHWISE_CONV_2D, ADD (all int8, delegated
    by XNNPACK): relu(-x) and `(1 - alpha) * relu(-x)` each get an 8-bit range, the output another.
    The slopes are fake-quantized inside the layer (per channel, exact), not here."""

    def set_quantize_activations(self, layer, quantize_activations):
        set_term_quantizers(layer, ("negative_part", "slope_term"))

    def get_output_quantizers(self, layer):
        return [activation_quantizer()]


def set_term_quantizers(layer, names) -> None:
    """Builds one 8-bit activation quantizer per name on `layer` (vars on the layer, once: tfmot calls
    set_quantize_activations on every call of the wrapper) as `layer.term_quantizers`."""
    if getattr(layer, "term_quantizers", None):
        return
    terms = []
    for name in names:
        quantizer = activation_quantizer()
        terms.append((quantizer, quantizer.build(None, name, layer)))
    layer.term_quantizers = terms


@keras.utils.register_keras_serializable(package="tfdefakeq")
class PassThroughQuantizeConfig(_NoWeightsConfig):
    """A range-preserving layer whose int8 output must keep its input's scale: AveragePooling2D
    (TFLite's int8 AVERAGE_POOL_2D requires it), a channel repeat (Concatenate of one tensor with
    itself) and a global average pool over a 1x1 map (the converter removes it, see
    `custom_quantize_config`). A FakeQuant of its own would give the output another scale, and the converter would
    insert a QUANTIZE (int8 -> int8 requantize) op in front of it. AveragePooling2D is then within
    0.5 LSB of TFLite, not exact (TFLite rounds the mean on the input's grid, Keras keeps it):
    the backbones pool through a fixed depthwise conv instead (common.spatial_average)."""

    def get_output_quantizers(self, layer):
        return []


def extra_quantize_configs() -> dict:
    """QuantizeConfig class per layer type that tfmot's default 8-bit registry lacks. Used by both the
    tfmot_int8 and the folded schemes; see `custom_quantize_config` for the per-layer choice."""
    from tfdefakeq.backbones.common import AlphaMix, DepthwisePReLU, HardSigmoid
    from tfdefakeq.quant.vertical import ChannelGather

    return {
        ChannelGather: PassThroughQuantizeConfig,
        keras.layers.Multiply: OutputQuantizeConfig,
        keras.layers.PReLU: PReLUQuantizeConfig,
        keras.layers.AveragePooling2D: PassThroughQuantizeConfig,
        HardSigmoid: HardSigmoidQuantizeConfig,
        AlphaMix: AlphaMixQuantizeConfig,
        DepthwisePReLU: DepthwisePReLUQuantizeConfig,
    }


def custom_quantize_config(layer):
    """A fresh QuantizeConfig of ours for `layer`, or None to use tfmot's registry."""
    from tfdefakeq.quant.fold import inbound_layers

    if type(layer) is keras.layers.Concatenate:
        sources = inbound_layers(layer)
        return PassThroughQuantizeConfig() if len({id(s) for s in sources}) == 1 else None
    if type(layer) is keras.layers.GlobalAveragePooling2D and _pools_one_pixel(layer):
        # A mean over a 1x1 map is the identity: the converter drops the MEAN (or makes it a
        # RESHAPE) and, with it, the requantization onto the pool's own range, so the next op reads
        # the pool's input tensor at the input's scale (and its bias was quantized with the pool's).
        # The pool's output must then keep its input's grid in Keras too. Measured on MobileNetV3 at
        # 32 px (late SE blocks and the head's avg_pool, tfmot's EMA range on the pool): ranges 0.5%
        # apart gave the conv after it 1 LSB errors on 10-13% of its outputs; a pool range that
        # calibration left clipped (max 0.001 vs its input's 0.012) gave 25-150 LSB errors.
        return PassThroughQuantizeConfig()
    if type(layer) is keras.layers.Activation and getattr(layer.activation, "__name__", "") == "sigmoid":
        return SigmoidQuantizeConfig()
    cls = extra_quantize_configs().get(type(layer))
    return cls() if cls else None


def _pools_one_pixel(layer) -> bool:
    """A channels-last global pooling layer whose input map is 1x1 (so the pooling is the identity)."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return False
    try:
        shape = tuple(layer.input.shape)
    except (AttributeError, ValueError):
        return False
    return len(shape) == 4 and shape[1] == 1 and shape[2] == 1
