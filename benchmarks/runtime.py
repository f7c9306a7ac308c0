"""Runtime benchmark: float32 / int8 / int4 / int4 unpacked to int8 at load, ResNet-18 and MobileNetV2.

    python benchmarks/runtime.py [--size 224] [--threads 1 2] [--runs 100] [--rounds 3]

Writes benchmarks/results/runtime.csv and runtime.md. Models are built here at --size px with
untrained weights, activation ranges calibrated on photos that ship in scikit-image, then
quantized (tfmot_int8 -> int8, w4a8 -> int4) and converted with tfdefakeq.engine.export.to_tflite (no
fine-tuning: latency and storage do not depend on the weights' values). Conversions are cached
under --work (default ~/.cache/tfdefakeq/bench_runtime/SIZE).

Timing runs in a child process that never imports TensorFlow (the runtime as on a device).
For each backbone and thread count, all formats are loaded together and timed in alternation
(blocks of 10 invokes, rotating order) so that each sees the same machine load, in --rounds rounds;
the table gives the median over rounds of p50/p90/p99, so the int8 / int4-unpacked ratio compares
like with like on a shared machine. The int4 model's outputs (and, with XNNPACK off, all its
activation tensors) are compared with its unpacked form on the photos.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BACKBONES = {"resnet18": {}, "mobilenet_v2": {}}
# mobilenet_v2 with its depthwise kernels forced to 4 bits too (the w4a8 plan keeps them at 8 bits, see
# tfdefakeq.quant.schemes.plan_weight_bits): does the converter store INT4 depthwise filters, do they unpack?
DW4 = "mobilenet_v2_dw4"
FORMATS = ("float32", "int8", "int4", "int4_unpacked")
TARGET_RATIO = 1.05
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field",
          "retina", "immunohistochemistry", "colorwheel", "logo", "cat")


def photos(size: int, n: int = 16):
    """-> (uint8 (n, size, size, 3), skipped): center-square crops of scikit-image's photos, resized,
    with flips to fill n; `skipped` lists "name (why)" for each photo that could not be read (one that
    needs a download offline), so the report says what the images were."""
    import numpy as np
    import skimage.data
    from PIL import Image

    out, skipped = [], []
    for name in PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception as e:  # noqa: BLE001 - a photo that needs a download offline: skipped, and reported
            skipped.append(f"{name} ({e.__class__.__name__}: {' '.join(str(e).split())[:120]})")
            continue
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3]
        side = min(img.shape[:2])
        top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
        crop = Image.fromarray(np.ascontiguousarray(img[top : top + side, left : left + side]).astype(np.uint8))
        out.append(np.asarray(crop.resize((size, size), Image.BICUBIC), dtype=np.uint8))
    if not out:
        raise RuntimeError(f"no scikit-image photo could be read: {'; '.join(skipped)}")
    while len(out) < n:
        out.append(out[len(out) % max(1, len(out))][:, ::-1].copy())
    return np.stack(out[:n]), skipped


def photo_note(skipped: list[str], n: int) -> str:
    """The report's line on the input images."""
    used = len(PHOTOS) - len(skipped)
    return (f"{n} images from {used} of {len(PHOTOS)} scikit-image photos (+ flips)"
            + (f"; skipped {len(skipped)}: {'; '.join(skipped)}" if skipped else ""))


def build_models(size: int, work: Path, rebuild: bool) -> dict:
    """Converts every backbone to float32/int8/int4 under `work`; returns {backbone: {format: path}} + notes."""
    import numpy as np

    from tfdefakeq.backbones import build
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.core.manifest import Manifest, Preprocess, manifest_path
    from tfdefakeq.quant import quantize
    from tfdefakeq.runtime.modelinfo import read_model_info
    from tfdefakeq.core.tfcompat import keras

    work.mkdir(parents=True, exist_ok=True)
    calib_photos, _ = photos(size, 16)  # skipped photos are reported by main, which reads the same ones
    calib = Preprocess().apply(calib_photos).astype(np.float32)
    paths, notes = {}, {}
    jobs = [(b, fmt, scheme) for b in BACKBONES for fmt, scheme in
            (("float32", "float"), ("int8", "tfmot_int8"), ("int4", "w4a8"))] + [(DW4, "int4", "w4a8")]
    for backbone, fmt, scheme in jobs:
        paths.setdefault(backbone, {})
        path = work / f"{backbone}_{size}_{fmt}.tflite"
        paths[backbone][fmt] = str(path)
        if path.exists() and not rebuild:
            continue
        keras.utils.set_random_seed(0)
        model = build("mobilenet_v2" if backbone == DW4 else backbone, input_shape=(size, size, 3),
                      **BACKBONES.get(backbone, {}))
        start = time.perf_counter()
        try:
            plan = None
            if backbone == DW4:
                from tfdefakeq.quant.schemes import plan_weight_bits

                plan = {k: (4 if k.endswith("depthwise") else v) for k, v in plan_weight_bits(model, 4).items()}
            qat = model if scheme == "float" else quantize(model, scheme, calib, bit_plan=plan)
            flatbuffer = to_tflite(qat, fmt, None if fmt == "float32" else calib)
        except Exception as e:  # noqa: BLE001 - reported in the results, not hidden
            notes[f"{backbone} {fmt}"] = f"conversion failed: {e.__class__.__name__}: {' '.join(str(e).split())[:300]}"
            paths[backbone].pop(fmt)
            continue
        path.write_bytes(flatbuffer)
        Manifest(backbone=backbone, input_shape=[size, size, 3], format=fmt, scheme=scheme,
                 size_bytes=len(flatbuffer)).save(manifest_path(path))
        print(f"built {path.name}: {len(flatbuffer):,} bytes in {time.perf_counter() - start:.0f} s", flush=True)
    for backbone in paths:
        if "int4" in paths[backbone]:
            info = read_model_info(paths[backbone]["int4"])
            filters = {}
            for op in info.ops:
                if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(op.inputs) > 1:
                    kind = info.tensors[op.inputs[1]].type
                    filters.setdefault(op.name, {}).setdefault(kind, 0)
                    filters[op.name][kind] += 1
            notes[f"{backbone} int4 weights per op"] = "; ".join(
                f"{op}: " + ", ".join(f"{n} {t}" for t, n in sorted(kinds.items())) for op, kinds in filters.items())
    notes["mobilenet_v2 w4a8 plan"] = ("DepthwiseConv2D kernels stay at 8 bits by design of the w4a8 plan "
                                       "(plan_weight_bits: one learned range per depthwise kernel is too coarse at 4 bits); "
                                       f"{DW4} forces them to 4 bits to see what the converter and the runtime do")
    return {"paths": paths, "notes": notes}


def measure(args) -> None:
    """Child process: time every model, compare int4 with int4 unpacked; JSON to stdout. No TensorFlow."""
    import numpy as np

    from tfdefakeq.runtime.latency import bench_model, paired_latency
    from tfdefakeq.runtime.interpreter import TFLiteModel

    plan = json.loads(Path(args.plan).read_text())
    rows = []
    for backbone, formats in plan["paths"].items():
        configs = [(fmt, formats["int4" if fmt == "int4_unpacked" else fmt]) for fmt in FORMATS
                   if ("int4" if fmt == "int4_unpacked" else fmt) in formats]
        for threads in args.threads:
            # init time and peak memory: one load each, alone
            loads = {fmt: bench_model(path, threads=threads, warmup=2, runs=5, unpack_packed=fmt != "int4")
                     for fmt, path in configs}
            for round_index in range(args.rounds):
                models = {fmt: TFLiteModel(path, num_threads=threads, unpack_packed=fmt != "int4") for fmt, path in configs}
                latencies = paired_latency(models, args.runs, args.warmup, seed=round_index)
                for fmt, ms in latencies.items():
                    load = loads[fmt]
                    rows.append({**load, "round": round_index, "model": backbone, "format": fmt, "path": load["model"],
                                 "latency_ms_p50": float(np.median(ms)), "latency_ms_p90": float(np.percentile(ms, 90)),
                                 "latency_ms_p99": float(np.percentile(ms, 99)), "latency_ms_min": float(ms.min())})
                del models
                summary = ", ".join(f"{fmt} {np.median(ms):.3f}" for fmt, ms in latencies.items())
                print(f"round {round_index} {backbone} {threads}t p50 ms: {summary}", file=sys.stderr, flush=True)
    json.dump({"rows": rows, "parity": parity(plan)}, sys.stdout)


def _all_outputs(content: bytes, images, preprocess, xnnpack: bool, everything: bool):
    """Raw outputs (and, with `everything`, every activation tensor) of `content` on `images`."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {} if xnnpack else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    it = Interpreter(model_content=content, experimental_preserve_all_tensors=everything, **kwargs)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = inp["quantization"]
    activations = [d["index"] for d in it.get_tensor_details()] if everything else []
    outputs, tensors = [], []
    for img in images:
        x = np.clip(np.round(preprocess.apply(img[None]) / scale) + zero, -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], x)
        it.invoke()
        outputs.append(int(it.get_tensor(out["index"]).reshape(-1)[0]))
        if everything:
            tensors.append([it.get_tensor(i).copy() for i in activations])
    return np.array(outputs), tensors


def parity(plan) -> dict:
    """int4 packed vs unpacked on the photos: final outputs, and with XNNPACK off every activation tensor."""
    import numpy as np

    from tfdefakeq.core.manifest import Manifest, manifest_path
    from tfdefakeq.runtime.unpack import unpack_packed_weights

    images = np.load(plan["images"])
    result = {}
    for backbone, formats in plan["paths"].items():
        if "int4" not in formats:
            continue
        data = Path(formats["int4"]).read_bytes()
        unpacked = unpack_packed_weights(data)
        pre = Manifest.load(manifest_path(formats["int4"])).preprocess
        a, ta = _all_outputs(data, images, pre, xnnpack=False, everything=True)
        b, tb = _all_outputs(unpacked, images, pre, xnnpack=False, everything=True)
        same_tensors = all(np.array_equal(x, y) for xs, ys in zip(ta, tb) for x, y in zip(xs, ys))
        entry = {"images": int(len(images)), "outputs_identical_builtin": bool(np.array_equal(a, b)),
                 "all_tensors_identical_builtin": bool(same_tensors), "tensors_per_image": int(len(ta[0])),
                 "outputs_spread": [int(a.min()), int(a.max())]}
        c, _ = _all_outputs(data, images, pre, xnnpack=True, everything=False)
        d, _ = _all_outputs(unpacked, images, pre, xnnpack=True, everything=False)
        entry["xnnpack_unpacked_vs_packed_max_lsb"] = int(np.abs(c - d).max())
        entry["unpacked_xnnpack_vs_builtin_max_lsb"] = int(np.abs(d - b).max())
        if "int8" in formats:
            int8 = Path(formats["int8"]).read_bytes()
            e, _ = _all_outputs(int8, images, pre, xnnpack=True, everything=False)
            f, _ = _all_outputs(int8, images, pre, xnnpack=False, everything=False)
            entry["int8_xnnpack_vs_builtin_max_lsb"] = int(np.abs(e - f).max())
        result[backbone] = entry
    return result


def parity_prose(parity: dict) -> list[str]:
    """The conclusion of the packed-vs-unpacked comparison, computed from the measured `parity` entries."""
    if not parity:
        return ["No int4 model was compared."]
    same = [b for b, r in parity.items() if r["outputs_identical_builtin"] and r["all_tensors_identical_builtin"]]
    differ = [b for b in parity if b not in same]
    out = []
    if same:
        out.append(f"With the same (builtin) kernels on both sides, unpacking changed nothing: every tensor was "
                   f"bit-identical ({', '.join(same)}).")
    if differ:
        out.append(f"With the same (builtin) kernels, unpacked and packed DIFFER ({', '.join(differ)}): "
                   "unpacking changed the arithmetic there.")
    worst = max(parity, key=lambda b: parity[b]["xnnpack_unpacked_vs_packed_max_lsb"])
    lsb = parity[worst]["xnnpack_unpacked_vs_packed_max_lsb"]
    if lsb == 0:
        out.append("With XNNPACK on, outputs were bit-identical too (max 0 LSB on every backbone).")
        return out
    per = ", ".join(f"{b} {r['xnnpack_unpacked_vs_packed_max_lsb']}" for b, r in parity.items())
    sentence = (f"With XNNPACK on, unpacked and packed outputs differ by up to {lsb} LSB ({per}): the unpacked model's "
                "convolutions run in XNNPACK, the packed model's INT4 ones on the builtin kernels")
    int8 = {b: r["int8_xnnpack_vs_builtin_max_lsb"] for b, r in parity.items() if "int8_xnnpack_vs_builtin_max_lsb" in r}
    if worst in same:
        sentence += (", and since the builtin kernels give identical tensors, the difference is between kernel paths, "
                     "not from unpacking")
    if int8:
        sentence += (f"; the int8 model, XNNPACK vs builtin, differs by up to {max(int8.values())} LSB "
                     f"({', '.join(f'{b} {v}' for b, v in int8.items())})")
    out.append(sentence + ".")
    return out


def summarise(rows: list[dict]):
    import pandas as pd

    df = pd.DataFrame(rows)
    keys = ["model", "format", "threads"]
    agg = df.groupby(keys, sort=False).agg(
        p50_ms=("latency_ms_p50", "median"), p90_ms=("latency_ms_p90", "median"), p99_ms=("latency_ms_p99", "median"),
        p50_min_round=("latency_ms_p50", "min"), p50_max_round=("latency_ms_p50", "max"),
        size_bytes=("size_bytes", "first"), macs=("macs", "first"), init_ms=("init_ms", "first"),
        unpack_ms=("unpack_ms", "first"), peak_rss_mb=("peak_rss_mb", "first"), rounds=("round", "nunique"),
    ).reset_index()
    agg["gmacs_per_s"] = agg["macs"] / (agg["p50_ms"] * 1e6)
    agg["gmacs"] = agg["macs"] / 1e9
    return agg


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--measure", dest="plan", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.plan:
        measure(args)
        return 0
    import numpy as np

    work = args.work or Path.home() / ".cache" / "tfdefakeq" / "bench_runtime" / str(args.size)
    built = build_models(args.size, work, args.rebuild)
    from tfdefakeq.core.machineload import LoadSampler

    load = LoadSampler().start()
    images_path = work / "photos.npy"
    images, skipped = photos(args.size, 16)
    np.save(images_path, images)
    built["notes"]["input photos"] = photo_note(skipped, len(images))
    if skipped:
        print(f"skipped {len(skipped)} photo(s): {'; '.join(skipped)}", file=sys.stderr, flush=True)
    plan_path = work / "plan.json"
    plan_path.write_text(json.dumps({"paths": built["paths"], "images": str(images_path)}))
    child = [sys.executable, __file__, "--measure", str(plan_path), "--threads", *map(str, args.threads),
             "--runs", str(args.runs), "--warmup", str(args.warmup), "--rounds", str(args.rounds)]
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    try:
        proc = subprocess.run(child, stdout=subprocess.PIPE, env=env, check=True, text=True)
    finally:
        load.stop()
    measured = json.loads(proc.stdout)
    agg = summarise(measured["rows"])
    write_results(agg, measured, built["notes"], args, load.sentence())
    return 0


def write_results(agg, measured, notes, args, load: str) -> None:
    from tfdefakeq.core.manifest import versions
    from tfdefakeq.core.report import header_lines, markdown_table
    from tfdefakeq.core.fileio import write_text_atomic
    from tfdefakeq.runtime.interpreter import machine_info

    machine = machine_info()
    vers = versions()
    header = {
        "machine": f"{machine['machine']}, {machine['processor']}, {machine['cpus']} CPUs, {machine['system']}",
        "versions": ", ".join(f"{k} {v}" for k, v in vers.items() if k not in ("machine",)),
        "runtime": "ai-edge-litert Interpreter, XNNPACK on, batch 1, random int8/float input",
        "models": f"{', '.join(BACKBONES)} at {args.size}x{args.size}, untrained weights, ranges calibrated on 16 photos",
        "protocol": f"per backbone and thread count, all formats loaded together and timed in alternation "
                    f"(blocks of 10 invokes, rotating order) until each has {args.runs} invokes after {args.warmup} "
                    f"warm-up; {args.rounds} such rounds; table = median over rounds of each round's p50/p90/p99; "
                    "init_ms / unpack_ms / peak_rss_mb from a separate load of each model",
        "load": load,
        "command": "python benchmarks/runtime.py " + shlex.join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    columns = ["model", "format", "threads", "p50_ms", "p90_ms", "p99_ms", "size_bytes", "gmacs", "gmacs_per_s",
               "init_ms", "unpack_ms", "peak_rss_mb", "p50_min_round", "p50_max_round", "rounds"]
    table = agg[columns]
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "runtime.csv", header_lines(header) + table.to_csv(index=False))

    lines = ["# Runtime: float32 / int8 / int4 / int4 unpacked at load", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()] + [""]
    fmt = {"size_bytes": "{:,.0f}", "threads": "{:d}", "rounds": "{:d}", "gmacs": "{:.3f}", "gmacs_per_s": "{:.1f}",
           "init_ms": "{:.1f}", "unpack_ms": "{:.1f}", "peak_rss_mb": "{:.0f}"}
    lines += [markdown_table(table, {**fmt, **{c: "{:.3f}" for c in ("p50_ms", "p90_ms", "p99_ms", "p50_min_round", "p50_max_round")}}), ""]
    lines += ["## int4 unpacked vs int8 (same run)", "",
              f"Target: int4_unpacked p50 <= {TARGET_RATIO} x int8 p50.", ""]
    for (model, threads), group in agg.groupby(["model", "threads"], sort=False):
        by = dict(zip(group["format"], group["p50_ms"]))
        if "int8" in by and "int4_unpacked" in by:
            ratio = by["int4_unpacked"] / by["int8"]
            verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
            packed = f"; int4 packed {by['int4']:.3f} ms ({by['int4'] / by['int8']:.2f}x int8)" if "int4" in by else ""
            lines.append(f"- {model}, {threads} thread(s): int8 {by['int8']:.3f} ms, int4 unpacked {by['int4_unpacked']:.3f} ms "
                         f"= {ratio:.3f}x ({verdict} the target){packed}")
    lines += ["", "## int4 outputs: packed vs unpacked, on 16 photos", ""]
    for backbone, r in measured["parity"].items():
        lines.append(
            f"- {backbone}: XNNPACK off (same builtin kernels for both): final outputs "
            f"{'bit-identical' if r['outputs_identical_builtin'] else 'DIFFERENT'}, every one of its "
            f"{r['tensors_per_image']} tensors on every image "
            f"{'bit-identical' if r['all_tensors_identical_builtin'] else 'NOT identical'} "
            f"(raw outputs span {r['outputs_spread'][0]}..{r['outputs_spread'][1]}"
            + (": the untrained net's logit saturates, so only the tensor comparison says much"
               if r["outputs_spread"][0] == r["outputs_spread"][1] else "")
            + "). XNNPACK on: unpacked vs packed "
            f"max {r['xnnpack_unpacked_vs_packed_max_lsb']} LSB; unpacked XNNPACK vs builtin max "
            f"{r['unpacked_xnnpack_vs_builtin_max_lsb']} LSB"
            + (f"; the int8 model, XNNPACK vs builtin: max {r['int8_xnnpack_vs_builtin_max_lsb']} LSB"
               if "int8_xnnpack_vs_builtin_max_lsb" in r else ""))
    lines += [""] + parity_prose(measured["parity"]) + [""]
    if notes:
        lines += ["## Conversion notes", ""] + [f"- {k}: {v}" for k, v in notes.items()] + [""]
    write_text_atomic(args.out / "runtime.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
