"""Named quantization schemes. Each turns a float detector into a tfmot QAT model.

- `tfmot_int8`: tfmot's default 8-bit scheme (per-channel int8 conv weights, BN folded by tfmot).
  The honest baseline: what a user gets from `tfmot.quantization.keras.quantize_model`.
- `w8a8`:  our path at 8 bits: BN folded first, learned weight ranges, int8 activations.
- `w4a8`:  our path with 4-bit weights (stored as packed INT4) except the first conv and the
  classifier, which stay at 8 bits: they are tiny and the most sensitive (DESIGN.md section 5).
- `lsq_w4a8`, `lsq_w3a8`, `lsq_w2a8`: the same layout with LSQ step sizes (8/4/3/2-bit grids) and
  learned activation ranges: the plain-LSQ ablation.
- `adaptive`: LSQ plus the adaptive bidirectional plan (`tfdefakeq.quant.adaptive`): per-layer bits
  from sensitivity under a budget, salient input channels on an 8-bit path; fine-tuned with
  distillation from the float teacher (`tfdefakeq.quant.distill`).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow_model_optimization as tfmot

from tfdefakeq.quant.configs import WeightBitsQuantizeConfig, custom_quantize_config, extra_quantize_configs
from tfdefakeq.quant.fold import consumers, fold_batchnorm
from tfdefakeq.core.tfcompat import keras

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
    lsq: bool = False  # LSQ weight steps and learned activation ranges (else learned weight ranges, EMA activations)
    adaptive: bool = False  # bits and salient channels planned from calibration data


SCHEMES = {
    s.name: s
    for s in [
        Scheme("tfmot_int8", None, 8, "int8", "tfmot default 8-bit QAT (baseline)"),
        Scheme("w8a8", 8, 8, "int8", "BN folded, learned per-channel 8-bit weight ranges, int8 activations"),
        Scheme("w4a8", 4, 8, "int4", "BN folded, learned 4-bit weight ranges (INT4 storage), first conv and classifier 8-bit"),
        Scheme("tfmot_nbit_w4a8", None, 8, "int4", "tfmot DefaultNBitQuantizeScheme, 4-bit weights everywhere (baseline)"),
        Scheme("lsq_w4a8", 4, 8, "int4", "LSQ 4-bit weight steps, learned activation ranges (plain LSQ)", lsq=True),
        Scheme("lsq_w3a8", 3, 8, "int4", "LSQ 3-bit weights (INT4 containers), learned activation ranges", lsq=True),
        Scheme("lsq_w2a8", 2, 8, "int4", "LSQ 2-bit weights (INT2 storage), learned activation ranges", lsq=True),
        Scheme("adaptive", 4, 8, "int4", "adaptive bidirectional: sensitivity bit plan under a budget, salient channels at 8 bits, LSQ, distillation",
               lsq=True, adaptive=True),
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


# Depthwise kernels stay at 8 bits: see plan_weight_bits.
_LOW_BIT_TYPES = (layers.Conv2D, layers.Dense)


def plan_weight_bits(model, body_bits: int) -> dict[str, int]:
    """Bits per weighted layer: `body_bits` everywhere but
    - the stem (every weighted layer up to and including the first Conv2D, e.g. a high-pass front end)
      and the classifier (the last weighted layer: a Dense, or MobileNetV3's 1x1 'Logits' conv);
    - fixed, non-trainable layers (high-pass / SRM filters, CQB channel-average shortcuts): their
      taps sit exactly on the 8-bit grid, and QMDD keeps shortcuts at full precision;
    - depthwise kernels. The TF 2.21 converter does store a 4-bit depthwise FakeQuant as a packed
      INT4 DEPTHWISE_CONV_2D filter (measured on MobileNetV2; ai-edge-quantizer has no such recipe),
      but LearnedRangeWeightQuantizer's ranges run along the kernel's last axis, which for a Keras
      depthwise kernel (kh, kw, C, 1) is the multiplier: one range for all channels (at 8 bits too).
      Per-tensor low-bit depthwise kernels are the classic MobileNet quantization failure (channel
      ranges differ widely; not re-measured here) and depthwise weights are a small share of the
      bytes, so they keep 8 bits until the quantizer ranges run along the channel axis; pass a
      bit_plan to override.
    SeparableConv2D layers count as their depthwise + pointwise halves (split by fold_batchnorm)."""
    weighted = [layer for layer in model.layers if type(layer) in _WEIGHT_ATTR or type(layer) is layers.SeparableConv2D]
    plan = {}
    for layer in weighted:
        if type(layer) is layers.SeparableConv2D:
            plan[layer.name + "_depthwise"] = 8
            plan[layer.name] = body_bits
        else:
            low = isinstance(layer, _LOW_BIT_TYPES) and type(layer) is not layers.DepthwiseConv2D and layer.trainable
            plan[layer.name] = body_bits if low else 8
    for layer in weighted:
        plan[layer.name] = 8
        if type(layer) is layers.Conv2D:
            break
    plan[weighted[-1].name] = 8
    return plan


# Layers whose output tfmot's registry quantizes with a moving average; the LSQ schemes learn these
# ranges instead.
_OUTPUT_QUANTIZED = (layers.ReLU, layers.Add, layers.GlobalAveragePooling2D, layers.Concatenate)


def _layer_configs(model, bit_plan: dict[str, int], lsq: bool = False, per_tensor=()) -> dict:
    """QuantizeConfig per layer of a folded model; layers not listed use tfmot's registry. Layers in
    `per_tensor` get one weight scale for the whole kernel (Dense kernels always do)."""
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_configs

    from tfdefakeq.quant.configs import OutputQuantizeConfig

    readers = consumers(model)
    outputs = set(model.output_names)
    concat_inputs = concat_fed_layers(model, readers)
    configs = {}
    for layer in model.layers:
        next_is_relu = [_is_relu(model.get_layer(n)) for n in readers[layer.name]] == [True]
        custom = None if isinstance(layer, layers.InputLayer) else custom_quantize_config(layer)
        if custom is not None:
            configs[layer.name] = custom
        elif layer.name in bit_plan:
            cls = type(layer)
            configs[layer.name] = WeightBitsQuantizeConfig(
                _WEIGHT_ATTR[cls], bit_plan[layer.name], per_axis=cls is not layers.Dense and layer.name not in per_tensor,
                quantize_output=not (next_is_relu or layer.name in concat_inputs), lsq=lsq, logit=layer.name in outputs)
        elif (isinstance(layer, layers.Add) and next_is_relu) or layer.name in concat_inputs:
            # no FakeQuant between Add and ReLU, so the converter fuses them (as tfmot does); none before
            # a concatenation either (see concat_fed_layers)
            configs[layer.name] = default_8bit_quantize_configs.NoOpQuantizeConfig()
        elif lsq and (type(layer) in _OUTPUT_QUANTIZED or _is_relu(layer)):
            configs[layer.name] = OutputQuantizeConfig(learned=True)
    return configs


def concat_fed_layers(model, readers: dict[str, list[str]] | None = None) -> set[str]:
    """Names of the layers whose output only a multi-source Concatenate reads and that would
    otherwise quantize it: weighted layers (Conv2D, DepthwiseConv2D, Dense), ReLUs and the other
    output-quantized types (Add, global pooling). TFLite's CONCATENATION is a same-scale op: the
    converter writes every input of the concat at the concat's one scale (the producing op
    requantizes straight onto it) and drops any FakeQuant range of their own, so Keras must
    quantize these tensors once, at the concat, too. (tfmot's default 8-bit layout does the same
    for tfmot_int8: default_8bit_transforms.ConcatTransform.) Measured on MesoInception-4 before
    (tiny, w4a8): the branch convs 0.76-1.98 LSB off TFLite's, 13-37% of outputs beyond ties.
    A concat of one tensor with itself (a channel repeat) passes its input's grid through instead
    (configs.PassThroughQuantizeConfig), so its input keeps its own FakeQuant."""
    from tfdefakeq.quant.fold import inbound_layers

    readers = readers if readers is not None else consumers(model)
    fed = set()
    for concat in model.layers:
        if type(concat) is not layers.Concatenate:
            continue
        sources = inbound_layers(concat)
        if len({s.name for s in sources}) < 2:
            continue
        for source in sources:
            quantizes = type(source) in _WEIGHT_ATTR or type(source) in _OUTPUT_QUANTIZED or _is_relu(source)
            if quantizes and type(source) is not layers.Concatenate and readers[source.name] == [concat.name]:
                fed.add(source.name)
    return fed


def _is_relu(layer) -> bool:
    """A ReLU / ReLU6 the converter fuses into the op before it (so that op's output is not quantized)."""
    if type(layer) is layers.ReLU:
        return True
    return type(layer) is layers.Activation and layer.activation.__name__ in ("relu", "relu6")


def tfmot_configs(model) -> dict:
    """Our QuantizeConfig for each layer type tfmot's registry lacks (None elsewhere: the registry's)."""
    return {layer.name: custom_quantize_config(layer) for layer in model.layers if not isinstance(layer, layers.InputLayer)}


def annotate_and_apply(model, configs: dict, scheme=None, objects: dict | None = None):
    """tfmot's QAT model of `model` with layer `name` annotated by configs.get(name) (None: tfmot's
    registry decides), under `scheme` (tfmot's default 8-bit when None); `objects`: the custom
    objects the configs need (default `custom_objects()`)."""

    def annotate(layer):
        clone = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, layers.InputLayer):
            return clone
        return _q.quantize_annotate_layer(clone, quantize_config=configs.get(layer.name))

    with _q.quantize_scope(objects or custom_objects()):
        annotated = keras.models.clone_model(model, clone_function=annotate)
        annotated.set_weights(model.get_weights())
        return _q.quantize_apply(annotated) if scheme is None else _q.quantize_apply(annotated, scheme=scheme)


def apply_tfmot_int8(model):
    """tfmot's default 8-bit QAT (`quantize_model`), with our QuantizeConfigs on the layer types
    tfmot's registry lacks (squeeze-excite Multiply, HardSigmoid, PReLU, DepthwisePReLU, AlphaMix)."""
    return annotate_and_apply(model, tfmot_configs(model))


def apply_folded_scheme(model, bit_plan: dict[str, int], lsq: bool = False, salient_channels: dict | None = None,
                        per_tensor=()):
    """BN-fold `model` (and split the convs in `salient_channels`, see quant.vertical), annotate
    each weighted layer with its bits, and build the QAT model. `lsq`: LSQ weight steps and learned
    activation ranges. `per_tensor`: layers whose kernel gets one scale instead of one per output
    channel (the .tflite then stores one scale and zero point for the kernel and for its bias)."""
    from tfdefakeq.core.errors import UserError
    from tfdefakeq.quant.vertical import SALIENT_SUFFIX, split_salient

    folded = fold_batchnorm(model)
    if salient_channels:
        folded = split_salient(folded, salient_channels)
        bit_plan = {**{name + SALIENT_SUFFIX: 8 for name in salient_channels}, **bit_plan}
    weighted = {layer.name for layer in folded.layers if type(layer) in _WEIGHT_ATTR}
    unknown = sorted(set(bit_plan) - weighted)
    if unknown:
        raise UserError(f"bit plan names layers the model does not have: {', '.join(unknown[:5])}")
    per_tensor = set(per_tensor or ())
    misplaced = sorted(per_tensor - set(bit_plan))
    if misplaced:
        raise UserError(f"per-tensor layers not in the bit plan: {', '.join(misplaced[:5])}")
    split = sorted(per_tensor & set(salient_channels or {}))
    if split:
        raise UserError(f"layers both split (salient channels) and per-tensor: {', '.join(split[:5])}")
    return annotate_and_apply(folded, _layer_configs(folded, bit_plan, lsq, per_tensor), FoldedScheme())


def custom_objects() -> dict:
    from tfdefakeq.backbones import common
    from tfdefakeq.quant import configs
    from tfdefakeq.quant import quantizers
    from tfdefakeq.quant.vertical import ChannelGather

    objects = {"WeightBitsQuantizeConfig": WeightBitsQuantizeConfig}
    for cls in (quantizers.LearnedRangeWeightQuantizer, quantizers.LSQWeightQuantizer, quantizers.LearnedActivationQuantizer,
                quantizers.LogitQuantizer, configs.OutputQuantizeConfig, ChannelGather):
        objects[cls.__name__] = cls
    for cls in list(extra_quantize_configs().values()) + [common.HardSigmoid, common.AlphaMix, common.DepthwisePReLU,
                                                          configs.PassThroughQuantizeConfig]:
        objects[cls.__name__] = cls
    for name in ("HighPassKernel", "ChannelAverageKernel", "SRMKernel"):
        objects[name] = getattr(common, name)
    return objects
