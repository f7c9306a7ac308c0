"""Which decision threshold a quantized model should ship with: three val-calibrated rules against 0.5, on test.

    python benchmarks/threshold_rules.py --demo runs/demo --commit $(git rev-parse HEAD)

Reads a finished `python -m tfdefakeq.demo` run (its float Keras model and its quantized .tflite files) and
the data it used (the embedded synthetic set by default), scores the val and test splits with every model,
calibrates a threshold on val by each rule and measures it on test against the float model at 0.5:
- `at_0.5`: no calibration;
- `float_real_fpr` (what `convert` stores, `tfdefakeq.runtime.threshold.match_real_fpr`): the quantized model
  flags as many real val images as the float model does at 0.5;
- `decision_agreement`: the threshold at which the most val decisions agree with the float model's at 0.5
  (the middle of the best range);
- `affine_logit`: a least-squares line from float to quantized logits on val, read at float logit 0.
Writes benchmarks/results/threshold_rules.{csv,md}: per model and rule the threshold, test acc / real_acc /
fake_acc, their change against the float model in pp, and the share of test decisions equal to the float
model's. No training: it takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

COLUMNS = ["model", "rule", "threshold", "acc", "real_acc", "fake_acc", "delta_acc_pp", "delta_real_acc_pp",
           "agreement_with_float"]
ACC_TARGET_PP, REAL_ACC_TARGET_PP = 1.0, 2.0  # issue 14: at the shipped threshold, against float


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", required=True, help="the --out folder of a finished demo run")
    p.add_argument("--data", default=None, help="its dataset (default: the embedded synthetic set, generated or cached)")
    p.add_argument("--commit", required=True, help="the commit of the code measured (git rev-parse HEAD)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "threshold_rules"))
    return p.parse_args(argv)


def _logit(p):
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _gaps(q):
    """Candidate thresholds: halfway between adjacent distinct scores, and below / above all of them."""
    u = np.unique(q)
    return np.r_[u[0] / 2, (u[:-1] + u[1:]) / 2, (u[-1] + 1) / 2]


def decision_agreement(labels, q, f):
    candidates = _gaps(q)
    agree = np.array([np.mean((q > t) == (f > 0.5)) for t in candidates])
    best = candidates[agree == agree.max()]
    return float((best.min() + best.max()) / 2)


def affine_logit(labels, q, f):
    slope, intercept = np.polyfit(_logit(f), _logit(q), 1)
    return float(1 / (1 + np.exp(-intercept)))


def main(args) -> int:
    import pandas as pd

    from tfdefakeq.core.machineload import LoadSampler
    from tfdefakeq.core.manifest import command_line, versions
    from tfdefakeq.core.report import write_table
    from tfdefakeq.data.folders import scan_forensynths
    from tfdefakeq.engine.export import keras_probs
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.runtime.images import load_images
    from tfdefakeq.runtime.interpreter import machine_info
    from tfdefakeq.runtime.loader import load_model
    from tfdefakeq.runtime.threshold import match_real_fpr

    load = LoadSampler().start()
    demo = Path(args.demo)
    if args.data:
        data = Path(args.data)
    else:
        from tfdefakeq.data.synthetic import SyntheticConfig, generate

        data = generate(config=SyntheticConfig(size=64, seed=0))
    float_model, float_manifest = load_detector(demo / "float" / "model.weights.h5")
    size = tuple(float_manifest.input_shape[:2])
    splits = {}
    for split in ("val", "test"):
        samples = scan_forensynths(data, split)
        images = load_images([s.path for s in samples], size)
        splits[split] = (np.array([s.label for s in samples]), images, keras_probs(float_model, float_manifest.preprocess, images))
    rules = {"at_0.5": lambda y, q, f: 0.5,
             "float_real_fpr": lambda y, q, f: match_real_fpr(y, q, f)["value"],
             "decision_agreement": decision_agreement,
             "affine_logit": affine_logit}
    test_labels, _, test_float = splits["test"]
    real, fake = test_labels == 0, test_labels == 1
    reference = {"acc": np.mean((test_float > 0.5) == fake), "real_acc": np.mean(test_float[real] <= 0.5)}
    rows = []
    for path in sorted((demo / "tflite").glob("*.tflite")):
        model, manifest = load_model(path)
        if manifest.format == "float32":
            continue
        q = {split: model.predict_proba(images, manifest.preprocess).astype(np.float64)
             for split, (_, images, _) in splits.items()}
        for rule, pick in rules.items():
            t = pick(splits["val"][0], q["val"], splits["val"][2])
            called = q["test"] > t
            acc, real_acc = float(np.mean(called == fake)), float(np.mean(~called[real]))
            rows.append({"model": path.stem, "rule": rule, "threshold": t, "acc": acc, "real_acc": real_acc,
                         "fake_acc": float(np.mean(called[fake])), "delta_acc_pp": 100 * (acc - reference["acc"]),
                         "delta_real_acc_pp": 100 * (real_acc - reference["real_acc"]),
                         "agreement_with_float": float(np.mean(called == (test_float > 0.5)))})
    df = pd.DataFrame(rows, columns=COLUMNS)
    val_labels, _, val_float = splits["val"]
    findings = []
    for rule in rules:
        part = df[df.rule == rule]
        ok_acc = int((part.delta_acc_pp.abs() <= ACC_TARGET_PP).sum())
        ok_real = int((part.delta_real_acc_pp.abs() <= REAL_ACC_TARGET_PP).sum())
        findings.append(f"{rule}: |delta acc| <= {ACC_TARGET_PP:g} pp for {ok_acc} of {len(part)} models, "
                        f"|delta real acc| <= {REAL_ACC_TARGET_PP:g} pp for {ok_real} of {len(part)} "
                        f"(largest |delta real acc| {part.delta_real_acc_pp.abs().max():.2f} pp)")
    machine = machine_info()
    header = {
        "machine": f"{machine['processor']} ({machine['machine']}, {machine['cpus']} cpus)",
        "versions": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "commit": args.commit,
        "load": load.stop().sentence(),
        "data": f"{data}: val {len(val_labels)} images ({int((val_labels == 0).sum())} real), test {len(test_labels)} "
                f"({int(real.sum())} real)",
        "float model": f"{demo / 'float' / 'model.weights.h5'}: flags {100 * np.mean(val_float[val_labels == 0] > 0.5):.2f}% "
                       f"of val reals and {100 * (1 - reference['real_acc']):.2f}% of test reals at 0.5; test acc "
                       f"{reference['acc']:.4f}, real acc {reference['real_acc']:.4f}",
        "findings": "; ".join(findings),
        "command": command_line(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    formats = {"threshold": "{:.4f}", "delta_acc_pp": "{:+.2f}", "delta_real_acc_pp": "{:+.2f}"}
    for path in write_table(df, args.out, header, "Decision threshold rules: calibrated on val, measured on test", formats):
        print(f"wrote {path}")
    print("\n".join(findings))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
