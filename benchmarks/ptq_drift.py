"""Where post-training int8 loses a ported EfficientNet: every int8 tensor against its float Keras layer.

    git archive HEAD | tar -x -C /tmp/snap && cd /tmp/snap    # TensorFlow re-reads sources while tracing
    python benchmarks/ptq_drift.py --commit SHA [--names efficientnet_b0 efficientnet_b4_dfb] [--images 8]

Writes benchmarks/results/ptq_drift.{csv,md} (one row per architecture) and ptq_drift_tensors.{csv,md}
(one row per int8 activation tensor matched by name to a Keras layer, in op order).

For each torch fixture (tests/fixtures/torch: seeded weights, at its own input size): port it
(`tfdefakeq.port`), convert the float Keras model to int8 post-training (engine.export.to_tflite,
calibrated on --images crops of the embedded synthetic val split, the same images it is then run on)
and run every tensor of the .tflite (engine.parity.run_tflite_tensors, XNNPACK as check_parity).
Per tensor: rel_error = mean |Keras - TFLite| / std(Keras) (error relative to the tensor's own
spread, comparable across layers), max/mean LSB (in that tensor's int8 step), step_over_std = the
int8 step / std(Keras) (a range set by a few large values leaves the bulk of the tensor few steps).

What it separates: an export fault (one op computing something else) shows as a jump of rel_error
at one op; post-training quantization error shows as rel_error growing with depth.
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

NAMES = ["efficientnet_b0", "efficientnet_b4_dfb"]


def tensor_rows(name: str, work: Path, images: int) -> tuple[list[dict], dict]:
    """Ports fixture `name`, converts it to int8 and compares every matched tensor (rows, summary)."""
    from tests.torchport.fixtures import load_fixture
    from tfdefakeq import port
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.data.folders import balanced_subset, scan_forensynths
    from tfdefakeq.data.synthetic import SyntheticConfig, generate
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.engine.parity import name_fragments, run_tflite_tensors
    from tfdefakeq.runtime.images import load_images
    from tfdefakeq.torchport.checkpoint import state_dict_bytes

    f = load_fixture(name)
    size = int(f["size"])
    ckpt, det = work / f"{name}.pth", work / f"{name}.weights.h5"
    ckpt.write_bytes(state_dict_bytes(f["state"]))
    port.main(port.parse_args([str(ckpt), "--backbone", f["backbone"], "--out", str(det), "--input-size", str(size)]))
    data = generate(work / f"data{size}", SyntheticConfig(generators=("upsampler",), max_crops_per_photo=2, size=size),
                    progress=False)
    model, manifest = load_detector(str(det))
    val = balanced_subset(scan_forensynths(data, "val"), images)
    uint8 = load_images([s.path for s in val], (size, size))
    x = manifest.preprocess.apply(uint8)
    tflite = work / f"{name}_int8.tflite"
    tflite.write_bytes(to_tflite(model, "int8", x))
    info, values = run_tflite_tensors(tflite, x, use_xnnpack=True)

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    outputs = keras.Model(model.inputs, [layer.output for layer in layers]).predict(x, verbose=0)
    by_name = {layer.name: np.asarray(o, dtype=np.float64) for layer, o in zip(layers, outputs)}
    rows = []
    for index, meta in info.items():
        fragments = name_fragments(meta["name"])
        same = [n for n in by_name if n in fragments and by_name[n][0].size == int(np.prod(meta["shape"][1:]))]
        if not same:
            continue
        keras_value = by_name[same[-1]].reshape(values[index].shape)
        diff = np.abs(keras_value - values[index])
        spread = float(keras_value.std()) or 1e-12
        rows.append({"architecture": name, "op_index": int(meta["op_index"]), "keras_layer": same[-1], "op": meta["op"],
                     "scale": float(meta["scale"]), "keras_min": float(keras_value.min()), "keras_max": float(keras_value.max()),
                     "step_over_std": float(meta["scale"]) / spread, "max_lsb": float(diff.max() / meta["scale"]),
                     "mean_lsb": float(diff.mean() / meta["scale"]), "rel_error": float(diff.mean()) / spread})
    rows.sort(key=lambda r: r["op_index"])

    from tfdefakeq.runtime.loader import open_model

    keras_logits = model.predict(x, verbose=0).reshape(-1)
    tfl_logits = open_model(tflite).predict_logits(uint8, manifest.preprocess).reshape(-1)
    return rows, _summary(name, size, rows, keras_logits, tfl_logits)


def _summary(name: str, size: int, rows: list[dict], keras_logits, tfl_logits) -> dict:
    """One architecture's row: the logit error, rel_error along the depth, the largest one-op jump."""
    gated = [r for r in rows if r["op"] != "LOGISTIC"]  # a sigmoid's output step is fixed (1/256): compare the rest
    jumps = [(b["rel_error"] - a["rel_error"], b) for a, b in zip(gated, gated[1:])]
    jump, at = max(jumps, key=lambda j: j[0])
    n = len(rows)
    depth = {f"rel_error_at_{q}pct_depth": rows[min(n - 1, n * q // 100)]["rel_error"] for q in (10, 25, 50, 75)}
    largest = float(np.abs(keras_logits).max())
    diff = float(np.abs(keras_logits - tfl_logits).max())
    return {"architecture": name, "input_px": size, "tensors_matched": n,
            "max_logit_diff": diff, "largest_logit": largest, "diff_over_largest": diff / max(1.0, largest),
            **depth, "rel_error_last": rows[-1]["rel_error"], "last_tensor": rows[-1]["keras_layer"],
            "largest_one_op_jump": jump, "jump_at": at["keras_layer"], "jump_from": at["rel_error"] - jump,
            "jump_step_over_std_before": next(a for a, b in zip(gated, gated[1:]) if b is at)["step_over_std"],
            "median_step_over_std": float(np.median([r["step_over_std"] for r in gated]))}


def _sentences(summary: list[dict]) -> str:
    """The findings, computed from the rows."""
    out = []
    for s in summary:
        out.append(f"{s['architecture']} ({s['input_px']} px, {s['tensors_matched']} tensors): max logit diff "
                   f"{s['max_logit_diff']:.3g} = {s['diff_over_largest']:.0%} of the largest logit; rel_error "
                   f"{s['rel_error_at_10pct_depth']:.3f} / {s['rel_error_at_25pct_depth']:.3f} / {s['rel_error_at_50pct_depth']:.3f} / "
                   f"{s['rel_error_at_75pct_depth']:.3f} at 10/25/50/75% of the ops, {s['rel_error_last']:.3f} at "
                   f"{s['last_tensor']}; the largest one-op step {s['jump_from']:.3f} -> {s['jump_from'] + s['largest_one_op_jump']:.3f} "
                   f"at {s['jump_at']} (its input's int8 step {s['jump_step_over_std_before']:.2f} of its std, median "
                   f"{s['median_step_over_std']:.2f})")
    return "; ".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--names", nargs="+", default=NAMES)
    p.add_argument("--images", type=int, default=8, help="calibration images, also the ones compared")
    p.add_argument("--commit", required=True, help="the commit the snapshot it runs from was taken at (git rev-parse HEAD)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ptq_drift"))
    args = p.parse_args(argv)

    import pandas as pd

    from tests.torchport.fixtures import FIXTURES
    from tfdefakeq.core.machineload import LoadSampler
    from tfdefakeq.core.report import benchmark_header, write_table

    unknown = [n for n in args.names if not (FIXTURES / f"{n}.npz").exists()]
    if unknown:
        p.error(f"no torch fixture for {', '.join(unknown)} in {FIXTURES}")
    started, load = time.perf_counter(), LoadSampler().start()
    rows, summary = [], []
    with tempfile.TemporaryDirectory(prefix="ptq_drift_") as tmp:
        for name in args.names:
            print(f"== {name}", flush=True)
            r, s = tensor_rows(name, Path(tmp), args.images)
            rows += r
            summary.append(s)
    load.stop()
    header = benchmark_header(args.commit, "benchmarks/ptq_drift.py", sys.argv[1:] if argv is None else argv, load,
                              method=f"int8 post-training (engine.export.to_tflite) on {args.images} synthetic val crops, "
                                     "XNNPACK; rel_error = mean |Keras - TFLite| / std(Keras) per tensor",
                              wall=f"{time.perf_counter() - started:.0f} s",
                              findings=_sentences(summary))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    formats = {c: "{:.3g}" for c in ("scale", "keras_min", "keras_max", "max_logit_diff", "largest_logit")}
    paths = write_table(pd.DataFrame(summary), out, header, "Post-training int8 error through a ported EfficientNet", formats)
    paths += write_table(pd.DataFrame(rows), out.with_name(out.name + "_tensors"), header,
                         "Post-training int8 error per tensor", formats)
    print("wrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
