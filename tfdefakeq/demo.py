"""The main job, end to end on the embedded default data:

generate data -> train a float ResNet-18 -> QAT (tfmot int8, W4A8) -> convert (float32, int8, int4)
-> evaluate every model on the held-out test split -> benchmark -> report (Markdown, CSV, PNG).

    python -m tfdefakeq.demo --out runs/demo [--ship tflite_models]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tfdefakeq.core.cli import require, run_cli

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
    p.add_argument("--ship", default=None, help="also copy the int8 and int4 models + manifests into this folder")
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

    from tfdefakeq.runtime.images import load_images

    probs = []
    for start in range(0, len(samples), 256):
        images = preprocess.apply(load_images([s.path for s in samples[start:start + 256]], size))
        logits = model.predict(images, verbose=0, batch_size=64).reshape(-1)
        probs.append(1.0 / (1.0 + np.exp(-logits)))
    return np.concatenate(probs)


# What the demo imports on its way (training stack, tables, plots; tqdm for the data generator's progress).
DEMO_MODULES = ["tensorflow", "tf_keras", "tensorflow_model_optimization", "pandas", "tabulate", "matplotlib", "tqdm"]


def main(args) -> int:
    require(DEMO_MODULES, "demo (training, conversion and the report)", "dev")
    import pandas as pd

    from tfdefakeq.engine.export import convert_model
    from tfdefakeq.data.folders import balanced_subset, scan_forensynths
    from tfdefakeq.core.manifest import command_line, manifest_path, versions
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.core.report import markdown_table, plot_model_comparison, record_measurements, write_models_index, write_table
    from tfdefakeq.runtime.latency import bench_model
    from tfdefakeq.runtime.scoring import evaluate_arrays, evaluate_model, format_table
    from tfdefakeq.runtime.images import load_images
    from tfdefakeq.runtime.interpreter import machine_info

    from tfdefakeq.core.fileio import check_writable, write_atomic

    started = time.perf_counter()
    out = Path(args.out)
    # A finished demo is not redone silently; an interrupted one resumes (finished steps are reused).
    check_writable(out / "report.md", overwrite=args.overwrite)
    ship_targets = []
    if args.ship:
        ship_targets = [Path(args.ship) / f"{args.backbone}_{args.input_size}_{fmt}{suffix}"
                        for fmt in ("int8", "int4") for suffix in (".tflite", ".manifest.json")]
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
    qat_paths = {}
    for scheme in ("tfmot_int8", "w4a8"):
        print(f"-- {scheme}")
        qat_paths[scheme] = _train(args, data, out / scheme, ["--init", str(float_path), "--scheme", scheme,
                                                              "--epochs", str(args.qat_epochs), "--lr", "1e-4"])
    timings["qat_s"] = time.perf_counter() - t

    t = _step("4/6 convert")
    size = (args.input_size, args.input_size)
    calib = load_images([s.path for s in balanced_subset(scan_forensynths(data, "val"), 64, args.seed)], size)
    variants = [("float32", float_path, "float32"), ("int8", qat_paths["tfmot_int8"], "int8"), ("int4", qat_paths["w4a8"], "int4")]
    tflite = {}
    keras_models = {}
    for name, source, fmt in variants:
        model, manifest = load_detector(source)
        keras_models[name] = (model, manifest)
        path = out / "tflite" / f"{manifest.backbone}_{args.input_size}_{name}.tflite"
        if path.exists() and not args.overwrite:
            print(f"reusing {path}")
        else:
            written = convert_model(model, manifest, fmt, calib, path, overwrite=True)
            print(f"{path.name}: {written.size_bytes:,} bytes, parity {written.metrics['parity']}")
        tflite[name] = path
    timings["convert_s"] = time.perf_counter() - t

    t = _step("5/6 evaluate on the test split")
    float_model, float_manifest = keras_models["float32"]
    probs = _keras_probs(float_model, test_samples, size, float_manifest.preprocess)
    per_generator = {"keras float": evaluate_arrays([s.label for s in test_samples], probs, [s.generator for s in test_samples])}
    for name, path in tflite.items():
        rows, _ = evaluate_model(path, data, split="test")
        per_generator[f"tflite {name}"] = rows
    for name, rows in per_generator.items():
        print(f"\n{name}\n{format_table(rows)}")
    timings["evaluate_s"] = time.perf_counter() - t

    t = _step("6/6 benchmark (1 thread, XNNPACK)")
    bench = {name: bench_model(path, threads=1, warmup=10, runs=args.bench_runs) for name, path in tflite.items()}
    timings["bench_s"] = time.perf_counter() - t

    import json

    records = []
    float_ap = per_generator["keras float"][-1]["ap"]
    for name, rows in per_generator.items():
        mean = rows[-1]
        fmt = name.split()[-1] if name.startswith("tflite") else None
        man = json.loads(manifest_path(tflite[fmt]).read_text()) if fmt else None
        records.append({
            "model": name,
            "scheme": man["scheme"] if man else "float",
            "ap": mean["ap"], "auc": mean["auc"], "acc": mean["acc"],
            "real_acc": mean["real_acc"], "fake_acc": mean["fake_acc"], "eer": mean["eer"],
            "delta_ap_pp": 100 * (mean["ap"] - float_ap),
            "size_bytes": tflite[fmt].stat().st_size if fmt else float("nan"),
            "size_mb": tflite[fmt].stat().st_size / 1e6 if fmt else float("nan"),
            "latency_ms_p50": bench[fmt]["latency_ms_p50"] if fmt else float("nan"),
            "latency_ms_p90": bench[fmt]["latency_ms_p90"] if fmt else float("nan"),
            "parity_max_lsb": man["metrics"]["parity"].get("max_diff_lsb", 0.0) if man else float("nan"),
            "parity_agrees": man["metrics"]["parity"]["agrees"] if man else None,
        })
    df = pd.DataFrame(records)
    per_gen = pd.DataFrame([{"model": name, **row} for name, rows in per_generator.items() for row in rows])
    machine = machine_info()
    total = time.perf_counter() - started
    header = {
        "machine": f"{machine['processor']} ({machine['machine']}, {machine['cpus']} cpus)",
        "versions": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "settings": f"{args.backbone} width {args.width} + fixed high-pass front, {args.input_size}px, float {args.epochs} epochs, "
                    f"QAT {args.qat_epochs} epochs, batch {args.batch_size}, blur/JPEG p={args.aug_prob}, seed {args.seed}; latency: ai-edge-litert, "
                    f"1 thread, XNNPACK, median of {args.bench_runs} single-image invokes",
        "data": f"{data} (test split, {len(test_samples)} images)",
        "command": command_line(),
        "wall_time_s": f"{total:.0f} ({', '.join(f'{k} {v:.0f}' for k, v in timings.items())})",
    }
    formats = {"size_bytes": "{:,.0f}", "delta_ap_pp": "{:+.2f}", "latency_ms_p50": "{:.3f}", "latency_ms_p90": "{:.3f}",
               "parity_max_lsb": "{:.0f}", "n": "{:.0f}", "n_real": "{:.0f}", "n_fake": "{:.0f}"}
    table = df.drop(columns=["size_mb"])
    write_table(table, out / "report", header, "tfdefakeq demo: float Keras vs float32 / int8 / int4 TFLite", formats)
    write_table(per_gen, out / "report_per_generator", header, "tfdefakeq demo: metrics per generator", formats)
    plot_model_comparison(df, out / "report.png", f"{args.backbone} (width {args.width}) at {args.input_size}px on the embedded test split")
    print("\n" + markdown_table(table, formats))
    print(f"\nreport: {out / 'report.md'}, {out / 'report.png'}; total {total:.0f} s")

    # The models' manifests carry what was measured on them, so a shipped file explains itself.
    for fmt, path in tflite.items():
        record_measurements(path, per_generator[f"tflite {fmt}"], bench[fmt],
                            f"{data} (embedded synthetic)" if not args.data else str(data))
    if args.ship:
        for target in ship_targets:
            source = out / "tflite" / target.name
            write_atomic(target, source.read_bytes(), overwrite=True)  # checked for --overwrite at start
        index = write_models_index(args.ship)
        print(f"shipped int8 and int4 models to {args.ship} (index: {index})")
    int8 = df[df.model == "tflite int8"].iloc[0]
    int4 = df[df.model == "tflite int4"].iloc[0]
    print(f"int8 delta AP {int8.delta_ap_pp:+.2f} pp; int4 size / int8 size = {int4.size_bytes / int8.size_bytes:.2f}")
    return 0


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli()
