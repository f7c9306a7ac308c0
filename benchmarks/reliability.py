"""Reliability: seeded mutations of every shipped model through each command's own loader, and the bad-input tests.

    python benchmarks/reliability.py --commit $(git rev-parse HEAD) [--mutations 10000] [--time-budget-s 1500]

Run from a `git archive` snapshot. Writes benchmarks/results/reliability.csv and reliability.md. The
campaign is `tfdefakeq.runtime.fuzz` (tests/runtime/test_fuzz.py runs 544 of it in CI): each mutated
`.tflite` (or tampered manifest) is written with a manifest beside it, "matching" (it records the
SHA-256 of the mutated bytes, so the loader trusts them and opens them in-process, validation being the
only defence) or "copied" (the shipped model's, whose hash differs, so the loader probes the file in a
child first), and opened by `bench`, `evaluate` or `predict` (`main(parse_args(argv))`) in a worker
process that stands for the user's; the worker's death is a harness crash. `--time-budget-s` stops
early (the report gives the measured count); the full count runs without it. Needs no TensorFlow
(pandas formats the tables).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BATTERY = ("tests/test_reliability.py", "tests/test_cli_errors.py")
RESUME = "tests/test_train.py"
OURS = ("tests/runtime/test_validate.py", "tests/runtime/test_fuzz.py", "tests/runtime/test_trust.py")
DESCRIPTIONS = {
    "bit_flip": "1, 2, 4 or 8 random bits flipped (half the positions outside the weights, where the structure is)",
    "boundary_bytes": "1-4 runs of 1-8 bytes set to 0x00 / 0xFF / 0x7F / 0x80 at random positions",
    "truncate": "cut to a random length (under 64 bytes, anywhere, or within 4 KiB of the end)",
    "chunk": "1 B - 4 KiB removed, duplicated in place, or copied over another position",
    "header": "root offset rewritten, identifier damaged, the two swapped, or a size prefix added",
    "offset": "a uoffset (root, table fields, vector-of-table entries) set to a boundary value or moved by +-4",
    "vtable": "a table's vtable offset or a vtable entry (size, field offsets) set to a boundary value",
    "vector_length": "the length of a vector or string (shape, inputs, buffer data, names) set to a boundary value",
    "index": "a tensor's buffer index, an op's op-code index or input/output tensor index, a graph input/output, "
             "an op code",
    "tensor_type": "a tensor's type byte set to another type (0-23), 100, 127 or -1",
    "shape": "a shape dimension set to 0, -1, 2^31-1, -2^31, 65536, 2^20, doubled, +1 or random",
    "quantization": "a scale, zero point or quantized dimension set to a boundary value",
    "scale": "one scale set to a huge (1e10-3.4e38, or x1e7), tiny (1e-45-1e-20, or x1e-7), zero, negative, NaN or "
             "inf value",
    "zero_point": "one zero point set to a huge (2^31, 2^40, 2^63-1), negative (-2^63, -129, ...), edge (127, 128, "
                  "255, 256, ...) or random value in [-300, 300)",
    "manifest_hash": "the model's bytes untouched; its manifest's sha256 removed, emptied or replaced",
    "manifest_input_shape": "the manifest's input_shape wrong ([32, 32, 3], [64, 64, 1], 2^31, strings, floats, ...)",
    "manifest_preprocess": "the manifest's preprocess wrong (std 0 / inf / None / negative, mean NaN / string, ...)",
}


def collect(*paths: str, keyword: str | None = None) -> list[str]:
    """Test ids pytest collects from `paths` (optionally -k `keyword`)."""
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths]
    if keyword:
        argv += ["-k", keyword]
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=path))
    return [line for line in proc.stdout.splitlines() if "::" in line]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mutations", type=int, default=10_000, help="total over all models (rounded up per class)")
    p.add_argument("--time-budget-s", type=float, default=None,
                   help="stop starting new cases after this many seconds (the report gives the measured count)")
    p.add_argument("--commit", required=True, help="the commit the snapshot was taken from (git rev-parse HEAD)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    if args.mutations < 1:
        p.error("--mutations must be >= 1")

    from tfdefakeq.runtime.fuzz import ALL_CLASSES, ENTRY_POINTS, MANIFEST_MODES, MODELS, cases, run_campaign

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    per = -(-args.mutations // (len(MODELS) * len(ALL_CLASSES)))
    planned = per * len(MODELS) * len(ALL_CLASSES)  # cases() makes them one at a time: ~1 MB each

    def within_budget():
        for case in cases(args.mutations):
            if args.time_budget_s is not None and time.perf_counter() - start > args.time_budget_s:
                return
            yield case

    def progress(n, outcome):
        if n % 500 == 0:
            print(f"{n} cases, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as work:
        outcomes = run_campaign(within_budget(), Path(work), progress=progress)
    campaign_s = time.perf_counter() - start
    battery = {path: collect(path) for path in BATTERY}
    resume = collect(RESUME, keyword="resume")
    ours = {path: collect(path) for path in OURS}
    write_results(outcomes, planned, MODELS, ALL_CLASSES, ENTRY_POINTS, MANIFEST_MODES, battery, resume, ours,
                  args, load_before, campaign_s)
    return 0


def cost_of_validation(models) -> dict:
    """Per shipped model: validation (best / median of 20) and a trusted load (median of 5), in ms."""
    import statistics

    from tfdefakeq.runtime.loader import open_model
    from tfdefakeq.runtime.validate import validate_flatbuffer

    cost = {}
    for model in models:
        path = REPO / "tflite_models" / f"{model}.tflite"
        data = path.read_bytes()
        times = []
        for _ in range(20):
            t = time.perf_counter()
            validate_flatbuffer(data, model)
            times.append((time.perf_counter() - t) * 1e3)
        loads = []
        for _ in range(5):
            t = time.perf_counter()
            open_model(path)
            loads.append((time.perf_counter() - t) * 1e3)
        cost[model] = {"bytes": len(data), "best_ms": min(times), "median_ms": statistics.median(times),
                       "load_ms": statistics.median(loads)}
    return cost


def write_results(outcomes, planned, models, classes, entries, modes, battery, resume, ours, args, load_before,
                  campaign_s) -> None:
    import pandas as pd

    from tfdefakeq.core.fileio import write_text_atomic
    from tfdefakeq.core.manifest import versions
    from tfdefakeq.core.report import header_lines, markdown_table
    from tfdefakeq.runtime.fuzz import FAILURES, OUTCOMES
    from tfdefakeq.runtime.interpreter import machine_info

    def table(key, order) -> pd.DataFrame:
        rows = []
        for value in order:
            subset = [o for o in outcomes if key(o) == value]
            counts = Counter(o.outcome for o in subset)
            rows.append({"": value if isinstance(value, str) else " / ".join(value), "cases": len(subset),
                         **{k: counts[k] for k in OUTCOMES},
                         "ms_mean": sum(o.seconds for o in subset) * 1e3 / max(1, len(subset))})
        counts = Counter(o.outcome for o in outcomes)
        rows.append({"": "all", "cases": len(outcomes), **{k: counts[k] for k in OUTCOMES},
                     "ms_mean": sum(o.seconds for o in outcomes) * 1e3 / max(1, len(outcomes))})
        return pd.DataFrame(rows)

    by_class = table(lambda o: o.case.kind, classes)
    by_entry = table(lambda o: (o.case.entry, o.case.manifest_mode), [(e, m) for e in entries for m in modes])
    by_model = table(lambda o: o.case.model, models)
    cost = cost_of_validation(models)
    machine = machine_info()
    failures = [o for o in outcomes if o.outcome in FAILURES]
    counts = Counter(o.outcome for o in outcomes)
    header = {
        "commit": args.commit,
        "machine": f"{machine['machine']}, {machine['processor']}, {machine['cpus']} CPUs, {machine['system']}",
        "versions": ", ".join(f"{k} {v}" for k, v in versions().items() if k != "machine"),
        "models": ", ".join(f"tflite_models/{m}.tflite ({c['bytes']:,} bytes)" for m, c in cost.items()),
        "protocol": f"{len(outcomes)} of {planned} planned seeded mutations ({len(classes)} classes x {len(models)} "
                    f"models); each written with a manifest beside it and opened by one command ({', '.join(entries)}) "
                    "in a worker process (8 GiB address-space limit, 120 s timeout), the manifest matching the bytes "
                    "or copied from the shipped model, in rotation",
        "validation cost": "; ".join(f"{m}: {c['best_ms']:.1f} ms best / {c['median_ms']:.1f} ms median of 20, "
                                     f"a trusted load {c['load_ms']:.0f} ms" for m, c in cost.items()),
        "load": f"load average {load_before:.2f} before / {os.getloadavg()[0]:.2f} after",
        "duration": f"{campaign_s:.0f} s campaign"
                    + (f" (stopped by --time-budget-s {args.time_budget_s:g})" if len(outcomes) < planned else ""),
        "command": "python benchmarks/reliability.py " + shlex.join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    csv = pd.concat([by_class.assign(table="class"), by_entry.assign(table="entry/manifest"),
                     by_model.assign(table="model")], ignore_index=True)
    write_text_atomic(args.out / "reliability.csv", header_lines(header) + csv.to_csv(index=False))

    fmt = {k: "{:d}" for k in ["cases", *OUTCOMES]} | {"ms_mean": "{:.0f}"}
    lines = ["# Reliability: untrusted .tflite files and bad inputs", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()] + [""]
    lines += ["## Fuzz campaign", "",
              f"{len(outcomes)} mutations; the worker process died {counts['harness_crashed']} times, hung "
              f"{counts['harness_timeout']} times and showed a Python traceback {counts['uncaught']} times. "
              f"{counts['rejected']} were rejected by validation before any interpreter saw them, "
              f"{counts['manifest_rejected']} by the manifest check, {counts['error']} by the interpreter with an "
              f"error; {counts['probe_crashed']} crashed and {counts['probe_timeout']} hung the loader's child "
              f"probe (each reported as a one-line error); {counts['ran']} ran to the end.", "",
              "Outcomes: `rejected` (one-line error from validation), `manifest_rejected` (one-line error: a manifest "
              "field), `ran` (the command completed), `error` (the interpreter refused the model: one-line error), "
              "`probe_crashed` / `probe_timeout` (the interpreter died / hung in the loader's child: one-line error), "
              "`uncaught` (a traceback: a bug), `harness_crashed` / `harness_timeout` (the worker standing for the "
              "user's process died / hung). `ms_mean`: wall time per case, the command included.", ""]
    lines += ["### Per mutation class", "", markdown_table(by_class, fmt), ""]
    lines += ["### Per entry point and manifest", "", markdown_table(by_entry, fmt), ""]
    lines += ["### Per model", "", markdown_table(by_model, fmt), ""]
    lines += ["Mutation classes:", ""] + [f"- `{k}`: {v}" for k, v in DESCRIPTIONS.items() if k in classes] + [""]
    lines += [f"Harness failures: {len(failures)}."]
    lines += [f"- {o.case.name} via {o.case.entry}, {o.case.manifest_mode} manifest ({o.case.note}): {o.outcome}: "
              f"{o.message[:200]}" for o in failures]
    probe_crashes = [o for o in outcomes if o.outcome in ("probe_crashed", "probe_timeout")]
    if probe_crashes:
        lines += ["", "Caught by the child probe (validation let them through):"]
        lines += [f"- {o.case.name} ({o.case.note}): {o.message.split(': ', 1)[-1][:160]}" for o in probe_crashes]
    lines += ["", "## Bad-input battery (one-line errors naming the file, exit code 2)", ""]
    for path, ids in battery.items():
        lines += [f"- `{path}`: {len(ids)} test cases"]
    lines += [f"- total: {sum(len(ids) for ids in battery.values())} test cases; listed by "
              f"`python -m pytest --collect-only -q {' '.join(BATTERY)}`", ""]
    lines += ["## Kill and resume", ""]
    lines += [f"- `{i}`: SIGKILL after the first epoch's checkpoint; `--resume` finishes with the uninterrupted "
              "run's weights" for i in resume] or ["- none found"]
    lines += ["", "## Tests of this campaign", ""]
    lines += [f"- `{path}`: {len(ids)} test cases" for path, ids in ours.items()]
    lines += [f"- run with `python -m pytest -q {' '.join(OURS)}`", ""]
    write_text_atomic(args.out / "reliability.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
