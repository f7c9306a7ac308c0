"""Bring your own PyTorch detector: every ported architecture through port -> convert, checked.

    git archive HEAD | tar -x -C /tmp/snap && cd /tmp/snap    # TensorFlow re-reads sources while tracing
    python benchmarks/byo.py --commit SHA [--names resnet18 mobilenet_v2_w025 ...] [--avg-bits 3] [--epochs 1]

Writes benchmarks/results/byo.{csv,md}, one row per architecture `tfdefakeq.torchport.mapping`
imports, at the size of its torch fixture (tests/fixtures/torch: seeded weights, 2 images, torch's
logits). For each:

1. the fixture's state dict is written as a `.pth` (our zip writer, torch's layout) and ported with
   `python -m tfdefakeq.port` (in process);
2. `python -m tfdefakeq.convert det.weights.h5` -> float32 `.tflite`, run by the runtime on the
   fixture's images: its fake logit against torch's (max |diff|, and relative to torch's largest
   |logit|);
3. `convert --format int8` (post-training int8 on the embedded data): its parity check decides;
4. adaptive at --avg-bits: `python -m tfdefakeq.train --init det.weights.h5 --scheme adaptive
   --avg-bits B --epochs E --calib-images C` then `convert --float-model det.weights.h5` on the result (the two steps
   `convert --scheme adaptive` runs, with fewer calibration images for the sensitivity); the parity
   check (or the budget) decides, and a refusal is recorded with its one-line reason. A budget
   below the model's cheapest plan is refused naming the smallest --avg-bits that fits: that one
   is then tried, as a user would (column adaptive_avg_bits, the refusal in adaptive_note);
5. size of each file (the adaptive one also against the plan's estimate, planned_bytes), and latency in the runtime: 1 thread, XNNPACK, median of --runs invokes.

Data: the embedded synthetic set at a tiny size (one generator, few crops): the weights are seeded
noise, so accuracy means nothing here; what is measured is whether each conversion computes what
its Keras model computes. The table is rewritten after each architecture.
"""

from __future__ import annotations

import argparse
import os
import re
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

NAMES = ["mobilenet_v2_w025", "resnet18", "efficientnet_b0", "resnet34", "resnet50", "xception", "efficientnet_b4_dfb"]


def _fixture_size(name: str) -> int:
    """The input side of the torch fixture `name` (its metadata; the weights are not drawn)."""
    import json

    from tests.torchport.fixtures import FIXTURES

    return int(json.loads(str(np.load(FIXTURES / f"{name}.npz")["meta"]))["size"])


def _convert(argv: list[str]) -> tuple[str, str]:
    """Runs `python -m tfdefakeq.convert` in process: ("pass", "") or ("refused", its one-line error)."""
    from tfdefakeq import convert
    from tfdefakeq.core.errors import UserError

    try:
        convert.main(convert.parse_args(argv))
        return "pass", ""
    except UserError as e:
        return "refused", str(e)


def _parity_text(manifest_file: Path) -> str:
    from tfdefakeq.core.manifest import Manifest

    parity = Manifest.load(manifest_file).metrics["parity"]
    text = f"max logit diff {parity['max_abs_logit_diff']:.3g}"
    if "max_diff_lsb" in parity:
        text += f" = {parity['max_diff_lsb']:.2f} LSB"
    if parity.get("per_layer"):
        text += f"; op by op: {parity['per_layer']['matched']}/{parity['per_layer']['tensors']} tensors agree"
    return text


def _logit_range(path: Path, images: np.ndarray) -> float:
    """max - min of the .tflite's logit over `images` (uint8): 0 is a constant output, whose parity
    check proves nothing."""
    from tfdefakeq.runtime.loader import load_model

    tfl, manifest = load_model(path)
    logits = tfl.predict_logits(images, manifest.preprocess).reshape(-1)
    return float(logits.max() - logits.min())


def _latency(path: Path, runs: int) -> float:
    from tfdefakeq.runtime.latency import bench_model

    return float(bench_model(path, threads=1, warmup=5, runs=runs, use_xnnpack=True)["latency_ms_p50"])


def run_one(name: str, data: Path, work: Path, args) -> dict:
    from tests.torchport.fixtures import load_fixture, torch_fake_logit
    from tfdefakeq import port, train
    from tfdefakeq.core.errors import UserError
    from tfdefakeq.runtime.loader import load_model
    from tfdefakeq.torchport.checkpoint import state_dict_bytes
    from tfdefakeq.torchport.mapping import max_relative_diff

    f = load_fixture(name)
    size = int(f["size"])
    ckpt = work / f"{name}.pth"
    ckpt.write_bytes(state_dict_bytes(f["state"]))
    det = work / f"{name}.weights.h5"
    port.main(port.parse_args([str(ckpt), "--backbone", f["backbone"], "--out", str(det), "--input-size", str(size)]))
    common = ["--data", str(data), "--calib-images", str(args.calib)]
    from tfdefakeq.data.folders import balanced_subset, scan_forensynths
    from tfdefakeq.runtime.images import load_images

    val = balanced_subset(scan_forensynths(data, "val"), args.calib)
    images = np.concatenate([f["images"], load_images([s.path for s in val], (size, size))])
    row = {"architecture": name, "backbone": f["backbone"], "input_px": size,
           "parameters": int(sum(v.size for k, v in f["state"].items()
                                 if not k.endswith(("num_batches_tracked", "running_mean", "running_var"))))}

    start = time.perf_counter()
    fp32 = work / f"{name}_fp32.tflite"
    verdict, reason = _convert([str(det), "--out", str(fp32)] + common)
    row["fp32_convert"] = verdict if not reason else f"{verdict}: {reason}"
    if fp32.exists():
        tfl, manifest = load_model(fp32)
        ours = tfl.predict_logits(f["images"], manifest.preprocess).reshape(-1)
        theirs = torch_fake_logit(f["logits"])
        row["fp32_vs_torch_max_abs"] = float(np.abs(ours - theirs).max())
        row["fp32_vs_torch_rel"] = float(max_relative_diff(ours, theirs))
        row["torch_logits"] = " ".join(f"{v:.4g}" for v in theirs)
        row["fp32_logit_range"] = _logit_range(fp32, images)
        row["fp32_bytes"] = fp32.stat().st_size
        row["fp32_ms"] = _latency(fp32, args.runs)

    int8 = work / f"{name}_int8.tflite"
    verdict, reason = _convert([str(det), "--out", str(int8), "--format", "int8"] + common)
    row["int8_parity"] = verdict
    row["int8_detail"] = _parity_text(int8.with_name(int8.stem + ".manifest.json")) if verdict == "pass" else reason
    if int8.exists():
        row["int8_logit_range"] = _logit_range(int8, images)
        row["int8_bytes"] = int8.stat().st_size
        row["int8_ms"] = _latency(int8, args.runs)

    qat = work / f"{name}_adaptive"
    adaptive = work / f"{name}_adaptive.tflite"
    bits, row["adaptive_note"] = args.avg_bits, ""
    for attempt in range(2):
        try:
            train.main(train.parse_args(["--data", str(data), "--out", str(qat), "--init", str(det), "--scheme", "adaptive",
                                         "--avg-bits", str(bits), "--epochs", str(args.epochs), "--batch-size", "8", "--lr", "1e-4",
                                         "--calib-images", str(args.calib), "--quiet"]))
            # --float-model: the threshold's operating point, and the reference a collapsed (constant) output is refused against
            verdict, reason = _convert([str(qat / "model.weights.h5"), "--out", str(adaptive), "--float-model", str(det)]
                                       + common)
        except UserError as e:
            verdict, reason = "refused", f"train: {e}"
            smallest = re.search(r"the smallest budget the plan can meet: --avg-bits ([\d.]+)", reason)
            if attempt == 0 and smallest:  # below this model's floor: what the error names, as a user would retry
                row["adaptive_note"] = f"--avg-bits {bits:g} refused ({reason.split(': ', 1)[1].split(';')[0]})"
                bits = float(smallest.group(1))
                continue
        break
    row["adaptive_avg_bits"] = bits
    row["adaptive_parity"] = verdict
    row["adaptive_detail"] = _parity_text(adaptive.with_name(adaptive.stem + ".manifest.json")) if verdict == "pass" else reason
    from tfdefakeq.quant.horizontal import QuantPlan

    plan = QuantPlan.load(qat / "bit_plan.json") if (qat / "bit_plan.json").exists() else None
    if plan is not None and plan.budget.get("planned_bytes") is not None:
        # the plan's file-size estimate against the file convert wrote (or refused: its size is in the refusal)
        written = adaptive.stat().st_size if adaptive.exists() else re.search(r"\.tflite: ([\d,]+) bytes", reason or "")
        if written is not None:
            written = written if isinstance(written, int) else int(written.group(1).replace(",", ""))
            row["adaptive_planned_bytes"] = int(plan.budget["planned_bytes"])
            row["adaptive_estimate_error"] = (row["adaptive_planned_bytes"] - written) / written
    if adaptive.exists():
        row["adaptive_logit_range"] = _logit_range(adaptive, images)
        row["adaptive_bytes"] = adaptive.stat().st_size
        row["adaptive_bits_per_weight"] = 8 * adaptive.stat().st_size / plan.budget["total_weights"]
        row["adaptive_ms"] = _latency(adaptive, args.runs)
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def write_report(rows: list[dict], args, commit: str, load, started: float, pending: list[str]) -> list[Path]:
    import pandas as pd

    from tfdefakeq.core.report import write_table
    from tfdefakeq.runtime.interpreter import cpu_name
    import tensorflow as tf

    df = pd.DataFrame(rows)
    header = {
        "commit": commit,
        "machine": f"{platform.machine()} {cpu_name()}, {os.cpu_count()} cores; {platform.platform()}",
        "load": load.sentence(),
        "command": "python benchmarks/byo.py " + " ".join(sys.argv[1:]),
        "versions": f"python {platform.python_version()}, tensorflow {tf.__version__}, numpy {np.__version__}",
        "inputs": "tests/fixtures/torch: seeded weights (tests/torchport/weights_gen.py), 2 uint8 images per architecture, "
                  "torch's logits (torch 2.14.1); the float32 .tflite's fake logit against torch's, relative to torch's "
                  "largest |logit|",
        "conversions": f"int8: convert --format int8 (post-training, {args.calib} calibration images of the embedded "
                       f"synthetic val split); adaptive: train --scheme adaptive --avg-bits {args.avg_bits} --epochs "
                       f"{args.epochs} --lr 1e-4 --batch-size 8 --calib-images {args.calib}, then convert; pass = convert's parity check passed "
                       "and the file was written",
        "logit range": f"*_logit_range: max - min of each .tflite's logit over the fixture's 2 images and {args.calib} "
                       "val images (0: one constant output)",
        "latency": f"tfdefakeq.runtime.latency.bench_model, 1 thread, XNNPACK on, median of {args.runs} single-image "
                   "invokes after 5 warm-up runs",
        "wall": f"{time.perf_counter() - started:.0f} s" + (" so far" if pending else ""),
    }
    done = len(df)
    summary = []
    if done:
        fp32 = df["fp32_vs_torch_rel"].dropna() if "fp32_vs_torch_rel" in df else pd.Series(dtype=float)
        if len(fp32):
            summary.append(f"float32 .tflite against torch: largest relative difference {fp32.max():.2g} "
                           f"({df.loc[fp32.idxmax(), 'architecture']}) over {len(fp32)} architectures")
        for kind in ("int8", "adaptive"):
            passed = df[df[f"{kind}_parity"] == "pass"]["architecture"].tolist()
            failed = df[df[f"{kind}_parity"] != "pass"]["architecture"].tolist()
            flat = df[(df[f"{kind}_parity"] == "pass") & (df.get(f"{kind}_logit_range", 0.0) == 0.0)]["architecture"].tolist()
            summary.append(f"{kind}: {len(passed)} of {done} pass" + (f" (refused: {', '.join(failed)})" if failed else "")
                           + (f"; constant logit on every image, so a parity that proves nothing: {', '.join(flat)}" if flat else ""))
            if f"{kind}_logit_range" in df and "fp32_logit_range" in df:  # a compressed output passes parity all the same
                ratio = (df[f"{kind}_logit_range"] / df["fp32_logit_range"]).dropna()
                if len(ratio):
                    summary.append(f"{kind} logit range / float32's: smallest {ratio.min():.3g} "
                                   f"({df.loc[ratio.idxmin(), 'architecture']}), median {ratio.median():.3g}")
        if "adaptive_estimate_error" in df and df["adaptive_estimate_error"].notna().any():
            err = df["adaptive_estimate_error"].dropna()
            summary.append(f"adaptive file-size estimate against the written file: {err.min():+.2%} to {err.max():+.2%} "
                           f"over {len(err)} architectures (largest |error|: {df.loc[err.abs().idxmax(), 'architecture']})")
        raised = df[df["adaptive_avg_bits"] != args.avg_bits]
        if len(raised):
            summary.append(f"--avg-bits {args.avg_bits:g} is below the cheapest plan of " + ", ".join(
                f"{r.architecture} (run at {r.adaptive_avg_bits:g})" for r in raised.itertuples()))
    if pending:
        summary.append(f"not run: {', '.join(pending)}")
    header["summary"] = "; ".join(summary) if summary else "no architecture finished"
    formats = {c: "{:,.0f}" for c in ("parameters", "input_px", "fp32_bytes", "int8_bytes", "adaptive_bytes",
                                          "adaptive_planned_bytes")}
    formats.update({c: "{:.3g}" for c in ("fp32_vs_torch_max_abs", "fp32_vs_torch_rel", "fp32_logit_range",
                                          "int8_logit_range", "adaptive_logit_range")})
    formats.update({c: "{:.3f}" for c in ("fp32_ms", "int8_ms", "adaptive_ms", "adaptive_bits_per_weight")})
    formats["seconds"] = "{:.0f}"
    formats["adaptive_estimate_error"] = "{:+.3%}"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_table(df, out, header, "Bring your own PyTorch detector: port -> float32 / int8 / adaptive .tflite", formats)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--names", nargs="+", default=NAMES, choices=NAMES)
    p.add_argument("--avg-bits", type=float, default=3.0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--calib", type=int, default=16, help="calibration / parity images (and adaptive sensitivity images)")
    p.add_argument("--runs", type=int, default=50, help="latency: invokes per model")
    p.add_argument("--commit", required=True, help="the commit the snapshot it runs from was taken at (git rev-parse HEAD)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "byo"))
    args = p.parse_args(argv)

    from tfdefakeq.core.machineload import LoadSampler
    from tfdefakeq.data.synthetic import SyntheticConfig, generate

    commit = args.commit
    started = time.perf_counter()
    load = LoadSampler().start()
    rows = []
    with tempfile.TemporaryDirectory(prefix="byo_bench_") as tmp:
        work = Path(tmp)
        datasets = {}
        for i, name in enumerate(args.names):
            print(f"== {name}", flush=True)
            # one generator, few crops: the QAT epoch is short (the weights are noise; accuracy is not measured);
            # crops at the fixture's own size (efficientnet_b4_dfb's is 72 px), one set per size
            size = _fixture_size(name)
            if size not in datasets:
                datasets[size] = generate(work / f"data{size}", SyntheticConfig(generators=("upsampler",), max_crops_per_photo=2,
                                                                                size=size), progress=False)
            rows.append(run_one(name, datasets[size], work, args))
            print(rows[-1], flush=True)
            paths = write_report(rows, args, commit, load, started, args.names[i + 1:])
    load.stop()
    paths = write_report(rows, args, commit, load, started, [])
    print("wrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
