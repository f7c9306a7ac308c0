"""The cheapest adaptive plan of MobileNetV2 (issue 14): where its file's bytes go, with per-channel
scales everywhere and with the per-tensor option the allocator now has.

    python benchmarks/mnv2_floor.py --commit SHA [--configs 0.35:32 0.5:64 1.0:224]

Writes benchmarks/results/mnv2_floor.{csv,md}. For each alpha:size, an untrained MobileNetV2 (Keras
initialisation, seed 0; its QAT model's biases then set to small nonzero values by
`adaptive.nonzero_biases`, as a trained model's are: the converter stores all-zero biases in a
compact shared form, so a fresh model's file understates a trained one's) gets the cheapest plan
the adaptive scheme can make (`adaptive.cheapest_plan`: every free layer at 2 bits, the stem and
classifier at 8; "per_channel": one scale per output channel everywhere, as before issue 14;
"per_tensor": one kernel scale where `adaptive.per_tensor_candidates` offers it). The QAT model is
converted by convert's own engine (`export.convert_model`: parity check included, INT2 packing) and
the written file is read back:
its bytes split into weight values, int32 biases, the scales and int64 zero points of kernels and
biases, activation quantization parameters, tensor names and the rest (graph, tables). Bits per
weight = file bytes x 8 / weights of the quantized layers (kernels only). The allocator's estimate of
the same plan (`adaptive.smallest_budget`) is shown beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

PARTS = ["weight_values", "bias_values", "weight_scales", "weight_zero_points", "bias_scales", "bias_zero_points",
         "activation_qparams", "tensor_names", "rest"]


def byte_parts(flatbuffer: bytes) -> dict[str, int]:
    """The file's bytes by what they hold (PARTS); each buffer counted once, the rest by difference."""
    from tfdefakeq.runtime.modelinfo import schema_module

    schema = schema_module()
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    parts = dict.fromkeys(PARTS, 0)
    seen = set()
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            buffer = model.buffers[tensor.buffer]
            size = 0 if buffer is None or buffer.data is None else len(buffer.data)
            q = tensor.quantization
            scales = 0 if q is None or q.scale is None else len(q.scale)
            zeros = 0 if q is None or q.zeroPoint is None else len(q.zeroPoint)
            parts["tensor_names"] += len(tensor.name or b"")
            if not size:
                parts["activation_qparams"] += 4 * scales + 8 * zeros
                continue
            kind = "bias" if tensor.type == schema.TensorType.INT32 else "weight"
            if tensor.buffer not in seen:
                parts[f"{kind}_values"] += size
                seen.add(tensor.buffer)
            parts[f"{kind}_scales"] += 4 * scales
            parts[f"{kind}_zero_points"] += 8 * zeros
    parts["rest"] = len(flatbuffer) - sum(parts.values())
    return parts


def measure(alpha: float, size: int, per_tensor: bool, images: int, work: Path) -> dict:
    from tfdefakeq.backbones import build
    from tfdefakeq.core.manifest import Manifest, Preprocess
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.export import convert_model
    from tfdefakeq.quant import quantize, weight_bits
    from tfdefakeq.quant.adaptive import _weighted_layers, cheapest_plan, nonzero_biases, smallest_budget
    from tfdefakeq.quant.fold import fold_batchnorm

    keras.utils.set_random_seed(0)
    model = build("mobilenet_v2", input_shape=(size, size, 3), alpha=alpha)
    folded, default, sizes, depthwise = _weighted_layers(fold_batchnorm(model), 4)
    bits, scalar = cheapest_plan(folded, default, sizes, depthwise, per_tensor=per_tensor)
    rng = np.random.default_rng(1)
    uint8 = rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8)
    calib = Preprocess().apply(uint8)
    started = time.perf_counter()
    qat = quantize(model, "adaptive", calib, bit_plan=bits, per_tensor=scalar, salient_ratio=0)
    nonzero_biases(qat)
    manifest = Manifest(backbone="mobilenet_v2", input_shape=[size, size, 3], format="keras", scheme="adaptive",
                        weight_bits=weight_bits(qat), per_tensor=scalar, build_kwargs={"alpha": alpha})
    path = work / f"mnv2_{alpha}_{size}_{'pt' if per_tensor else 'pc'}.tflite"
    written = convert_model(qat, manifest, "int4", uint8, path)
    data = path.read_bytes()
    weights = sum(sizes.values())
    parts = byte_parts(data)
    depthwise_channels = sum(int(np.prod(folded.get_layer(n).weights[0].shape[2:])) for n in depthwise)
    return {
        "alpha": alpha, "input_px": size, "scales": "per_tensor" if per_tensor else "per_channel",
        "weights": weights, "layers": len(bits), "per_tensor_layers": len(scalar),
        "depthwise_weights": sum(sizes[n] for n in depthwise), "depthwise_channels": depthwise_channels,
        "file_bytes": len(data), "file_bits_per_weight": 8 * len(data) / weights,
        "estimated_bits_per_weight": smallest_budget(model, per_tensor=per_tensor),
        **parts,
        "parity_agrees": bool(written.metrics["parity"]["agrees"]),
        "parity_logits_agree": bool(written.metrics["parity"].get("logits_agree")),
        "parity_max_lsb": written.metrics["parity"].get("max_diff_lsb", float("nan")),
        "convert_s": time.perf_counter() - started,
    }


def prose(df) -> list[str]:
    """Sentences computed from the rows: the floor before and after, and where the bytes went."""
    lines = []
    for (alpha, size), group in df.groupby(["alpha", "input_px"], sort=False):
        rows = {r["scales"]: r for r in group.to_dict("records")}
        if {"per_channel", "per_tensor"} - set(rows):
            continue
        pc, pt = rows["per_channel"], rows["per_tensor"]
        meta = sum(pc[k] for k in ("weight_scales", "weight_zero_points", "bias_scales", "bias_zero_points"))
        meta_pt = sum(pt[k] for k in ("weight_scales", "weight_zero_points", "bias_scales", "bias_zero_points"))
        parity = ("both files passed convert's parity check" if pc["parity_agrees"] and pt["parity_agrees"] else
                  f"parity: per-channel {'passed' if pc['parity_agrees'] else 'FAILED'}, "
                  f"per-tensor {'passed' if pt['parity_agrees'] else 'FAILED'}")
        lines.append(
            f"- alpha {alpha:g}, {size} px ({pc['weights']:,} weights): the cheapest plan's file is {pc['file_bytes']:,} bytes "
            f"({pc['file_bits_per_weight']:.3f} bits per weight) with per-channel scales, of which scales and zero points "
            f"of kernels and biases take {meta:,} ({100 * meta / pc['file_bytes']:.1f}%) against {pc['weight_values']:,} of weight "
            f"values; with one scale for the {pt['per_tensor_layers']} of {pt['layers']} layers offered it, {pt['file_bytes']:,} bytes "
            f"({pt['file_bits_per_weight']:.3f} bits per weight; scales and zero points {meta_pt:,}), "
            f"{pc['file_bytes'] / pt['file_bytes']:.2f}x smaller; {parity}. The allocator's estimate: "
            f"{pc['estimated_bits_per_weight']:.3f} / {pt['estimated_bits_per_weight']:.3f} bits per weight.")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["0.35:32", "0.5:64", "1.0:224"], help="alpha:input_px")
    p.add_argument("--images", type=int, default=8, help="calibration / parity images (seeded uniform noise)")
    p.add_argument("--commit", required=True, help="the commit the snapshot was taken from (git rev-parse HEAD)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mnv2_floor"))
    args = p.parse_args(argv)

    import pandas as pd

    from tfdefakeq.core.fileio import write_text_atomic
    from tfdefakeq.core.machineload import LoadSampler
    from tfdefakeq.core.report import benchmark_header, write_table

    load = LoadSampler().start()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            alpha, size = float(config.split(":")[0]), int(config.split(":")[1])
            for per_tensor in (False, True):
                rows.append(measure(alpha, size, per_tensor, args.images, Path(tmp)))
                print({k: rows[-1][k] for k in ("alpha", "input_px", "scales", "file_bytes", "file_bits_per_weight",
                                                "parity_agrees")}, flush=True)
    load.stop()
    df = pd.DataFrame(rows)
    header = benchmark_header(
        args.commit, "benchmarks/mnv2_floor.py", sys.argv[1:] if argv is None else argv, load,
        models="untrained MobileNetV2 (seed 0), biases made nonzero as a trained model's are; cheapest plan: free "
               "layers at 2 bits (INT2), stem and classifier at 8; bits per weight = file bytes x 8 / kernel weights")
    formats = {c: "{:,.0f}" for c in ["weights", "file_bytes", "depthwise_weights", "depthwise_channels", *PARTS]}
    formats.update(file_bits_per_weight="{:.3f}", estimated_bits_per_weight="{:.3f}", convert_s="{:.0f}", alpha="{:g}",
                   input_px="{:.0f}", layers="{:.0f}", per_tensor_layers="{:.0f}", parity_max_lsb="{:.1f}")
    paths = write_table(df, args.out, header, "MobileNetV2: the cheapest adaptive plan, per-channel vs per-tensor scales", formats)
    md = paths[1].read_text() + "\n" + "\n".join(prose(df)) + "\n"
    write_text_atomic(paths[1], md, overwrite=True)
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
