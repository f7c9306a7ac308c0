"""python -m tfdefakeq.bench MODEL.tflite [MODEL ...] [--threads 1 2 4] [--warmup 10] [--runs 100]
       [--xnnpack on off | --no-xnnpack] [--packed unpacked packed] [--no-amx] [--device LABEL] [--profile]
       [--out results.csv]

Times single-image invokes of `.tflite` models on this machine (no TensorFlow needed) for every
combination of the listed threads, XNNPACK settings and INT4 handling, and prints init time,
p50/p90/p99/mean latency in ms, MACs and achieved GMAC/s, peak memory, size, machine and runtime.
`--packed unpacked` (default) runs packed INT4/INT2 weights unpacked to INT8 at load (int8 speed, same
outputs); `packed` runs them as stored. With --out, appends one row per measurement (plus the
command line) to a CSV, creating it with a header; with --profile also, per op, to OUT's
`.ops.csv` sibling. `--no-amx` keeps XNNPACK off Intel AMX (runtime.amx: its int8 kernels compute 64
output channels at a time, so narrow int8 convs can run slower than float32 on such CPUs); each row's
`int8_isa` says what the CPU offered.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tfdefakeq.core.cli import run_cli

VERB = "bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tfdefakeq.bench",
        description="Measure single-image latency of .tflite detectors.",
    )
    parser.add_argument("model", type=Path, nargs="+", help="the .tflite model(s)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="interpreter threads, one or more (default 1)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed invokes first (default 10)")
    parser.add_argument("--runs", type=int, default=100, help="timed invokes (default 100)")
    parser.add_argument("--xnnpack", choices=("on", "off"), nargs="+", default=None,
                        help="XNNPACK delegate on, off or both (default on)")
    parser.add_argument("--no-xnnpack", dest="no_xnnpack", action="store_true", help="same as --xnnpack off")
    parser.add_argument("--packed", choices=("unpacked", "packed"), nargs="+", default=["unpacked"],
                        help="packed INT4/INT2 weights unpacked to INT8 at load (default) or run as stored; both to compare")
    parser.add_argument("--no-amx", dest="no_amx", action="store_true",
                        help="deny XNNPACK Intel AMX for this run (an error on CPUs without AMX)")
    parser.add_argument("--device", default="", help="a label for the machine, e.g. 'rpi5' (stored in the CSV)")
    parser.add_argument("--profile", action="store_true", help="also time every op alone (isolated per-op timings)")
    parser.add_argument("--out", type=Path, default=None, help="CSV to append the result rows to")
    args = parser.parse_args(argv)
    if args.no_xnnpack and args.xnnpack and "on" in args.xnnpack:
        parser.error("--no-xnnpack contradicts --xnnpack on")
    args.xnnpack = ["off"] if args.no_xnnpack else list(dict.fromkeys(args.xnnpack or ["on"]))
    args.threads = list(dict.fromkeys(args.threads))
    args.packed = list(dict.fromkeys(args.packed))
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(args: argparse.Namespace) -> int:
    from tfdefakeq.runtime.latency import append_csv_rows, bench_model, format_result, profile_model
    from tfdefakeq.runtime.interpreter import check_tflite_file
    from tfdefakeq.runtime.modelinfo import read_model_info

    for path in args.model:
        check_tflite_file(path)
    if args.no_amx:
        from tfdefakeq.runtime.amx import deny_amx

        deny_amx()
    command = "python -m tfdefakeq.bench " + shlex.join(args.argv)
    rows, op_rows = [], []
    for path in args.model:
        info = read_model_info(path)
        packed = info.tensor_types.get("INT4", 0) + info.tensor_types.get("INT2", 0)
        modes = args.packed if packed else ["unpacked"]  # nothing to unpack: one mode only
        for mode in modes:
            for xnn in args.xnnpack:
                for threads in args.threads:
                    result = bench_model(path, threads=threads, warmup=args.warmup, runs=args.runs,
                                         use_xnnpack=xnn == "on", unpack_packed=mode == "unpacked", device=args.device)
                    if rows:
                        print()
                    print(format_result(result))
                    rows.append({**result, "command": command})
                    if args.profile:
                        from tfdefakeq.runtime.profile import format_profile

                        ops = profile_model(path, threads=threads, use_xnnpack=xnn == "on", unpack_packed=mode == "unpacked")
                        print(format_profile(ops, whole_ms=result["latency_ms_p50"], top=15))
                        for r in ops:
                            op_rows.append({"device": args.device, "model": str(path), "packed_weights": result["packed_weights"],
                                            "threads": threads, "xnnpack": xnn == "on", **r})
    if args.out is not None:
        print(f"appended to {append_csv_rows(args.out, rows)} ({len(rows)} row(s))")
        if op_rows:
            ops_path = args.out.with_name(args.out.stem + ".ops.csv")
            print(f"appended to {append_csv_rows(ops_path, op_rows)} ({len(op_rows)} op row(s))")
    return 0


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
