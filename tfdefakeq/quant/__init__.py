"""Quantization-aware training and the adaptive bidirectional scheme.

- schemes.py / qat.py: the schemes (tfmot default 8-bit, tfmot n-bit W4A8, our learned-range W8A8 /
  W4A8, LSQ W4A8 / W3A8 / W2A8, adaptive) and the entry point
  `quantize(model, scheme, calib_images, budget=...)`;
- quantizers.py / configs.py: tfmot Quantizers (learned ranges, LSQ steps for 8/4/3/2 bits, learned
  activation ranges) and QuantizeConfigs; fold.py: BN folding; calibrate.py: ranges from data;
- horizontal.py (sensitivity, bit allocation, QuantPlan), vertical.py (salient channels, two-conv
  split), adaptive.py (the plan from both), distill.py (fine-tuning against the float teacher);
- baselines.py: tfmot n-bit and ai-edge-quantizer PTQ, for honest comparisons.

Importing the package (or its numpy-only modules grids.py, horizontal.py, frontier.py) imports no
TensorFlow: the names below load qat.py, and with it TensorFlow, on first use.
"""

__all__ = ["quantize", "list_schemes", "SCHEMES", "quantize_scope", "weight_bits"]


def __getattr__(name):
    if name in __all__:
        from tfdefakeq.quant import qat

        return getattr(qat, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
