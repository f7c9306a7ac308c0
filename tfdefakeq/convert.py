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

Your own Keras model (`det.keras`, a full-model `det.h5`) converts the same way: it is imported
(tfdefakeq.engine.importer: flattened, its input preprocessing folded into the manifest, its head
made one logit for P(fake); `--fake-class K` names the fake class, `--preprocess caffe|tf|torch|none`
what it expects outside its graph) and is then a float detector like ours.

`--scheme S` on a float model does the quantization too: QAT fine-tuning on --data for --epochs
(through tfdefakeq.train, into OUT's stem + ".qat/"), then the conversion of the result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tfdefakeq.core.cli import add_adaptive_args, add_import_args, run_cli
from tfdefakeq.core.errors import UserError
from tfdefakeq.engine.export import FORMATS

VERB = "convert"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tfdefakeq.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="detector weights (.weights.h5) saved by tfdefakeq.train, with its manifest; "
                                 "or your own Keras model (.keras / full-model .h5), imported first")
    p.add_argument("--data", required=True, help="dataset root: calibration and parity images come from --split")
    p.add_argument("--split", default="val")
    p.add_argument("--out", required=True, help="output .tflite path (manifest written beside it)")
    p.add_argument("--format", choices=("auto",) + FORMATS, default="auto")
    p.add_argument("--calib-images", type=int, default=64, help="representative / parity images")
    p.add_argument("--no-int2", dest="int2", action="store_false", help="keep 2-bit weights in INT4 containers")
    p.add_argument("--overwrite", action="store_true")
    g = p.add_argument_group("quantize a float model first (QAT fine-tuning through tfdefakeq.train)")
    g.add_argument("--scheme", default=None, help="e.g. adaptive, lsq_w4a8, w4a8, tfmot_int8")
    g.add_argument("--epochs", type=int, default=2, help="QAT fine-tuning epochs")
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--batch-size", type=int, default=32)
    add_adaptive_args(p)
    add_import_args(p)
    return p.parse_args(argv)


def _finetune(args, out: Path) -> Path:
    """QAT-fine-tunes the float --model under --scheme into OUT's stem + '.qat/'; returns the result."""
    from tfdefakeq import train

    work = out.with_name(out.stem + ".qat")
    argv = ["--data", args.data, "--out", str(work), "--init", args.model, "--scheme", args.scheme,
            "--epochs", str(args.epochs), "--lr", str(args.lr), "--batch-size", str(args.batch_size),
            "--channel-choice", args.channel_choice, "--distill", args.distill, "--kd-alpha", str(args.kd_alpha),
            "--temperature", str(args.temperature), "--feature-weight", str(args.feature_weight)]
    for flag, value in (("--avg-bits", args.avg_bits), ("--budget-bytes", args.budget_bytes),
                        ("--bit-plan", args.bit_plan), ("--salient-ratio", args.salient_ratio),
                        ("--fake-class", args.fake_class), ("--preprocess", args.preprocess)):
        if value is not None:
            argv += [flag, str(value)]
    if (work / "backup").exists():
        argv.append("--resume")
    if args.overwrite:
        argv.append("--overwrite")
    train.main(train.parse_args(argv))
    return work / "model.weights.h5"


def main(args) -> int:
    from tfdefakeq.data.folders import balanced_subset, scan_forensynths
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.engine.export import convert_model, target_format
    from tfdefakeq.runtime.images import load_images

    out = Path(args.out)
    if out.suffix != ".tflite":
        raise UserError(f"{out}: output path must end in .tflite")
    model_path = args.model
    if args.scheme:
        model_path = _finetune(args, out)
    imported = (args.fake_class, args.preprocess) if model_path == args.model else (None, None)
    model, manifest = load_detector(model_path, *imported)
    fmt = target_format(manifest, args.format)
    size = tuple(manifest.input_shape[:2])
    calib = balanced_subset(scan_forensynths(args.data, args.split), args.calib_images)
    calib_uint8 = load_images([s.path for s in calib], size)
    written = convert_model(model, manifest, fmt, calib_uint8, out, overwrite=args.overwrite, int2=args.int2)
    parity = written.metrics["parity"]
    print(
        f"wrote {out} ({fmt}, {written.size_bytes:,} bytes); parity on {parity['images']} images: "
        f"max |logit diff| {parity['max_abs_logit_diff']:.3g}"
        + (f" ({parity['max_diff_lsb']:.2f} LSB)" if "max_diff_lsb" in parity else "")
        + f", decisions agree {parity['decision_agreement']:.1%}"
    )
    return 0


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
