"""One entry point for QAT: `quantize(model, scheme, calib_images)`."""

from __future__ import annotations

import numpy as np
import tensorflow_model_optimization as tfmot

from tfdefakeq.core.errors import UserError
from tfdefakeq.quant import calibrate
from tfdefakeq.quant.schemes import SCHEMES, Scheme, apply_folded_scheme, apply_tfmot_int8, custom_objects, plan_weight_bits

_q = tfmot.quantization.keras


def list_schemes() -> list[str]:
    return sorted(SCHEMES)


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise UserError(f"unknown quantization scheme {name!r} (known: {', '.join(list_schemes())})")
    return SCHEMES[name]


def quantize(model, scheme: str, calib_images: np.ndarray | None = None, bit_plan: dict[str, int] | None = None,
             input_range=(-1.0, 127.0 / 128.0), budget=None, salient_channels: dict | None = None, per_tensor=None,
             **adaptive_options):
    """Returns the QAT model for float `model` under `scheme`, ready to fine-tune or convert.

    calib_images: (N, H, W, 3) float32, already normalised. With them, activation ranges start at
    the observed ranges instead of tfmot's [-6, 6]. bit_plan: layer name -> weight bits, replacing
    the scheme's default plan (folded schemes only). input_range: the normalised pixel range, fixed
    exactly so the int8 input keeps every pixel value (see manifest.Preprocess).
    Adaptive scheme: `budget` (average storage bits per weight, or {"bytes": n}), `salient_channels`
    (conv -> channels kept at 8 bits), `per_tensor` (layers of `bit_plan` with one kernel scale) and
    `adaptive_options` (salient_ratio, channel_choice, offer_per_tensor) go to
    `adaptive.plan_adaptive`; the plan is attached to the returned model as `quant_plan`.
    """
    spec = get_scheme(scheme)
    plan = None
    if spec.adaptive:
        from tfdefakeq.quant.adaptive import plan_adaptive

        plan = plan_adaptive(model, calib_images, budget, bit_plan, salient_channels, low_bits=spec.weight_bits,
                             per_tensor=per_tensor, **adaptive_options)
        qat = apply_folded_scheme(model, plan.weight_bits, lsq=True, salient_channels=plan.salient_channels,
                                  per_tensor=plan.per_tensor)
        calibrate.init_weight_ranges(qat)
    elif budget is not None or salient_channels or per_tensor:
        raise UserError(f"a bit budget, salient channels and per-tensor layers need --scheme adaptive (not {scheme})")
    elif spec.name == "tfmot_nbit_w4a8":
        from tfdefakeq.quant.baselines import apply_tfmot_nbit

        qat = apply_tfmot_nbit(model, weight_bits=4, activation_bits=8)
    elif spec.weight_bits is None:
        qat = apply_tfmot_int8(model)
    else:
        qat = apply_folded_scheme(model, bit_plan or plan_weight_bits(model, spec.weight_bits), lsq=spec.lsq)
        calibrate.init_weight_ranges(qat)
    calibrate.set_input_range(qat, *input_range)
    if calib_images is not None:
        calibrate.calibrate_activation_ranges(qat, calib_images)
    qat.quant_plan = plan
    return qat


def weight_bits(qat_model) -> dict[str, int]:
    """Layer name -> bits of its quantized weights, read from the QAT model's quantizers."""
    bits = {}
    for layer in qat_model.layers:
        if isinstance(layer, _q.QuantizeWrapperV2):
            for _, quantizer, _vars in layer._weight_vars:
                bits[layer.layer.name] = int(getattr(quantizer, "num_bits", 8))
    return bits


def quantize_scope():
    """Context in which saved QAT models (tfmot wrappers + our quantizers) deserialize."""
    return _q.quantize_scope(custom_objects())


