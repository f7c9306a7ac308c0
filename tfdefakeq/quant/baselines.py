"""Honest baselines for the quantization-methods benchmark (DESIGN.md section 5): what a user gets
from the off-the-shelf tools, on the same detectors and data as our schemes.

- `apply_tfmot_nbit`: tfmot's experimental `DefaultNBitQuantizeScheme` QAT (W4A8 by default). Every
  weighted layer is quantized at `weight_bits`, the stem, a fixed high-pass front end and the
  classifier included (tfmot has no notion of a sensitive layer).
- `aeq_quantize`: ai-edge-quantizer 0.10.0 post-training quantization of a float `.tflite`:
  `"aeq_dyn_wi4"` (its `dynamic_wi4_afp32` recipe) and `"aeq_w4a8"` (static, 4-bit weights, int8
  activations calibrated on images).
- `aeq_quantize_plan`: "our allocation, their PTQ": ai-edge-quantizer's dynamic-range PTQ with one
  entry per layer at the bits of an adaptive bit plan (`QuantPlan.weight_bits`, one kernel scale
  where the plan has `per_tensor`). Set beside the adaptive model trained on the same plan, it
  isolates what QAT (LSQ fine-tuning against the teacher) adds to the allocation.

What the files hold (measured with TF 2.21.0, tfmot 0.8.1, ai-edge-litert 2.3.0, ai-edge-quantizer
0.10.0; ResNet-18 at width 1/4 with the high-pass front end, and MobileNetV2 alpha 0.35, 32 px):

- tfmot n-bit W4A8, converted with `tfdefakeq.engine.export.to_tflite(qat, "int8")`: every CONV_2D,
  DEPTHWISE_CONV_2D and FULLY_CONNECTED filter is stored as a packed INT4 tensor (schema type 17),
  not as INT8 holding 4-bit values. The grid is not re-rounded: stored integers x stored scales
  equal the Keras fake-quantized kernels times the folded BatchNorm multipliers to 1e-7 relative,
  with at most 15 levels ([-7, 7], zero point 0) per output channel. Conv kernels: per-channel
  scales (the per-channel Keras ranges times the BN multipliers). Depthwise kernels: tfmot keeps ONE
  range per kernel (its per-axis range runs along the depth multiplier), but the file has one scale
  per channel (range x BN multiplier), the integers unchanged (a channel's largest |q| can be 4).
  Dense: one scale. Input and output int8, no float ops. At 8 bits the filters are INT8 (exact);
  at 3 and 2 bits they are stored in INT4 containers (files no smaller than 4-bit): 2-bit levels
  {-1, 0, 1} become {-7, 0, 7} with scale / 7 (exact), but 3-bit levels {-3..3} are RE-ROUNDED to
  {-7, -5, -2, 0, 2, 5, 7} (round(7k/3)) with scale / (7/3): the trained 3-bit grid is lost.
- aeq "aeq_dyn_wi4": CONV_2D and FULLY_CONNECTED filters INT4 with per-channel scales;
  DEPTHWISE_CONV_2D is not in the recipe's op list, so depthwise filters (and the high-pass front
  end) stay FLOAT32 and run in float; biases stay FLOAT32; input and output FLOAT32 (activations
  are quantized on the fly inside the hybrid kernels).
- aeq "aeq_w4a8": its static 4-bit policy (`static_wi4_ai8`) covers only CONV_2D, FULLY_CONNECTED
  and the graph I/O; given alone, every other op (ADD, PAD, MEAN, MAX_POOL_2D, DEPTHWISE_CONV_2D)
  would stay float. So the recipe is static int8 for all supported ops, then 4-bit weights for
  CONV_2D and FULLY_CONNECTED: full integer, depthwise filters INT8 per-channel, input and output
  INT8. The input scale and zero point come from the calibration images (our converter fixes the
  input range to the full pixel range instead), so pixels outside the calibrated range clip.
  Activation ranges are aeq's own (a moving average of per-sample min/max), except the graph
  output's: see `_set_output_ranges`.
- Sizes, ResNet-18 full width at 64 px (11.2 M parameters): float32 44.70 MB; aeq_dyn_wi4 5.68 MB
  (0.127); aeq_w4a8 5.73 MB (0.128); tfmot n-bit W4A8 5.74 MB (0.128), INT4 weights 5.58 MB in
  each. On held-out images after a short float training (n-bit calibrated, not fine-tuned), logit
  correlation with float 0.999 / 0.973 / 0.993, largest logit error 4% / 47% / 21% of the float
  logits' spread.
- ai-edge-quantizer writes the weights after the flatbuffer (buffer offset/size) once they pass
  256 KiB; `tfdefakeq.runtime.unpack` refuses such files and `modelinfo` does not count those
  bytes, so `aeq_quantize` returns the model with every buffer moved back inside the flatbuffer
  (same tensors, same outputs).
"""

from __future__ import annotations

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.unpack import inline_buffers

AEQ_RECIPES = {
    "aeq_dyn_wi4": "ai-edge-quantizer dynamic_wi4_afp32: INT4 conv/FC weights, float activations and I/O, depthwise float",
    "aeq_w4a8": "ai-edge-quantizer static: INT4 conv/FC weights, INT8 depthwise weights, int8 activations and I/O",
}
# What ai-edge-quantizer 0.10.0's policy (default_policy.py) lets each op store in a dynamic-range
# recipe: CONV_2D and FULLY_CONNECTED kernels at 2, 4 or 8 bits, DEPTHWISE_CONV_2D at 8 only. Its
# static (int8-activation) recipes stop at 4 bits, so a plan's 2-bit layers can only be kept with
# float activations. A TFLite file has no 3-bit type: a 3-bit layer is stored at 4, as ours is.
AEQ_PLAN_BITS = {"CONV_2D": (2, 4, 8), "FULLY_CONNECTED": (2, 4, 8), "DEPTHWISE_CONV_2D": (8,)}


def apply_tfmot_nbit(model, weight_bits: int = 4, activation_bits: int = 8, calib_images: np.ndarray | None = None,
                     input_range=(-1.0, 127.0 / 128.0)):
    """tfmot's experimental `DefaultNBitQuantizeScheme` QAT model of float `model` (a flat
    Functional detector from `tfdefakeq.backbones.build`).

    The layer types tfmot's registry lacks (squeeze-excite Multiply, HardSigmoid, PReLU, AlphaMix,
    AveragePooling2D, channel repeats) get our QuantizeConfigs, as in `schemes.apply_tfmot_int8`;
    their outputs are quantized at 8 bits whatever `activation_bits` is, and PReLU slopes and the
    AlphaMix alpha at 8 bits. Every other layer (BN folding included) is tfmot's n-bit scheme; all
    twelve backbones build (conversion checked on resnet18 and mobilenet_v2). Weight ranges are set from the weights (tfmot's
    last-value ranges start at [-6, 6] until the first training step); the input range is fixed to
    `input_range` (the normalised pixel range); with `calib_images` ((N, H, W, 3) normalised
    float32) the activation ranges start at the observed ones (DESIGN.md section 5, pitfall 2).

    Converted with `tfdefakeq.engine.export.to_tflite(qat, "int8")`, 4-bit weights become packed INT4
    tensors holding exactly the trained grid; 3-bit grids are re-rounded (see the module docstring).
    Activations below 8 bits do not convert (DESIGN.md section 4: W4A4 fails in the converter).
    """
    import tensorflow_model_optimization as tfmot

    from tfdefakeq.quant import calibrate
    from tfdefakeq.quant.schemes import annotate_and_apply, tfmot_configs

    if not (2 <= int(weight_bits) <= 8 and 2 <= int(activation_bits) <= 8):
        raise UserError(f"tfmot n-bit needs 2-8 weight and activation bits, got W{weight_bits}A{activation_bits}")
    _q = tfmot.quantization.keras
    scheme = _q.experimental.default_n_bit.DefaultNBitQuantizeScheme(
        num_bits_weight=int(weight_bits), num_bits_activation=int(activation_bits))
    try:
        qat = annotate_and_apply(model, tfmot_configs(model), scheme)
    except (ValueError, RuntimeError) as e:  # a layer type neither tfmot nor configs.py knows
        raise UserError(f"{model.name}: tfmot n-bit cannot quantize this model ({' '.join(str(e).split())[:300]})") from e
    _init_last_value_ranges(qat)
    calibrate.set_input_range(qat, *input_range)
    if calib_images is not None:
        calibrate.calibrate_activation_ranges(qat, calib_images)
    return qat


def _init_last_value_ranges(qat) -> int:
    """Runs every last-value weight quantizer once in training mode, which stores the weight's own
    range, as tfmot's first training step would. Returns the number set."""
    import tensorflow_model_optimization as tfmot

    last_value = tfmot.quantization.keras.quantizers.LastValueQuantizer
    count = 0
    for layer in qat.layers:
        for weight, quantizer, qvars in getattr(layer, "_weight_vars", []):
            if isinstance(quantizer, last_value):
                quantizer(weight, training=True, weights=qvars)
                count += 1
    return count


def aeq_quantize(float_tflite: bytes, recipe: str, calib_images: np.ndarray | None = None) -> bytes:
    """ai-edge-quantizer PTQ of a float32 `.tflite` (bytes) -> quantized `.tflite` (bytes).

    recipe: "aeq_dyn_wi4" (no calibration; `calib_images` ignored) or "aeq_w4a8" (needs
    `calib_images`: (N, H, W, 3) float32, normalised as the model expects, e.g.
    `Preprocess().apply(uint8_images)`). See the module docstring for what each file holds. The
    result has all weights inside the flatbuffer, so `tfdefakeq.runtime.interpreter.TFLiteModel`
    loads it (INT4 unpacked to INT8 at load, float or int8 I/O as the recipe gives).
    """
    try:
        from ai_edge_quantizer import qtyping, quantizer
        from ai_edge_quantizer import recipe as aeq_recipe
    except ImportError as e:  # pragma: no cover - depends on the install
        raise UserError("ai-edge-quantizer baselines need ai-edge-quantizer==0.10.0 (pip install -e '.[dev]')") from e
    if recipe not in AEQ_RECIPES:
        raise UserError(f"unknown ai-edge-quantizer recipe {recipe!r} (known: {', '.join(sorted(AEQ_RECIPES))})")
    float_tflite = bytes(float_tflite)
    qt = quantizer.Quantizer(bytearray(float_tflite))
    calibration = None
    if recipe == "aeq_dyn_wi4":
        qt.load_quantization_recipe(aeq_recipe.dynamic_wi4_afp32())
    else:
        ops = qtyping.TFLOperationName
        # the later, narrower entries win for their ops; ops a 4-bit entry cannot take keep int8
        qt.add_static_config(".*", ops.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8)
        qt.add_static_config(".*", ops.CONV_2D, activation_num_bits=8, weight_num_bits=4)
        qt.add_static_config(".*", ops.FULLY_CONNECTED, activation_num_bits=8, weight_num_bits=4)
        data = _calibration_data(float_tflite, calib_images)
        calibration = qt.calibrate(data, num_threads=1)
        _set_output_ranges(calibration, float_tflite, data)
    result = qt.quantize(calibration, enable_progress_bar=False, enable_progress_report=False)
    return inline_buffers(bytes(result.quantized_model))  # weights inside: unpack/modelinfo read them


def aeq_quantize_plan(float_tflite: bytes, weight_bits: dict[str, int], per_tensor=()) -> tuple[bytes, dict[str, int]]:
    """ai-edge-quantizer's dynamic-range PTQ of a float32 `.tflite` at an adaptive plan's bits ->
    (quantized `.tflite` bytes, layer -> kernel bits stored).

    Each layer of `weight_bits` (Keras layer name -> bits) gets its own recipe entry for its op,
    found by the converter's tensor names (`.../NAME/...` in the kernel's or the output's name, so the
    float file must keep them: not a file renamed by `runtime.unpack.shorten_tensor_names`);
    `per_tensor` layers get one kernel scale (TENSORWISE), the others one per output channel. Bits go to
    the nearest the policy allows at or above the plan's (AEQ_PLAN_BITS: 3 -> 4, a depthwise kernel at 8). Activations stay float and are
    quantized on the fly inside the hybrid kernels; weights are rounded min-max (no fine-tuning).
    A layer of the plan that names no tensor of the file, or an op the policy cannot quantize at
    all, is a UserError: a plan half applied would be a different plan.
    """
    import re

    try:
        from ai_edge_quantizer import qtyping, quantizer
    except ImportError as e:  # pragma: no cover - depends on the install
        raise UserError("ai-edge-quantizer baselines need ai-edge-quantizer==0.10.0 (pip install -e '.[dev]')") from e
    from tfdefakeq.runtime.modelinfo import schema_module

    schema = schema_module()
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(bytes(float_tflite), 0)
    graph = model.subgraphs[0]

    def name(index: int) -> str:
        raw = graph.tensors[index].name
        return raw.decode() if isinstance(raw, bytes) else str(raw or "")

    kernel_ops = {}  # layer -> [(op kind, the op's scope: its output names, as ai-edge-quantizer matches them)]
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = op_names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        if kind not in AEQ_PLAN_BITS:
            continue
        outputs = [name(i) for i in op.outputs if i != -1]
        # the kernel's name says the layer even where the output is a graph output ("StatefulPartitionedCall:0")
        said = " ".join([name(op.inputs[1])] + outputs)
        for layer in weight_bits:
            if re.search(rf"(^|[/; ]){re.escape(layer)}/", said):
                kernel_ops.setdefault(layer, []).append((kind, ";".join(n for n in outputs if n) + ";"))
    missing = sorted(set(weight_bits) - set(kernel_ops))
    if missing:
        raise UserError(f"no conv/dense op of the float .tflite is named after layer(s) {', '.join(missing[:5])}: "
                        "convert the float model without renaming its tensors")
    unknown = sorted(set(per_tensor) - set(weight_bits))
    if unknown:
        raise UserError(f"per-tensor layer(s) {', '.join(unknown)} are not in the bit plan")
    qt = quantizer.Quantizer(bytearray(bytes(float_tflite)))
    stored = {}
    for layer, bits in weight_bits.items():
        granularity = qtyping.QuantGranularity.TENSORWISE if layer in per_tensor else qtyping.QuantGranularity.CHANNELWISE
        for kind, scope in kernel_ops[layer]:
            allowed = [b for b in AEQ_PLAN_BITS[kind] if b >= int(bits)]
            stored[layer] = max(stored.get(layer, 0), allowed[0])
            qt.add_dynamic_config(f"^{re.escape(scope)}$", getattr(qtyping.TFLOperationName, kind), num_bits=allowed[0],
                                  granularity=granularity)
    result = qt.quantize(None, enable_progress_bar=False, enable_progress_report=False)
    return inline_buffers(bytes(result.quantized_model)), stored


def _calibration_data(float_tflite: bytes, calib_images) -> dict:
    """{signature: [{input name: (1, H, W, 3) float32}, ...]} for the model's one signature and input."""
    from ai_edge_litert.interpreter import Interpreter

    if calib_images is None or len(calib_images) == 0:
        raise UserError("aeq_w4a8 is static quantization: it needs calibration images")
    images = np.asarray(calib_images)
    if images.dtype.kind != "f":
        raise UserError(f"calibration images must be normalised float32 (Preprocess().apply(images)), got {images.dtype}")
    signatures = Interpreter(model_content=float_tflite).get_signature_list()
    if len(signatures) != 1:
        raise UserError(f"the float model must have one signature, found {sorted(signatures)}")
    (key, signature), = signatures.items()
    if len(signature["inputs"]) != 1:
        raise UserError(f"the float model must have one input, found {signature['inputs']}")
    name = signature["inputs"][0]
    return {key: [{name: img[None].astype(np.float32)} for img in images]}


def _set_output_ranges(calibration: dict, float_tflite: bytes, data: dict) -> None:
    """Sets each graph output's calibrated range to the min/max the float model gives on `data`.

    ai-edge-quantizer keeps a moving average (factor 0.95) of each sample's min and max. A detector's
    output holds one logit per sample, so its min equals its max and the "range" collapses to a
    running mean logit: measured on a trained ResNet-18, the int8 output spanned [-0.16, 0] while the
    logits spanned [-0.75, 0.49], so every output clipped. Inner tensors keep aeq's own ranges."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=float_tflite)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    for key, samples in data.items():
        runner = interpreter.get_signature_runner(key)
        tensors = {out: names[d["index"]] for out, d in runner.get_output_details().items()}
        outputs = [runner(**sample) for sample in samples]
        for out, tensor in tensors.items():
            if tensor not in calibration:
                continue
            values = np.concatenate([np.ravel(o[out]) for o in outputs])
            qsv = calibration[tensor]
            qsv["min"] = np.full_like(qsv["min"], min(float(values.min()), 0.0))
            qsv["max"] = np.full_like(qsv["max"], max(float(values.max()), 0.0))
