"""Where does an int8 .tflite first depart from its Keras QAT model? Every quantized tensor, in its own LSB.

    python -m tfdefakeq.diagnose runs/w4a8/model.weights.h5 models/det_int4.tflite --data DATA

The engine (how Keras tensors are matched to TFLite ones, rounding ties): tfdefakeq.engine.parity.
"""

from __future__ import annotations

import argparse

from tfdefakeq.core.cli import run_cli
from tfdefakeq.data.folders import SPLIT_HELP

VERB = "diagnose"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tfdefakeq.diagnose", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="QAT detector weights (.weights.h5) saved by tfdefakeq.train, with its manifest")
    p.add_argument("tflite", help="the .tflite converted from it")
    p.add_argument("--data", required=True, help="dataset root: images come from --split")
    p.add_argument("--split", default=None, help=SPLIT_HELP.format(default="val"))
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--csv", default=None, help="also write the table here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")
    p.add_argument("--xnnpack", action="store_true", help="run XNNPACK (as check_parity does) instead of the builtin kernels")
    return p.parse_args(argv)


def main(args) -> int:
    import pandas as pd

    from tfdefakeq.data.folders import balanced_subset, choose_split, scan_forensynths
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.engine.parity import first_divergence, layer_parity
    from tfdefakeq.runtime.images import load_images

    model, manifest = load_detector(args.model)
    samples = balanced_subset(scan_forensynths(args.data, choose_split(args.data, args.split, "val")), args.images)
    images = load_images([s.path for s in samples], tuple(manifest.input_shape[:2]))
    table = layer_parity(model, args.tflite, images, manifest.preprocess, use_xnnpack=args.xnnpack)
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 40):
        print(table.drop(columns=["tflite_tensor"]).to_string(float_format=lambda v: f"{v:.3g}"))
    first = first_divergence(table)
    print("first layer over 1 LSB:", "none" if first is None else f"{first['keras_layer']} ({first['op']}, {first['max_lsb']:.2f} LSB)")
    if args.csv:
        from tfdefakeq.core.fileio import write_text_atomic

        write_text_atomic(args.csv, table.to_csv(index=False), overwrite=args.overwrite)
    return 0


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
