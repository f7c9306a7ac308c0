"""Quantization methods on the same detectors and data: float, PTQ, tfmot, ai-edge-quantizer, LSQ and
the adaptive bidirectional scheme with its ablations, each measured as the .tflite the device runs.

    python benchmarks/quant_methods.py [--backbones resnet18 mobilenet_v2 resnet50] [--methods ...]
                                       [--input-size 64] [--float-epochs 8] [--qat-epochs 2] [--seed 0]

Per backbone: a float detector (fixed high-pass front, width multiplier BACKBONE_WIDTH) is trained
on the embedded synthetic data (`tfdefakeq.data.synthetic`, default config) or reused from --work;
every method then fine-tunes it (QAT methods: --qat-epochs at lr 1e-4, calibration on 128 train
images) or quantizes it after training (PTQ), converts it through `tfdefakeq.convert` (parity
checked), and the .tflite is evaluated on the test split (photos held out from training; AP, AUC
and accuracy are means over the generators) and timed (ai-edge-litert, 1 thread, XNNPACK, median
of single invokes; INT4/INT2 unpacked to INT8 at load).

Columns: w_bits / a_bits (body weight and activation bits), avg_bits (storage bits per weight over
every kernel in the file: INT2 = 2, INT4 = 4, INT8 = 8, float = 32), size_bytes (the .tflite),
delta_ap_pp (TFLite AP minus the float Keras model's AP, percentage points), qat_step_ratio (a
training step of the method over a float training step, same batch, steady state).

Writes benchmarks/results/quant_methods.{csv,md,png} and quant_step_time.{csv,md}. Rows are appended
to the CSV as they finish; a rerun skips (backbone, method, seed) rows already there (--fresh
starts over).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The step timing runs five models in one process; oneDNN's primitive cache (1024 by default) then
# thrashes and whichever model is timed after others pays for it (measured: the same ResNet-18 QAT
# step read 1.26x or 1.58x float depending on build order; 1.27x / 1.28x with this capacity). One
# training run (a model and its teacher) fits the default cache, so this is its real step time.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16384")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
COLUMNS = ["backbone", "method", "seed", "w_bits", "a_bits", "avg_bits", "size_bytes", "ap", "auc", "acc", "delta_ap_pp",
           "latency_ms", "qat_step_ratio", "max_lsb", "int_types", "seconds", "error"]
BACKBONE_WIDTH = {"resnet18": 0.5, "resnet50": 0.5, "mobilenet_v2": 0.5}
ADAPTIVE = ["--scheme", "adaptive"]
# name -> (kind, options, w_bits label). kinds: float32 / ptq (convert the float model), qat
# (tfdefakeq.train options), aeq (ai-edge-quantizer recipe on the float32 .tflite).
METHODS = {
    "float": ("float32", [], "32"),
    "ptq_int8": ("ptq", [], "8"),
    "tfmot_int8": ("qat", ["--scheme", "tfmot_int8"], "8"),
    "tfmot_nbit_w4a8": ("qat", ["--scheme", "tfmot_nbit_w4a8"], "4"),
    "aeq_dyn_wi4": ("aeq", [], "4"),
    "aeq_w4a8": ("aeq", [], "4"),
    "w4a8": ("qat", ["--scheme", "w4a8"], "4"),
    "lsq_w4a8": ("qat", ["--scheme", "lsq_w4a8"], "4"),
    "adaptive_w4a8": ("qat", ADAPTIVE, "mixed"),  # no budget given: the bytes of the uniform W4A8 file, redistributed
    "adaptive_avg3": ("qat", ADAPTIVE + ["--avg-bits", "3"], "mixed"),
    "adaptive_avg2.5": ("qat", ADAPTIVE + ["--avg-bits", "2.5"], "mixed"),
    # a size target as a user gives it: the .tflite at most float32 .tflite / 10.7 bytes
    "adaptive_fp32_10.7x": ("qat", ADAPTIVE + ["--budget-bytes", "{fp32/10.7}"], "mixed"),
    # ablations of adaptive_avg3: each part off (the same storage budget where it applies)
    "adaptive_avg3_no_horizontal": ("qat", ADAPTIVE + ["--bit-plan", "{uniform2}", "--salient-ratio", "0.03125"], "2"),
    "adaptive_avg3_no_vertical": ("qat", ADAPTIVE + ["--avg-bits", "3", "--salient-ratio", "0"], "mixed"),
    "adaptive_avg3_random_channels": ("qat", ADAPTIVE + ["--avg-bits", "3", "--channel-choice", "random"], "mixed"),
    "adaptive_avg3_no_kd": ("qat", ADAPTIVE + ["--avg-bits", "3", "--distill", "off"], "mixed"),
    "lsq_w2a8": ("qat", ["--scheme", "lsq_w2a8"], "2"),
}
STEP_TIMED = ["tfmot_int8", "lsq_w4a8", "adaptive_w4a8", "adaptive_avg3"]
SHIPPED = [("resnet18", "adaptive_avg3"), ("resnet18", "adaptive_avg2.5")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["resnet18", "mobilenet_v2", "resnet50"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--float-epochs", type=int, default=8)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=50, help="timed invokes per model")
    p.add_argument("--work", default=str(ROOT / "runs" / "quant_methods"), help="models and .tflite files")
    p.add_argument("--results", default=str(RESULTS), help="folder of the tables")
    p.add_argument("--fresh", action="store_true", help="start the tables over")
    p.add_argument("--remeasure-steps", action="store_true", help="time the training steps again (replaces the "
                                                                       "backbone's rows of quant_step_time)")
    p.add_argument("--retry-errors", action="store_true", help="run again the rows that ended in an error")
    p.add_argument("--ship", default=None, help="copy the SHIPPED methods' .tflite files (with measurements in their "
                                                "manifests) into this folder and rewrite its README index")
    return p.parse_args(argv)


def _train(data, out: Path, args, extra: list[str]) -> Path:
    from tfdefakeq import train

    final = out / "model.weights.h5"
    if final.exists():
        return final
    argv = ["--data", str(data), "--out", str(out), "--input-size", str(args.input_size), "--batch-size", str(args.batch_size),
            "--seed", str(args.seed), "--aug-prob", "0.1"] + extra
    if (out / "backup").exists():
        argv.append("--resume")
    train.main(train.parse_args(argv))
    return final


def storage_bits(path) -> tuple[float, str]:
    """(storage bits per kernel value over every kernel of the .tflite, its tensor types)."""
    from ai_edge_litert import schema_py_generated as schema

    from tfdefakeq.runtime.modelinfo import TENSOR_TYPES

    names = {code: name for code, (name, _) in TENSOR_TYPES.items() if name in ("FLOAT32", "INT8", "INT4", "INT2", "UINT8")}
    bits = {code: TENSOR_TYPES[code][1] for code in names}
    model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    total = weighted = 0
    kinds = set()
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin not in (3, 4, 9):  # CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED: input 1 is the kernel
                continue
            tensor = graph.tensors[op.inputs[1]]
            buffer = model.buffers[tensor.buffer]
            if buffer is None or buffer.data is None or tensor.type not in bits:
                continue
            n = int(np.prod(tensor.shape))
            total += n
            weighted += n * bits[tensor.type]
            kinds.add(names[tensor.type])
    return weighted / max(total, 1), "+".join(sorted(kinds))


def step_times(models: dict, x, y, rounds: int = 7, steps: int = 4, warmup: int = 3) -> dict[str, float]:
    """Seconds per training step of each compiled model on one in-memory batch, steady state: the
    models take turns (`rounds` x `steps` steps each) and each keeps its median round, so load from
    other processes on the shared cores falls on all of them alike instead of on whichever ran last."""
    for model in models.values():
        for _ in range(warmup):
            model.train_on_batch(x, y)
    rounds_s = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)
            rounds_s[name].append((time.perf_counter() - start) / steps)
    return {name: float(np.median(times)) for name, times in rounds_s.items()}


def measure_step_times(float_path: Path, data, args) -> dict[str, float]:
    """Training-step seconds of the float model and of the STEP_TIMED QAT methods (the adaptive one
    with its float teacher, as train runs it)."""
    from tfdefakeq.data.folders import balanced_subset, scan_forensynths
    from tfdefakeq.core.errors import UserError
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.quant import quantize
    from tfdefakeq.quant.distill import Distiller
    from tfdefakeq.runtime.images import load_images
    from tfdefakeq.core.tfcompat import keras

    samples = balanced_subset(scan_forensynths(data, "train"), args.batch_size, args.seed)
    model, manifest = load_detector(float_path)
    x = manifest.preprocess.apply(load_images([s.path for s in samples], (args.input_size,) * 2))
    y = np.array([[s.label] for s in samples], np.float32)

    def compiled(m):
        m.compile(optimizer=keras.optimizers.AdamW(1e-4), loss=keras.losses.BinaryCrossentropy(from_logits=True))
        return m

    models = {"float": compiled(model)}
    for method in STEP_TIMED:
        options = METHODS[method][1]
        scheme = options[1]
        budget = float(options[options.index("--avg-bits") + 1]) if "--avg-bits" in options else None
        try:
            qat = quantize(model, scheme, x, budget=budget)
        except UserError as e:  # a budget this backbone cannot meet: no step to time
            print(f"{method}: not timed: {e}", flush=True)
            continue
        teacher, _ = load_detector(float_path)  # its own copy: the float row above keeps training
        models[method] = compiled(Distiller(qat, teacher) if scheme == "adaptive" else qat)
    return step_times(models, x, y)


def uniform_plan(float_path: Path, bits: int, out: Path) -> Path:
    """A --bit-plan file with every body layer at `bits` (the no-horizontal ablation)."""
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.quant.fold import fold_batchnorm
    from tfdefakeq.quant.horizontal import QuantPlan
    from tfdefakeq.quant.schemes import plan_weight_bits

    model, _ = load_detector(float_path)
    path = out / f"uniform{bits}_plan.json"
    QuantPlan(weight_bits=plan_weight_bits(fold_batchnorm(model), bits)).save(path, overwrite=True)
    return path


def run_method(method: str, backbone: str, float_path: Path, data, args, work: Path, calib_uint8) -> dict:
    from tfdefakeq.engine.export import convert_model
    from tfdefakeq.core.manifest import Manifest, manifest_path
    from tfdefakeq.engine.modelio import load_detector

    kind, options, _ = METHODS[method]
    tflite = work / "tflite" / f"{backbone}_{method}_s{args.seed}.tflite"
    if kind == "aeq":
        from tfdefakeq.quant.baselines import aeq_quantize
        from tfdefakeq.core.fileio import write_atomic

        float_tflite = work / "tflite" / f"{backbone}_float_s{args.seed}.tflite"
        if not float_tflite.exists():
            run_method("float", backbone, float_path, data, args, work, calib_uint8)
        manifest = Manifest.load(manifest_path(float_tflite))
        content = aeq_quantize(float_tflite.read_bytes(), method, manifest.preprocess.apply(calib_uint8))
        write_atomic(tflite, content, overwrite=True)
        manifest.scheme, manifest.format, manifest.size_bytes = method, method, len(content)
        manifest.save(manifest_path(tflite), overwrite=True)
        return {"max_lsb": float("nan")}
    if kind == "qat":
        options = [uniform_plan(float_path, 2, work).as_posix() if o == "{uniform2}" else o for o in options]
        if "{fp32/10.7}" in options:
            float_tflite = work / "tflite" / f"{backbone}_float_s{args.seed}.tflite"
            if not float_tflite.exists():
                run_method("float", backbone, float_path, data, args, work, calib_uint8)
            options = [str(int(float_tflite.stat().st_size / 10.7)) if o == "{fp32/10.7}" else o for o in options]
        source = _train(data, work / f"{backbone}_{method}_s{args.seed}", args,
                        ["--init", str(float_path), "--epochs", str(args.qat_epochs), "--lr", "1e-4"] + options)
        fmt = "auto"
    else:
        source, fmt = float_path, ("float32" if kind == "float32" else "int8")
    model, manifest = load_detector(source)
    if fmt == "auto":
        from tfdefakeq.quant.qat import get_scheme

        fmt = get_scheme(manifest.scheme).format
    # Our methods must pass the Keras-vs-TFLite parity check; a baseline's .tflite is measured as the
    # tool makes it (PTQ's error is the thing measured; tfmot's own QAT graphs may exceed our bound):
    # max_lsb says how far each one is from its Keras model.
    ours = method.startswith(("w4a8", "lsq", "adaptive"))
    written = convert_model(model, manifest, fmt, calib_uint8, tflite, overwrite=True, require_parity=ours)
    return {"max_lsb": written.metrics["parity"].get("max_diff_lsb", float("nan"))}


def main(args) -> int:
    import pandas as pd

    from tfdefakeq.data.folders import balanced_subset, scan_forensynths
    from tfdefakeq.data.synthetic import SyntheticConfig, generate
    from tfdefakeq.core.manifest import command_line, versions
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.core.report import write_table
    from tfdefakeq.runtime.latency import bench_model
    from tfdefakeq.runtime.scoring import evaluate_arrays, evaluate_model
    from tfdefakeq.runtime.images import load_images
    from tfdefakeq.runtime.interpreter import machine_info

    from tfdefakeq.core.machineload import LoadSampler

    load = LoadSampler().start()
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    csv_path = results / "quant_methods_rows.csv"
    done = pd.read_csv(csv_path) if csv_path.exists() and not args.fresh else pd.DataFrame(columns=COLUMNS)
    if args.retry_errors and "error" in done:
        done = done[done["error"].isna() | (done["error"] == "")].reset_index(drop=True)
    steps_path = results / "quant_step_time_rows.csv"
    step_rows = pd.read_csv(steps_path) if steps_path.exists() and not args.fresh else pd.DataFrame()
    work = Path(args.work)
    (work / "tflite").mkdir(parents=True, exist_ok=True)
    data = generate(config=SyntheticConfig(size=args.input_size, seed=0))
    test = scan_forensynths(data, "test")
    size = (args.input_size, args.input_size)
    calib_uint8 = load_images([s.path for s in balanced_subset(scan_forensynths(data, "val"), 64, args.seed)], size)

    for backbone in args.backbones:
        width = BACKBONE_WIDTH.get(backbone)
        print(f"\n=== {backbone} (width {width}) ===", flush=True)
        float_path = _train(data, work / f"{backbone}_float", args,
                            ["--backbone", backbone, "--highpass", "--epochs", str(args.float_epochs), "--lr", "2e-3"]
                            + (["--width", str(width)] if width else []))
        model, manifest = load_detector(float_path)
        logits = np.concatenate([
            model.predict(manifest.preprocess.apply(load_images([s.path for s in test[i:i + 256]], size)), verbose=0).reshape(-1)
            for i in range(0, len(test), 256)])
        float_rows = evaluate_arrays([s.label for s in test], 1 / (1 + np.exp(-logits)), [s.generator for s in test])
        float_ap = float_rows[-1]["ap"]
        print(f"float Keras AP {float_ap:.4f}", flush=True)
        key = (step_rows["backbone"] == backbone).any() if len(step_rows) else False
        if key and args.remeasure_steps:
            step_rows = step_rows[step_rows["backbone"] != backbone]
        if not key or args.remeasure_steps:
            times = measure_step_times(float_path, data, args)
            step_rows = pd.concat([step_rows, pd.DataFrame([{"backbone": backbone, "method": m, "step_s": t,
                                                             "ratio_to_float": t / times["float"]} for m, t in times.items()])])
            step_rows.to_csv(steps_path, index=False)
        ratios = dict(zip(step_rows[step_rows.backbone == backbone].method, step_rows[step_rows.backbone == backbone].ratio_to_float))
        for method in args.methods:
            if ((done["backbone"] == backbone) & (done["method"] == method) & (done["seed"] == args.seed)).any():
                continue
            print(f"\n--- {backbone} / {method}", flush=True)
            started = time.perf_counter()
            row = {"backbone": backbone, "method": method, "seed": args.seed, "w_bits": METHODS[method][2],
                   "a_bits": "32" if method in ("float", "aeq_dyn_wi4") else "8", "qat_step_ratio": ratios.get(method, float("nan"))}
            try:
                row.update(run_method(method, backbone, float_path, data, args, work, calib_uint8))
                path = work / "tflite" / f"{backbone}_{method}_s{args.seed}.tflite"
                rows, _ = evaluate_model(path, data, split="test")
                bench = bench_model(path, threads=1, warmup=10, runs=args.runs)
                row["avg_bits"], row["int_types"] = storage_bits(path)
                row.update(size_bytes=path.stat().st_size, ap=rows[-1]["ap"], auc=rows[-1]["auc"], acc=rows[-1]["acc"],
                           delta_ap_pp=100 * (rows[-1]["ap"] - float_ap), latency_ms=bench["latency_ms_p50"])
            except Exception as e:  # one failing method must not lose the others' rows
                traceback.print_exc()
                row["error"] = f"{e.__class__.__name__}: {' '.join(str(e).split())[:200]}"
            row["seconds"] = time.perf_counter() - started
            print({k: row.get(k) for k in ("method", "ap", "delta_ap_pp", "size_bytes", "avg_bits", "error")}, flush=True)
            done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
            done.to_csv(csv_path, index=False)

    machine = machine_info()
    header = {
        "machine": f"{machine['processor']} ({machine['machine']}, {machine['cpus']} cpus)",
        "load": load.stop().sentence() + " (this invocation of the script; resumed rows were measured by earlier ones)",
        "versions": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "settings": f"{args.input_size} px; float {args.float_epochs} epochs lr 2e-3; QAT {args.qat_epochs} epochs lr 1e-4; batch "
                    f"{args.batch_size}; widths {BACKBONE_WIDTH}; high-pass front; blur/JPEG p=0.1; seed(s) in the table",
        "data": f"{data}: embedded synthetic, test split (held-out photos), AP/AUC/acc = mean over generators",
        "latency": f"ai-edge-litert, 1 thread, XNNPACK, median of {args.runs} invokes, INT4/INT2 unpacked to INT8 at load",
        "command": command_line() + " (rows accumulate in quant_methods_rows.csv across resumed runs of this script; "
                                    "--retry-errors redoes failed ones)",
    }
    table = done[COLUMNS].copy()
    # one block per backbone, methods in METHODS order, seeds together (rows are appended as they finish)
    order = {m: i for i, m in enumerate(METHODS)}
    table = table.sort_values(["backbone", "method", "seed"], key=lambda c: c.map(order) if c.name == "method" else c,
                              kind="stable").reset_index(drop=True)
    # the latest step timing of each (backbone, method), also for rows finished before it was taken
    ratio = {(b, m): r for b, m, r in zip(step_rows.get("backbone", []), step_rows.get("method", []), step_rows.get("ratio_to_float", []))}
    table["qat_step_ratio"] = [ratio.get((b, m), float("nan")) for b, m in zip(table["backbone"], table["method"])]
    formats = {"seed": "{:.0f}", "a_bits": "{:.0f}", "avg_bits": "{:.2f}", "size_bytes": "{:,.0f}", "delta_ap_pp": "{:+.2f}", "latency_ms": "{:.3f}",
               "qat_step_ratio": "{:.2f}", "max_lsb": "{:.0f}", "seconds": "{:.0f}"}
    write_table(table, results / "quant_methods", header, "Quantization methods: TFLite AP vs size on the embedded data", formats)
    write_table(step_rows, results / "quant_step_time", header, "Training step time: QAT methods over float", {"step_s": "{:.3f}",
                                                                                                              "ratio_to_float": "{:.2f}"})
    plot_ap_vs_size(table, results / "quant_methods.png")
    if args.ship:
        ship(args, work, data)
    return 0


def ship(args, work: Path, data) -> None:
    """Measures the SHIPPED models again into their manifests and copies them to --ship."""
    from tfdefakeq.core.fileio import write_atomic
    from tfdefakeq.core.manifest import manifest_path
    from tfdefakeq.core.report import record_measurements, write_models_index
    from tfdefakeq.runtime.latency import bench_model
    from tfdefakeq.runtime.scoring import evaluate_model

    target = Path(args.ship)
    for backbone, method in SHIPPED:
        source = work / "tflite" / f"{backbone}_{method}_s{args.seed}.tflite"
        if not source.exists():
            print(f"not shipped (not made): {source}")
            continue
        rows, _ = evaluate_model(source, data, split="test")
        record_measurements(source, rows, bench_model(source, threads=1, warmup=10, runs=100), f"{data} (embedded synthetic)")
        name = f"{backbone}_{args.input_size}_{method.replace('adaptive_', 'adaptive-')}"
        write_atomic(target / f"{name}.tflite", source.read_bytes(), overwrite=True)
        write_atomic(manifest_path(target / f"{name}.tflite"), manifest_path(source).read_bytes(), overwrite=True)
    print(f"index: {write_models_index(target)}")


def plot_ap_vs_size(df, path) -> None:
    from tfdefakeq.core.report import _pyplot, save_figure

    plt = _pyplot()
    ok = df[df["error"].isna() | (df["error"] == "")] if "error" in df else df
    backbones = list(dict.fromkeys(ok["backbone"]))
    fig, axes = plt.subplots(1, max(1, len(backbones)), figsize=(6.5 * max(1, len(backbones)), 4.8), squeeze=False)
    for ax, backbone in zip(axes[0], backbones):
        part = ok[ok.backbone == backbone]
        for _, r in part.iterrows():
            ours = str(r.method).startswith(("adaptive", "lsq", "w4a8"))
            ax.scatter(r.size_bytes / 1e6, r.ap, s=45, marker="o" if ours else "s", color="#d62728" if ours else "#1f77b4")
            ax.annotate(str(r.method), (r.size_bytes / 1e6, r.ap), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("TFLite file size (MB, log)")
        ax.set_ylabel("AP (mean over generators)")
        ax.set_title(backbone)
        ax.grid(alpha=0.3)
    fig.suptitle("AP vs size: ours (red circles) vs baselines (blue squares)")
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
