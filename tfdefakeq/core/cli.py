"""The shared shape of every `python -m tfdefakeq.<verb>` (after ai-edge-quantizer's aeq.py)."""

from __future__ import annotations

import argparse
import sys

from tfdefakeq.core.errors import UserError


def run_cli(verb: str, parse_args, main, argv=None) -> None:
    """Runs `main(parse_args(argv))`; a UserError becomes one stderr line and exit code 2."""
    try:
        code = main(parse_args(argv))
    except UserError as e:
        print(f"tfdefakeq {verb}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"tfdefakeq {verb}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code)


def add_adaptive_args(p: argparse.ArgumentParser) -> None:
    """Options of the adaptive scheme and of distillation (train and convert both take them)."""
    g = p.add_argument_group("adaptive bidirectional quantization (--scheme adaptive)")
    g.add_argument("--avg-bits", type=float, default=None, help="budget: average storage bits per weight of the whole file (e.g. 3); "
                                                                 "default: the size of the uniform 4-bit file")
    g.add_argument("--budget-bytes", type=int, default=None,
                   help="budget: size of the .tflite file in bytes (weights, scales, biases, graph)")
    g.add_argument("--bit-plan", default=None, help="reuse a plan (bit_plan.json written by an earlier run)")
    g.add_argument("--salient-ratio", type=float, default=None, help="share of input channels kept at 8 bits (0: off; default 1/32)")
    g.add_argument("--channel-choice", choices=("saliency", "random"), default="saliency")
    g = p.add_argument_group("distillation from the float teacher (QAT)")
    g.add_argument("--distill", choices=("auto", "on", "off"), default="auto", help="auto: on for --scheme adaptive")
    g.add_argument("--kd-alpha", type=float, default=0.5, help="weight of the logit distillation term")
    g.add_argument("--temperature", type=float, default=2.0)
    g.add_argument("--feature-weight", type=float, default=1.0, help="initial weight of the feature term (cosine decay to 0)")


def add_import_args(p: argparse.ArgumentParser) -> None:
    """Options for a user's Keras model file (.keras / .h5) given as the model (tfdefakeq.engine.importer)."""
    g = p.add_argument_group("a Keras model of your own (.keras / full-model .h5)")
    g.add_argument("--fake-class", type=int, default=None,
                   help="which class of a 1- or 2-unit head means fake (default 1); recorded in the manifest")
    g.add_argument("--preprocess", choices=("caffe", "tf", "torch", "none"), default=None,
                   help="what the model expects outside its graph (keras.applications preprocess_input modes; none: raw "
                        "0..255); needed when the graph has no Rescaling/Normalization at its input")
