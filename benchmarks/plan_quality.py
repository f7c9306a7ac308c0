"""Does the current adaptive planner lose plan quality against the former one? (issue 16 section 4)

    python benchmarks/plan_quality.py --former /tmp/snap-old --former-commit SHA --commit SHA
        [--width 0.5] [--epochs 3] [--qat-epochs 1] [--seeds 0 1 2] [--avg-bits 3] [--out benchmarks/results/plan_quality]

1. trains one float ResNet-18 detector (high-pass front, --width) at 64 px on the embedded synthetic data;
2. plans it at --avg-bits with the FORMER planner (a `git archive` snapshot in --former, imported in a child
   process instead of this tree's package) and with the current one, on the same calibration images
   (saved once as .npy); writes both plans as bit_plan.json;
3. for each plan and seed: QAT fine-tuning with the CURRENT code from that plan (`train --bit-plan`),
   conversion to int4 .tflite (parity must pass), AP on the test split;
4. writes the plans, the AP per seed, the means and the paired difference (current - former) with a
   t confidence interval across seeds to --out .csv/.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's tfdefakeq, not an installed one (the child puts --package-root first)


def paired_difference(current, former, confidence: float = 0.95) -> dict:
    """Mean of current - former over paired seeds, with its t confidence interval and the seed spread.

    Returns {"n", "mean", "low", "high", "spread"}: spread is the larger of the two arms' sample std
    (nan with one seed, and then low/high are nan too).
    """
    import numpy as np
    from scipy import stats

    current, former = np.asarray(current, float), np.asarray(former, float)
    if current.shape != former.shape or current.ndim != 1 or len(current) == 0:
        raise ValueError(f"paired samples need equal 1-d lengths, got {current.shape} and {former.shape}")
    diff = current - former
    n = len(diff)
    mean = float(diff.mean())
    if n < 2:
        return {"n": n, "mean": mean, "low": float("nan"), "high": float("nan"), "spread": float("nan")}
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n))
    spread = float(max(current.std(ddof=1), former.std(ddof=1)))
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half, "spread": spread}


def verdict(diff: dict, unit: str = "pp", scale: float = 100.0) -> str:
    """One sentence from a paired_difference: lost, gained, or within the noise."""
    m, lo, hi, s = (scale * diff[k] for k in ("mean", "low", "high", "spread"))
    where = f"difference {m:+.2f} {unit}, 95% CI [{lo:+.2f}, {hi:+.2f}] over {diff['n']} seeds, seed spread (std) {s:.2f} {unit}"
    if diff["n"] < 2:
        return f"one seed only: difference {m:+.2f} {unit}, no interval; not a finding"
    if (hi < 0 or lo > 0) and abs(m) <= s:
        return f"{'lower' if hi < 0 else 'higher'} AP but not a finding: {where}; the CI excludes 0 but the difference is within the seed spread"
    if hi < 0:
        return f"AP lost: {where}"
    if lo > 0:
        return f"AP gained: {where}"
    within = "within" if abs(m) <= s else "larger than"
    return f"no AP difference resolved: {where}; the CI holds 0 and the mean difference is {within} the seed spread"


def child_plan(args) -> None:
    """Plans --init on --calib-npy with the tfdefakeq under --package-root; writes --plan-out; prints a JSON row."""
    sys.path.insert(0, str(Path(args.package_root).resolve()))
    import numpy as np

    import tfdefakeq
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.quant.adaptive import plan_adaptive

    model, _ = load_detector(Path(args.init))
    calib = np.load(args.calib_npy)
    start = time.perf_counter()
    plan = plan_adaptive(model, calib, budget=args.avg_bits)
    seconds = time.perf_counter() - start
    plan.save(Path(args.plan_out), overwrite=True)
    print(json.dumps({"package": str(Path(tfdefakeq.__file__).parent), "plan_s": seconds}))


def _plan_summary(path: Path) -> dict:
    from tfdefakeq.quant.horizontal import QuantPlan

    plan = QuantPlan.load(path)
    bits = {}
    for b in plan.weight_bits.values():
        bits[str(b)] = bits.get(str(b), 0) + 1
    return {"layers_at_bits": json.dumps(dict(sorted(bits.items()))), "split_layers": len(plan.salient_channels),
            "per_tensor_layers": len(getattr(plan, "per_tensor", []) or []),
            "predicted_loss": plan.budget.get("sensitivity_sum"), "planned_bytes": plan.budget.get("planned_bytes"),
            "budget_bytes": plan.budget.get("budget_bytes"), "weight_bits": plan.weight_bits}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--former", type=Path, help="a git archive snapshot of the former commit")
    p.add_argument("--former-commit")
    p.add_argument("--commit", help="the commit this tree is (recorded in the header)")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--avg-bits", type=float, default=3.0)
    p.add_argument("--calib-images", type=int, default=64)
    p.add_argument("--work", type=Path, default=Path("/tmp/plan_quality_work"))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "plan_quality")
    # child mode
    p.add_argument("--child-plan", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--package-root", help=argparse.SUPPRESS)
    p.add_argument("--init", help=argparse.SUPPRESS)
    p.add_argument("--calib-npy", help=argparse.SUPPRESS)
    p.add_argument("--plan-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_plan:
        child_plan(args)
        return 0
    if args.former is None or args.former_commit is None or args.commit is None:
        p.error("--former DIR, --former-commit SHA and --commit SHA are required")
    if not (args.former / "tfdefakeq" / "__init__.py").is_file():
        p.error(f"--former {args.former}: no tfdefakeq package there")

    import numpy as np
    import pandas as pd

    from tfdefakeq import train
    from tfdefakeq.core.machineload import LoadSampler
    from tfdefakeq.core.manifest import command_line, versions
    from tfdefakeq.core.report import write_table
    from tfdefakeq.data.folders import balanced_subset, scan_forensynths
    from tfdefakeq.data.synthetic import SyntheticConfig, generate
    from tfdefakeq.engine.export import convert_model
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.quant.horizontal import QuantPlan
    from tfdefakeq.runtime.images import load_images
    from tfdefakeq.runtime.interpreter import machine_info
    from tfdefakeq.runtime.scoring import evaluate_model

    load = LoadSampler().start()
    started = time.perf_counter()
    timings = {}
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    size = args.input_size
    data = generate(config=SyntheticConfig(size=size, seed=0))
    common = ["--data", str(data), "--input-size", str(size), "--batch-size", "32", "--aug-prob", "0.1"]

    t = time.perf_counter()
    float_out = work / "float"
    float_path = float_out / "model.weights.h5"
    if not float_path.exists():
        train.main(train.parse_args(common + ["--out", str(float_out), "--seed", "0", "--backbone", "resnet18", "--highpass",
                                              "--epochs", str(args.epochs), "--lr", "2e-3", "--width", str(args.width)]))
    timings["train_float_s"] = time.perf_counter() - t

    # the calibration images train's planner would use (seed 0), preprocessed, saved once for both planners
    float_model, float_manifest = load_detector(float_path)
    train_samples = scan_forensynths(data, "train")
    calib_samples = balanced_subset(train_samples, args.calib_images, seed=0)
    calib = float_manifest.preprocess.apply(load_images([s.path for s in calib_samples], (size, size)))
    calib_npy = work / "calib.npy"
    np.save(calib_npy, calib)
    val_samples = scan_forensynths(data, "val")
    convert_calib = load_images([s.path for s in balanced_subset(val_samples, 64, 0)], (size, size))

    planners = {"former": (args.former, args.former_commit), "current": (ROOT, args.commit)}
    plans = {}
    for name, (root, commit) in planners.items():
        plan_path = work / name / "bit_plan.json"
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child-plan", "--package-root", str(root),
               "--init", str(float_path), "--calib-npy", str(calib_npy), "--plan-out", str(plan_path),
               "--avg-bits", str(args.avg_bits)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{name} planner failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        QuantPlan.load(plan_path)  # the former plan's JSON must load in the current code
        plans[name] = {"planner": name, "commit": commit, "plan_s": row["plan_s"], "package": row["package"],
                       **_plan_summary(plan_path), "path": plan_path}
        print(name, {k: v for k, v in plans[name].items() if k != "weight_bits"}, flush=True)
    changed = sorted(n for n in plans["current"]["weight_bits"]
                     if plans["current"]["weight_bits"][n] != plans["former"]["weight_bits"].get(n))

    runs = []
    for seed in args.seeds:
        for name, plan in plans.items():
            t = time.perf_counter()
            out = work / name / f"seed{seed}"
            model_path = out / "model.weights.h5"
            if not model_path.exists():
                train.main(train.parse_args(common + ["--out", str(out), "--seed", str(seed), "--init", str(float_path),
                                                      "--scheme", "adaptive", "--bit-plan", str(plan["path"]),
                                                      "--epochs", str(args.qat_epochs), "--lr", "1e-4"]))
            qat_s = time.perf_counter() - t
            model, manifest = load_detector(model_path)
            tflite = out / f"resnet18_{size}_{name}.tflite"
            used = QuantPlan.load(out / "bit_plan.json")  # the plan train wrote beside the model
            if used.weight_bits != plan["weight_bits"]:  # a reused model from a different plan is not this plan's
                raise RuntimeError(f"{out}: the model was trained from another plan than {plan['path']}")
            written = convert_model(model, manifest, "int4", convert_calib, tflite, overwrite=True, plan=used)
            rows, _ = evaluate_model(tflite, data, split="test")
            mean = next(r for r in rows if r["generator"] == "mean")  # over all test generators
            runs.append({"planner": name, "seed": seed, "ap": mean["ap"], "auc": mean["auc"], "acc": mean["acc"], "file_bytes": tflite.stat().st_size,
                         "parity_agrees": written.metrics["parity"]["agrees"],
                         "parity_max_lsb": written.metrics["parity"].get("max_diff_lsb"),
                         "seconds": time.perf_counter() - t, "qat_s": qat_s})
            print(runs[-1], flush=True)
    timings["runs_s"] = sum(r["seconds"] for r in runs)

    from tfdefakeq.runtime.scoring import evaluate_arrays
    from tfdefakeq.engine.export import keras_probs

    test_samples = scan_forensynths(data, "test")
    probs = keras_probs(float_model, float_manifest.preprocess, load_images([s.path for s in test_samples], (size, size)))
    float_ap = evaluate_arrays([s.label for s in test_samples], probs, [s.generator for s in test_samples])[-1]["ap"]

    runs_df = pd.DataFrame(runs)
    ap = {name: runs_df[runs_df.planner == name].sort_values("seed")["ap"].to_numpy() for name in plans}
    diff = paired_difference(ap["current"], ap["former"])
    sentence = verdict(diff)
    plan_rows = []
    for name, plan in plans.items():
        sub = runs_df[runs_df.planner == name]
        plan_rows.append({k: v for k, v in plan.items() if k not in ("weight_bits", "path", "package")} |
                         {"file_bytes": ", ".join(str(b) for b in sorted(set(sub.file_bytes))),
                          "ap_mean": sub.ap.mean(), "ap_std": sub.ap.std(ddof=1) if len(sub) > 1 else float("nan")})
    plans_df = pd.DataFrame(plan_rows)

    machine = machine_info()
    header = {
        "commit": args.commit,
        "former commit": args.former_commit,
        "machine": f"{machine['processor']} ({machine['machine']}, {machine['cpus']} cpus)",
        "versions": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "load": load.stop().sentence(),
        "command": command_line(),
        "settings": f"resnet18 width {args.width} + high-pass front, {size} px, embedded synthetic data ({data.name}); "
                    f"float {args.epochs} epochs (lr 2e-3, seed 0, test AP {float_ap:.4f}); budget --avg-bits "
                    f"{args.avg_bits:g}; {args.calib_images} calibration images (train split, seed 0) for both planners; "
                    f"QAT {args.qat_epochs} epoch(s) per plan and seed with the current code (lr 1e-4, distilled), "
                    f"int4 .tflite, AP on the test split ({len(test_samples)} images)",
        "wall_time_s": f"{time.perf_counter() - started:.0f} ({', '.join(f'{k} {v:.0f}' for k, v in timings.items())})",
    }
    ap_bits = ", ".join(f"{n} {ap[n].mean():.4f} (seeds {' '.join(f'{a:.4f}' for a in ap[n])})" for n in plans)
    same_bytes = set(runs_df[runs_df.planner == "former"].file_bytes) == set(runs_df[runs_df.planner == "current"].file_bytes)
    sizes = {n: sorted(set(runs_df[runs_df.planner == n].file_bytes)) for n in plans}
    summary = [
        f"Plans: {len(changed)} layers at different bits ({', '.join(changed) or 'none'}); predicted loss former "
        f"{plans['former']['predicted_loss']:.6g}, current {plans['current']['predicted_loss']:.6g}; "
        f"split layers {plans['former']['split_layers']} vs {plans['current']['split_layers']}; per-tensor-scale layers "
        f"{plans['former']['per_tensor_layers']} vs {plans['current']['per_tensor_layers']}; planned bytes "
        f"{plans['former']['planned_bytes']} vs {plans['current']['planned_bytes']}.",
        f"File bytes: former {', '.join(map(str, sizes['former']))}, current {', '.join(map(str, sizes['current']))}"
        f" ({'equal' if same_bytes else 'not equal'}; budget {plans['current']['budget_bytes']} bytes).",
        f"Test AP (mean over seeds): {ap_bits}; float model {float_ap:.4f}.",
        f"Current - former: {sentence}.",
    ]
    header["result"] = " ".join(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs_out = runs_df.assign(part="run")
    table = pd.concat([plans_df.assign(part="plan"), runs_out], ignore_index=True)
    write_table(table, args.out, header, "Plan quality: the former planner (bc5b43a) against the current one, AP after QAT",
                {"ap": "{:.4f}", "ap_mean": "{:.4f}", "ap_std": "{:.4f}", "predicted_loss": "{:.6g}", "plan_s": "{:.1f}",
                 "seconds": "{:.1f}", "qat_s": "{:.1f}", **{c: "{:.0f}" for c in ("seed", "split_layers", "per_tensor_layers",
                                                                               "planned_bytes", "budget_bytes", "file_bytes",
                                                                               "parity_max_lsb")}})
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
