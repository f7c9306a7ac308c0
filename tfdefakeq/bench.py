"""python -m tfdefakeq.bench MODEL.tflite [--threads 1] [--warmup 10] [--runs 100] [--out results.csv]

Times single-image invokes of a `.tflite` on this machine (no TensorFlow needed) and prints init
time, p50/p90/mean latency in ms, threads, XNNPACK on/off, size, machine and runtime. With --out,
appends one row (plus the command line) to a CSV, creating it with a header.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tfdefakeq.cli import run_cli

VERB = "bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tfdefakeq.bench",
        description="Measure single-image latency of a .tflite detector.",
    )
    parser.add_argument("model", type=Path, help="the .tflite model")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed invokes first (default 10)")
    parser.add_argument("--runs", type=int, default=100, help="timed invokes (default 100)")
    parser.add_argument("--no-xnnpack", dest="xnnpack", action="store_false", help="run without the XNNPACK delegate")
    parser.add_argument("--out", type=Path, default=None, help="CSV to append the result row to")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(args: argparse.Namespace) -> int:
    from tfdefakeq.runtime.bench import append_csv_row, bench_model, format_result

    result = bench_model(args.model, threads=args.threads, warmup=args.warmup, runs=args.runs, use_xnnpack=args.xnnpack)
    print(format_result(result))
    if args.out is not None:
        row = {**result, "command": "python -m tfdefakeq.bench " + shlex.join(args.argv)}
        print(f"appended to {append_csv_row(args.out, row)}")
    return 0


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
