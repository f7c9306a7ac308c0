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
    g.add_argument("--salient-ratio", type=float, default=None, help="share of each low-bit conv's input channels offered at 8 bits (the vertical split; default 1/32, taken where it pays; 0: off)")
    g.add_argument("--channel-choice", choices=("saliency", "random"), default="saliency")
    g.add_argument("--frontier", default=None, metavar="PATH",
                   help="also write every budget's optimal plan size -> predicted loss to PATH (.csv) and a .png beside it")
    g.add_argument("--no-int2", dest="int2", action="store_false",
                   help="keep 2-bit weights in INT4 containers (for runtimes that cannot unpack INT2); the plan is priced so")
    g = p.add_argument_group("distillation from the float teacher (QAT)")
    g.add_argument("--distill", choices=("auto", "on", "off"), default="auto", help="auto: on for --scheme adaptive")
    g.add_argument("--kd-alpha", type=float, default=0.5, help="weight of the logit distillation term")
    g.add_argument("--temperature", type=float, default=2.0)
    g.add_argument("--feature-weight", type=float, default=1.0, help="initial weight of the feature term (cosine decay to 0)")
    g.add_argument("--learn-steps", choices=("on", "off"), default="on",
                   help="on: the quantizers' step sizes and activation ranges train with the weights (LSQ); "
                        "off: they keep their calibrated values and only the weights train")


def given_options(parser: argparse.ArgumentParser, argv=None) -> set[str]:
    """The dests of the options `argv` sets on the command line, defaults or not (`--epochs 2` is
    given even where 2 is the default): what a verb checks before it ignores a flag."""
    parsed = vars(parser.parse_args(argv))
    unset = object()
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**{dest: unset for dest in parsed}))
    return {dest for dest, value in vars(probe).items() if value is not unset}


def options_given(args: argparse.Namespace, defaults: argparse.Namespace) -> set[str]:
    """`args.given` (set by a verb's parse_args), or else the options whose values differ from
    `defaults` (for a Namespace built in code)."""
    given = getattr(args, "given", None)
    if given is not None:
        return set(given)
    return {dest for dest, value in vars(args).items() if dest in vars(defaults) and value != getattr(defaults, dest)}


def refuse_ignored(given: set[str], dests, why: str) -> None:
    """UserError naming the first of `dests` in `given`: a flag that would be ignored, and why."""
    for dest in dests:
        if dest in given:
            raise UserError(f"--{dest.replace('_', '-')} {why}")
# module -> the pip distribution that provides it (for the install hint)
_DISTRIBUTIONS = {"skimage": "scikit-image", "sklearn": "scikit-learn", "pywt": "PyWavelets", "tf_keras": "tf-keras",
                  "tensorflow_model_optimization": "tensorflow-model-optimization"}


def require(modules, purpose: str, extra: str) -> None:
    """UserError naming what to install when one of `modules` is not installed. Called before any work,
    so that an `[edge]` install fails in one line instead of a traceback after a long run.

    `find_spec` locates a module without importing it (TensorFlow costs seconds)."""
    import importlib.util

    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(_DISTRIBUTIONS.get(name, name))
    if missing:
        raise UserError(f"{purpose} needs {', '.join(missing)}, not installed here: "
                        f"pip install 'tfdefakeq[{extra}]' (or pip install {' '.join(missing)})")


def add_threshold_arg(p, noun: str = "image") -> None:
    """--threshold of the verbs that call images fake (evaluate, predict, robustness): None unless given,
    so that runtime.threshold.resolve_threshold can fall back on the manifest's calibrated value."""
    p.add_argument("--threshold", type=float, default=None,
                   help=f"probability above which an {noun} is called fake (default: the manifest's calibrated "
                        "threshold, else 0.5)")


def add_import_args(p: argparse.ArgumentParser) -> None:
    """Options for a user's Keras model file (.keras / .h5) given as the model (tfdefakeq.engine.importer)."""
    g = p.add_argument_group("a Keras model of your own (.keras / full-model .h5)")
    g.add_argument("--fake-class", type=int, default=None,
                   help="which class of a 1- or 2-unit head means fake (default 1); recorded in the manifest")
    g.add_argument("--preprocess", choices=("caffe", "tf", "torch", "none"), default=None,
                   help="what the model expects outside its graph (keras.applications preprocess_input modes; none: raw "
                        "0..255); needed when the graph has no Rescaling/Normalization at its input")
