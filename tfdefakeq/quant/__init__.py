"""Quantization-aware training: schemes (tfmot default 8-bit, W4A8 with learned ranges), BatchNorm
folding, activation-range calibration. Entry point: `quantize(model, scheme, calib_images)`.
"""

from tfdefakeq.quant.qat import SCHEMES, list_schemes, quantize, quantize_scope, weight_bits

__all__ = ["quantize", "list_schemes", "SCHEMES", "quantize_scope", "weight_bits"]
