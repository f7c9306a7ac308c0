"""Sets quantization ranges from data before QAT starts.

tfmot starts every activation range at [-6, 6] and moves it by an EMA with decay 0.999, so a fresh
QAT model quantizes with ranges far from the data (it scores AP ~0.5 before training) and a short
fine-tune never fixes them. We run one training-mode pass on a calibration batch and solve the EMA
update `v1 = d*v0 + (1-d)*r` for the batch range r, then store r: exactly the observed range.
"""

from __future__ import annotations

import numpy as np
import tensorflow_model_optimization as tfmot

from tfdefakeq.quant.quantizers import CalibrationSwitch, init_weight_quantizer, weight_scale
from tfdefakeq.core.tfcompat import tf

_q = tfmot.quantization.keras
from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import QuantizeLayer as _QuantizeLayer  # noqa: E402
_EMA_DECAY = 0.999  # tfmot's MovingAverageQuantizer decay (quant_ops.MovingAvgQuantize default)


def _wrappers(model):
    return [layer for layer in model.layers if isinstance(layer, _q.QuantizeWrapperV2)]


def init_weight_ranges(qat_model) -> int:
    """Sets every learned weight quantizer (range or LSQ step) to its MSE-optimal grid; returns how
    many were set."""
    count = 0
    for wrapper in _wrappers(qat_model):
        for weight, quantizer, qvars in wrapper._weight_vars:
            count += init_weight_quantizer(quantizer, qvars, weight.numpy())
    return count


def _ema_range_vars(model) -> list:
    """(min_var, max_var) pairs of the moving-average activation quantizers."""
    pairs = []
    for wrapper in _wrappers(model):
        for quantizer, qvars in getattr(wrapper.layer, "term_quantizers", None) or []:  # AlphaMix products, DepthwisePReLU terms
            if isinstance(quantizer, _q.quantizers.MovingAverageQuantizer):
                pairs.append(qvars)
        if wrapper._output_quantizers and isinstance(wrapper._output_quantizers[0], _q.quantizers.MovingAverageQuantizer):
            pairs.append(wrapper._output_quantizer_vars)
        for activation in wrapper._quantize_activations:
            if isinstance(activation.quantizer, _q.quantizers.MovingAverageQuantizer):
                for attr in ("_pre_activation_vars", "_post_activation_vars"):
                    if hasattr(activation, attr):
                        pairs.append(getattr(activation, attr))
    return [(p["min_var"], p["max_var"]) for p in pairs]


def set_input_range(qat_model, low: float, high: float) -> None:
    """Fixes the input QuantizeLayer's range (the normalised pixel range is known, not estimated)."""
    for layer in qat_model.layers:
        if isinstance(layer, _QuantizeLayer):
            layer.quantizer_vars["min_var"].assign(low)
            layer.quantizer_vars["max_var"].assign(high)


def _batchnorms(model) -> list:
    from tfdefakeq.core.tfcompat import keras

    inner = [getattr(layer, "layer", layer) for layer in model.layers]
    return [layer for layer in inner if isinstance(layer, keras.layers.BatchNormalization)]


def calibrate_activation_ranges(qat_model, images: np.ndarray, passes: int = 2) -> int:
    """Sets every moving-average activation range to the range seen on `images` (N, H, W, 3 float).

    The pass runs in training mode (the quantizers only update there) with BatchNorm frozen
    (`trainable=False` makes tf-keras BN use its moving statistics), so the ranges are those of
    inference. `passes` > 1 lets later layers see earlier ones already calibrated. Returns the
    number of ranges set.
    """
    pairs = _ema_range_vars(qat_model)
    batchnorms = _batchnorms(qat_model)
    was_trainable = [bn.trainable for bn in batchnorms]
    images = tf.convert_to_tensor(images, tf.float32)
    try:
        for bn in batchnorms:
            bn.trainable = False
        CalibrationSwitch.active = True  # learned activation ranges take the batch's range directly
        for _ in range(passes):
            before = [(lo.numpy(), hi.numpy()) for lo, hi in pairs]
            qat_model(images, training=True)
            for (lo, hi), (lo0, hi0) in zip(pairs, before):
                observed_lo = (lo.numpy() - _EMA_DECAY * lo0) / (1 - _EMA_DECAY)
                observed_hi = (hi.numpy() - _EMA_DECAY * hi0) / (1 - _EMA_DECAY)
                lo.assign(np.minimum(observed_lo, 0.0))  # TFLite needs 0 inside the range
                hi.assign(np.maximum(observed_hi, 1e-3))
    finally:
        CalibrationSwitch.active = False
        for bn, trainable in zip(batchnorms, was_trainable):
            bn.trainable = trainable
    return len(pairs)


def _output_scale(layer) -> float | None:
    """Scale of the int8 tensor `layer` produces, following pass-through layers (pad, max-pool)
    upstream; None when it cannot be told."""
    from tfdefakeq.quant.fold import inbound_layers

    while True:
        if isinstance(layer, _QuantizeLayer):
            qvars = layer.quantizer_vars
        elif isinstance(layer, _q.QuantizeWrapperV2) and layer._output_quantizers:
            qvars = layer._output_quantizer_vars
        elif isinstance(layer, _q.QuantizeWrapperV2) and any(
                a._should_post_quantize() and hasattr(a, "_post_activation_vars") for a in layer._quantize_activations):
            qvars = [a for a in layer._quantize_activations if a._should_post_quantize()][-1]._post_activation_vars
        elif isinstance(layer, _q.QuantizeWrapperV2) and not layer._weight_vars and len(inbound_layers(layer)) == 1:
            layer = inbound_layers(layer)[0]  # range-preserving layer without its own quantizer
            continue
        else:
            return None
        return float(qvars["max_var"].numpy() - qvars["min_var"].numpy()) / 255.0


def snap_biases(qat_model) -> int:
    """Rounds each learned-range layer's bias to the int32 grid TFLite stores it on
    (scale = input scale x weight scale), so Keras and TFLite add the same bias.

    Float biases in the simulation differ from the stored int32 ones by up to half a bias step,
    which for 4-bit weights is a sizeable fraction of an output LSB; that shifts rounding ties
    in every output channel. tfmot_int8's unfolded Conv -> BatchNormalization pairs get the same
    treatment through the BN's beta (`_snap_unfolded_batchnorms`; measured on a tiny ResNet-50: the
    folded biases were off by up to 0.003 output LSB, enough to flip outputs near a tie in every
    conv, mean logit error 10.5 -> 1.9 LSB). Run it after training, before conversion. Returns
    layers snapped.
    """
    from tfdefakeq.quant.fold import inbound_layers

    snapped = 0
    for wrapper in _wrappers(qat_model):
        learned = [(q, v) for _, q, v in wrapper._weight_vars if weight_scale(q, v) is not None]
        bias = getattr(wrapper.layer, "bias", None)
        if not learned or bias is None or len(inbound_layers(wrapper)) != 1:
            continue
        input_scale = _output_scale(inbound_layers(wrapper)[0])
        if not input_scale:
            continue
        step = input_scale * weight_scale(*learned[0])
        bias.assign((np.round(bias.numpy() / step) * step).astype(np.float32))
        snapped += 1
    return snapped + _snap_unfolded_batchnorms(qat_model) + _snap_tfmot_conv_biases(qat_model) + _snap_unquantized_kernels(qat_model)


def _on_grid(values: np.ndarray, step) -> np.ndarray:
    """`values` rounded to multiples of `step` (per element, broadcast); left as they are where step is 0."""
    step = np.broadcast_to(np.asarray(step, np.float64), np.shape(values))
    ok = step > 0
    return np.where(ok, np.round(values / np.where(ok, step, 1.0)) * step, values).astype(np.float32)


def _channel_abs_max(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """max |w| per output channel as TFLite lays the filter out (a depthwise (kh, kw, C, M) kernel has
    C * M channels): the converter's per-channel int8 scale is this / 127."""
    channels = kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[-1]
    return np.abs(kernel).reshape(-1, channels).max(axis=0)


def _snap_unfolded_batchnorms(qat_model) -> int:
    """tfmot_int8 keeps Conv -> BatchNormalization unfolded in Keras; the converter folds the BN into
    the conv and rounds the folded bias beta + (b - mean) * gamma / sigma to int32 steps of
    input scale x folded weight scale. Shifts each BN's beta so that folded bias lies on that grid."""
    from tfdefakeq.quant.fold import consumers, inbound_layers
    from tfdefakeq.core.tfcompat import keras

    readers = consumers(qat_model)
    snapped = 0
    for wrapper in _wrappers(qat_model):
        bn = wrapper.layer
        if not isinstance(bn, keras.layers.BatchNormalization) or not bn.center:
            continue
        (conv,) = inbound_layers(wrapper)
        if not isinstance(conv, _q.QuantizeWrapperV2) or readers[conv.name] != [wrapper.name] or not conv._weight_vars:
            continue
        if not isinstance(conv.layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) or len(inbound_layers(conv)) != 1:
            continue
        input_scale = _output_scale(inbound_layers(conv)[0])
        if not input_scale:
            continue
        weight, quantizer, qvars = conv._weight_vars[0]
        kernel = quantizer(weight, False, qvars).numpy()
        sigma = np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        g = (bn.gamma.numpy() if bn.scale else 1.0) / sigma
        per_channel = _channel_abs_max(kernel, isinstance(conv.layer, keras.layers.DepthwiseConv2D))
        step = input_scale * per_channel * np.abs(g) / 127.0  # the converter's per-channel int8 scale of kernel * g
        conv_bias = conv.layer.bias.numpy() if getattr(conv.layer, "use_bias", False) else 0.0
        folded = bn.beta.numpy() + (conv_bias - bn.moving_mean.numpy()) * g
        target = _on_grid(folded, step)
        bn.beta.assign((bn.beta.numpy() + (target - folded)).astype(np.float32))
        snapped += 1
    return snapped


def _snap_unquantized_kernels(qat_model) -> int:
    """Puts each conv that the QAT model leaves unquantized on the int8 grid the converter gives it.

    tfmot's layout transform LayerReLUQuantize (also LayerReluActivationQuantize) replaces the
    QuantizeConfig of any Conv2D / DepthwiseConv2D / Dense read by a ReLU with NoOpQuantizeConfig,
    which drops the kernel's FakeQuant too (it means to drop only the output one). A conv with a
    bias and no BatchNorm after it keeps that config: under tfmot_int8 the squeeze-excite block's
    first 1x1 conv (`.../squeeze_excite/Conv` -> ReLU). Keras then multiplies by the float kernel
    while the converter quantizes it per output channel (scale max|w| / 127, symmetric, narrow):
    on MobileNetV3-Small that left 1-2 LSB local errors on 5-30% of every SE conv's outputs. Here
    the kernel is rounded to exactly that grid (its largest tap stays at +-127 steps, so the
    converter recomputes the same scale) and the bias to the int32 grid input scale x weight scale.
    Returns layers snapped."""
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_configs
    from tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit import (
        default_n_bit_quantize_configs,
    )

    from tfdefakeq.quant.fold import inbound_layers
    from tfdefakeq.core.tfcompat import keras

    # tfmot_nbit_w4a8's transforms do the same with their own NoOp class; the converter still
    # quantizes such a float kernel at 8 bits
    no_op = (default_8bit_quantize_configs.NoOpQuantizeConfig, default_n_bit_quantize_configs.NoOpQuantizeConfig)
    snapped = 0
    for wrapper in _wrappers(qat_model):
        layer = wrapper.layer
        if wrapper._weight_vars or not isinstance(wrapper.quantize_config, no_op):
            continue
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        if depthwise:
            kernel = layer.depthwise_kernel
        elif isinstance(layer, keras.layers.Conv2D) and type(layer) is not keras.layers.SeparableConv2D:
            kernel = layer.kernel
        else:
            continue  # Dense: not measured (a Dense -> ReLU is not in the zoo)
        w = kernel.numpy()
        scale = _channel_abs_max(w, depthwise) / 127.0
        safe = np.where(scale > 0, scale, 1.0)
        flat = w.reshape(-1, scale.size)
        kernel.assign((np.clip(np.round(flat / safe), -127, 127) * safe).reshape(w.shape).astype(np.float32))
        bias = layer.bias if getattr(layer, "use_bias", False) else None
        sources = inbound_layers(wrapper)
        input_scale = _output_scale(sources[0]) if len(sources) == 1 else None
        if bias is not None and input_scale:
            step = input_scale * scale
            bias.assign(_on_grid(bias.numpy(), step))
        snapped += 1
    return snapped


def _snap_tfmot_conv_biases(qat_model) -> int:
    """The bias of a conv / dense quantized by tfmot's own 8-bit weight quantizer (LastValueQuantizer,
    symmetric, narrow range) and not followed by a BatchNormalization (that case is
    `_snap_unfolded_batchnorms`'): rounded to the int32 grid input scale x weight scale, the weight
    scale read off the quantized kernel as the converter does (max|q(kernel)| / 127, per output
    channel when the quantizer is per-axis). Under tfmot_int8: the SE blocks' second conv, MobileNetV3's
    head convs. Returns layers snapped."""
    from tfdefakeq.quant.fold import consumers, inbound_layers
    from tfdefakeq.core.tfcompat import keras

    readers = consumers(qat_model)
    snapped = 0
    for wrapper in _wrappers(qat_model):
        layer = wrapper.layer
        if not wrapper._weight_vars or not getattr(layer, "use_bias", False) or len(inbound_layers(wrapper)) != 1:
            continue
        if type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
            continue
        weight, quantizer, qvars = wrapper._weight_vars[0]
        if not (isinstance(quantizer, _q.quantizers.LastValueQuantizer) and quantizer.num_bits == 8 and quantizer.symmetric
                and quantizer.narrow_range):
            continue
        after = [qat_model.get_layer(n) for n in readers[wrapper.name]]
        if len(after) == 1 and isinstance(getattr(after[0], "layer", None), keras.layers.BatchNormalization):
            continue
        input_scale = _output_scale(inbound_layers(wrapper)[0])
        if not input_scale:
            continue
        kernel = quantizer(weight, False, qvars).numpy()
        weight_step = (_channel_abs_max(kernel, False) if quantizer.per_axis else np.abs(kernel).max()) / 127.0
        step = input_scale * np.broadcast_to(weight_step, layer.bias.shape)
        layer.bias.assign(_on_grid(layer.bias.numpy(), step))
        snapped += 1
    return snapped
