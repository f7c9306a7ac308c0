"""The main job, end to end on the embedded default data:

generate data -> train a float ResNet-18 -> QAT (tfmot int8, W4A8, and the adaptive bidirectional scheme at
~3 bits per weight) -> convert (float32, int8, int4, adaptive; each quantized model's decision threshold
calibrated on val to the float model's real-image false-positive rate) -> evaluate every model on the
held-out test split, at 0.5 and at its threshold -> benchmark -> report (Markdown, CSV, PNG).

    python -m tfdefakeq.demo --out runs/demo [--ship tflite_models]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tfdefakeq.core.cli import require, run_cli
from tfdefakeq.core.errors import UserError

VERB = "demo"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tfdefakeq.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--data", default=None, help="use this ForenSynths-style dataset instead of generating the default one")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--width", type=float, default=0.5, help="channel width multiplier of the backbone")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=8, help="float training epochs")
    p.add_argument("--qat-epochs", type=int, default=2, help="QAT fine-tuning epochs per scheme")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--aug-prob", type=float, default=0.1, help="blur / JPEG augmentation probability (CNNDetection's 0.1 setting)")
    p.add_argument("--bench-runs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--avg-bits", type=float, nargs="+", default=[3.0],
                   help="budget of the adaptive model in storage bits per weight (default 3); several: one model each "
                        "(`--avg-bits 3 2.5` makes both shipped adaptive models)")
    p.add_argument("--ship", default=None, help="also copy the int8, int4 and adaptive models + manifests into this folder")
    p.add_argument("--overwrite", action="store_true",
                   help="redo every step and replace the report and shipped models (default: reuse finished steps, "
                        "refuse to replace a finished report)")
    return p.parse_args(argv)


def _step(name: str):
    print(f"\n== {name} ==", flush=True)
    return time.perf_counter()


def _train(args, data: Path, out: Path, extra: list[str]) -> Path:
    from tfdefakeq import train

    model = out / "model.weights.h5"
    if model.exists() and not args.overwrite:
        print(f"reusing {model}")
        return model
    argv = ["--data", str(data), "--out", str(out), "--input-size", str(args.input_size),
            "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--aug-prob", str(args.aug_prob)] + extra
    if (out / "backup").exists():
        argv.append("--resume")
    if args.overwrite:
        argv.append("--overwrite")
    train.main(train.parse_args(argv))
    return model


def _keras_probs(model, samples, size, preprocess):
    import numpy as np

    from tfdefakeq.engine.export import keras_probs
    from tfdefakeq.runtime.images import load_images

    return np.concatenate([keras_probs(model, preprocess, load_images([s.path for s in samples[start:start + 256]], size))
                           for start in range(0, len(samples), 256)])


def _variants(args) -> list[tuple[str, str, list[str]]]:
    """(name in the report, .tflite format, QAT flags or None for the float model) of each converted model."""
    return [("float32", "float32", None),
            ("int8", "int8", ["--scheme", "tfmot_int8"]),
            ("int4", "int4", ["--scheme", "w4a8"]),
            *[(f"adaptive-avg{bits:g}", "int4", ["--scheme", "adaptive", "--avg-bits", f"{bits:g}"]) for bits in args.avg_bits]]


# What the demo imports on its way (training stack, tables, plots; tqdm for the data generator's progress).
DEMO_MODULES = ["tensorflow", "tf_keras", "tensorflow_model_optimization", "pandas", "tabulate", "matplotlib", "tqdm"]


def main(args) -> int:
    require(DEMO_MODULES, "demo (training, conversion and the report)", "dev")
    for bits in args.avg_bits:
        if not bits > 0:  # a budget the allocator cannot meet is refused where it is priced (train)
            raise UserError(f"--avg-bits must be > 0 bits per weight, got {bits:g}")
    import numpy as np
    import pandas as pd

    from tfdefakeq.engine.export import ThresholdReference, convert_model
    from tfdefakeq.data.folders import balanced_subset, scan_forensynths
    from tfdefakeq.core.manifest import Manifest, command_line, manifest_path, versions
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.core.report import markdown_table, plot_model_comparison, record_measurements, write_models_index, write_table
    from tfdefakeq.runtime.latency import bench_model
    from tfdefakeq.runtime.scoring import evaluate_arrays, evaluate_model, format_table, mark_seen
    from tfdefakeq.runtime.threshold import resolve_threshold
    from tfdefakeq.runtime.images import load_images
    from tfdefakeq.runtime.interpreter import machine_info

    from tfdefakeq.core.fileio import check_writable, write_atomic

    from tfdefakeq.core.machineload import LoadSampler

    load = LoadSampler().start()  # the wall time means little without the machine's load beside it
    started = time.perf_counter()
    out = Path(args.out)
    # A finished demo is not redone silently; an interrupted one resumes (finished steps are reused).
    check_writable(out / "report.md", overwrite=args.overwrite)
    variants = _variants(args)
    ship_targets = []
    if args.ship:
        ship_targets = [Path(args.ship) / f"{args.backbone}_{args.input_size}_{name}{suffix}"
                        for name, _, qat in variants if qat for suffix in (".tflite", ".manifest.json")]
        for target in ship_targets:
            check_writable(target, overwrite=args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    t = _step("1/6 data")
    if args.data:
        data = Path(args.data)
    else:
        from tfdefakeq.data.synthetic import SyntheticConfig, generate

        data = generate(config=SyntheticConfig(size=args.input_size, seed=args.seed))
    test_samples = scan_forensynths(data, "test")
    print(f"dataset {data}: {len(test_samples)} test images")
    timings["data_s"] = time.perf_counter() - t

    t = _step("2/6 train float")
    width = ["--width", str(args.width)] if args.width else []
    float_path = _train(args, data, out / "float", ["--backbone", args.backbone, "--highpass", "--epochs", str(args.epochs),
                                                    "--lr", "2e-3"] + width)
    timings["train_float_s"] = time.perf_counter() - t

    t = _step("3/6 QAT fine-tuning")
    sources = {"float32": float_path}
    for name, _, qat in variants[1:]:
        print(f"-- {name}: {' '.join(qat)}")
        folder = out / (name if qat[1] == "adaptive" else qat[1])  # the budget in the name: a resumed run reuses its own
        step = time.perf_counter()
        sources[name] = _train(args, data, folder, ["--init", str(float_path), *qat, "--epochs", str(args.qat_epochs),
                                                    "--lr", "1e-4"])
        timings[f"qat_{name}_s"] = time.perf_counter() - step
    timings["qat_s"] = time.perf_counter() - t

    t = _step("4/6 convert")
    size = (args.input_size, args.input_size)
    val_samples = scan_forensynths(data, "val")
    calib = load_images([s.path for s in balanced_subset(val_samples, 64, args.seed)], size)
    float_model, float_manifest = load_detector(float_path)
    # the threshold of each quantized model: the float model's real-image false-positive rate on val, kept
    val_images = load_images([s.path for s in val_samples], size)
    val_labels = np.array([s.label for s in val_samples])
    val_probs = _keras_probs(float_model, val_samples, size, float_manifest.preprocess)
    val_real_fpr = float(np.mean(val_probs[val_labels == 0] > 0.5))
    reference = ThresholdReference(val_images, val_labels, val_probs, f"the float model {float_path}", "val")
    tflite = {}
    for name, fmt, _ in variants:
        model, manifest = (float_model, float_manifest) if name == "float32" else load_detector(sources[name])
        path = out / "tflite" / f"{manifest.backbone}_{args.input_size}_{name}.tflite"
        if path.exists() and not args.overwrite:
            print(f"reusing {path}")
        else:
            plan = None
            if manifest.scheme == "adaptive":
                from tfdefakeq.quant.horizontal import QuantPlan

                plan = QuantPlan.load(sources[name].parent / "bit_plan.json")  # the file must hold its budget
            written = convert_model(model, manifest, fmt, calib, path, overwrite=True, plan=plan,
                                    threshold_reference=reference)
            print(f"{path.name}: {written.size_bytes:,} bytes, parity {written.metrics['parity']}, "
                  f"threshold {written.threshold['value']:.4f}")
        tflite[name] = path
    timings["convert_s"] = time.perf_counter() - t

    t = _step("5/6 evaluate on the test split")
    probs = _keras_probs(float_model, test_samples, size, float_manifest.preprocess)
    per_generator = {"keras float": evaluate_arrays([s.label for s in test_samples], probs, [s.generator for s in test_samples])}
    at_half, thresholds = {"keras float": per_generator["keras float"]}, {"keras float": 0.5}
    for name, path in tflite.items():
        at_half[f"tflite {name}"], scores = evaluate_model(path, data, split="test")  # at 0.5
        manifest = Manifest.load(manifest_path(path))
        threshold, _ = resolve_threshold(manifest, None)
        thresholds[f"tflite {name}"] = threshold
        rows = evaluate_arrays([r["label"] for r in scores], [r["prob"] for r in scores], [r["generator"] for r in scores],
                               threshold)
        per_generator[f"tflite {name}"] = mark_seen(rows, manifest.train_generators)
    for name, rows in per_generator.items():
        print(f"\n{name} (threshold {thresholds[name]:.4f})\n{format_table(rows)}")
    timings["evaluate_s"] = time.perf_counter() - t

    t = _step("6/6 benchmark (1 thread, XNNPACK)")
    bench = {name: bench_model(path, threads=1, warmup=10, runs=args.bench_runs) for name, path in tflite.items()}
    timings["bench_s"] = time.perf_counter() - t

    import json

    records = []
    reference_row = per_generator["keras float"][-1]
    float_ap = reference_row["ap"]
    for name, rows in per_generator.items():
        mean, half = rows[-1], at_half[name][-1]
        fmt = name.split()[-1] if name.startswith("tflite") else None
        man = json.loads(manifest_path(tflite[fmt]).read_text()) if fmt else None
        records.append({
            "model": name,
            "scheme": man["scheme"] if man else "float",
            "threshold": thresholds[name],
            "ap": mean["ap"], "auc": mean["auc"], "acc": mean["acc"],
            "real_acc": mean["real_acc"], "fake_acc": mean["fake_acc"],
            "delta_acc_pp": 100 * (mean["acc"] - reference_row["acc"]),
            "delta_real_acc_pp": 100 * (mean["real_acc"] - reference_row["real_acc"]),
            "acc_at_0.5": half["acc"], "real_acc_at_0.5": half["real_acc"], "eer": mean["eer"],
            "delta_ap_pp": 100 * (mean["ap"] - float_ap),
            "size_bytes": tflite[fmt].stat().st_size if fmt else float("nan"),
            "size_mb": tflite[fmt].stat().st_size / 1e6 if fmt else float("nan"),
            "latency_ms_p50": bench[fmt]["latency_ms_p50"] if fmt else float("nan"),
            "latency_ms_p90": bench[fmt]["latency_ms_p90"] if fmt else float("nan"),
            "parity_max_lsb": man["metrics"]["parity"].get("max_diff_lsb", 0.0) if man else float("nan"),
            "parity_agrees": man["metrics"]["parity"]["agrees"] if man else None,
        })
    df = pd.DataFrame(records)
    per_gen = pd.DataFrame([{"model": name, "threshold": thresholds[name], **row}
                            for name, rows in per_generator.items() for row in rows])
    machine = machine_info()
    total = time.perf_counter() - started
    header = {
        "machine": f"{machine['processor']} ({machine['machine']}, {machine['cpus']} cpus)",
        "versions": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "settings": f"{args.backbone} width {args.width} + fixed high-pass front, {args.input_size}px, float {args.epochs} epochs, "
                    f"QAT {args.qat_epochs} epochs (adaptive: --avg-bits {' '.join(f'{b:g}' for b in args.avg_bits)}, "
                    f"distilled from the float model), "
                    f"batch {args.batch_size}, blur/JPEG p={args.aug_prob}, seed {args.seed}; latency: ai-edge-litert, "
                    f"1 thread, XNNPACK, median of {args.bench_runs} single-image invokes",
        "threshold": f"acc, real_acc, fake_acc at each model's threshold: 0.5 for the float models; for a quantized one "
                     f"the value its manifest stores, calibrated on val ({len(val_samples)} images) to the float model's "
                     f"real-image false-positive rate there ({100 * val_real_fpr:.2f}%); "
                     f"delta_* against keras float; acc_at_0.5, real_acc_at_0.5 at 0.5",
        "data": f"{data} (test split, {len(test_samples)} images)",
        "command": command_line(),
        "wall_time_s": f"{total:.0f} ({', '.join(f'{k} {v:.0f}' for k, v in timings.items())})",
        "load": load.stop().sentence(),
    }
    formats = {"size_bytes": "{:,.0f}", "delta_ap_pp": "{:+.2f}", "delta_acc_pp": "{:+.2f}", "delta_real_acc_pp": "{:+.2f}",
               "latency_ms_p50": "{:.3f}", "latency_ms_p90": "{:.3f}",
               "parity_max_lsb": "{:.0f}", "n": "{:.0f}", "n_real": "{:.0f}", "n_fake": "{:.0f}"}
    table = df.drop(columns=["size_mb"])
    write_table(table, out / "report", header, "tfdefakeq demo: float Keras vs float32 / int8 / int4 / adaptive TFLite",
                formats)
    write_table(per_gen, out / "report_per_generator", header, "tfdefakeq demo: metrics per generator", formats)
    plot_model_comparison(df, out / "report.png", f"{args.backbone} (width {args.width}) at {args.input_size}px on the embedded test split")
    print("\n" + markdown_table(table, formats))
    print(f"\nreport: {out / 'report.md'}, {out / 'report.png'}; total {total:.0f} s")

    # The models' manifests carry what was measured on them, so a shipped file explains itself.
    for fmt, path in tflite.items():
        record_measurements(path, per_generator[f"tflite {fmt}"], bench[fmt],
                            f"{data} (embedded synthetic)" if not args.data else str(data), at_half[f"tflite {fmt}"])
    if args.ship:
        for target in ship_targets:
            source = out / "tflite" / target.name
            write_atomic(target, source.read_bytes(), overwrite=True)  # checked for --overwrite at start
        index = write_models_index(args.ship)
        print(f"shipped {', '.join(name for name, _, qat in variants if qat)} models to {args.ship} (index: {index})")
    int8 = df[df.model == "tflite int8"].iloc[0]
    for _, row in df[df.model.str.startswith("tflite") & (df.scheme != "float")].iterrows():
        print(f"{row.model}: delta AP {row.delta_ap_pp:+.2f} pp, size / int8 size {row.size_bytes / int8.size_bytes:.2f}; "
              f"at its threshold {row.threshold:.4f}: delta acc {row.delta_acc_pp:+.2f} pp, delta real acc "
              f"{row.delta_real_acc_pp:+.2f} pp (at 0.5: {100 * (row['acc_at_0.5'] - df.acc[0]):+.2f}, "
              f"{100 * (row['real_acc_at_0.5'] - df.real_acc[0]):+.2f})")
    return 0


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
