"""python -m tfdefakeq.evaluate MODEL.tflite --data DIR [--split test] [--out DIR] [--threads 1] [--overwrite]

--data may be a ForenSynths tree, UniversalFakeDetect real/fake pairs, FaceForensics++ frame folders
or a DeepfakeBench dataset JSON (video-level AUC is added where frames group into videos).
Scores every image of the dataset with a `.tflite` detector (no TensorFlow needed)
and prints AP, AUC, accuracy (all / real / fake at the threshold), EER and image count per generator
plus their mean. The threshold is the manifest's (calibrated on val by `convert`; 0.5 when the
manifest records none) unless --threshold gives one; the report's header says which. With --out,
writes DIR/NAME.eval.csv, DIR/NAME.eval.md and DIR/NAME.scores.csv (per-image probabilities),
NAME being the model's stem (+ ".SPLIT").
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from tfdefakeq.core.cli import add_threshold_arg, require, run_cli
from tfdefakeq.core.errors import UserError
from tfdefakeq.data.folders import SPLIT_HELP

VERB = "evaluate"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tfdefakeq.evaluate",
        description="Evaluate a .tflite deepfake detector per generator (AP, AUC, acc, EER).",
    )
    parser.add_argument("model", type=Path, help="the .tflite model (its NAME.manifest.json beside it)")
    parser.add_argument("--data", type=Path, required=True, help="ForenSynths-style root: <split>/<generator>/{0_real,1_fake}")
    parser.add_argument("--split", default=None, help=SPLIT_HELP.format(default="test"))
    parser.add_argument("--out", type=Path, default=None, help="folder for the CSV/Markdown/scores files (default: print only)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    add_threshold_arg(parser)
    parser.add_argument("--no-xnnpack", dest="xnnpack", action="store_false", help="run without the XNNPACK delegate")
    parser.add_argument("--packed", choices=("unpacked", "packed"), default="unpacked",
                        help="run packed INT4/INT2 weights unpacked to INT8 at load (default: int8 speed, same arithmetic) or as stored")
    parser.add_argument("--curves", action="store_true",
                        help="with --out, also plot ROC and precision-recall curves per generator (needs matplotlib)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr (results and errors are still printed)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(args: argparse.Namespace) -> int:
    if args.curves and args.out is None:
        raise UserError("--curves draws into --out: give --out DIR (without it nothing would be plotted)")
    # Imported here so `--help` answers without loading numpy/litert.
    from tfdefakeq.data.folders import choose_split, generators_of, scan_dataset
    from tfdefakeq.runtime.scoring import (
        Progress,
        evaluate_arrays,
        format_table,
        mark_seen,
        output_paths,
        predict_samples,
        scores_of,
        write_results,
    )
    from tfdefakeq.runtime.interpreter import check_tflite_file, machine_info
    from tfdefakeq.runtime.loader import load_model
    from tfdefakeq.runtime.threshold import check_threshold, describe_source, resolve_threshold

    if args.threshold is not None:
        check_threshold(args.threshold)
    if args.curves:
        require(["matplotlib"], "--curves (ROC and PR plots)", "report")
    check_tflite_file(args.model)
    args.split = choose_split(args.data, args.split, "test")
    name = args.model.stem + (f".{args.split}" if args.split else "")
    curves_path = Path(args.out) / f"{name}.curves.png" if args.curves else None
    if args.out is not None and not args.overwrite:
        for path in [*output_paths(args.out, name).values()] + ([curves_path] if curves_path else []):
            if path.exists():
                raise UserError(f"{path}: already exists (pass --overwrite to replace it)")
    model, manifest = load_model(args.model, num_threads=args.threads, use_xnnpack=args.xnnpack,
                                 unpack_packed=args.packed == "unpacked")
    threshold, source = resolve_threshold(manifest, args.threshold, note=f"tfdefakeq {VERB}: note: {args.model}")
    samples = scan_dataset(args.data, split=args.split)
    progress = Progress(f"{VERB} {args.model.name}", enabled=not args.quiet)
    start = time.perf_counter()
    try:
        probs = predict_samples(model, manifest.preprocess, samples, batch_callback=progress)
    finally:
        progress.close()
    seconds = time.perf_counter() - start
    videos = [s.video for s in samples] if any(s.video for s in samples) else None
    rows = evaluate_arrays([s.label for s in samples], probs, [s.generator for s in samples], threshold, videos)
    rows = mark_seen(rows, manifest.train_generators)

    machine = machine_info()
    header = {
        "model": f"{args.model} ({manifest.backbone}, {manifest.format}, scheme {manifest.scheme}, {model.size_bytes} bytes)",
        "data": f"{args.data}" + (f" split {args.split}" if args.split else "")
        + f" ({len(samples)} images, {len(generators_of(samples))} generators)",
        "machine": f"{machine['machine']}, {machine['processor']}, {machine['system']}, python {machine['python']}",
        "runtime": f"{model.runtime.name} {model.runtime.version}, {args.threads} thread(s), "
        f"XNNPACK {'on' if args.xnnpack else 'off'}"
        + (f", INT4 {'unpacked to INT8' if model.unpacked_tensors else 'packed'}" if args.packed == "packed" or model.unpacked_tensors else "")
        + f", {seconds:.2f} s",
        "threshold": f"{threshold!r}",
        "threshold_source": describe_source(source, manifest),
        "command": "python -m tfdefakeq.evaluate " + shlex.join(args.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    print(f"{args.model} on {header['data']}")
    print(format_table(rows))
    if args.out is not None:
        for path in write_results(rows, scores_of(samples, probs), args.out, name, header, overwrite=args.overwrite):
            print(f"wrote {path}")
        if args.curves:
            from tfdefakeq.core.report import plot_roc_pr

            curves = plot_roc_pr([s.label for s in samples], probs, [s.generator for s in samples],
                                 curves_path, f"{args.model.name} on {args.data}", overwrite=args.overwrite)
            print(f"wrote {curves}")
    return 0


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
