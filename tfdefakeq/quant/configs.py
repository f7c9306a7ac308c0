"""QuantizeConfigs for the layers of a BN-folded detector."""

from __future__ import annotations

import tensorflow_model_optimization as tfmot

from tfdefakeq.errors import UserError
from tfdefakeq.quant.quantizers import LearnedRangeWeightQuantizer
from tfdefakeq.tfcompat import keras

QuantizeConfig = tfmot.quantization.keras.QuantizeConfig
MovingAverageQuantizer = tfmot.quantization.keras.quantizers.MovingAverageQuantizer


def activation_quantizer():
    """8-bit asymmetric per-tensor activation quantizer (TFLite's int8 activation format)."""
    return MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


@keras.utils.register_keras_serializable(package="tfdefakeq")
class WeightBitsQuantizeConfig(QuantizeConfig):
    """Quantizes one weight of a Conv2D / DepthwiseConv2D / Dense at `num_bits` with a learned range,
    and its output at 8 bits unless the next layer (a ReLU) quantizes it.

    The layer's own activation must be linear: activations are separate layers in our backbones, so
    the FakeQuant lands after ReLU, where the converter expects it.
    """

    def __init__(self, weight_attr: str = "kernel", num_bits: int = 4, per_axis: bool = True, quantize_output: bool = True):
        self.weight_attr = weight_attr
        self.num_bits = int(num_bits)
        self.per_axis = bool(per_axis)
        self.quantize_output = bool(quantize_output)

    def get_weights_and_quantizers(self, layer):
        activation = getattr(layer, "activation", None)
        if activation is not None and activation.__name__ != "linear":
            raise UserError(f"layer {layer.name}: fused activation {activation.__name__!r} is not supported; use a separate activation layer")
        return [(getattr(layer, self.weight_attr), LearnedRangeWeightQuantizer(self.num_bits, self.per_axis))]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        setattr(layer, self.weight_attr, quantize_weights[0])

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [activation_quantizer()] if self.quantize_output else []

    def get_config(self):
        return {
            "weight_attr": self.weight_attr,
            "num_bits": self.num_bits,
            "per_axis": self.per_axis,
            "quantize_output": self.quantize_output,
        }
