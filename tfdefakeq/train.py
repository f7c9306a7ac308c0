"""Train a float detector, or fine-tune it quantization-aware.

    python -m tfdefakeq.train --data DATA --backbone resnet18 --out runs/float --epochs 6
    python -m tfdefakeq.train --data DATA --init runs/float/model.weights.h5 --scheme w4a8 --out runs/w4a8 --epochs 2 --lr 1e-4

Writes OUT/model.weights.h5 + OUT/model.manifest.json + OUT/history.csv. The state is saved every epoch
under OUT/backup (model, optimizer and epoch in one tf.train checkpoint); `--resume` continues an
interrupted run from there and reaches the weights the uninterrupted run would have reached.
"""

from __future__ import annotations

import argparse

from tfdefakeq.core.cli import add_adaptive_args, add_import_args, run_cli

VERB = "train"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tfdefakeq.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="ForenSynths-style root with train/ and val/ splits")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--backbone", default="resnet18", help="registry name (float training)")
    p.add_argument("--width", type=float, default=None, help="channel width multiplier (resnet: width, mobilenet: alpha)")
    p.add_argument("--highpass", action="store_true", help="fixed high-pass filter in front of the backbone")
    p.add_argument("--input-size", type=int, default=None, help="square input side in pixels (default 64; with --init: the model's)")
    p.add_argument("--init", default=None, help="start from this float model.weights.h5 (QAT fine-tuning), "
                                                 "or a Keras model file .keras / .h5 (imported: see --fake-class, --preprocess)")
    add_import_args(p)
    p.add_argument("--scheme", default=None, help="quantization scheme for QAT: tfmot_int8, w8a8, w4a8, lsq_w4a8, adaptive, ...")
    p.add_argument("--calib-images", type=int, default=128, help="images used to calibrate QAT ranges")
    add_adaptive_args(p)
    p.add_argument("--train-generators", nargs="+", default=None,
                   help="train (and validate) on these generators only; evaluation marks the rest as unseen")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--aug-prob", type=float, default=0.5,
                   help="probability of each of blur and JPEG (CNNDetection trains with 0.5 and 0.1)")
    p.add_argument("--no-augment", action="store_true", help="disable blur+JPEG augmentation and flips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default="default", help="tf.distribute strategy: default, mirrored, multiworker, tpu")
    p.add_argument("--logical-cpus", type=int, default=None, help="split the CPU into N logical devices (testing mirrored)")
    p.add_argument("--weights", default=None,
                   help="initial weights for a float backbone: 'imagenet' (keras.applications, downloaded by Keras) or a .h5 file")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing finished run in --out")
    return p.parse_args(argv)


def main(args) -> int:
    from tfdefakeq.engine.training import train_detector

    return train_detector(args)


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
