"""Train a float detector, or fine-tune it quantization-aware.

    python -m tfdefakeq.train --data DATA --backbone resnet18 --out runs/float --epochs 6
    python -m tfdefakeq.train --data DATA --init runs/float/model.weights.h5 --scheme w4a8 --out runs/w4a8 --epochs 2 --lr 1e-4

Writes OUT/model.weights.h5 + OUT/model.manifest.json + OUT/history.csv. The state is saved every epoch
under OUT/backup (model, optimizer and epoch in one tf.train checkpoint); `--resume` continues an
interrupted run from there and reaches the weights the uninterrupted run would have reached.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tfdefakeq.core.cli import add_adaptive_args, add_import_args, given_options, options_given, refuse_ignored, run_cli
from tfdefakeq.core.errors import UserError

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
    p.add_argument("--calib-images", type=int, default=128, help="images that calibrate the QAT ranges (and measure the adaptive scheme's sensitivity)")
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
    p.add_argument("--partial", action="store_true",
                   help="with --weights: accept a file that covers only part of the backbone (the layers it skips are listed)")
    p.add_argument("--keep", choices=("best", "last"), default="best",
                   help="which epoch's weights to save: the one with the best val AUC (default) or the last")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing finished run in --out")
    p.add_argument("--quiet", action="store_true", help="no per-step or per-epoch progress (results and errors are still printed)")
    args = p.parse_args(argv)
    args.given = given_options(p, argv)
    return args


ADAPTIVE_ONLY = ("avg_bits", "budget_bytes", "bit_plan", "salient_ratio", "channel_choice", "frontier", "int2")
DISTILL_ONLY = ("kd_alpha", "temperature", "feature_weight", "learn_steps")


def check_args(args) -> None:
    """Rejects what the command line contradicts, before TensorFlow is imported or anything is
    written: a flag that would be ignored, a value out of range, an output in the way."""
    given = options_given(args, parse_args(["--data", str(args.data), "--out", str(args.out)]))
    if args.init is not None:
        refuse_ignored(given, ("backbone", "width", "highpass"),
                       "is fixed by --init's model (its manifest names backbone, width and front end)")
        if not Path(args.init).is_file():
            raise UserError(f"{args.init}: --init model not found")
    elif args.scheme:
        raise UserError("--scheme needs --init: QAT fine-tunes a trained float model")
    if not args.scheme:
        refuse_ignored(given, ("calib_images",), "calibrates QAT ranges: it needs --init FLOAT --scheme S")
    if args.scheme != "adaptive":
        refuse_ignored(given, ADAPTIVE_ONLY, "needs --scheme adaptive")
    if args.avg_bits is not None and args.budget_bytes is not None:
        raise UserError("give one budget: --avg-bits or --budget-bytes")
    if args.salient_ratio is not None and not 0 <= args.salient_ratio < 1:
        raise UserError(f"--salient-ratio must be in [0, 1), got {args.salient_ratio}")
    if args.scheme == "adaptive" and args.salient_ratio == 0:
        refuse_ignored(given, ("channel_choice",), "picks the channels of the vertical split, which --salient-ratio 0 turns off")
    if args.bit_plan is not None and "channel_choice" in given:
        from tfdefakeq.quant.horizontal import QuantPlan

        if QuantPlan.load(args.bit_plan).salient_channels:  # a missing or bad file: QuantPlan.load's one-line error
            raise UserError(f"--channel-choice picks the channels of a new split; {args.bit_plan} brings its own "
                            "(its 'salient_channels'): drop --channel-choice, or remove them from the plan")
        if args.salient_ratio is None:
            raise UserError(f"--channel-choice picks channels for --salient-ratio R; {args.bit_plan} has no split "
                            "and none is picked without --salient-ratio")
    distill = args.distill == "on" or (args.distill == "auto" and args.scheme == "adaptive")
    if distill and not args.scheme:
        raise UserError("--distill needs QAT (--init FLOAT --scheme S): the float model is the teacher")
    if not distill:
        refuse_ignored(given, DISTILL_ONLY, "weighs distillation, which is off (--distill on, or --scheme adaptive)")
    if args.weights and args.init:
        raise UserError("--weights initialises a new float backbone; --init already gives the weights")
    if args.weights and args.weights != "imagenet" and not Path(args.weights).is_file():
        raise UserError(f"{args.weights}: --weights file not found")
    if args.partial and not args.weights:
        raise UserError("--partial loosens --weights: give --weights FILE or imagenet")
    if not 0.0 <= args.aug_prob <= 1.0:
        raise UserError(f"--aug-prob must be in [0, 1], got {args.aug_prob}")
    if args.no_augment:
        refuse_ignored(given, ("aug_prob",), "sets the augmentation that --no-augment turns off")
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--input-size", args.input_size),
                        ("--calib-images", args.calib_images)):
        if value is not None and value < 1:  # --input-size None: the --init model's own
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.logical_cpus is not None and args.logical_cpus < 1:
        raise UserError(f"--logical-cpus must be >= 1, got {args.logical_cpus}")
    for split in ("train", "val"):
        if not (Path(args.data) / split).is_dir():
            raise UserError(f"{Path(args.data) / split}: dataset split not found (train needs {args.data}/train and /val)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --out must be a folder")
    if (out / "model.weights.h5").exists() and not args.overwrite:
        raise UserError(f"{out / 'model.weights.h5'}: already exists (pass --overwrite to retrain)")
    if (out / "backup").exists() and not args.resume:
        raise UserError(f"{out / 'backup'}: an interrupted run is here (pass --resume to continue it, or remove the folder)")


def main(args) -> int:
    check_args(args)
    from tfdefakeq.engine.training import train_detector

    return train_detector(args)


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
