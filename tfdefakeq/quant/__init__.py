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
    import importlib

    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.qat"), name)
    if not name.startswith("_"):  # `quant.qat`, `quant.adaptive`, ... as attributes, as when qat was imported here
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
