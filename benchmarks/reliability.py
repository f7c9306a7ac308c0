"""Reliability: seeded mutations of the shipped models through the harness, and the bad-input tests.

    python benchmarks/reliability.py [--mutations 2000] [--no-compare]

Writes benchmarks/results/reliability.csv and reliability.md. The campaign is the one
tests/runtime/test_fuzz.py runs (504 mutations in CI), larger: each mutated file goes through
`check_tflite_file` (tfdefakeq.runtime.validate) in this process and, when it passes, is loaded and
invoked once on zero inputs in a child process (`ChildProbe`), where an interpreter crash is counted
instead of ending the run. With the comparison on (the default), the same mutations are run again
with validation switched off, to show what the interpreter does with them on its own. Needs no
TensorFlow (pandas only formats the table). The bad-input battery is counted by collecting the tests.
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
OURS = ("tests/runtime/test_validate.py", "tests/runtime/test_fuzz.py")
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
    "quantization": "a scale set to NaN / inf / 0 / -1 / 1e38 / 1e-45, a zero point to 2^63-1 / 128 / -129 / ..., "
                    "or the quantized dimension out of range",
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
    p.add_argument("--mutations", type=int, default=2000, help="total over both models (rounded up per class)")
    p.add_argument("--no-compare", dest="compare", action="store_false", help="skip the run without validation")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()

    from tests.runtime.test_fuzz import MODELS, MUTATORS, cases, run_campaign

    start = time.perf_counter()
    load_before = f"{os.getloadavg()[0]:.2f}"
    all_cases = list(cases(args.mutations))
    with tempfile.TemporaryDirectory() as work:
        validated = run_campaign(all_cases, Path(work))
        validated_s = time.perf_counter() - start
        raw = run_campaign(all_cases, Path(work), validate=False) if args.compare else None
    rows = table_rows(validated, raw, MODELS, MUTATORS)
    battery = {path: collect(path) for path in BATTERY}
    resume = collect(RESUME, keyword="resume")
    ours = {path: collect(path) for path in OURS}
    write_results(rows, validated, raw, battery, resume, ours, args, load_before, validated_s,
                  time.perf_counter() - start)
    return 0


def table_rows(validated, raw, models, mutators) -> list[dict]:
    by_case = {}
    for o in validated:
        by_case.setdefault((o.case.model, o.case.kind), []).append(o)
    raw_by_case = {}
    for o in raw or []:
        raw_by_case.setdefault((o.case.model, o.case.kind), Counter())[o.outcome] += 1
    rows = []
    for model in models:
        for kind in mutators:
            outcomes = by_case.get((model, kind), [])
            counts = Counter(o.outcome for o in outcomes)
            rejected = [o.seconds * 1e3 for o in outcomes if o.outcome == "rejected"]
            row = {
                "model": model, "mutation": kind, "cases": len(outcomes),
                "rejected_by_validator": counts["rejected"], "loaded_and_ran": counts["ran"],
                "interpreter_error_caught": counts["error"], "child_crashed": counts["crashed"],
                "child_timeout": counts["timeout"], "parent_crashed": 0,
                "reject_ms_mean": sum(rejected) / len(rejected) if rejected else float("nan"),
            }
            if raw is not None:
                r = raw_by_case.get((model, kind), Counter())
                row.update({"unvalidated_ran": r["ran"], "unvalidated_error": r["error"] + r["rejected"],
                            "unvalidated_crashed": r["crashed"] + r["timeout"]})
            rows.append(row)
    return rows


def write_results(rows, validated, raw, battery, resume, ours, args, load_before, validated_s, total_s) -> None:
    import pandas as pd

    from tfdefakeq.core.fileio import write_text_atomic
    from tfdefakeq.core.manifest import versions
    from tfdefakeq.core.report import header_lines, markdown_table
    from tfdefakeq.runtime.interpreter import machine_info
    from tfdefakeq.runtime.validate import validate_flatbuffer

    df = pd.DataFrame(rows)
    totals = df.drop(columns=["model", "mutation", "reject_ms_mean"]).sum()
    rejected_ms = [o.seconds * 1e3 for o in validated if o.outcome == "rejected"]
    total_row = {"model": "all", "mutation": "all", **{k: int(v) for k, v in totals.items()},
                 "reject_ms_mean": sum(rejected_ms) / max(1, len(rejected_ms))}
    df = pd.concat([df, pd.DataFrame([total_row])], ignore_index=True)
    machine = machine_info()
    cost = {}
    for model in sorted({o.case.model for o in validated}):
        data = (REPO / "tflite_models" / f"{model}.tflite").read_bytes()
        times = []
        for _ in range(20):
            t = time.perf_counter()
            validate_flatbuffer(data, model)
            times.append((time.perf_counter() - t) * 1e3)
        cost[model] = (min(times), sorted(times)[len(times) // 2], len(data))
    header = {
        "machine": f"{machine['machine']}, {machine['processor']}, {machine['cpus']} CPUs, {machine['system']}",
        "versions": ", ".join(f"{k} {v}" for k, v in versions().items() if k != "machine"),
        "models": ", ".join(f"tflite_models/{m}.tflite ({n:,} bytes)" for m, (_, _, n) in cost.items()),
        "protocol": f"{len(validated)} seeded mutations ({len(validated) // len(rows)} per model and class); each "
                    "written to a file, validated in the campaign's process (check_tflite_file), and if it passes "
                    "loaded + invoked once on zero inputs in a child process (ChildProbe, XNNPACK on, INT4 unpacked at "
                    "load, 8 GiB address-space limit, 60 s timeout)"
                    + ("; then the same mutations with validation off (unvalidated_* columns)" if raw else ""),
        "validation cost": "; ".join(f"{m}: {lo:.1f} ms best / {med:.1f} ms median of 20"
                                     for m, (lo, med, _) in cost.items()),
        "load": f"load average {load_before} before / {os.getloadavg()[0]:.2f} after (2 cores shared with other work)",
        "duration": f"{validated_s:.0f} s validated campaign, {total_s:.0f} s in all",
        "command": "python benchmarks/reliability.py " + shlex.join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "reliability.csv", header_lines(header) + df.to_csv(index=False))

    ints = {c: "{:d}" for c in df.columns if c not in ("model", "mutation", "reject_ms_mean")}
    lines = ["# Reliability: untrusted .tflite files and bad inputs", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()] + [""]
    lines += ["## Fuzz campaign", "",
              "Outcomes: `rejected_by_validator` (a one-line UserError before any interpreter sees the file), "
              "`loaded_and_ran` (the damage left a model the interpreter runs: mostly weights), "
              "`interpreter_error_caught` (the interpreter refused it with an error, turned into a one-line "
              "UserError), "
              "`child_crashed` / `child_timeout` (the interpreter died or hung in the child: the parent reports a "
              "UserError), `parent_crashed` (the campaign's own process died: it ran to the end, so 0). "
              "`reject_ms_mean`: time to reject, file write excluded.", ""]
    lines += [markdown_table(df, {**ints, "reject_ms_mean": "{:.2f}"}), ""]
    lines += ["Mutation classes:", ""] + [f"- `{k}`: {v}" for k, v in DESCRIPTIONS.items()] + [""]
    crashes = [o for o in validated if o.outcome in ("crashed", "timeout")]
    lines += [f"Crashes or hangs after validation: {len(crashes)}."]
    lines += [f"- {o.case.name} ({o.case.note}): {o.message.split(': ', 1)[1]}" for o in crashes]
    if raw is not None:
        raw_crashes = [o for o in raw if o.outcome in ("crashed", "timeout")]
        verdicts = {o.case.name: o for o in validated}
        caught = sum(verdicts[o.case.name].outcome == "rejected" for o in raw_crashes)
        lines += ["", f"Without validation the interpreter crashed or hung on {len(raw_crashes)} of {len(raw)} mutations "
                      f"(each would kill a process that loads the file itself); validation rejects {caught} of them. "
                      "The interpreter's stray reads depend on the heap, so this count is a lower bound: a conv whose "
                      "filter index is -1 (resnet18_64_int4-index-0002) segfaulted 6 of 6 fresh processes while "
                      "building this, yet may end in an error in the campaign's warm child.", ""]
        lines += [f"- {o.case.name} ({o.case.note}): {o.message.split('(', 1)[1].split(')')[0]}; with validation: "
                  f"{verdicts[o.case.name].outcome} ({_detail(verdicts[o.case.name].message)})" for o in raw_crashes]
    lines += ["", "What validation leaves to the child probe: it checks each tensor, operator and index, not every "
                  "kernel's preconditions across tensors. An ADD input whose scale is ~1e7 times its output's passes "
                  "validation and aborts the interpreter (a TFLITE_CHECK on the output multiplier); "
                  "`tests/runtime/test_validate.py::test_probe_turns_an_interpreter_abort_into_a_user_error` shows "
                  "the probe reporting it. `load_model` probes in a child every file without a manifest (~0.4 s); "
                  "`probe=True` forces it."]
    lines += ["", "## Bad-input battery (one-line errors naming the file, exit code 2)", ""]
    for path, ids in battery.items():
        lines += [f"- `{path}`: {len(ids)} test cases"]
    lines += [f"- total: {sum(len(ids) for ids in battery.values())} test cases; listed by "
              f"`python -m pytest --collect-only -q {' '.join(BATTERY)}`", ""]
    for path, ids in battery.items():
        lines += [f"<details><summary>{path}</summary>", "", *[f"- `{i.split('::', 1)[1]}`" for i in ids], "",
                  "</details>", ""]
    lines += ["## Kill and resume", ""]
    lines += [f"- `{i}`: SIGKILL after the first epoch's checkpoint; `--resume` finishes with the uninterrupted "
              "run's weights" for i in resume] or ["- none found"]
    lines += ["", "## Tests of this campaign", ""]
    lines += [f"- `{path}`: {len(ids)} test cases" for path, ids in ours.items()]
    lines += ["- run with `python -m pytest -q tests/runtime/test_validate.py tests/runtime/test_fuzz.py`", ""]
    write_text_atomic(args.out / "reliability.md", "\n".join(lines))
    print("\n".join(lines))


def _detail(message: str) -> str:
    """The problem part of a one-line UserError (after the file name)."""
    return " ".join(message.split(": ", 1)[-1].split())[:160]


if __name__ == "__main__":
    sys.exit(main())
