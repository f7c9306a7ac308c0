"""Backbone zoo benchmark: every registered backbone at 224 px (MesoNets at their native 256 px),
untrained weights, built -> float32 / tfmot_int8 / w4a8 .tflite -> size, latency, parity, Edge TPU.

    python benchmarks/backbones.py [--names resnet50,meso4] [--runs 30] [--fresh] [--commit SHA]

Writes benchmarks/results/backbones.csv and .md, one row per backbone as soon as it is done; a rerun
skips the backbones already in the CSV (--fresh starts over). Per backbone:
- params: Keras count_params() of the single-logit detector at that input size;
- macs: multiply-accumulates of one invoke, counted from the float32 flatbuffer's CONV_2D,
  DEPTHWISE_CONV_2D and FULLY_CONNECTED ops (tfdefakeq.runtime.modelinfo);
- sizes: bytes of the .tflite files; int4 = w4a8 (packed INT4 conv/dense weights, int8 depthwise);
- BatchNorm: every moving mean / variance set from the calibration images before anything is
  exported (engine.training.set_batchnorm_statistics): an untrained net's initial statistics let
  activations shrink to scales of ~1e-6, which no trained model has and which XNNPACK's int8 ADD
  refuses (MobileNetV3-Small: 26 ADDs left to the builtin kernels, int8 3.5x float32);
- latency: ai-edge-litert, 1 thread, XNNPACK, median of single invokes, float32 / int8 / int4 loaded
  together and timed in alternation (runtime.latency.paired_latency), so machine load hits all
  alike; the int4 model runs with its INT4 weights unpacked to INT8 at load, the runtime's default;
- e2e_int8 / e2e_int4: tfmot_int8 / w4a8 QAT (ranges calibrated on synthetic images with
  quantize(..., calib_images)) -> export.convert_model, whose parity check passes when every logit
  is within export.MAX_LOGIT_LSB output steps of the Keras QAT model (parity_* "logits") or, failing
  that, every op is within 1 LSB of Keras on TFLite's own inputs and off only at rounding ties
  (parity_* "per-layer", tfdefakeq.diagnose); max_lsb_* is the measured max logit difference;
- int8_over_fp32: int8 p50 / float32 p50 (the issue's target is <= 0.5); gmacs_per_s_fp32/int8: macs
  (from the float32 flatbuffer, see above) / p50 of that format;
- int8_held_back_by (rows above the target): from per-op profiles of both models (each op timed
  alone, runtime.profile), the op types whose int8 time exceeds 0.5 x their float32 time the most;
  int8_not_delegated: int8 op types XNNPACK left to the builtin kernels (runtime.profile);
- edgetpu_full: tfdefakeq.runtime.edgetpu_ops.check_model on the int8 model: every op maps to the Edge TPU;
  edgetpu_cpu_from names the first op that would fall back to the CPU (empty when none).
Untrained weights make the latency and size figures real and the accuracy meaningless. They also
make the parity check weaker than in the tests (tests/backbones/test_zoo_export.py, trained tiny
models): an untrained net's logits vary little across images, so the output step is set by a small
logit range and internal rounding weighs more in output steps (a scale-free measure: rescaling the
classifier changes nothing, and centring the logits overflows XNNPACK's requantization range).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

COLUMNS = ["backbone", "input", "calib_images", "params", "macs", "size_fp32", "size_int8", "size_int4", "latency_fp32_ms",
           "latency_int8_ms", "latency_int4_ms", "int8_over_fp32", "gmacs_per_s_fp32", "gmacs_per_s_int8", "int8_held_back_by",
           "int8_not_delegated", "e2e_int8", "e2e_int4", "max_lsb_int8", "max_lsb_int4", "parity_int8",
           "parity_int4",
           "edgetpu_full", "edgetpu_ops", "edgetpu_cpu_from", "int4_tensors", "seconds", "commit", "error"]
NATIVE = {"meso4": 256, "mesoinception4": 256}
TARGET = 0.5  # issue 16 s1: int8 p50 <= 0.5 x float32 p50, 1 thread, XNNPACK, measured side by side


def synthetic_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3): smooth colour waves plus noise, a stand-in for photos."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 127 + 80 * np.sin(2 * np.pi * (xx[None, ..., None] * rng.uniform(0.5, 3, (n, 1, 1, 3))
                                          + yy[None, ..., None] * rng.uniform(0.5, 3, (n, 1, 1, 3))))
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def bench_one(name: str, runs: int, warmup: int, calib: int, out_dir: Path, profile_runs: int = 10) -> dict:
    from tfdefakeq.runtime import edgetpu_ops
    from tfdefakeq.backbones import build
    from tfdefakeq.engine.export import ParityError, convert_model, to_tflite
    from tfdefakeq.engine.training import set_batchnorm_statistics
    from tfdefakeq.core.manifest import Manifest, Preprocess
    from tfdefakeq.quant import quantize, weight_bits
    from tfdefakeq.runtime.modelinfo import read_model_info

    start = time.time()
    size = NATIVE.get(name, 224)
    row = {"backbone": name, "input": size, "calib_images": calib, "error": ""}
    images = synthetic_images(calib, size)
    x = Preprocess().apply(images)
    model = build(name, input_shape=(size, size, 3))
    set_batchnorm_statistics(model, x)  # activation scales of a trained net's order, not an untrained one's
    row["params"] = model.count_params()
    paths = {"fp32": out_dir / f"{name}_fp32.tflite"}
    paths["fp32"].write_bytes(to_tflite(model, "float32"))
    row["macs"] = read_model_info(paths["fp32"]).macs
    row["size_fp32"] = paths["fp32"].stat().st_size
    errors = []
    for scheme, fmt in (("tfmot_int8", "int8"), ("w4a8", "int4")):
        path, qat = out_dir / f"{name}_{fmt}.tflite", None
        try:
            qat = quantize(model, scheme, x)
            manifest = Manifest(backbone=name, input_shape=[size, size, 3], format="keras", scheme=scheme,
                                weight_bits=weight_bits(qat))
            written = convert_model(qat, manifest, fmt, images, path)
            row[f"e2e_{fmt}"] = True
            row[f"max_lsb_{fmt}"] = round(written.metrics["parity"]["max_diff_lsb"], 2)
            row[f"parity_{fmt}"] = "logits" if written.metrics["parity"]["logits_agree"] else "per-layer"
        except ParityError as e:
            row[f"e2e_{fmt}"] = False
            errors.append(f"{fmt}: {e}")
            # the file was not written; convert again without the check to still time it
            path.write_bytes(to_tflite(qat, fmt, x))
        except Exception as e:  # noqa: BLE001 - the table records what broke
            row[f"e2e_{fmt}"] = False
            errors.append(f"{fmt}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            traceback.print_exc()
            if qat is None:
                continue
            # the check broke, not the model (MesoInception-4: the op-by-op check cannot tap its QAT graph):
            # convert without it to still time the model; e2e stays False and the error is recorded
            path.write_bytes(to_tflite(qat, fmt, x))
        paths[fmt] = path
        row[f"size_{fmt}"] = path.stat().st_size
        if fmt == "int8":
            report = edgetpu_ops.check_model(path)
            row["edgetpu_full"] = bool(report.compatible)
            row["edgetpu_ops"] = f"{report.ops_on_edgetpu}/{report.ops_total}"
            first = report.first_unsupported
            row["edgetpu_cpu_from"] = f"#{first['index']} {first['op']}" if first else ""
        else:
            row["int4_tensors"] = read_model_info(path).tensor_types.get("INT4", 0)
    row.update(time_side_by_side(paths, runs, warmup))
    row.update(speed_columns(row))
    if "int8" in paths:
        row.update(profile_columns(paths["fp32"], paths["int8"], row.get("int8_over_fp32"), profile_runs))
    row["error"] = " | ".join(errors)
    row["seconds"] = round(time.time() - start)
    return row


def time_side_by_side(paths: dict, runs: int, warmup: int) -> dict:
    """latency_<fmt>_ms: p50 of single invokes, 1 thread, XNNPACK (int4: INT4 weights unpacked to INT8
    at load), every format loaded together and timed in alternation (runtime.latency.paired_latency),
    so that the machine's load falls on all of them alike and their ratios hold."""
    from tfdefakeq.runtime.latency import paired_latency
    from tfdefakeq.runtime.loader import open_model

    models = {fmt: open_model(path, num_threads=1) for fmt, path in paths.items()}
    times = paired_latency(models, runs, warmup)
    return {f"latency_{fmt}_ms": round(float(np.median(ms)), 4) for fmt, ms in times.items()}


def profile_columns(fp32_path: Path, int8_path: Path, ratio: float | None, runs: int) -> dict:
    """From per-op profiles of both models (runtime.latency.profile_model, each op timed alone):
    int8_not_delegated: the int8 op types XNNPACK left to the builtin kernels, with counts;
    int8_held_back_by (rows above TARGET only): the op types whose int8 time exceeds TARGET x their
    float32 time the most (runtime.profile.held_back_by), at most two, with both times."""
    from tfdefakeq.runtime.latency import profile_model
    from tfdefakeq.runtime.profile import held_back_by, op_type_totals

    fp32_ops = profile_model(fp32_path, threads=1, runs=runs)
    int8_ops = profile_model(int8_path, threads=1, runs=runs)
    refused = {op: t["not_delegated"] for op, t in op_type_totals(int8_ops).items() if t["not_delegated"]}
    out = {"int8_not_delegated": ", ".join(f"{op} x{n}" for op, n in sorted(refused.items(), key=lambda kv: -kv[1]))}
    out["int8_held_back_by"] = ""
    if ratio is not None and ratio > TARGET:
        worst = [r for r in held_back_by(fp32_ops, int8_ops, TARGET) if r["excess_ms"] > 0][:2]
        out["int8_held_back_by"] = "; ".join(
            f"{r['op']} x{r['count']} int8 {r['ms']:.3f} ms vs fp32 {r['base_ms']:.3f} ms"
            + (f" ({r['not_delegated']} not delegated)" if r["not_delegated"] else "") for r in worst)
    return out


def speed_columns(row: dict) -> dict:
    """int8_over_fp32: int8 p50 / float32 p50 of this row; gmacs_per_s_*: the float32 flatbuffer's MACs
    (`macs`) per second of that format's p50, so backbones compare at equal work."""
    out = {}
    fp32, int8, macs = row.get("latency_fp32_ms"), row.get("latency_int8_ms"), row.get("macs")
    if fp32 and int8:
        out["int8_over_fp32"] = round(int8 / fp32, 3)
    for fmt, ms in (("fp32", fp32), ("int8", int8)):
        if ms and macs:
            out[f"gmacs_per_s_{fmt}"] = round(macs / (ms * 1e6), 2)
    return out


def header(command: str, rows: list[dict] = (), commit: str = "unknown", load: str = "") -> str:
    from tfdefakeq.core.manifest import versions
    from tfdefakeq.runtime.interpreter import machine_info

    v = versions()
    machine = machine_info()
    lines = [
        "# Backbone zoo: size, latency, int8/int4 export parity, Edge TPU mapping",
        "",
        f"- command: `{command}`",
        f"- commit(s) measured: {commit}",
        f"- machine: {', '.join(f'{k}={val}' for k, val in machine.items())}; {platform.platform()}",
        f"- versions: {', '.join(f'{k} {val}' for k, val in v.items())}",
        f"- machine load: {load or 'not sampled'}",
        "- input 224 px (MesoNets 256), untrained weights with every BatchNorm's moving statistics set from the"
        f" calibration images (engine.training.set_batchnorm_statistics), activation ranges calibrated on {calib_phrase(rows)}"
        " (also the parity images); latency: ai-edge-litert, 1 thread, XNNPACK, median of single invokes, float32 /"
        " int8 / int4 loaded together and timed in alternation (int4: INT4 weights unpacked to INT8 at load);"
        f" int8_held_back_by (rows with int8_over_fp32 > {TARGET}): the op types whose int8 time exceeds {TARGET} x their"
        " float32 time the most, from per-op profiles of both models (each op timed alone, runtime.profile);"
        " int8_not_delegated: int8 op types XNNPACK left to the builtin kernels;"
        " macs from the float32 flatbuffer (conv, depthwise, fully connected);"
        " e2e: export.convert_model's parity check passes (parity_*: 'logits': the .tflite's logits within"
        " export.MAX_LOGIT_LSB output steps of the Keras QAT model; 'per-layer': they are not, and every op"
        " is within 1 LSB of Keras on TFLite's own inputs, off only at rounding ties, tfdefakeq.diagnose);"
        " edgetpu: tfdefakeq.runtime.edgetpu_ops.check_model on the int8 model (op mapping in execution order).",
        "- weights untrained: accuracy means nothing here, and max_lsb is weaker evidence than the trained tiny"
        " models of tests/backbones/test_zoo_export.py (logits and every op checked against Keras there).",
        "",
    ]
    return "\n".join(lines)


def calib_phrase(rows) -> str:
    """How many synthetic images calibrated the rows, from their calib_images column (--calib)."""
    counts = sorted({int(r["calib_images"]) for r in rows if str(r.get("calib_images", "")) not in ("", "nan")})
    missing = sum(str(r.get("calib_images", "")) in ("", "nan") for r in rows)
    if not counts:
        return "synthetic images (count not recorded)"
    phrase = f"{' or '.join(map(str, counts))} synthetic images" + (" (calib_images per row)" if len(counts) > 1 else "")
    return phrase + (f"; {missing} older row(s) without a recorded count" if missing else "")


def closing_note(rows: list[dict], requested: list[str] = ()) -> str:
    """What the int8/float32 column says against TARGET, from the rows; and which of the `requested`
    backbones have no row yet (a run stopped, or still going, before them)."""
    done = {r["backbone"] for r in rows}
    missing = [name for name in requested if name not in done]
    pending = (f"\n\nNot measured in this run ({len(missing)} of {len(requested)} requested): {', '.join(missing)}."
               if missing else "")
    timed = [r for r in rows if str(r.get("int8_over_fp32", "")) not in ("", "nan")]
    if not timed:
        return "No backbone has both a float32 and an int8 latency." + pending
    met = sorted((r for r in timed if float(r["int8_over_fp32"]) <= TARGET), key=lambda r: float(r["int8_over_fp32"]))
    missed = sorted((r for r in timed if float(r["int8_over_fp32"]) > TARGET), key=lambda r: -float(r["int8_over_fp32"]))
    lines = [f"int8 p50 <= {TARGET} x float32 p50 (side by side, 1 thread, XNNPACK): {len(met)} of {len(timed)} backbones"
             + (" (" + ", ".join(f"{r['backbone']} {float(r['int8_over_fp32']):.2f}" for r in met) + ")" if met else "") + "."]
    for r in missed:
        held = r.get("int8_held_back_by") or "no op type above its share (see the profile)"
        refused = f"; not delegated: {r['int8_not_delegated']}" if r.get("int8_not_delegated") else ""
        lines.append(f"- {r['backbone']}: {float(r['int8_over_fp32']):.2f}, held back by {held}{refused}.")
    return "\n".join(lines) + pending


def write_tables(rows: list[dict], csv_path: Path, command: str, commit: str = "unknown", load: str = "",
                 requested: list[str] = ()) -> None:
    import pandas as pd

    from tfdefakeq.core.fileio import write_atomic

    df = pd.DataFrame(rows, columns=COLUMNS)
    head = header(command, rows, commit, load)
    comment = "".join(f"# {line}\n" for line in head.splitlines() if line.strip())
    write_atomic(csv_path, (comment + df.to_csv(index=False)).encode(), overwrite=True)
    md = head + "\n" + df.to_markdown(index=False) + "\n\n" + closing_note(rows, requested) + "\n"
    write_atomic(csv_path.with_suffix(".md"), md.encode(), overwrite=True)


def recorded_command(csv_path: Path) -> str:
    """The command in an existing CSV's header ('' if none)."""
    if not csv_path.exists():
        return ""
    for line in csv_path.read_text().splitlines():
        if line.startswith("# - command: `"):
            return line[len("# - command: `"):].rstrip("`")
    return ""


def read_rows(csv_path: Path) -> list[dict]:
    import pandas as pd

    if not csv_path.exists():
        return []
    df = pd.read_csv(csv_path, comment="#", keep_default_na=False)
    return df.to_dict("records")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--names", default="", help="comma-separated backbones (default: every registered one)")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--calib", type=int, default=16, help="calibration / parity images")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "backbones.csv"))
    p.add_argument("--fresh", action="store_true", help="ignore rows already in the CSV")
    p.add_argument("--profile-runs", type=int, default=10, help="invokes per op in the per-op profiles")
    p.add_argument("--commit", default=None, help="the commit measured (default: git rev-parse HEAD, else 'unknown')")
    p.add_argument("--redo", default="", help="comma-separated backbones to measure again (their rows are replaced)")
    p.add_argument("--no-amx", dest="no_amx", action="store_true",
                   help="deny XNNPACK Intel AMX (tfdefakeq.runtime.amx; an error on CPUs without it)")
    return p.parse_args(argv)


def main(args) -> int:
    from tfdefakeq.backbones import list_backbones
    from tfdefakeq.core.machineload import LoadSampler
    from tfdefakeq.core.manifest import command_line

    if args.no_amx:
        from tfdefakeq.runtime.amx import deny_amx

        deny_amx()
    csv_path = Path(args.out)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    rows = [] if args.fresh else read_rows(csv_path)
    redo = set(filter(None, args.redo.split(",")))
    rows = [r for r in rows if r["backbone"] not in redo]
    done = {r["backbone"] for r in rows}
    names = [n for n in (args.names.split(",") if args.names else list_backbones()) if n not in done]
    command = command_line()
    commit = args.commit or git_head()
    if not names and rows:  # nothing left to measure: rewrite the header, keeping the command that measured
        write_tables(rows, csv_path, recorded_command(csv_path) or command, commits(rows, commit))
    requested = sorted(done | set(names))
    load = LoadSampler().start()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
            try:
                row = bench_one(name, args.runs, args.warmup, args.calib, Path(tmp), args.profile_runs)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                row = {"backbone": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            row["commit"] = commit
            rows.append(row)
            rows.sort(key=lambda r: r["backbone"])
            write_tables(rows, csv_path, command, commits(rows, commit), load.sentence(), requested)
            print({k: row.get(k) for k in COLUMNS}, flush=True)
    load.stop()
    if names:
        write_tables(rows, csv_path, command, commits(rows, commit), load.sentence(), requested)
    return 0


def git_head() -> str:
    """The commit of the sources this script runs from ('unknown' outside a git checkout, e.g. in a
    `git archive` snapshot: pass --commit there)."""
    import subprocess

    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def commits(rows: list[dict], default: str) -> str:
    """The commit(s) the rows were measured at (their `commit` column; older rows have none)."""
    found = sorted({str(r["commit"]) for r in rows if str(r.get("commit", "")) not in ("", "nan")})
    return ", ".join(found) if found else default


if __name__ == "__main__":
    sys.exit(main(parse_args()))
