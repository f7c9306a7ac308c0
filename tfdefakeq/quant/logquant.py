"""QMDD's shifted logarithmic activation quantizer, and the TFLite realisation that runs it.

QMDD (Tao et al., IJCAI 2025) quantizes post-PReLU activations (peak near 0, short negative tail)
uniformly in the log domain after a shift: with v = x + Off, Off >= max(-x) + tau,

    Q(x) = exp(Delta * round(log(v) / Delta)) - Off,    v clipped to [tau, top + Off],

2^k levels (k = num_bits) whose gaps grow geometrically from the bottom of the range, so most levels
sit near -Off + tau, i.e. near zero when the negative tail is short (measured on a trained cqb:
8 of 16 levels within 10% of the range around 0, against 2-3 for a uniform 4-bit grid). The log step
is Delta = ln(ratio) / (2^k - 1), ratio = (top + Off) / tau fixed (`auto_ratio`); the levels are
exp(n Delta) - Off for 2^k consecutive n; `Off` and `top` are learnable (and calibrated from data
first: top = max x, Off = max(-min x, 0) + tau).

**The realisation: int8 LOG and EXP lookup tables.** TFLite int8 tensors are uniform, but litert
2.3.0 runs int8 LOG (v2) and EXP (v2): 256-entry tables built from their input and output scales. A
table rounds its output to a uniform grid, so an int8 LOG whose output scale is Delta *is* the
rounding in the log domain, and an int8 EXP maps the log codes back. The quantizer computes, in
Keras (training and inference) and in TFLite alike (FQ8 = 8-bit fake_quant_with_min_max_vars):

    x8 = FQ8(x, [-Off, top])                    the PReLU / ReLU output tensor, step s = (top + Off) / 255
    v  = FQ8(x8 + Off, [0, top + Off])          ADD: Off is a whole number of steps, so an exact shift
    u  = FQ8(log v, [n_min, n_min + 255] Delta) LOG: the k-bit log rounding; the tensor's minimum is
                                                the lowest level (v = 0 -> -inf clamps there too)
    e  = FQ8(exp u, [0, top + Off])             EXP
    y  = FQ8(e - Off, [-Off, top])              SUB: exact shift; y has x8's scale and zero point

so the 2^k levels are codes of the int8 tensor itself (`ratio` keeps them >= 1.5 steps apart before
snapping, so none merge; 6+ bits cannot be held apart by int8 and are refused). Gradients are
straight-through, from the float formula above (`_surrogate`): d/dx = exp(n Delta) / v ~ 1 inside
the range; Off and top get the gradient of the values clipped at either end.

Measured (benchmarks/results/logquant.md: cqb_resnet18 width 0.25, 64 px, embedded synthetic data,
1,508 test images; ai-edge-litert 2.3.0, 1 thread, XNNPACK; w8 weights in every row):
- (a) "lut", the choice: full int8, converts with `export.to_tflite(model, "int8", ...)`, adds
  ADD + LOG + EXP + SUB per quantized activation (25 in cqb_resnet18). Each chain reproduces the
  Keras levels bit for bit (`lut_layer_errors`: 0 LSB in all 25); end to end TFLite is within
  13 LSB of Keras, 99.8% equal decisions, AP 0.856 (Keras 0.856), because the int8 kernels before
  each quantizer flip a few of their outputs by 1 LSB at rounding ties (3 LSB end to end for the
  uniform w8a8 control) and a flip on a level boundary moves a 4-bit output by a whole level.
  Latency 0.416 ms vs 0.242 ms for w8a8 (+72%; XNNPACK has no int8 LOG/EXP, so each chain splits
  the delegated graph; +22% in the run before, 0.290 vs 0.237 ms).
  Thresholds built from comparisons (GREATER_EQUAL -> CAST -> MUL -> ADD_N) convert only with float
  islands (BOOL/FLOAT32 tensors, QUANTIZE/DEQUANTIZE around every step) and cost 3 ops per threshold.
- (b) GATHER / EMBEDDING_LOOKUP with the activation as index: an index must be int32/int64 and the
  graph cannot reinterpret an int8 code as one; from Keras the code -> index step becomes DEQUANTIZE
  + float MUL/ADD/ROUND + CAST: converts only with float islands, so it is not full int8 (no Edge
  TPU, float kernels per activation). A true int8 -> int32 reinterpretation would need editing the
  flatbuffer, and the table would still be one op more than the LOG/EXP pair's exact arithmetic.
- (c) "uniform8" fallback: the log-trained model deployed with plain int8 activations over the
  same range [-Off, top]. No ops added (0.265 ms), and int8 is finer than every log gap (2 to 55
  int8 steps per gap), but TFLite then computes another model than the one trained: 60 LSB from
  the Keras log model, 92.6% equal decisions (its AP 0.865 happens to be higher than the log model's).
- "float": the paper's levels without int8 snapping (Keras only, not convertible): 94.0% equal
  decisions with the lut model, AP 0.861: snapping to int8 costs about half a point of AP here.
After 1 QAT epoch the 4-bit log model (AP 0.856) is below the w8a8 control (0.911): in TFLite
activations are int8 tensors either way, so 4-bit log activations save neither memory nor time;
they are worth deploying when the model must be the one trained with them (QMDD's recipe).

API: `ShiftedLogActivationQuantizer(num_bits=4, ratio=None, realisation="lut")`,
`LogPReLUQuantizeConfig` / `LogReLUQuantizeConfig`, `quantize_log(model, calib_images, num_bits=4,
weight_bits=8)` -> QAT model (our folded scheme with log PReLU / ReLU outputs),
`calibrate_log_ranges`, `realise(model, "lut" | "uniform8")`, `lut_layer_errors`, `log_quantizers`,
`auto_ratio`, `log_levels`.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow_model_optimization as tfmot

from tfdefakeq.quant.configs import DepthwisePReLUQuantizeConfig, PReLUQuantizeConfig, _NoWeightsConfig
from tfdefakeq.core.tfcompat import keras, tf

Quantizer = tfmot.quantization.keras.quantizers.Quantizer
_q = tfmot.quantization.keras
REALISATIONS = ("lut", "uniform8", "float")
MIN_GAP_INT8_STEPS = 1.5  # smallest log-level gap, in steps of the 8-bit grid of the same range
_EPS = 1e-6


def auto_ratio(num_bits: int, min_gap_steps: float = MIN_GAP_INT8_STEPS) -> float:
    """Largest dynamic ratio (top + Off) / tau whose 2^k log levels are all >= `min_gap_steps`
    steps of an 8-bit grid apart (the bottom gap is tau * (ratio^(1/(2^k-1)) - 1) against a step of
    (top + Off) / 255). About 49 for 4 bits, 14 for 5, 210 for 3. Raises ValueError when even a
    ratio of 2 fails (num_bits >= 6: a 6-bit log grid is finer than int8 at its bottom)."""
    intervals = 2 ** num_bits - 1
    ratios = np.exp(np.linspace(np.log(2.0), np.log(1e5), 4000))
    ok = (ratios ** (1.0 / intervals) - 1.0) / ratios * 255.0 >= min_gap_steps
    if not ok[0]:
        raise ValueError(f"{num_bits}-bit log levels cannot all be {min_gap_steps} int8 steps apart; use <= 5 bits")
    return float(ratios[np.argmin(ok) - 1] if not ok.all() else ratios[-1])


def log_levels(offset: float, top: float, num_bits: int = 4, ratio: float | None = None) -> np.ndarray:
    """The 2^k float levels exp(n Delta) - Off, n = n_min .. n_min + 2^k - 1 (before int8 snapping)."""
    ratio = ratio or auto_ratio(num_bits)
    step = math.log(ratio) / (2 ** num_bits - 1)
    span = top + offset
    n_min = round(math.log(span / ratio) / step)
    return np.minimum(np.exp((n_min + np.arange(2 ** num_bits)) * step), span) - offset


def _ste_round(t):
    return t + tf.stop_gradient(tf.round(t) - t)


def _fq8(x, lo, hi):
    return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=8, narrow_range=False)


@keras.utils.register_keras_serializable(package="tfdefakeq")
class ShiftedLogActivationQuantizer(Quantizer):
    """QMDD's shifted logarithmic activation quantizer with learnable offset Off and top of range.

    num_bits: 2-5 log levels bits; ratio: (top + Off) / tau, the dynamic range of the log grid
    (None: `auto_ratio(num_bits)`); realisation: "lut" (the int8 ADD/LOG/EXP/SUB chain, see the
    module docstring; trains and converts), "uniform8" (8-bit uniform over the same range: the
    fallback deployment) or "float" (the levels without int8 snapping; Keras only, not convertible).
    Variables (on the layer): `<name>_log_offset` (Off, init 1), `<name>_log_top` (init 6), and the
    output tensor's range `<name>_min` / `<name>_max` (not trained; `sync_output_range`).
    """

    def __init__(self, num_bits: int = 4, ratio: float | None = None, realisation: str = "lut"):
        if not 2 <= int(num_bits) <= 5:
            raise ValueError(f"num_bits must be in [2, 5], got {num_bits}")
        if realisation not in REALISATIONS:
            raise ValueError(f"realisation must be one of {REALISATIONS}, got {realisation!r}")
        self.num_bits = int(num_bits)
        self.ratio = float(ratio) if ratio else auto_ratio(self.num_bits)
        if self.ratio <= 1.0:
            raise ValueError(f"ratio must be > 1, got {ratio}")
        self.realisation = realisation
        self.observing = False  # set by calibrate_log_ranges: ranges taken from the batch seen

    @property
    def log_step(self) -> float:
        """Delta, the step of the log grid (natural log units)."""
        return math.log(self.ratio) / (2 ** self.num_bits - 1)

    def build(self, tensor_shape, name, layer):
        offset = layer.add_weight(name + "_log_offset", shape=(), initializer=keras.initializers.Constant(1.0), trainable=True)
        top = layer.add_weight(name + "_log_top", shape=(), initializer=keras.initializers.Constant(6.0), trainable=True)
        # The output tensor's range, kept for code that reads an activation quantizer's
        # min_var / max_var (calibrate.snap_biases); `sync_output_range` refreshes it.
        low = layer.add_weight(name + "_min", shape=(), initializer=keras.initializers.Constant(-6.0), trainable=False)
        high = layer.add_weight(name + "_max", shape=(), initializer=keras.initializers.Constant(6.0), trainable=False)
        return {"offset": offset, "top": top, "min_var": low, "max_var": high}

    def output_range(self, weights) -> tuple[float, float]:
        """(-Off, top) after snapping Off to the int8 grid: the real range of the input and output
        int8 tensors (the same scale and zero point)."""
        off = abs(float(weights["offset"].numpy())) + _EPS
        top = abs(float(weights["top"].numpy())) + _EPS
        step = (top + off) / 255.0
        off_snapped = step * round(off / step)
        return -off_snapped, top + off - off_snapped

    def sync_output_range(self, weights) -> None:
        low, high = self.output_range(weights)
        weights["min_var"].assign(low)
        weights["max_var"].assign(high)

    def _params(self, weights):
        """Off (a multiple of the int8 step span / 255), top, span = top + Off, tau = span / ratio,
        n_min (the lowest log code; integer-valued float). Roundings are straight-through."""
        off = tf.math.abs(weights["offset"]) + _EPS
        span = tf.math.abs(weights["top"]) + _EPS + off
        int8_step = span / 255.0
        off = int8_step * _ste_round(off / int8_step)
        tau = span / self.ratio
        n_min = _ste_round(tf.math.log(tau) / self.log_step)
        return off, span - off, span, tau, n_min

    def _observe(self, inputs, weights):
        """Sets Off and top from this batch: top = max x, Off = max(-min x, 0) + tau."""
        x_min = tf.reduce_min(inputs)
        top = tf.maximum(tf.reduce_max(inputs), 1e-3)
        neg = tf.maximum(-x_min, 0.0)
        weights["top"].assign(top)
        weights["offset"].assign((self.ratio * neg + top) / (self.ratio - 1.0))

    def _chain(self, x, off, top, span, tau, n_min):
        """The int8 computation TFLite runs: x8 -> ADD -> LOG -> EXP -> SUB. x8, v, e and y share one
        scale (span / 255) and Off is a whole number of steps, so the ADD and SUB are exact integer
        shifts; LOG's output scale is Delta (the k-bit log rounding) and its minimum the lowest code."""
        step = self.log_step
        x8 = _fq8(x, -off, top)
        v = _fq8(x8 + off, 0.0, span)
        u = _fq8(tf.math.log(v), n_min * step, (n_min + 255.0) * step)  # log(0) = -inf clamps too
        e = _fq8(tf.exp(u), 0.0, span)
        return _fq8(e - off, -off, top)

    def _surrogate(self, x, off, span, tau):
        """The float quantizer (paper's formula on the same grid) with a straight-through round."""
        v = tf.minimum(tf.maximum(x + off, tau), span)
        n = _ste_round(tf.math.log(v) / self.log_step)
        return tf.minimum(tf.exp(n * self.log_step), span) - off

    def __call__(self, inputs, training, weights, **kwargs):
        if self.observing:
            self._observe(inputs, weights)
        off, top, span, tau, n_min = self._params(weights)
        if self.realisation == "uniform8":
            return _fq8(inputs, -off, top)
        surrogate = self._surrogate(inputs, off, span, tau)
        if self.realisation == "float":
            return surrogate
        deployed = self._chain(inputs, off, top, span, tau, n_min)
        if not training:
            return deployed  # the converter traces this branch: int8 ops only
        return surrogate + tf.stop_gradient(deployed - surrogate)

    def get_config(self):
        return {"num_bits": self.num_bits, "ratio": self.ratio, "realisation": self.realisation}

    def __eq__(self, other):
        return isinstance(other, ShiftedLogActivationQuantizer) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)


class _LogOutput:
    """Mixin: the layer's output is log-quantized by ShiftedLogActivationQuantizer."""

    def __init__(self, num_bits: int = 4, ratio: float | None = None):
        self.num_bits = int(num_bits)
        self.ratio = ratio

    def get_output_quantizers(self, layer):
        return [ShiftedLogActivationQuantizer(self.num_bits, self.ratio)]

    def get_config(self):
        return {"num_bits": self.num_bits, "ratio": self.ratio}


@keras.utils.register_keras_serializable(package="tfdefakeq")
class LogPReLUQuantizeConfig(_LogOutput, PReLUQuantizeConfig):
    """keras PReLU -> TFLite PRELU (slopes 8-bit, as PReLUQuantizeConfig) whose output is
    log-quantized by ShiftedLogActivationQuantizer (an int8 tensor, then ADD/LOG/EXP/SUB)."""


@keras.utils.register_keras_serializable(package="tfdefakeq")
class LogDepthwisePReLUQuantizeConfig(_LogOutput, DepthwisePReLUQuantizeConfig):
    """common.DepthwisePReLU (int8 depthwise convs + ADD, as DepthwisePReLUQuantizeConfig) whose output
    is log-quantized by ShiftedLogActivationQuantizer."""


@keras.utils.register_keras_serializable(package="tfdefakeq")
class LogReLUQuantizeConfig(_LogOutput, _NoWeightsConfig):
    """keras ReLU (fused by the converter into the conv or add before it) with a log-quantized output."""


def _is_plain_relu(layer) -> bool:
    if type(layer) is keras.layers.ReLU:
        return layer.max_value is None and float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0
    return type(layer) is keras.layers.Activation and layer.activation.__name__ == "relu"


def log_activation_config(layer, num_bits: int = 4, ratio: float | None = None, on=("prelu", "relu")):
    """The log QuantizeConfig for `layer` (a PReLU or a plain ReLU, as selected by `on`), else None."""
    from tfdefakeq.backbones.common import DepthwisePReLU

    if type(layer) is DepthwisePReLU and "prelu" in on:
        return LogDepthwisePReLUQuantizeConfig(num_bits, ratio)
    if type(layer) is keras.layers.PReLU and "prelu" in on:
        return LogPReLUQuantizeConfig(num_bits, ratio)
    if _is_plain_relu(layer) and "relu" in on:
        return LogReLUQuantizeConfig(num_bits, ratio)
    return None


def custom_objects() -> dict:
    from tfdefakeq.quant.schemes import custom_objects as scheme_objects

    return {**scheme_objects(), "ShiftedLogActivationQuantizer": ShiftedLogActivationQuantizer,
            "LogPReLUQuantizeConfig": LogPReLUQuantizeConfig,
            "LogDepthwisePReLUQuantizeConfig": LogDepthwisePReLUQuantizeConfig, "LogReLUQuantizeConfig": LogReLUQuantizeConfig}


def quantize_log(model, calib_images: np.ndarray | None = None, num_bits: int = 4, ratio: float | None = None,
                 weight_bits: int = 8, bit_plan: dict[str, int] | None = None, on=("prelu", "relu"),
                 input_range=(-1.0, 127.0 / 128.0)):
    """QAT model of float `model` with log-quantized PReLU / ReLU outputs (`on`) and otherwise our
    folded scheme (BN folded, learned weight ranges: `weight_bits` 8 -> int8 format, 4 -> int4 as
    w4a8, or an explicit `bit_plan`). calib_images (N, H, W, 3) normalised float: every range,
    uniform and log, starts at the observed one. Convert with `export.to_tflite(qat, "int8", ...)`.
    """
    from tfdefakeq.quant import calibrate
    from tfdefakeq.quant.fold import fold_batchnorm
    from tfdefakeq.quant.schemes import FoldedScheme, _layer_configs, annotate_and_apply, plan_weight_bits

    folded = fold_batchnorm(model)
    configs = _layer_configs(folded, bit_plan or plan_weight_bits(model, weight_bits))
    for layer in folded.layers:
        log_config = log_activation_config(layer, num_bits, ratio, on)
        if log_config is not None:
            configs[layer.name] = log_config

    qat = annotate_and_apply(folded, configs, FoldedScheme(), custom_objects())
    calibrate.init_weight_ranges(qat)
    calibrate.set_input_range(qat, *input_range)
    if calib_images is not None:
        calibrate.calibrate_activation_ranges(qat, calib_images)
        calibrate_log_ranges(qat, calib_images)
        calibrate.calibrate_activation_ranges(qat, calib_images)  # downstream ranges see log levels
    return qat


def log_quantizers(model) -> list[tuple]:
    """(wrapper, quantizer, vars) of every ShiftedLogActivationQuantizer output quantizer in `model`."""
    found = []
    for layer in model.layers:
        quantizers = getattr(layer, "_output_quantizers", None) or []
        if quantizers and isinstance(quantizers[0], ShiftedLogActivationQuantizer):
            found.append((layer, quantizers[0], layer._output_quantizer_vars))
    return found


def calibrate_log_ranges(qat_model, images: np.ndarray) -> int:
    """Sets each log quantizer's Off and top from `images` (N, H, W, 3 normalised float), in
    execution order (each layer sees the ones before it quantized): top = max x,
    Off = max(-min x, 0) + tau. One eager inference pass; returns the number of quantizers set."""
    found = log_quantizers(qat_model)
    for _, quantizer, _ in found:
        quantizer.observing = True
    try:
        qat_model(tf.convert_to_tensor(images, tf.float32), training=False)
    finally:
        for _, quantizer, qvars in found:
            quantizer.observing = False
            quantizer.sync_output_range(qvars)
    return len(found)


def realise(model, realisation: str = "lut"):
    """Turns a trained model with log quantizers into its deployable form, in place, and returns it:
    "lut" (default, exact: the int8 ADD/LOG/EXP/SUB chain it trained with) or "uniform8" (plain int8
    activations over the same range: faster, not what it trained with). Also refreshes each
    quantizer's min_var / max_var (read by calibrate.snap_biases). Then `calibrate.snap_biases(model)`
    and `export.to_tflite(model, "int8", representative)` (or export.convert_model, whose
    MAX_LOGIT_LSB parity bound is for int8 activations: a 4-bit model exceeds it; see above)."""
    if realisation not in REALISATIONS:
        raise ValueError(f"realisation must be one of {REALISATIONS}, got {realisation!r}")
    for _, quantizer, qvars in log_quantizers(model):
        quantizer.realisation = realisation
        quantizer.sync_output_range(qvars)
    # tf-keras caches traced predict/train functions; the next call must trace the new graph
    model.predict_function = model.test_function = model.train_function = None
    return model


def lut_layer_errors(qat_model, tflite_path, images: np.ndarray) -> dict[str, float]:
    """The "lut" realisation's own error, per log quantizer: max |TFLite output - Keras quantizer
    applied to the TFLite input tensor| in output LSB over `images` (N, H, W, 3 normalised float),
    read from an interpreter that keeps every tensor and runs the builtin kernels (XNNPACK would
    fuse the ADDs into delegate nodes and hide their tensors). 0 everywhere means the converted ADD / LOG /
    EXP / SUB compute exactly the Keras levels; end-to-end differences then come from the int8
    kernels before them. Keys are the wrappers' names; a quantizer whose chain is not found is absent."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(str(tflite_path), experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    producer = {out: op for op in ops for out in op["outputs"]}
    found = log_quantizers(qat_model)
    chains = []  # (quantizer, vars, input tensor, output tensor)
    for op in (o for o in ops if o["op_name"] == "SUB"):
        chain = [op]
        for name in ("EXP", "LOG", "ADD"):
            prev = producer.get(chain[-1]["inputs"][0])
            if prev is None or prev["op_name"] != name:
                break
            chain.append(prev)
        out_t = tensors[op["outputs"][0]]
        owners = [f for f in found if f"/{f[0].name}/" in out_t["name"]]
        if len(chain) == 4 and len(owners) == 1:
            chains.append((owners[0], tensors[chain[-1]["inputs"][0]], out_t))
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    errors = {f[0].name: 0.0 for f, _, _ in chains}
    for image in np.asarray(images, np.float32):
        interpreter.set_tensor(detail["index"], np.clip(np.round(image[None] / scale) + zero_point, -128, 127).astype(np.int8))
        interpreter.invoke()
        for (wrapper, quantizer, qvars), in_t, out_t in chains:
            (si, zi), (so, zo) = in_t["quantization"], out_t["quantization"]
            x8 = (interpreter.get_tensor(in_t["index"]).astype(np.float32) - zi) * si
            y = (interpreter.get_tensor(out_t["index"]).astype(np.float32) - zo) * so
            error = float(np.abs(quantizer(x8, False, qvars).numpy() - y).max() / so)
            errors[wrapper.name] = max(errors[wrapper.name], error)
    return errors
