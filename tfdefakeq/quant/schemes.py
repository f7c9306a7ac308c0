"""Named quantization schemes. Each turns a float detector into a tfmot QAT model.

- `tfmot_int8`: tfmot's default 8-bit scheme (per-channel int8 conv weights, BN folded by tfmot).
  The honest baseline: what a user gets from `tfmot.quantization.keras.quantize_model`.
- `w8a8`:  our path at 8 bits: BN folded first, learned weight ranges, int8 activations.
- `w4a8`:  our path with 4-bit weights (stored as packed INT4) except the first conv and the
  classifier, which stay at 8 bits: they are tiny and the most sensitive (DESIGN.md section 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow_model_optimization as tfmot

from tfdefakeq.quant.configs import WeightBitsQuantizeConfig
from tfdefakeq.quant.fold import consumers, fold_batchnorm
from tfdefakeq.tfcompat import keras

_q = tfmot.quantization.keras
_default8 = tfmot.quantization.keras.default_8bit
layers = keras.layers
_WEIGHT_ATTR = {layers.Conv2D: "kernel", layers.DepthwiseConv2D: "depthwise_kernel", layers.Dense: "kernel"}


@dataclass(frozen=True)
class Scheme:
    name: str
    weight_bits: int | None  # bits of the body's weights; None = tfmot's own choice (8)
    activation_bits: int = 8
    format: str = "int8"  # the .tflite format the scheme converts to: "int8" or "int4"
    description: str = ""


SCHEMES = {
    s.name: s
    for s in [
        Scheme("tfmot_int8", None, 8, "int8", "tfmot default 8-bit QAT (baseline)"),
        Scheme("w8a8", 8, 8, "int8", "BN folded, learned per-channel 8-bit weight ranges, int8 activations"),
        Scheme("w4a8", 4, 8, "int4", "BN folded, learned 4-bit weight ranges (INT4 storage), first conv and classifier 8-bit"),
    ]
}


class _InputOnlyLayoutTransform(_q.QuantizeLayoutTransform):
    """Only adds the input QuantizeLayer. tfmot's default transforms would put a NoOp config on any
    conv followed by ReLU (LayerReLUQuantize), silently dropping our weight quantizer."""

    def apply(self, model, layer_quantize_map):
        from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_transforms
        from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import model_transformer

        return model_transformer.ModelTransformer(
            model, [default_8bit_transforms.InputLayerQuantize()], set(layer_quantize_map.keys()), layer_quantize_map
        ).transform()


class FoldedScheme(_q.QuantizeScheme):
    def get_layout_transformer(self):
        return _InputOnlyLayoutTransform()

    def get_quantize_registry(self):
        return _default8.Default8BitQuantizeScheme().get_quantize_registry()


def plan_weight_bits(model, body_bits: int) -> dict[str, int]:
    """Bits per weighted layer: `body_bits` everywhere but the stem (every weighted layer up to and
    including the first Conv2D, e.g. a high-pass front end) and the last Dense, which keep 8."""
    weighted = [layer for layer in model.layers if type(layer) in _WEIGHT_ATTR]
    plan = {layer.name: body_bits for layer in weighted}
    for layer in weighted:
        plan[layer.name] = 8
        if type(layer) is layers.Conv2D:
            break
    dense = [layer.name for layer in weighted if isinstance(layer, layers.Dense)]
    if dense:
        plan[dense[-1]] = 8
    return plan


def _layer_configs(model, bit_plan: dict[str, int]) -> dict:
    """QuantizeConfig per layer of a folded model; layers not listed use tfmot's registry."""
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_configs

    readers = consumers(model)
    configs = {}
    for layer in model.layers:
        next_is_relu = [type(model.get_layer(n)) for n in readers[layer.name]] == [layers.ReLU]
        if layer.name in bit_plan:
            cls = type(layer)
            configs[layer.name] = WeightBitsQuantizeConfig(
                _WEIGHT_ATTR[cls], bit_plan[layer.name], per_axis=cls is not layers.Dense, quantize_output=not next_is_relu
            )
        elif isinstance(layer, layers.Add) and next_is_relu:
            # no FakeQuant between Add and ReLU, so the converter fuses them (as tfmot does)
            configs[layer.name] = default_8bit_quantize_configs.NoOpQuantizeConfig()
    return configs


def apply_folded_scheme(model, bit_plan: dict[str, int]):
    """BN-fold `model`, annotate each weighted layer with its bits, and build the QAT model."""
    folded = fold_batchnorm(model)
    configs = _layer_configs(folded, bit_plan)

    def annotate(layer):
        clone = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, layers.InputLayer):
            return clone
        return _q.quantize_annotate_layer(clone, quantize_config=configs.get(layer.name))

    with _q.quantize_scope(custom_objects()):
        annotated = keras.models.clone_model(folded, clone_function=annotate)
        annotated.set_weights(folded.get_weights())
        return _q.quantize_apply(annotated, scheme=FoldedScheme())


def custom_objects() -> dict:
    from tfdefakeq.quant.quantizers import LearnedRangeWeightQuantizer

    return {"WeightBitsQuantizeConfig": WeightBitsQuantizeConfig, "LearnedRangeWeightQuantizer": LearnedRangeWeightQuantizer}
