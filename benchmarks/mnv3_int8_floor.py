"""How fast int8 MobileNetV3 can get under XNNPACK (issue 16 s1): the int8 / float32 latency ratio of
the whole graph and of the same graph without its hard-swish and squeeze-excite arithmetic, which
bounds what any formulation of those ops could give; and the int8 depthwise convolution alone.

    python benchmarks/mnv3_int8_floor.py --commit SHA [--names mobilenet_v3_small,mobilenet_v3_large] [--runs 200]

Writes benchmarks/results/mnv3_int8_floor.{csv,md} and mnv3_int8_floor_depthwise.csv. Per backbone
(224 px, untrained, BatchNorm statistics set from the calibration images as in backbones.py), four
graphs, each exported float32 and int8 (tfmot_int8 QAT, ranges calibrated; export.to_tflite):
- full: the registered builder;
- hswish_as_relu: every hard-swish replaced by a ReLU (the graph keeps its SE blocks);
- no_se: every squeeze-excite block removed (its hard-swishes kept);
- core: both: convolutions, depthwise convolutions, ReLUs, residual ADDs and the head only.
The last three are NOT the model: they bound from below what int8 could reach if hard-swish and SE
cost nothing. All eight .tflite files of a backbone are loaded together and timed in alternation
(runtime.latency.paired_latency: 1 thread, XNNPACK, median of single invokes), so the machine's load
falls on all alike and same-run ratios are what to read; that is repeated (--repeats) to show the
ratios' spread, and the verdict is stated against the whole spread. The depthwise table times one
DEPTHWISE_CONV_2D (+ fused ReLU, stride 1, 'same') at MobileNetV3's shapes: float32, int8 with
per-channel weight scales (tfmot's and our default) and int8 with one scale, in alternation.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

TARGET = 0.5  # issue 16 s1: int8 p50 <= 0.5 x float32 p50
NOISE = 0.05  # a depthwise time within 5% of float32's is not called slower (one timing block, shared CPU)
VARIANTS = {"full": (False, False), "hswish_as_relu": (True, False), "no_se": (False, True), "core": (True, True)}
# (side, channels, kernel): MobileNetV3-Small/Large depthwise convolutions at 224 px
DEPTHWISE_SHAPES = [(112, 16, 3), (112, 64, 3), (56, 72, 3), (28, 72, 5), (28, 120, 5), (14, 240, 5), (14, 480, 3),
                    (7, 576, 5), (7, 960, 5)]


@contextlib.contextmanager
def graph_variant(relu_for_hswish: bool, drop_se: bool):
    """Builds MobileNetV3 with hard-swish as ReLU and/or without SE blocks while inside."""
    from tfdefakeq.backbones import mobilenet

    saved = mobilenet.hard_swish, mobilenet._v3_se_block
    if relu_for_hswish:
        mobilenet.hard_swish = lambda x, name: mobilenet.layers.ReLU(name=name + "_relu")(x)
    if drop_se:
        mobilenet._v3_se_block = lambda inputs, *args: inputs
    try:
        yield
    finally:
        mobilenet.hard_swish, mobilenet._v3_se_block = saved


def time_alternating(paths: dict, runs: int, warmup: int = 20, block: int = 10) -> dict:
    """p50 ms of each .tflite (any input shape), 1 thread, XNNPACK, invoked `block` at a time in a
    rotating order (runtime.latency.paired_latency's scheme, without the image-model loader)."""
    from tfdefakeq.runtime.interpreter import find_runtime

    runtime = find_runtime()
    interpreters = {}
    for name, path in paths.items():
        interpreter = runtime.interpreter_class(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        for _ in range(warmup):
            interpreter.invoke()
        interpreters[name] = interpreter
    names = list(interpreters)
    times = {name: [] for name in names}
    for b in range(-(-runs // block)):
        for name in names[b % len(names):] + names[: b % len(names)]:
            invoke = interpreters[name].invoke
            for _ in range(block):
                start = time.perf_counter_ns()
                invoke()
                times[name].append((time.perf_counter_ns() - start) / 1e6)
    return {name: float(np.median(t[:runs])) for name, t in times.items()}


def measure_backbone(name: str, runs: int, calib: int, work: Path, repeats: int = 3) -> list[dict]:
    from tfdefakeq.backbones import build
    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.engine.training import set_batchnorm_statistics
    from tfdefakeq.quant import quantize
    from tfdefakeq.runtime.modelinfo import read_model_info

    from benchmarks.backbones import synthetic_images  # the zoo benchmark's images

    x = Preprocess().apply(synthetic_images(calib, 224))
    paths, ops = {}, {}
    for variant, (relu_for_hswish, drop_se) in VARIANTS.items():
        keras.utils.set_random_seed(0)
        with graph_variant(relu_for_hswish, drop_se):
            model = build(name, input_shape=(224, 224, 3))
        set_batchnorm_statistics(model, x)
        qat = quantize(model, "tfmot_int8", x)
        for fmt, m in (("float32", model), ("int8", qat)):
            path = work / f"{name}_{variant}_{fmt}.tflite"
            path.write_bytes(to_tflite(m, fmt, None if fmt == "float32" else x))
            paths[variant, fmt] = path
        ops[variant] = read_model_info(paths[variant, "int8"]).op_counts
    timings = [time_alternating({f"{v}/{f}": p for (v, f), p in paths.items()}, runs) for _ in range(repeats)]
    rows = []
    for variant in VARIANTS:
        fp32 = np.array([t[f"{variant}/float32"] for t in timings])
        int8 = np.array([t[f"{variant}/int8"] for t in timings])
        ratios = int8 / fp32
        rows.append({"backbone": name, "graph": variant, "latency_fp32_ms": float(np.median(fp32)),
                     "latency_int8_ms": float(np.median(int8)), "int8_over_fp32": float(np.median(ratios)),
                     "ratio_min": float(ratios.min()), "ratio_max": float(ratios.max()), "int8_mul": ops[variant].get("MUL", 0),
                     "int8_add": ops[variant].get("ADD", 0), "int8_depthwise": ops[variant].get("DEPTHWISE_CONV_2D", 0)})
    return rows


def measure_depthwise(runs: int, work: Path) -> list[dict]:
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.quant import calibrate
    from tfdefakeq.quant.schemes import apply_folded_scheme

    rows = []
    for side, channels, kernel in DEPTHWISE_SHAPES:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((side, side, channels))
        y = keras.layers.DepthwiseConv2D(kernel, padding="same", name="dw")(inputs)
        model = keras.Model(inputs, keras.layers.ReLU()(y))
        x = np.random.default_rng(0).normal(size=(4, side, side, channels)).astype(np.float32)
        paths = {"float32": work / "dw_float32.tflite"}
        paths["float32"].write_bytes(to_tflite(model, "float32"))
        for tag, per_tensor in (("int8_per_channel", ()), ("int8_per_tensor", ("dw",))):
            qat = apply_folded_scheme(model, {"dw": 8}, per_tensor=per_tensor)
            calibrate.init_weight_ranges(qat)
            calibrate.calibrate_activation_ranges(qat, x)
            paths[tag] = work / f"dw_{tag}.tflite"
            paths[tag].write_bytes(to_tflite(qat, "int8", x))
        p50 = time_alternating(paths, runs)
        rows.append({"output": f"{side}x{side}x{channels}", "kernel": kernel, "latency_fp32_ms": p50["float32"],
                     "latency_int8_per_channel_ms": p50["int8_per_channel"],
                     "latency_int8_per_tensor_ms": p50["int8_per_tensor"],
                     "per_channel_over_fp32": p50["int8_per_channel"] / p50["float32"],
                     "per_tensor_over_fp32": p50["int8_per_tensor"] / p50["float32"]})
    return rows


def prose(models, depthwise) -> list[str]:
    """Sentences computed from the rows: per backbone, the full ratio and the bound without
    hard-swish and SE against TARGET; then the depthwise convolution's int8 / float32 range."""
    lines = []
    for name, group in models.groupby("backbone", sort=False):
        r = {row["graph"]: row for row in group.to_dict("records")}
        if set(VARIANTS) - set(r):
            continue
        core = r["core"]
        spread = f"{core['ratio_min']:.3f}-{core['ratio_max']:.3f} over the repeats"
        if core["ratio_min"] > TARGET:
            verdict = (f"above the target {TARGET:g} in every repeat ({spread}): no formulation of hard-swish or SE can "
                       "bring the model under it; its convolutions hold it back")
        elif core["ratio_max"] <= TARGET:
            verdict = (f"at or below the target {TARGET:g} in every repeat ({spread}): a cheaper hard-swish / SE could "
                       "at best bring the model there")
        else:
            verdict = (f"on the target {TARGET:g} within the spread of the repeats ({spread}): even with hard-swish and SE "
                       "free the model would not be reliably under it; its convolutions hold it back")
        full = r["full"]
        lines.append(
            f"- {name}: int8/float32 {full['int8_over_fp32']:.3f} for the model ({full['ratio_min']:.3f}-{full['ratio_max']:.3f}; "
            f"{full['latency_int8_ms']:.3f} vs {full['latency_fp32_ms']:.3f} ms, {full['int8_mul']} int8 MULs); with hard-swish "
            f"as ReLU {r['hswish_as_relu']['int8_over_fp32']:.3f}, without SE {r['no_se']['int8_over_fp32']:.3f}, without both "
            f"{core['int8_over_fp32']:.3f} ({core['latency_int8_ms']:.3f} vs {core['latency_fp32_ms']:.3f} ms): {verdict}.")
    if len(depthwise):
        pc, pt = depthwise["per_channel_over_fp32"], depthwise["per_tensor_over_fp32"]
        spread = float((depthwise["latency_int8_per_tensor_ms"] / depthwise["latency_int8_per_channel_ms"] - 1).abs().max())
        slower = depthwise.loc[pc > 1 + NOISE, "output"].tolist()
        lines.append(
            f"- One DEPTHWISE_CONV_2D at {len(depthwise)} MobileNetV3 shapes: int8 (per-channel scales) takes "
            f"{pc.min():.2f}-{pc.max():.2f}x the float32 time (median {pc.median():.2f}), "
            + (f"more than {100 * NOISE:.0f}% slower than float32 at {', '.join(slower)}; " if slower else "")
            + f"one weight scale instead changes it by at most {100 * spread:.1f}% ({pt.min():.2f}-{pt.max():.2f}x).")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--names", default="mobilenet_v3_small,mobilenet_v3_large")
    p.add_argument("--runs", type=int, default=200, help="timed invokes per model (default 200)")
    p.add_argument("--repeats", type=int, default=3, help="timing blocks per backbone (ratios' spread; default 3)")
    p.add_argument("--calib", type=int, default=16, help="calibration images (default 16, as backbones.py)")
    p.add_argument("--commit", required=True, help="the commit the snapshot was taken from (git rev-parse HEAD)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mnv3_int8_floor"))
    args = p.parse_args(argv)

    import pandas as pd

    from tfdefakeq.core.fileio import write_text_atomic
    from tfdefakeq.core.machineload import LoadSampler
    from tfdefakeq.core.report import benchmark_header, markdown_table, write_table

    load = LoadSampler().start()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names.split(","):
            rows += measure_backbone(name, args.runs, args.calib, Path(tmp), args.repeats)
            print(rows[-4:], flush=True)
        dw_rows = measure_depthwise(args.runs, Path(tmp))
    load.stop()
    models, depthwise = pd.DataFrame(rows), pd.DataFrame(dw_rows)
    header = benchmark_header(
        args.commit, "benchmarks/mnv3_int8_floor.py", sys.argv[1:] if argv is None else argv, load,
        setup="224 px, untrained, BatchNorm statistics from the calibration images; int8 = tfmot_int8 QAT; 1 thread, "
              f"XNNPACK, p50 of {args.runs} single invokes, the 8 models of a backbone timed in alternation, {args.repeats} "
              "times (latencies and int8_over_fp32: median over the repeats; ratio_min / ratio_max: their range)")
    formats = {c: "{:.3f}" for c in ("int8_over_fp32", "ratio_min", "ratio_max", "per_channel_over_fp32", "per_tensor_over_fp32")}
    formats.update({c: "{:.0f}" for c in ("int8_mul", "int8_add", "int8_depthwise", "kernel")})
    paths = write_table(models, args.out, header, "MobileNetV3 int8 vs float32: the model and its graph without "
                        "hard-swish / SE", formats)
    dw_csv = write_text_atomic(Path(args.out + "_depthwise.csv"), depthwise.to_csv(index=False), overwrite=True)
    md = (paths[1].read_text() + "\n## One depthwise convolution\n\n" + markdown_table(depthwise, formats) + "\n\n"
          + "\n".join(prose(models, depthwise)) + "\n")
    write_text_atomic(paths[1], md, overwrite=True)
    print("\n".join(str(p) for p in [*paths, dw_csv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
