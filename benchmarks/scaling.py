"""Data at real scale and the cost of planning as models grow (issue 16, sections 3 and 4).

    python benchmarks/scaling.py [--parts compare scan check pipeline planner] [--files 200000]
        [--pipeline-images 512] [--steps 6]
        [--planner resnet18:64 resnet18:128 resnet18:224 resnet50:64 resnet50:128 resnet50:224 efficientnet_b0:224]
        [--calib-images 16] [--planner-timeout 900] [--commit SHA]
        [--compare-with DIR --compare-commit SHA [--compare-config resnet18:64]]

Writes benchmarks/results/scaling.{csv,md,png}, holding only the --parts measured in this run. Every
measurement runs in its own child process (`python benchmarks/scaling.py --child ...`), which reports
its wall time and its own peak resident memory (VmHWM from /proc/self/status), so one measurement's
memory does not leak into the next.
- compare: the planner of an older commit (a `git archive` snapshot in --compare-with, imported in
  its child instead of this tree's package) and this one on --compare-config, back to back: time,
  bits per layer, salient channels, every sensitivity, predicted loss.
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
  initialisation, seed 0) with --calib-images seeded noise images, wall time and peak memory, and
  the time in its parts (saliency, sensitivity, the MSE step search inside it). A configuration
  past --planner-timeout is reported as not finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
    """One plan_adaptive run; with --package-root, the tfdefakeq found there (an older snapshot) plans
    the same seeded model on the same images. Timers wrap the planner's parts by their names."""
    if args.package_root:
        sys.path.insert(0, str(Path(args.package_root).resolve()))
    import numpy as np

    import tfdefakeq
    import tfdefakeq.quant.adaptive as adaptive
    import tfdefakeq.quant.horizontal as horizontal
    from tfdefakeq.backbones import build
    from tfdefakeq.core.tfcompat import keras

    spent = {"saliency_s": 0.0, "sensitivity_s": 0.0, "kernel_grid_s": 0.0}

    def timed(module, attr, key):
        inner = getattr(module, attr)

        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                spent[key] += time.perf_counter() - start

        setattr(module, attr, wrapper)

    timed(adaptive, "channel_saliency", "saliency_s")
    timed(adaptive, "layer_sensitivity", "sensitivity_s")
    timed(horizontal, "quantize_kernel", "kernel_grid_s")  # the MSE step search, inside the sensitivity pass

    name, size = args.config.split(":")
    size = int(size)
    keras.utils.set_random_seed(0)  # the same untrained weights in every run and every commit
    model = build(name, input_shape=(size, size, 3))
    calib = np.clip(np.random.default_rng(0).normal(0, 0.5, (args.calib_images, size, size, 3)), -1, 1).astype("float32")
    # how much the float logits vary over the images: near 0, every sensitivity is rounding noise
    logit_std = float(np.std(model.predict(calib, batch_size=64, verbose=0)))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    plan = adaptive.plan_adaptive(model, calib)
    seconds = time.perf_counter() - start
    options = sum(len(v) for v in plan.sensitivity.values())
    bits = {}
    for b in plan.weight_bits.values():
        bits[str(b)] = bits.get(str(b), 0) + 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"backbone": name, "size": size, "seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime - cpu_before,
            "peak_mb": _vm_hwm_mb(),
            "weights": sum(v["weights"] for v in plan.layers.values()), "free_layers": len(plan.sensitivity),
            "options_measured": options, **spent, "logit_std": logit_std,
            "layers_at_bits": json.dumps(dict(sorted(bits.items()))),
            "split_layers": len(plan.salient_channels), "predicted_loss": plan.budget.get("sensitivity_sum"),
            "package": str(Path(tfdefakeq.__file__).parent), "weight_bits": plan.weight_bits,
            "salient_channels": plan.salient_channels, "sensitivity": plan.sensitivity}


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
    print({k: v for k, v in result.items() if k not in PLAN_DETAIL}, flush=True)
    return result


PLAN_DETAIL = ("weight_bits", "salient_channels", "sensitivity", "package")  # compared, not tabled


PARTS = ("compare", "scan", "check", "pipeline", "planner")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="what to measure (the report holds only these, all from this run)")
    p.add_argument("--files", type=int, default=200_000)
    p.add_argument("--check-files", type=int, default=5000)
    p.add_argument("--pipeline-images", type=int, default=512)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--planner", nargs="*", default=["resnet18:64", "resnet18:128", "resnet18:224", "resnet50:64",
                                                     "resnet50:128", "resnet50:224", "efficientnet_b0:224"])
    p.add_argument("--calib-images", type=int, default=16)
    p.add_argument("--planner-timeout", type=float, default=900)
    p.add_argument("--compare-with", type=Path, default=None,
                   help="compare: a source snapshot of an older commit (git archive SHA | tar -x -C DIR) whose "
                        "planner plans --compare-config beside this one's")
    p.add_argument("--compare-commit", default=None, help="compare: the commit the --compare-with snapshot is of")
    p.add_argument("--compare-config", default="resnet18:64")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling"))
    p.add_argument("--commit", default=None)
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--package-root", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return 0
    if "compare" in args.parts and (args.compare_with is None or args.compare_commit is None):
        p.error("the compare part needs --compare-with DIR and --compare-commit SHA (or leave it out of --parts)")
    if args.compare_with is not None and not (args.compare_with / "tfdefakeq" / "__init__.py").is_file():
        p.error(f"--compare-with {args.compare_with}: no tfdefakeq package there")

    from tfdefakeq.core.machineload import LoadSampler

    commit = args.commit
    if commit is None:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = done.stdout.strip() if done.returncode == 0 else "unknown"
    load = LoadSampler().start()
    started = time.perf_counter()
    measured = {"build_s": None, "scan": None, "check": None, "pipeline": None, "planner": [], "compare": []}
    if "compare" in args.parts:
        # the former planner and this one on the same seeded model and images, back to back
        for root, label in ((args.compare_with, args.compare_commit), (ROOT, commit)):
            row = run_child("planner", args, ["--config", args.compare_config, "--package-root", str(root)])
            measured["compare"].append({"commit": label, **row})
        report(args, commit, load, started, measured)
    data_parts = [part for part in ("scan", "check", "pipeline") if part in args.parts]
    if data_parts:
        tmp = Path(tempfile.mkdtemp(prefix="tfdefakeq-scaling-"))
        try:
            args.tree = tmp / "tree"
            args.tree.mkdir()
            t0 = time.perf_counter()
            build_tree(args.tree, args.files)
            measured["build_s"] = time.perf_counter() - t0
            print(f"built {args.files} files in {measured['build_s']:.0f} s", flush=True)
            for part in data_parts:
                measured[part] = run_child(part, args, [])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        report(args, commit, load, started, measured)
    if "planner" in args.parts:
        for config in args.planner:
            row = run_child("planner", args, ["--config", config], timeout=args.planner_timeout)
            name, size = config.split(":")
            measured["planner"].append(row if row is not None else {
                "backbone": name, "size": int(size), "seconds": None, "note": f"not finished in {args.planner_timeout:g} s"})
            # the report is rewritten after each configuration, so a run cut short keeps what it measured
            report(args, commit, load, started, measured)
    report(args, commit, load, started, measured)
    return 0


def _compare_lines(rows: list[dict], config: str) -> list[str]:
    """The former planner against this one: table and sentences computed from the two runs."""
    import pandas as pd

    old, new = rows
    columns = ["commit", "seconds", "cpu_s", "saliency_s", "sensitivity_s", "kernel_grid_s", "peak_mb", "options_measured",
               "layers_at_bits", "split_layers", "predicted_loss"]
    same_bits = old["weight_bits"] == new["weight_bits"]
    moved = sorted(n for n in set(old["weight_bits"]) | set(new["weight_bits"])
                   if old["weight_bits"].get(n) != new["weight_bits"].get(n))
    same_split = old["salient_channels"] == new["salient_channels"]
    worst, count = 0.0, 0
    for layer, options in old["sensitivity"].items():
        for key, value in options.items():
            other = new["sensitivity"].get(layer, {}).get(key)
            count += 1
            worst = float("inf") if other is None else max(worst, abs(other - value) / max(abs(value), 1e-30))
    loss_old, loss_new = old["predicted_loss"], new["predicted_loss"]
    verdict = ("the plans are identical: the same bits for every layer and the same salient channels, so the QAT "
               "model and its AP are the same and the AP comparison is moot" if same_bits and same_split else
               f"the plans differ: {len(moved)} layers changed bits ({', '.join(moved[:8])}), salient channels "
               + ("identical" if same_split else "changed"))
    return [
        f"## Against the former planner ({old['commit'][:7]})",
        "",
        f"Both planners on {config} (the same seeded untrained weights and calibration images), back to back in this "
        "run; the former one imported from a `git archive` snapshot of its commit.",
        "",
        pd.DataFrame([{c: r.get(c) for c in columns} for r in rows]).to_markdown(index=False, floatfmt=".4g"),
        "",
        f"Of {count} measured sensitivities (layer x option), the largest relative difference is {worst:.3g}; "
        f"predicted loss {loss_old:.6g} before, {loss_new:.6g} now; {verdict}. This run planned "
        f"{old['seconds'] / new['seconds']:.2f}x faster than the former one ({old['seconds']:.1f} s -> {new['seconds']:.1f} s, "
        f"sensitivity {old['sensitivity_s']:.1f} s -> {new['sensitivity_s']:.1f} s, of which the MSE step search "
        f"{old['kernel_grid_s']:.1f} s -> {new['kernel_grid_s']:.1f} s).",
        "",
    ]


def report(args, commit, load, started, measured) -> None:
    """Writes the .csv, .md and .png from the measurements so far (the load sampled until now)."""
    import pandas as pd

    from tfdefakeq.core.fileio import write_atomic
    from tfdefakeq.runtime.interpreter import cpu_name

    load.samples.append(os.getloadavg()[0])

    import numpy as np
    import tensorflow as tf

    scan, check, pipe, planner = measured["scan"], measured["check"], measured["pipeline"], measured["planner"]
    table = lambda r: {k: v for k, v in r.items() if k not in PLAN_DETAIL}  # noqa: E731
    rows = [{"part": part, **measured[part]} for part in ("scan", "check", "pipeline") if measured[part]]
    rows += [{"part": "compare", **table(r)} for r in measured["compare"]]
    rows += [{"part": "planner", **table(r)} for r in planner]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out.with_suffix(".csv"), pd.DataFrame(rows).to_csv(index=False).encode(), overwrite=True)

    lines = [
        "# Data at real scale and the cost of planning",
        "",
        f"- commit: {commit}",
        f"- machine: {platform.machine()} {cpu_name()}, {os.cpu_count()} cores; {platform.platform()}",
        f"- load: {load.sentence()}",
        f"- command: python benchmarks/scaling.py {' '.join(sys.argv[1:])}",
        f"- versions: python {platform.python_version()}, tensorflow {tf.__version__}, numpy {np.__version__}",
        f"- seconds in all: {time.perf_counter() - started:.0f}"
        + (f" (building the tree of {args.files} hard links: {measured['build_s']:.0f})" if measured["build_s"] else ""),
        "",
    ]
    if len(measured["compare"]) == 2:
        lines += _compare_lines(measured["compare"], args.compare_config)
    if scan or check:
        lines += ["## Scanning", ""]
    if scan:
        scan_ok = scan["seconds"] < 60 and scan["peak_mb"] < 500
        lines.append(
            f"`scan_dataset` listed {scan['files']} files (ForenSynths layout, {GENERATORS} generators, hard links to 4 "
            f"256 px PNGs) in {scan['seconds']:.1f} s with a peak of {scan['peak_mb']:.0f} MB resident "
            f"({scan['rss_before_mb']:.0f} MB before the scan: interpreter and imports); the target (< 60 s, < 500 MB) is "
            + ("met." if scan_ok else "missed."))
    if check:
        lines.append(
            f"The header check make_dataset runs on every file (`check_images`, Pillow open + verify) ran at "
            f"{check['files_per_s']:.0f} files/s on {check['files']} of them: {args.files / check['files_per_s']:.0f} s "
            f"for all {args.files}.")
    if scan or check:
        lines.append("")
    if pipe:
        per_image_input = 1 / pipe["pipeline_img_s_aug"]
        per_image_step = pipe["step_s_cached"] / 32
        share = max(0.0, (pipe["step_s_pipeline"] - pipe["step_s_cached"]) / pipe["step_s_pipeline"])
        lines += [
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
        ]
    if "planner" in args.parts:
        plan_df = pd.DataFrame([table(r) for r in planner])
        lines += [
            "## Planner cost",
            "",
            f"`plan_adaptive` at full width, untrained backbones (Keras initialisation, seed 0), {args.calib_images} "
            "calibration images of seeded noise, default budget (the uniform W4 file), exact allocator. cpu_s: the "
            "planner's CPU seconds (user + system, all its threads). logit_std: the spread (std) of the float model's "
            "logits over the calibration images. options_measured: "
            "layer x option variants whose logits were measured (each runs the layers from the quantized one on); "
            "saliency_s, sensitivity_s: the two measurements; kernel_grid_s: the MSE step search for the quantized "
            "kernels, inside sensitivity_s; the rest of `seconds` is folding, imports and the allocation.",
            "",
            plan_df.to_markdown(index=False, floatfmt=".4g") if len(plan_df) else "(no planner configuration run yet)",
            "",
        ]
        done_df = plan_df[plan_df.seconds.notna()] if len(plan_df) else plan_df
        if len(done_df):
            _plot(done_df, out, args.calib_images)
            lines += [f"![planner wall time and peak memory]({out.with_suffix('.png').name})", ""]
        for _, r in done_df.iterrows():
            other = r["seconds"] - r["sensitivity_s"] - r["saliency_s"]
            lines.append(
                f"- {r['backbone']} {r['size']} px: {r['seconds']:.0f} s ({r['cpu_s']:.0f} CPU s: "
                f"{r['cpu_s'] / r['seconds']:.2f} of the {os.cpu_count()} CPUs on average) = sensitivity {r['sensitivity_s']:.0f} s "
                f"({r['kernel_grid_s']:.0f} s of it the MSE step search, {r['sensitivity_s'] - r['kernel_grid_s']:.0f} s "
                f"running the model) + saliency {r['saliency_s']:.0f} s + {other:.0f} s the rest; peak {r['peak_mb']:.0f} MB."
                + (f" Its float logits are flat (std {r['logit_std']:.2g} over the images; predicted loss "
                   f"{r['predicted_loss']:.2g}): the sensitivities measure rounding noise, so this plan is no finding, "
                   "only its cost is." if r.get("logit_std", 1.0) < 1e-6 else ""))
        r50 = plan_df[(plan_df.backbone == "resnet50") & (plan_df["size"] == 224)] if len(plan_df) else plan_df
        if len(r50):
            sec = r50.iloc[0]["seconds"]
            lines += ["", "ResNet-50 at 224 px: " + (
                f"{sec / 60:.1f} min with {args.calib_images} calibration images, target (<= 10 min) "
                f"{'met' if sec <= 600 else 'missed'} at this load; its {r50.iloc[0]['cpu_s']:.0f} CPU seconds over the "
                f"{os.cpu_count()} cores would take at least {r50.iloc[0]['cpu_s'] / os.cpu_count() / 60:.1f} min alone."
                if sec is not None and sec == sec else
                f"not finished within the {args.planner_timeout:g} s timeout.")]
    write_atomic(out.with_suffix(".md"), ("\n".join(lines) + "\n").encode(), overwrite=True)
    print(f"wrote {out.with_suffix('.csv')}, .md" + (" and .png" if out.with_suffix(".png").exists() else ""), flush=True)


def _plot(done_df, out: Path, calib_images: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, group in done_df.groupby("backbone"):
        g = group.sort_values("size")
        ax1.plot(g["size"], g["seconds"] / 60, "o-", label=name)
        ax2.plot(g["size"], g["peak_mb"], "o-", label=name)
    ax1.axhline(10, color="grey", ls="--", lw=1, label="10 min target")
    ax1.set(xlabel="input side (px)", ylabel="planner wall time (min)", title=f"plan_adaptive, {calib_images} calib images")
    ax2.set(xlabel="input side (px)", ylabel="peak RSS (MB)", title="planner peak memory")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    buf = out.with_suffix(".png.tmp")
    fig.savefig(buf, dpi=110, format="png")
    os.replace(buf, out.with_suffix(".png"))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
