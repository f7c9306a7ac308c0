"""Compares the raw outputs of ci/rpi_outputs.py on x86 and under each emulated CPU, prints one line per
configuration, and writes benchmarks/results/rpi_emulated.md from those comparisons (ci/rpi_emulated.sh
calls it; every figure in the file comes from the .npz files it reads).

    python ci/rpi_report.py OUT_DIR CPU [CPU ...] [--md FILE] [--csv FILE] [--commit SHA] [--models M.tflite ...]
                            [--qemu TEXT] [--arm-python TEXT] [--wheels W ...]

OUT_DIR holds inputs.npz, x86.npz and CPU.npz per CPU (a CPU whose .npz is missing failed to run).
Required: the configuration the runtime uses by default (XNNPACK on, INT4 unpacked to INT8) is bit-identical
to x86 on every CPU; exit code 1 otherwise. Other rows are reported, not required.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BOARDS = {"cortex-a72": "Pi 4", "cortex-a76": "Pi 5"}
INT4_TEXT = {"no-int4": "(none)", "unpacked": "unpacked to INT8 at load (default)", "packed": "kept packed (`--packed packed`)"}
KERNEL_TEXT = {"xnnpack": "XNNPACK (default)", "builtin": "builtin (`--no-xnnpack`)"}


def required(key: str) -> bool:
    _, int4, kernels = key.split("|")
    return kernels == "xnnpack" and int4 != "packed"


def compare(x86: dict, arm: dict) -> dict:
    """key -> {"same": bool, "differ": images that differ, "images": n, "max_lsb": int}; a configuration
    that does not load (an `error|KEY` entry) on x86 gets {"refused": x86 reason, "same": refused on arm too}."""
    out = {}
    for key, a in x86.items():
        if key.startswith("error|"):
            key = key.split("|", 1)[1]
            out[key] = {"refused": str(a), "same": f"error|{key}" in arm, "differ": None, "images": 0, "max_lsb": None}
            continue
        b = arm.get(key)
        if b is None or a.shape != b.shape:
            out[key] = {"same": False, "differ": None, "images": int(a.shape[0]), "max_lsb": None}
            continue
        diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
        out[key] = {"same": bool(not diff.any()), "differ": int((diff.reshape(len(diff), -1) > 0).any(1).sum()),
                    "images": int(a.shape[0]), "max_lsb": int(diff.max()) if diff.size else 0}
    return out


def cell(c: dict | None) -> str:
    if c is None:
        return "did not run"
    if "refused" in c:
        return "does not load, as on x86" if c["same"] else "does not load on x86, but loads here"
    if c["differ"] is None:
        return "missing output"
    return "**equal** (max 0 LSB)" if c["same"] else f"{c['differ']}/{c['images']} differ, max {c['max_lsb']} LSB"


def model_contents(models) -> dict[str, dict[str, int]]:
    """stem -> {"INT4": tensors, "INT2": tensors, "GATHER": ops}, read from the .tflite files (x86 side)."""
    from tfdefakeq.runtime.modelinfo import read_model_info

    out = {}
    for path in map(Path, models):
        info = read_model_info(path)
        out[path.stem] = {"INT4": info.tensor_types.get("INT4", 0), "INT2": info.tensor_types.get("INT2", 0),
                          "GATHER": info.op_counts.get("GATHER", 0)}
    return out


def csv_rows(results: dict[str, dict | None]) -> list[dict]:
    """One row per model configuration and CPU (a CPU that did not run gives no rows)."""
    rows = []
    for cpu, res in results.items():
        for key, c in sorted((res or {}).items()):
            model, int4, kernels = key.split("|")
            rows.append({"model": model, "subbyte": int4, "kernels": kernels, "cpu": cpu, "board": BOARDS.get(cpu, ""),
                         "required": required(key), "images": c["images"], "images_differ": c["differ"],
                         "max_abs_diff_lsb": c["max_lsb"], "equal": c["same"], "refused": c.get("refused", "")})
    return rows


def conclusions(results: dict[str, dict | None], contents: dict[str, dict[str, int]] | None = None) -> list[str]:
    """Sentences computed from the comparisons: cpu -> (key -> comparison) or None when the CPU failed to run;
    `contents` (model_contents) lets them say how the models with INT2 tensors or GATHER ops fared."""
    ran = {cpu: r for cpu, r in results.items() if r is not None}
    lines = []
    failed = [cpu for cpu, r in results.items() if r is None]
    if failed:
        lines.append(f"- Did not run under {', '.join(failed)}: no result for those CPUs.")
    if not ran:
        return lines
    keys = sorted(next(iter(ran.values())))
    req = [k for k in keys if required(k)]
    req_ok = all(ran[cpu][k]["same"] and "refused" not in ran[cpu][k] for cpu in ran for k in req)
    cpus = ", ".join(f"{cpu} ({BOARDS.get(cpu, 'emulated')})" for cpu in ran)
    if req_ok:
        lines.append(f"- The runtime's default configuration (XNNPACK on, INT4/INT2 unpacked to INT8) gave bit-identical "
                     f"outputs to x86 for all {len(req)} models under {cpus}.")
    else:
        bad = sorted({f"{k} under {cpu}" for cpu in ran for k in req
                      if not ran[cpu][k]["same"] or "refused" in ran[cpu][k]})
        lines.append(f"- The runtime's default configuration DIFFERS from x86: {'; '.join(bad)}.")
    refused = [k for k in keys if "refused" in next(iter(ran.values()))[k]]
    if refused:
        alike = all(ran[cpu][k]["same"] for cpu in ran for k in refused)
        reason = next(iter(ran.values()))[refused[0]]["refused"]
        lines.append(f"- {len(refused)} configurations do not load in the TFLite runtime on x86 "
                     + ("nor under any emulated CPU" if alike else "but load under some emulated CPU")
                     + f" ({', '.join(refused)}; first reason: {reason}).")
    other = [k for k in keys if not required(k) and k not in refused]
    if other:
        differing = [(cpu, k) for cpu in ran for k in other if not ran[cpu][k]["same"]]
        if not differing:
            lines.append(f"- The other {len(other)} configurations (builtin kernels, packed INT4/INT2) were bit-identical "
                         f"too, under every CPU.")
        else:
            worst = max((ran[cpu][k]["max_lsb"] or 0) for cpu, k in differing)
            lines.append(f"- {len({k for _, k in differing})} of the other {len(other)} configurations (builtin kernels "
                         f"or packed INT4/INT2) differ from x86, by at most {worst} LSB; they are reported, not required.")
    models = sorted({k.split("|")[0] for k in keys})
    for kind, what in (("INT2", "INT2 tensors"), ("GATHER", "GATHER ops (adaptive channel splits)")):
        if not contents:
            break
        having = [m for m in models if contents.get(m, {}).get(kind, 0) > 0]
        if not having:
            lines.append(f"- None of the {len(models)} models holds {what}: this run does not cover them.")
            continue
        rows = [(cpu, k) for cpu in ran for k in keys if k.split("|")[0] in having and k not in refused]
        same = sum(ran[cpu][k]["same"] for cpu, k in rows)
        lines.append(f"- {len(having)} of the {len(models)} models hold {what} ({', '.join(having)}): "
                     f"{same} of their {len(rows)} configuration x CPU results are bit-identical to x86"
                     + ("." if same == len(rows) else
                        f", the others differ by at most {max(ran[c][k]['max_lsb'] or 0 for c, k in rows)} LSB."))
    return lines


def saturation(x86: dict) -> str:
    """How many x86 outputs sit at the int8 ends, where a difference in one direction cannot show."""
    outs = [a for k, a in x86.items() if not k.startswith("error|")]
    total = sum(a.size for a in outs)
    ends = sum(int(((a == -128) | (a == 127)).sum()) for a in outs)
    distinct = len(set(np.concatenate([a.ravel() for a in outs]).tolist())) if outs else 0
    return (f"- {ends} of the {total} x86 outputs compared ({100 * ends / max(total, 1):.0f}%) sit at an int8 end "
            f"(-128 or 127), where a difference in one direction cannot show; the outputs take {distinct} distinct values.")


def cpus_agree(arm: dict[str, dict]) -> list[str]:
    """cpu -> raw outputs of the CPUs that ran: a sentence per pair on how often they agree with each other."""
    lines, cpus = [], sorted(arm)
    for i, a in enumerate(cpus):
        for b in cpus[i + 1:]:
            keys = sorted(k for k in arm[a] if not k.startswith("error|") and k in arm[b])
            same = sum(np.array_equal(arm[a][k], arm[b][k]) for k in keys)
            lines.append(f"- {a} and {b} gave the same raw outputs as each other in {same} of the {len(keys)} "
                         f"configurations that loaded on both.")
    return lines


def markdown(results, n_images: int, sizes: list[str], args, command: str, contents=None, x86=None,
             agree=()) -> str:
    from tfdefakeq.core.manifest import versions

    v = versions()
    host = f"{platform.machine()}, {os.cpu_count()} CPUs, python {v.get('python')}, " \
           f"ai-edge-litert {v.get('ai-edge-litert', '?')}, numpy {v.get('numpy')}"
    cpus = list(results)
    lines = ["# Emulated Raspberry Pi: raw int8 outputs on aarch64 (qemu) vs x86", "",
             f"- commit: {args.commit or 'unknown'}",
             f"- command: `{command}`",
             f"- host: {host}",
             f"- emulated: {args.qemu or 'qemu-aarch64-static'} user mode, "
             + ", ".join(f"`-cpu {c}` ({BOARDS.get(c, 'no Pi')})" for c in cpus)
             + (f"; arm64 python {args.arm_python}" if args.arm_python else ""),
             *( [f"- aarch64 wheels: {', '.join(args.wheels)}"] if args.wheels else []),
             f"- inputs: {n_images} fixed images per input size ({', '.join(s + ' px' for s in sizes)}), made on x86 "
             "and read by both sides",
             *( ["- models: " + "; ".join(f"{m} (INT4 tensors {c['INT4']}, INT2 tensors {c['INT2']}, GATHER ops "
                                          f"{c['GATHER']})" for m, c in sorted(contents.items()))] if contents else []),
             f"- load: 1-minute load average {args.load_before or '?'} before the runs / {os.getloadavg()[0]:.2f} "
             f"after, on {os.cpu_count()} CPUs (shared machine)",
             f"- date: {time.strftime('%Y-%m-%d')}", "",
             "Emulated timings are not Raspberry Pi latency: none are reported.", "",
             "## Result", "",
             "Each cell: images whose raw int8 output differs from x86, and the largest difference in LSB.", "",
             "| model | INT4/INT2 handling | kernels | " + " | ".join(f"{c} ({BOARDS.get(c, 'emulated')})" for c in cpus) + " |",
             "|---|---|---|" + "---|" * len(cpus)]
    keys = sorted({k for r in results.values() if r for k in r}, key=lambda k: (not required(k), k))
    for key in keys:
        model, int4, kernels = key.split("|")
        lines.append(f"| {model} | {INT4_TEXT.get(int4, int4)} | {KERNEL_TEXT.get(kernels, kernels)} | "
                     + " | ".join(cell(results[c][key] if results[c] else None) for c in cpus) + " |")
    lines += (["", "What this says:"] + conclusions(results, contents) + list(agree)
              + ([saturation(x86)] if x86 else []) + [""])
    return "\n".join(lines)


def csv_text(rows: list[dict], args) -> str:
    import csv
    import io

    buf = io.StringIO()
    buf.write(f"# commit: {args.commit or 'unknown'}\n# command: {args.command}\n# emulator: {args.qemu}\n")
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("cpus", nargs="+")
    p.add_argument("--md", type=Path, default=None, help="write the report here")
    p.add_argument("--csv", type=Path, default=None, help="write one row per configuration and CPU here "
                   "(default: the --md file with .csv)")
    p.add_argument("--load-before", default="", help="1-minute load average when the runs started")
    p.add_argument("--commit", default="", help="the commit the run was made at (recorded in the header)")
    p.add_argument("--models", nargs="*", default=[], help="the .tflite files run (to say which hold INT2/GATHER)")
    p.add_argument("--qemu", default="", help="qemu version line")
    p.add_argument("--arm-python", default="", help="the sysroot python, as it reports itself")
    p.add_argument("--wheels", nargs="*", default=[], help="aarch64 wheel file names used")
    p.add_argument("--command", default="bash ci/rpi_emulated.sh")
    args = p.parse_args(argv)
    x86 = dict(np.load(args.out_dir / "x86.npz"))
    inputs = np.load(args.out_dir / "inputs.npz")
    results, arm = {}, {}
    for cpu in args.cpus:
        path = args.out_dir / f"{cpu}.npz"
        if path.is_file():
            arm[cpu] = dict(np.load(path))
        results[cpu] = compare(x86, arm[cpu]) if cpu in arm else None
        for key, c in (results[cpu] or {}).items():
            print(f"{cpu:11s} {key:45s} {cell(c).replace('**', '')}" + ("" if required(key) else "  [informative]"))
    if args.md is not None:
        from tfdefakeq.core.fileio import write_text_atomic

        contents = model_contents(args.models) if args.models else None
        n_images = max(len(inputs[k]) for k in inputs.files)
        write_text_atomic(args.md, markdown(results, n_images, sorted(inputs.files, key=int), args, args.command,
                                            contents, x86, cpus_agree(arm)), overwrite=True)
        csv_path = args.csv or args.md.with_suffix(".csv")
        write_text_atomic(csv_path, csv_text(csv_rows(results), args), overwrite=True)
        print(f"wrote {args.md} and {csv_path}")
    ok = all(r is not None and all(c["same"] and "refused" not in c for k, c in r.items() if required(k))
             for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
