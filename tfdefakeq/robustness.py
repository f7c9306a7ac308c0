"""python -m tfdefakeq.robustness MODEL.tflite --data DIR [--split test] --sweep jpeg|blur|resize [--levels ...] --out DIR

Scores the test images again under growing degradation and writes DIR/NAME.SWEEP.csv / .md (AP, AUC,
accuracy per level and generator) and DIR/NAME.SWEEP.png (AP and accuracy against the level).
Accuracies are taken at the manifest's calibrated threshold (0.5 when it records none), or --threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tfdefakeq.core.cli import add_threshold_arg, require, run_cli
from tfdefakeq.data.folders import SPLIT_HELP

VERB = "robustness"


def parse_args(argv=None) -> argparse.Namespace:
    from tfdefakeq.runtime.perturb import SWEEPS

    p = argparse.ArgumentParser(prog="python -m tfdefakeq.robustness", description=__doc__.split("\n\n")[0])
    sweeps = "; ".join(f"{kind}: {meaning}, default levels {' '.join(f'{v:g}' for v in levels)}"
                       for kind, (levels, meaning, _) in sorted(SWEEPS.items()))
    p.add_argument("model", type=Path, help="the .tflite model (its NAME.manifest.json beside it)")
    p.add_argument("--data", type=Path, required=True,
                   help="dataset root (ForenSynths, real/fake pairs, FF++ frames or a DeepfakeBench JSON)")
    p.add_argument("--split", default=None, help=SPLIT_HELP.format(default="test"))
    p.add_argument("--sweep", choices=sorted(SWEEPS), required=True, help=f"the degradation ({sweeps})")
    p.add_argument("--levels", type=float, nargs="+", default=None, help="levels to test (default: the sweep's own)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    add_threshold_arg(p)
    p.add_argument("--out", type=Path, required=True, help="folder for NAME.SWEEP.csv / .md / .png")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress output on stderr (results and errors are still printed)")
    return p.parse_args(argv)


def main(args) -> int:
    from tfdefakeq.data.folders import choose_split, scan_dataset
    from tfdefakeq.core.fileio import check_writable
    from tfdefakeq.core.manifest import command_line
    from tfdefakeq.runtime.scoring import Progress, format_table
    from tfdefakeq.runtime.interpreter import check_tflite_file, machine_info
    from tfdefakeq.runtime.loader import load_model
    from tfdefakeq.runtime.perturb import SWEEPS, sweep

    require(["pandas", "tabulate", "matplotlib"], "robustness (its tables and plot)", "report")
    from tfdefakeq.runtime.threshold import check_threshold, describe_source, resolve_threshold

    if args.threshold is not None:
        check_threshold(args.threshold)
    check_tflite_file(args.model)
    args.split = choose_split(args.data, args.split, "test")
    stem = args.out / f"{args.model.stem}.{args.sweep}"
    for suffix in (".csv", ".md", ".png"):
        check_writable(stem.with_suffix(stem.suffix + suffix), overwrite=args.overwrite)
    model, manifest = load_model(args.model, num_threads=args.threads)
    threshold, source = resolve_threshold(manifest, args.threshold, note=f"tfdefakeq {VERB}: note: {args.model}")
    samples = scan_dataset(args.data, split=args.split)
    progress = Progress(f"{VERB} {args.sweep}", unit="levels", enabled=not args.quiet)
    try:
        rows = sweep(model, manifest.preprocess, samples, args.sweep, args.levels, progress, threshold)
    finally:
        progress.close()
    means = [r for r in rows if r["generator"] == "mean"]
    print(format_table(means, ["level", "ap", "auc", "acc", "real_acc", "fake_acc", "eer"]))

    import pandas as pd

    from tfdefakeq.core.report import plot_sweep, write_table

    machine = machine_info()
    header = {
        "model": f"{args.model} ({manifest.backbone}, {manifest.format}, {manifest.scheme})",
        "data": f"{args.data}" + (f" split {args.split}" if args.split else "") + f" ({len(samples)} images)",
        "sweep": f"{args.sweep}: {SWEEPS[args.sweep][1]}",
        "threshold": f"{threshold!r}",
        "threshold_source": describe_source(source, manifest),
        "machine": f"{machine['processor']} ({machine['machine']})",
        "command": command_line(),
    }
    df = pd.DataFrame(rows)
    for path in write_table(df, stem, header, f"Robustness of {args.model.name}: {SWEEPS[args.sweep][1]}",
                            {"n": "{:.0f}", "n_real": "{:.0f}", "n_fake": "{:.0f}", "level": "{:g}"}):
        print(f"wrote {path}")
    print(f"wrote {plot_sweep(df, stem.with_suffix(stem.suffix + '.png'), SWEEPS[args.sweep][1], args.model.name)}")
    return 0


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
