"""python -m tfdefakeq.edgetpu MODEL.tflite [MODEL ...] [--json report.json] [--compile-out DIR] [--strict]

Edge TPU (Coral) compatibility of each model, op by op (no TensorFlow, no Coral software needed);
`edgetpu_compiler` is run too when it is on PATH. The checks and their sources: tfdefakeq.runtime.edgetpu_ops.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tfdefakeq.core.cli import run_cli

VERB = "edgetpu"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tfdefakeq.edgetpu",
                                description="Edge TPU compatibility report of .tflite models (op by op).")
    p.add_argument("model", type=Path, nargs="+", help=".tflite model(s)")
    p.add_argument("--json", type=Path, default=None, help="write the reports as JSON here")
    p.add_argument("--compile-out", type=Path, default=None,
                   help="where edgetpu_compiler writes NAME_edgetpu.tflite (default: beside the model)")
    p.add_argument("--no-delegate", dest="delegate", action="store_false", help="do not try to load libedgetpu")
    p.add_argument("--strict", action="store_true", help="exit 1 when a model is not fully compatible")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return p.parse_args(argv)


def main(args) -> int:
    from tfdefakeq.core.fileio import check_writable, write_json_atomic
    from tfdefakeq.runtime.edgetpu_ops import check_model, format_report, probe_delegate, run_compiler

    if args.json is not None:
        check_writable(args.json, overwrite=args.overwrite)
    delegate = probe_delegate() if args.delegate else {}
    reports = []
    for path in args.model:
        report = check_model(path)
        report.compiler = run_compiler(path, args.compile_out or Path(path).parent)
        report.delegate = delegate
        reports.append(report)
        print(format_report(report))
        print()
    if args.json is not None:
        write_json_atomic(args.json, [r.to_json() for r in reports], overwrite=args.overwrite)
        print(f"wrote {args.json}")
    if args.strict and not all(r.compatible for r in reports):
        return 1
    return 0


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
