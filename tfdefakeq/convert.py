"""Convert a Keras detector (float or QAT) to a .tflite, then prove the .tflite agrees with it.

    python -m tfdefakeq.convert runs/float/model.weights.h5 --data DATA --out models/det_fp32.tflite
    python -m tfdefakeq.convert runs/int8/model.weights.h5  --data DATA --out models/det_int8.tflite
    python -m tfdefakeq.convert runs/w4a8/model.weights.h5  --data DATA --out models/det_int4.tflite
    python -m tfdefakeq.convert runs/float/model.weights.h5 --data DATA --out models/det_avg3.tflite \
        --scheme adaptive --avg-bits 3 --epochs 2

The format follows the model: a float model gives float32 (or `--format int8`: post-training
quantization on --data), a tfmot_int8/w8a8 QAT model gives full-integer int8, a w4a8 QAT model
gives int4 (packed INT4 weights, int8 activations, int8 I/O). The learned ranges are the stored
scales; 2-bit layers are repacked as INT2 (the runtime unpacks INT2/INT4 to INT8 at load; a stock
interpreter rejects INT2 convolutions: `--no-int2` keeps them in INT4 containers). The .tflite is
run by the runtime on calibration images and compared with Keras: the logits within MAX_LOGIT_LSB
output steps, or else (a QAT model) op by op, every int8 tensor within 1 LSB of Keras on TFLite's
own inputs and off only at rounding ties (tfdefakeq.engine.parity); a model that disagrees is not written.
Nor is a quantized model that gives one constant output on the threshold images where the float
model (the one --scheme starts from, or --float-model) does not: a collapsed model passes parity.

Your own Keras model (`det.keras`, a full-model `det.h5`) converts the same way: it is imported
(tfdefakeq.engine.importer: flattened, its input preprocessing folded into the manifest, its head
made one logit for P(fake); `--fake-class K` names the fake class, `--preprocess caffe|tf|torch|none`
what it expects outside its graph) and is then a float detector like ours.

`--scheme S` on a float model does the quantization too: QAT fine-tuning on --data for --epochs
(through tfdefakeq.train, into OUT's stem + ".qat/"), then the conversion of the result.

The decision threshold: a quantized model's is calibrated on the --split images (val) so that it
calls as many real images fake as the float model does at 0.5 (tfdefakeq.runtime.threshold says
why), and stored in the manifest, where evaluate and predict find it. The float model is the one
converted (float32, --format int8), the one --scheme starts from, or, for a QAT model, --float-model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tfdefakeq.core.cli import add_adaptive_args, add_import_args, given_options, options_given, refuse_ignored, run_cli
from tfdefakeq.core.errors import UserError
from tfdefakeq.data.folders import SPLIT_HELP
from tfdefakeq.engine.export import FORMATS

VERB = "convert"
THRESHOLD_IMAGES = 2000  # all of the synthetic val split (744 images); of a big split, a balanced subset


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tfdefakeq.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="detector weights (.weights.h5) saved by tfdefakeq.train, with its manifest; "
                                 "or your own Keras model (.keras / full-model .h5), imported first")
    p.add_argument("--data", required=True, help="dataset root: calibration and parity images come from --split")
    p.add_argument("--split", default=None, help=SPLIT_HELP.format(default="val"))
    p.add_argument("--out", required=True, help="output .tflite path (manifest written beside it)")
    p.add_argument("--format", choices=("auto",) + FORMATS, default="auto")
    p.add_argument("--calib-images", type=int, default=64,
                   help="representative / parity images (default 64); given with --scheme, also the QAT fine-tuning's "
                        "calibration and sensitivity images (train's --calib-images, default 128)")
    p.add_argument("--threshold-images", type=int, default=THRESHOLD_IMAGES,
                   help=f"images of --split the decision threshold is calibrated on (default {THRESHOLD_IMAGES})")
    p.add_argument("--float-model", default=None,
                   help="a QAT model's float model (the .weights.h5 it was fine-tuned from): the operating point its "
                        "threshold keeps (without it a QAT model's manifest records 0.5)")
    p.add_argument("--overwrite", action="store_true")
    g = p.add_argument_group("quantize a float model first (QAT fine-tuning through tfdefakeq.train)")
    g.add_argument("--scheme", default=None, help="e.g. adaptive, lsq_w4a8, w4a8, tfmot_int8")
    g.add_argument("--epochs", type=int, default=2, help="QAT fine-tuning epochs")
    g.add_argument("--quiet", action="store_true", help="no progress of the QAT fine-tuning")
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--batch-size", type=int, default=32)
    add_adaptive_args(p)
    add_import_args(p)
    args = p.parse_args(argv)
    args.given = given_options(p, argv)
    return args


# Options of the QAT fine-tuning: they act only with --scheme (train's flags of the same names).
QAT_ONLY = ("epochs", "lr", "batch_size", "avg_bits", "budget_bytes", "bit_plan", "salient_ratio", "channel_choice",
            "frontier", "distill", "kd_alpha", "temperature", "feature_weight", "learn_steps")


def _finetune_args(args, out: Path, given: set[str]):
    """tfdefakeq.train's arguments for the QAT fine-tuning of --model under --scheme into OUT's stem + '.qat/'."""
    from tfdefakeq import train

    work = out.with_name(out.stem + ".qat")
    # no --input-size: train takes the --init model's own
    argv = ["--data", args.data, "--out", str(work), "--init", args.model, "--scheme", args.scheme,
            "--epochs", str(args.epochs), "--lr", str(args.lr), "--batch-size", str(args.batch_size)]
    for dest in QAT_ONLY[3:] + ("calib_images", "fake_class", "preprocess"):  # only those given: train refuses a flag that would not act
        if dest in given:
            argv += [f"--{dest.replace('_', '-')}", str(getattr(args, dest))]
    if not args.int2 and args.scheme == "adaptive":  # the adaptive plan prices the containers it will get
        argv.append("--no-int2")
    if (work / "backup").exists():
        argv.append("--resume")
    if args.overwrite:
        argv.append("--overwrite")
    if args.quiet:
        argv.append("--quiet")
    return train.parse_args(argv)


def main(args) -> int:
    from tfdefakeq.data.folders import balanced_subset, choose_split, scan_forensynths

    # Everything the command line can get wrong is rejected here, before TensorFlow loads.
    given = options_given(args, parse_args([str(args.model), "--data", str(args.data), "--out", str(args.out)]))
    out = Path(args.out)
    if out.suffix != ".tflite":
        raise UserError(f"{out}: output path must end in .tflite")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: already exists (pass --overwrite to replace it)")
    if not Path(args.model).is_file():
        raise UserError(f"{args.model}: model not found")
    if args.calib_images < 1:
        raise UserError(f"--calib-images must be >= 1, got {args.calib_images}")
    if args.threshold_images < 1:
        raise UserError(f"--threshold-images must be >= 1, got {args.threshold_images}")
    if args.float_model is not None:
        if args.scheme:
            raise UserError(f"--float-model: with --scheme the float model is {args.model}, the one fine-tuned")
        if not Path(args.float_model).is_file():
            raise UserError(f"{args.float_model}: --float-model not found")
    if not args.scheme:
        refuse_ignored(given, QAT_ONLY + ("quiet",), "acts on the QAT fine-tuning, which only --scheme starts")
    split = choose_split(args.data, args.split, "val")
    split_samples = scan_forensynths(args.data, split)
    calib = balanced_subset(split_samples, args.calib_images)
    train_args = None
    if args.scheme:
        from tfdefakeq import train

        train_args = _finetune_args(args, out, given)
        train.check_args(train_args)

    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.engine.export import convert_model, target_format
    from tfdefakeq.runtime.images import load_images

    model_path = args.model
    if train_args is not None:
        from tfdefakeq import train

        train.main(train_args)
        model_path = Path(train_args.out) / "model.weights.h5"
    imported = (args.fake_class, args.preprocess) if model_path == args.model else (None, None)
    model, manifest = load_detector(model_path, *imported)
    fmt = target_format(manifest, args.format)
    size = tuple(manifest.input_shape[:2])
    calib_uint8 = load_images([s.path for s in calib], size)
    plan = None
    if manifest.scheme == "adaptive" and (Path(model_path).parent / "bit_plan.json").is_file():
        from tfdefakeq.quant.horizontal import QuantPlan

        plan = QuantPlan.load(Path(model_path).parent / "bit_plan.json")  # its budget is checked on the file
    reference = None
    if fmt == "float32":  # keeps the float model's own 0.5: nothing to calibrate
        refuse_ignored(given, ("threshold_images", "float_model"), "calibrates a quantized model's threshold; "
                       "a float32 model keeps the float model's 0.5")
    else:
        reference = _threshold_reference(args, model, manifest, balanced_subset(split_samples, args.threshold_images),
                                         split, size, given)
    written = convert_model(model, manifest, fmt, calib_uint8, out, overwrite=args.overwrite, int2=args.int2, plan=plan,
                            threshold_reference=reference)
    parity = written.metrics["parity"]
    print(
        f"wrote {out} ({fmt}, {written.size_bytes:,} bytes); parity on {parity['images']} images: "
        f"max |logit diff| {parity['max_abs_logit_diff']:.3g}"
        + (f" ({parity['max_diff_lsb']:.2f} LSB)" if "max_diff_lsb" in parity else "")
        + f", decisions agree {parity['decision_agreement']:.1%}"
    )
    from tfdefakeq.runtime.threshold import describe_source

    print(f"threshold {written.threshold['value']:.6g} ({describe_source('manifest', written)})")
    return 0


def _threshold_reference(args, model, manifest, samples, split, size, given):
    """The val images and the float model's probabilities on them (engine.export.ThresholdReference)."""
    from tfdefakeq.engine.export import ThresholdReference, keras_probs
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.runtime.images import load_images

    if manifest.scheme == "float" and args.float_model is not None:
        raise UserError(f"--float-model: {args.model} is a float model, its own reference")
    if manifest.scheme != "float" and not args.scheme and args.float_model is None:
        refuse_ignored(given, ("threshold_images",), "calibrates against the float model: add --float-model")
        return ThresholdReference(None, None, None, "no float model to match (convert a QAT model with "
                                  "--float-model FLOAT.weights.h5, the model it was fine-tuned from)", split)
    images = load_images([s.path for s in samples], size)
    labels = [s.label for s in samples]
    if manifest.scheme == "float":
        return ThresholdReference(images, labels, keras_probs(model, manifest.preprocess, images),
                                  f"the float model {args.model}", split)
    if args.scheme:
        float_model, float_manifest = load_detector(args.model, args.fake_class, args.preprocess)
        source = args.model
    elif args.float_model is not None:
        float_model, float_manifest = load_detector(args.float_model)
        source = args.float_model
        if float_manifest.scheme != "float":
            raise UserError(f"{source}: --float-model must be a float model (this one is {float_manifest.scheme})")
        if (list(float_manifest.input_shape) != list(manifest.input_shape)
                or float_manifest.preprocess != manifest.preprocess):
            raise UserError(f"{source}: --float-model takes input {float_manifest.input_shape} "
                            f"{float_manifest.preprocess}, {args.model} takes {manifest.input_shape} {manifest.preprocess}")
    return ThresholdReference(images, labels, keras_probs(float_model, float_manifest.preprocess, images),
                              f"the float model {source}", split)


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
