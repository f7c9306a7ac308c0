"""Data at real scale and the cost of planning as models grow (issue 16, sections 3 and 4).

    python benchmarks/scaling.py [--files 200000] [--pipeline-images 512] [--steps 6]
        [--planner resnet18:64 resnet18:128 resnet18:224 resnet50:64 resnet50:128 resnet50:224 efficientnet_b0:224]
        [--calib-images 16] [--planner-timeout 900] [--commit SHA]

Writes benchmarks/results/scaling.{csv,md,png}. Every measurement runs in its own child process
(`python benchmarks/scaling.py --child ...`), which reports its wall time and its own peak resident
memory (VmHWM from /proc/self/status), so one measurement's memory does not leak into the next.
- scan: a ForenSynths tree (train/<generator>/{0_real,1_fake}) of --files hard links to 4 real 256 px
  PNGs in a temporary folder outside the repository; `scan_dataset` on it. The child's memory
  right before the scan (interpreter + imports) is reported beside the peak.
- check: `reader.check_images` (the up-front header check make_dataset runs on every file) on
  --check-files of them, as files/s.
- pipeline: the real training tf.data pipeline (`make_dataset(training=True)`: decode + augment +
  random crop to 224 + normalise, batch 32) on --pipeline-images files, images/s, with and without
  augmentation; ResNet-18 224 px batch-32 training steps (Adam, BCE) on one cached in-memory batch
  against steps fed by the pipeline: the pipeline's share of a step.
- planner: `plan_adaptive` (salient channels + sensitivity of every free layer at 8/4/3/2 bits with
  and without the split + exact allocation) at full width on an untrained backbone (Keras
  initialisation) with --calib-images seeded noise images, wall time and peak memory; the number of
  sensitivity forward passes is counted from the plan. A configuration past --planner-timeout is
  reported as not finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GENERATORS = 20


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_tree(root: Path, files: int) -> None:
    """train/<gen_i>/{0_real,1_fake}/<n>.png: `files` hard links to 4 real PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    sources = []
    for i in range(4):
        path = root / f"source{i}.png"
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(path)
        sources.append(path)
    per_folder = files // (2 * GENERATORS)
    n = 0
    for g in range(GENERATORS):
        for label in ("0_real", "1_fake"):
            folder = root / "train" / f"gen{g:02d}" / label
            folder.mkdir(parents=True)
            count = per_folder if n + per_folder <= files else files - n
            for j in range(count):
                os.link(sources[j % 4], folder / f"{j:06d}.png")
            n += count


# --- children -------------------------------------------------------------------------------------

def child_scan(args) -> dict:
    from tfdefakeq.data.folders import scan_dataset

    before = _vm_rss_mb()
    start = time.perf_counter()
    samples = scan_dataset(args.tree, split="train")
    seconds = time.perf_counter() - start
    return {"files": len(samples), "seconds": seconds, "rss_before_mb": before, "peak_mb": _vm_hwm_mb()}


def child_check(args) -> dict:
    from tfdefakeq.data.folders import scan_dataset
    from tfdefakeq.data.reader import check_images

    samples = scan_dataset(args.tree, split="train")[: args.check_files]
    start = time.perf_counter()
    check_images([s.path for s in samples], (224, 224))
    seconds = time.perf_counter() - start
    return {"files": len(samples), "seconds": seconds, "files_per_s": len(samples) / seconds, "peak_mb": _vm_hwm_mb()}


def child_pipeline(args) -> dict:
    import numpy as np

    from tfdefakeq.backbones import build
    from tfdefakeq.core.tfcompat import keras, tf
    from tfdefakeq.data.folders import balanced_subset, scan_dataset
    from tfdefakeq.data.reader import make_dataset

    samples = balanced_subset(scan_dataset(args.tree, split="train"), args.pipeline_images, seed=0)
    out = {"images": len(samples)}
    for augment in (False, True):
        ds = make_dataset(samples, (224, 224), 32, training=True, augment=augment, drop_remainder=True)
        it = iter(ds)
        next(it)  # tracing and first fill
        count, start = 0, time.perf_counter()
        for x, _ in it:
            count += int(x.shape[0])
        out[f"pipeline_img_s_{'aug' if augment else 'noaug'}"] = count / (time.perf_counter() - start)
    model = build("resnet18", input_shape=(224, 224, 3))
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    x = tf.constant(np.random.default_rng(0).normal(0, 0.5, (32, 224, 224, 3)).astype("float32"))
    y = tf.constant(np.zeros((32, 1), "float32"))
    model.train_on_batch(x, y)  # tracing
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    out["step_s_cached"] = float(np.median(times))
    ds = make_dataset(samples, (224, 224), 32, training=True, augment=True, drop_remainder=True).repeat()
    it = iter(ds)
    xb, yb = next(it)
    model.train_on_batch(xb, yb)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        xb, yb = next(it)
        model.train_on_batch(xb, yb)
        times.append(time.perf_counter() - start)
    out["step_s_pipeline"] = float(np.median(times))
    out["peak_mb"] = _vm_hwm_mb()
    return out


def child_planner(args) -> dict:
    import numpy as np

    from tfdefakeq.backbones import build
    from tfdefakeq.quant.adaptive import plan_adaptive

    name, size = args.config.split(":")
    size = int(size)
    model = build(name, input_shape=(size, size, 3))
    calib = np.clip(np.random.default_rng(0).normal(0, 0.5, (args.calib_images, size, size, 3)), -1, 1).astype("float32")
    start = time.perf_counter()
    plan = plan_adaptive(model, calib)
    seconds = time.perf_counter() - start
    passes = 1 + sum(len(v) for v in plan.sensitivity.values())
    bits = {}
    for b in plan.weight_bits.values():
        bits[str(b)] = bits.get(str(b), 0) + 1
    return {"backbone": name, "size": size, "seconds": seconds, "peak_mb": _vm_hwm_mb(),
            "weights": sum(v["weights"] for v in plan.layers.values()), "free_layers": len(plan.sensitivity),
            "forward_passes": passes, "image_forwards": passes * args.calib_images,
            "layers_at_bits": json.dumps(dict(sorted(bits.items()))),
            "split_layers": len(plan.salient_channels), "predicted_loss": plan.budget.get("sensitivity_sum")}


CHILDREN = {"scan": child_scan, "check": child_check, "pipeline": child_pipeline, "planner": child_planner}


def run_child(part: str, args, extra: list[str], timeout: float | None = None) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", part, "--tree", str(args.tree),
           "--calib-images", str(args.calib_images), "--pipeline-images", str(args.pipeline_images),
           "--steps", str(args.steps), "--check-files", str(args.check_files)] + extra
    print(" ".join(cmd[2:]), flush=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise RuntimeError(f"{part} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result, flush=True)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=200_000)
    p.add_argument("--check-files", type=int, default=5000)
    p.add_argument("--pipeline-images", type=int, default=512)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--planner", nargs="*", default=["resnet18:64", "resnet18:128", "resnet18:224", "resnet50:64",
                                                     "resnet50:128", "resnet50:224", "efficientnet_b0:224"])
    p.add_argument("--calib-images", type=int, default=16)
    p.add_argument("--planner-timeout", type=float, default=900)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling"))
    p.add_argument("--commit", default=None)
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return 0

    from tfdefakeq.core.machineload import LoadSampler

    commit = args.commit
    if commit is None:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = done.stdout.strip() if done.returncode == 0 else "unknown"
    load = LoadSampler().start()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="tfdefakeq-scaling-"))
    try:
        args.tree = tmp / "tree"
        args.tree.mkdir()
        t0 = time.perf_counter()
        build_tree(args.tree, args.files)
        build_s = time.perf_counter() - t0
        print(f"built {args.files} files in {build_s:.0f} s", flush=True)
        scan = run_child("scan", args, [])
        check = run_child("check", args, [])
        pipe = run_child("pipeline", args, [])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    planner = []
    for config in args.planner:
        row = run_child("planner", args, ["--config", config], timeout=args.planner_timeout)
        name, size = config.split(":")
        planner.append(row if row is not None else {"backbone": name, "size": int(size),
                                                    "seconds": None, "note": f"not finished in {args.planner_timeout:g} s"})
        # the report is rewritten after each configuration, so a run cut short keeps what it measured
        report(args, commit, load, started, build_s, scan, check, pipe, planner)
    if not planner:
        report(args, commit, load, started, build_s, scan, check, pipe, planner)
    return 0


def report(args, commit, load, started, build_s, scan, check, pipe, planner) -> None:
    """Writes the .csv, .md and .png from the measurements so far (the load sampled until now)."""
    import pandas as pd

    from tfdefakeq.core.fileio import write_atomic
    from tfdefakeq.runtime.interpreter import cpu_name

    load.samples.append(os.getloadavg()[0])

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import tensorflow as tf

    rows = [{"part": "scan", **scan}, {"part": "check", **check}, {"part": "pipeline", **pipe}]
    rows += [{"part": "planner", **r} for r in planner]
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out.with_suffix(".csv"), df.to_csv(index=False).encode(), overwrite=True)

    plan_df = pd.DataFrame(planner)
    done_df = plan_df[plan_df.seconds.notna()] if len(plan_df) else plan_df
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, group in done_df.groupby("backbone"):
        g = group.sort_values("size")
        ax1.plot(g["size"], g["seconds"] / 60, "o-", label=name)
        ax2.plot(g["size"], g["peak_mb"], "o-", label=name)
    ax1.axhline(10, color="grey", ls="--", lw=1, label="10 min target")
    ax1.set(xlabel="input side (px)", ylabel="planner wall time (min)", title=f"plan_adaptive, {args.calib_images} calib images")
    ax2.set(xlabel="input side (px)", ylabel="peak RSS (MB)", title="planner peak memory")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    buf = out.with_suffix(".png.tmp")
    fig.savefig(buf, dpi=110, format="png")
    os.replace(buf, out.with_suffix(".png"))

    scan_ok = scan["seconds"] < 60 and scan["peak_mb"] < 500
    per_image_input = 1 / pipe["pipeline_img_s_aug"]
    per_image_step = pipe["step_s_cached"] / 32
    share = max(0.0, (pipe["step_s_pipeline"] - pipe["step_s_cached"]) / pipe["step_s_pipeline"])
    check_200k = args.files / check["files_per_s"]
    lines = [
        "# Data at real scale and the cost of planning",
        "",
        f"- commit: {commit}",
        f"- machine: {platform.machine()} {cpu_name()}, {os.cpu_count()} cores; {platform.platform()}",
        f"- load: {load.sentence()}",
        f"- command: python benchmarks/scaling.py {' '.join(sys.argv[1:])}",
        f"- versions: python {platform.python_version()}, tensorflow {tf.__version__}, numpy {np.__version__}",
        f"- seconds in all: {time.perf_counter() - started:.0f} (building the tree of {args.files} hard links: {build_s:.0f})",
        "",
        "## Scanning",
        "",
        f"`scan_dataset` listed {scan['files']} files (ForenSynths layout, {GENERATORS} generators, hard links to 4 "
        f"256 px PNGs) in {scan['seconds']:.1f} s with a peak of {scan['peak_mb']:.0f} MB resident "
        f"({scan['rss_before_mb']:.0f} MB before the scan: interpreter and imports); the target (< 60 s, < 500 MB) is "
        + ("met." if scan_ok else "missed.")
        + f" The header check make_dataset runs on every file (`check_images`, Pillow open + verify) ran at "
        f"{check['files_per_s']:.0f} files/s on {check['files']} of them: {check_200k:.0f} s for all {args.files}.",
        "",
        "## Input pipeline against the training step",
        "",
        f"On {pipe['images']} files, the training pipeline (decode + random crop to 224 + normalise, batch 32) gave "
        f"{pipe['pipeline_img_s_noaug']:.0f} images/s without augmentation and {pipe['pipeline_img_s_aug']:.0f} with "
        f"it (blur + JPEG + flip), alone. A ResNet-18 224 px batch-32 training step took {pipe['step_s_cached']:.2f} s on "
        f"a cached batch ({32 / pipe['step_s_cached']:.1f} images/s) and {pipe['step_s_pipeline']:.2f} s fed by the "
        f"augmenting pipeline (medians of {args.steps}). The pipeline alone needs {per_image_input * 1000:.1f} ms per "
        f"image against the step's {per_image_step * 1000:.1f} ms, a ratio of {per_image_input / per_image_step:.2f}; "
        f"it took {share:.0%} of a fed step"
        + (" (the two share the same cores, so the fed step is the figure that counts)." if share > 0.02 else
           ": the input pipeline is not the bottleneck."),
        "",
        "## Planner cost",
        "",
        f"`plan_adaptive` at full width, untrained backbones, {args.calib_images} calibration images of seeded noise, "
        "default budget (the uniform W4 file), exact allocator. forward_passes counts the full-model passes over the "
        "calibration set (one reference, then one per layer and option).",
        "",
        plan_df.to_markdown(index=False, floatfmt=".4g") if len(plan_df) else "(no planner configuration run)",
        "",
    ]
    r50 = plan_df[(plan_df.backbone == "resnet50") & (plan_df["size"] == 224)] if len(plan_df) else plan_df
    if len(r50):
        sec = r50.iloc[0]["seconds"]
        lines.append("ResNet-50 at 224 px: " + (f"{sec / 60:.1f} min with {args.calib_images} calibration images, target "
                                                  f"(<= 10 min) {'met' if sec <= 600 else 'missed'}."
                                                  if sec == sec and sec is not None else "not finished within the timeout."))
    write_atomic(out.with_suffix(".md"), "\n".join(lines).encode(), overwrite=True)
    print(f"wrote {out.with_suffix('.csv')}, .md and .png", flush=True)


if __name__ == "__main__":
    sys.exit(main())
