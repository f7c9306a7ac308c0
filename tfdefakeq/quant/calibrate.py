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
from tfdefakeq.tfcompat import tf

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
        for quantizer, qvars in getattr(wrapper.layer, "term_quantizers", None) or []:  # AlphaMix products
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
    from tfdefakeq.tfcompat import keras

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
    return snapped + _snap_unfolded_batchnorms(qat_model)


def _snap_unfolded_batchnorms(qat_model) -> int:
    """tfmot_int8 keeps Conv -> BatchNormalization unfolded in Keras; the converter folds the BN into
    the conv and rounds the folded bias beta + (b - mean) * gamma / sigma to int32 steps of
    input scale x folded weight scale. Shifts each BN's beta so that folded bias lies on that grid."""
    from tfdefakeq.quant.fold import consumers, inbound_layers
    from tfdefakeq.tfcompat import keras

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
        per_channel = np.abs(kernel).reshape(-1, g.size).max(axis=0) if not isinstance(conv.layer, keras.layers.DepthwiseConv2D) \
            else np.abs(kernel).reshape(-1, kernel.shape[2] * kernel.shape[3]).max(axis=0)
        step = input_scale * per_channel * np.abs(g) / 127.0  # the converter's per-channel int8 scale of kernel * g
        conv_bias = conv.layer.bias.numpy() if getattr(conv.layer, "use_bias", False) else 0.0
        folded = bn.beta.numpy() + (conv_bias - bn.moving_mean.numpy()) * g
        ok = step > 0
        target = np.where(ok, np.round(folded / np.where(ok, step, 1.0)) * step, folded)
        bn.beta.assign((bn.beta.numpy() + (target - folded)).astype(np.float32))
        snapped += 1
    return snapped
