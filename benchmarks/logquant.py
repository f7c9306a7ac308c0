"""QMDD's shifted log activation quantizer in TFLite: the realisation options, measured.

    python benchmarks/logquant.py [--epochs 4] [--qat-epochs 1] [--width 0.25] [--runs 200]

Writes benchmarks/results/logquant.{csv,md}. One cqb_resnet18 detector (PReLU activations, high-pass
front end) at 64 px, trained float on the embedded synthetic data (tfdefakeq.data.synthetic, default
config: train split for training, 64 val images for calibration, the whole test split for AP), then
fine-tuned twice for the same epochs: w8a8 (uniform int8 activations, the control) and w8 weights +
4-bit ShiftedLogActivationQuantizer on every PReLU / ReLU output (tfdefakeq.quant.logquant). Rows:
- each deployable variant: converts with `export.to_tflite(model, "int8", representative)`?, ops
  added against the control, max |Keras - TFLite| logit in output LSB against the Keras model it
  realises (the log rows: the Keras log model), decisions that agree, TFLite AP on the test split,
  latency p50 (ai-edge-litert, 1 thread, XNNPACK, `runtime.bench.bench_model`);
- `exact_layers`: log quantizers whose TFLite output equals the Keras quantizer applied to the
  TFLite input tensor, bit for bit (3 test images; `logquant.lut_layer_errors`): the realisation's
  own error, apart from the int8 kernels before it;
- probes (one 8x8x4 int8 tensor through the option, no model): (a) thresholds via comparisons and
  (b) an int8 GATHER / EMBEDDING_LOOKUP table, with the converter's error when they do not convert.
The level table compares a trained log quantizer's 16 levels with the int8 grid of its tensor.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

COLUMNS = ["variant", "realisation", "converts", "ops_added", "max_lsb", "decisions_agree", "exact_layers", "ap_keras",
           "ap_tflite", "latency_ms", "size_bytes", "note"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4, help="float training epochs")
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--runs", type=int, default=200, help="latency runs per model")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "logquant"))
    return p.parse_args(argv)


def load_split(root, split, size, limit=None):
    from tfdefakeq.data.folders import balanced_subset, scan_forensynths
    from tfdefakeq.runtime.images import load_images

    samples = scan_forensynths(root, split)
    if limit:
        samples = balanced_subset(samples, limit)
    return load_images([s.path for s in samples], (size, size)), np.array([s.label for s in samples], np.float32)


def fit(model, x, y, epochs, lr, batch_size=32):
    from tfdefakeq.core.tfcompat import keras

    model.compile(keras.optimizers.Adam(lr), keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x, y[:, None], batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)


def tflite_eval(path, images, labels, keras_logits, preprocess, runs):
    from tfdefakeq.runtime.latency import bench_model
    from tfdefakeq.runtime.interpreter import TFLiteModel
    from tfdefakeq.runtime.metrics import average_precision

    tfl = TFLiteModel(path)
    logits = tfl.predict_logits(images, preprocess)
    lsb = tfl.output_quant[0]
    return {
        "max_lsb": float(np.abs(logits - keras_logits).max() / lsb),
        "decisions_agree": float(np.mean((logits > 0) == (keras_logits > 0))),
        "ap_tflite": average_precision(labels, logits),
        "latency_ms": bench_model(path, threads=1, warmup=20, runs=runs)["latency_ms_p50"],
        "size_bytes": Path(path).stat().st_size,
    }, logits


def _op_summary(ops) -> str:
    from collections import Counter

    counts = Counter(f"{o.name}v{o.version}" for o in ops)
    return " ".join(f"{name}x{n}" if n > 1 else name for name, n in counts.items())


def probe(fn):
    """Converts input -> FQ8 -> fn -> FQ8 (8x8x4) with the full-int8 settings; (ops, error)."""
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.runtime.modelinfo import read_model_info
    from tfdefakeq.core.tfcompat import keras, tf

    class Probe(keras.layers.Layer):
        @tf.autograph.experimental.do_not_convert
        def call(self, x, training=None):
            x8 = tf.quantization.fake_quant_with_min_max_args(x, -0.5, 4.0)
            return tf.quantization.fake_quant_with_min_max_args(fn(x8), -0.5, 4.0)

    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, Probe()(inputs))
    rep = np.random.default_rng(0).uniform(-0.5, 4.0, (8, 8, 8, 4)).astype(np.float32)
    try:
        flat = to_tflite(model, "int8", rep)
    except Exception as e:  # the converter's message is the result
        lines = [ln.strip() for ln in str(e).splitlines() if "error" in ln.lower()]
        return "", (lines[0] if lines else str(e).splitlines()[0])[:220]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.tflite"
        path.write_bytes(flat)
        info = read_model_info(path)
        try:
            from tfdefakeq.runtime.loader import load_interpreter

            load_interpreter(path).invoke()
        except Exception as e:
            return _op_summary(info.ops), f"runs: no ({str(e).splitlines()[0][:160]})"
        types = sorted({t.type for t in info.tensors})
        float_ops = sorted({o.name for o in info.ops if o.name in ("QUANTIZE", "DEQUANTIZE", "ROUND", "CAST")})
        return _op_summary(info.ops), f"tensor types {types}; float islands via {float_ops}"


def probes() -> list[dict]:
    from tfdefakeq.core.tfcompat import tf

    levels = np.array([-0.5, -0.3, 0.0, 0.3, 0.8, 1.6, 3.0], np.float32)
    thresholds = (levels[:-1] + levels[1:]) / 2

    def staircase(x):
        steps = [tf.cast(x >= t, tf.float32) * float(d) for t, d in zip(thresholds, np.diff(levels))]
        return float(levels[0]) + tf.add_n(steps)

    def gather(x):
        index = tf.cast(tf.round((x + 0.5) / (4.5 / 255)), tf.int32)
        return tf.gather(tf.constant(np.linspace(-0.5, 4.0, 256, dtype=np.float32)), index)

    def embedding(x):
        index = tf.cast(tf.round((x + 0.5) / (4.5 / 255)), tf.int32)
        return tf.nn.embedding_lookup(tf.constant(np.linspace(-0.5, 4.0, 256, dtype=np.float32)[:, None]), index)[..., 0]

    rows = []
    for variant, realisation, fn in [("probe: thresholds", "(a) GREATER_EQUAL/CAST/MUL/ADD", staircase),
                                     ("probe: gather", "(b) int8 code -> GATHER table", gather),
                                     ("probe: embedding", "(b) int8 code -> EMBEDDING_LOOKUP", embedding)]:
        ops, error = probe(fn)
        converts = "no" if not ops or error.startswith("runs: no") else "float islands" if "FLOAT32" in error else "yes"
        rows.append({"variant": variant, "realisation": realisation, "converts": converts, "ops_added": ops, "note": error})
    return rows


def level_table(qat) -> "object":
    """Per log quantizer of `qat` (first, middle, last): its int8-snapped levels against the grid."""
    import pandas as pd

    from tfdefakeq.quant.logquant import log_quantizers

    found = log_quantizers(qat)
    rows = []
    for w, q, v in [found[0], found[len(found) // 2], found[-1]]:
        low, high = q.output_range(v)
        step = (high - low) / 255
        x = np.linspace(low, high, 4 * 255 + 1, dtype=np.float32)
        levels = np.unique(q(x, False, v).numpy())
        gaps = np.diff(levels) / step
        near0 = levels[np.abs(levels) <= 0.1 * (high - low)]
        rows.append({"layer": w.name, "range": f"[{low:.3f}, {high:.3f}]", "levels": len(levels),
                     "smallest_gap_int8_steps": float(gaps.min()), "largest_gap_int8_steps": float(gaps.max()),
                     "uniform4_gap_int8_steps": 255 / 15, "levels_within_10pct_of_0": len(near0),
                     "uniform4_levels_within_10pct_of_0": int(np.sum(np.abs(np.linspace(low, high, 16)) <= 0.1 * (high - low)))})
    return pd.DataFrame(rows)


def main(args) -> int:
    import pandas as pd

    from tfdefakeq.core import report
    from tfdefakeq.backbones import build
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.data.synthetic import generate
    from tfdefakeq.core.fileio import write_text_atomic
    from tfdefakeq.core.manifest import Preprocess, command_line, versions
    from tfdefakeq.quant import logquant as lq
    from tfdefakeq.quant import quantize
    from tfdefakeq.quant.calibrate import snap_biases
    from tfdefakeq.runtime.interpreter import cpu_name
    from tfdefakeq.runtime.metrics import average_precision
    from tfdefakeq.runtime.modelinfo import read_model_info
    from tfdefakeq.core.tfcompat import keras

    start = time.time()
    keras.utils.set_random_seed(0)
    pre = Preprocess()
    root = generate(progress=False)
    train_u8, train_y = load_split(root, "train", 64)
    calib_u8, _ = load_split(root, "val", 64, limit=64)
    test_u8, test_y = load_split(root, "test", 64)
    x_train, x_calib, x_test = pre.apply(train_u8), pre.apply(calib_u8), pre.apply(test_u8)
    print(f"data: {len(x_train)} train, {len(x_test)} test ({time.time() - start:.0f} s)", flush=True)

    model = build("cqb_resnet18", input_shape=(64, 64, 3), width=args.width, highpass=True)
    fit(model, x_train, train_y, args.epochs, 1e-3)
    float_logits = model.predict(x_test, verbose=0, batch_size=64).reshape(-1)
    float_ap = average_precision(test_y, float_logits)
    print(f"float AP {float_ap:.4f} ({time.time() - start:.0f} s)", flush=True)
    float_weights = model.get_weights()

    rows = []
    tmp = Path(tempfile.mkdtemp())

    def convert_and_measure(qat, name, realisation, reference_logits, note=""):
        path = tmp / f"{name}.tflite"
        path.write_bytes(to_tflite(qat, "int8", x_calib))
        info = read_model_info(path)
        measured, _ = tflite_eval(path, test_u8, test_y, reference_logits, pre, args.runs)
        row = {"variant": name, "realisation": realisation, "converts": "yes",
               "ap_keras": average_precision(test_y, reference_logits), "note": note, **measured}
        return row, path, info

    # control: uniform int8 activations (w8a8)
    w8a8 = quantize(model, "w8a8", x_calib)
    fit(w8a8, x_train, train_y, args.qat_epochs, 1e-4)
    snap_biases(w8a8)
    w8a8_logits = w8a8.predict(x_test, verbose=0, batch_size=64).reshape(-1)
    row, _, control_info = convert_and_measure(w8a8, "w8a8 QAT (control)", "uniform int8 activations", w8a8_logits)
    rows.append({**row, "ops_added": ""})
    print(rows[-1], flush=True)

    def added(info):
        diff = {k: v - control_info.op_counts.get(k, 0) for k, v in info.op_counts.items()}
        return " ".join(f"{k}+{v}" for k, v in sorted(diff.items()) if v)

    # log quantizer
    model.set_weights(float_weights)
    qat = lq.quantize_log(model, x_calib, num_bits=4)
    fit(qat, x_train, train_y, args.qat_epochs, 1e-4)
    lq.realise(qat, "lut")
    snap_biases(qat)
    log_logits = qat.predict(x_test, verbose=0, batch_size=64).reshape(-1)
    n_log = len(lq.log_quantizers(qat))
    row, path, info = convert_and_measure(qat, "w8 + 4-bit log act", "(a) lut: ADD+LOG+EXP+SUB", log_logits,
                                          f"{n_log} log quantizers")
    errors = lq.lut_layer_errors(qat, path, x_test[:3])
    exact = sum(e < 0.5 for e in errors.values())
    rows.append({**row, "ops_added": added(info), "exact_layers": f"{exact}/{n_log}"})
    print(rows[-1], flush=True)
    levels = level_table(qat)

    lq.realise(qat, "float")
    paper_logits = qat.predict(x_test, verbose=0, batch_size=64).reshape(-1)
    rows.append({"variant": "w8 + 4-bit log act", "realisation": "float levels (Keras only)", "converts": "no",
                 "ap_keras": average_precision(test_y, paper_logits),
                 "decisions_agree": float(np.mean((paper_logits > 0) == (log_logits > 0))),
                 "note": f"levels not snapped to int8; max |logit - lut Keras| {np.abs(paper_logits - log_logits).max():.3f}"})

    lq.realise(qat, "uniform8")
    snap_biases(qat)
    row, path, info = convert_and_measure(qat, "w8 + 4-bit log act", "(c) uniform8 over the same range", log_logits,
                                          "TFLite vs the Keras log model it was trained as")
    rows.append({**row, "ops_added": added(info)})
    print(rows[-1], flush=True)
    rows.extend(probes())

    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    header = {
        "machine": f"{platform.machine()} {cpu_name()}, {os.cpu_count()} cores",
        "command": command_line(),
        "versions": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "model": f"cqb_resnet18 width {args.width}, high-pass, 64 px, float {args.epochs} epochs (AP {float_ap:.4f}), "
                 f"QAT {args.qat_epochs} epoch(s) at 1e-4; {len(x_train)} train / {len(x_test)} test images",
        "latency": f"ai-edge-litert, 1 thread, XNNPACK, p50 of {args.runs} invokes",
        "max_lsb": "max |Keras - TFLite| logit over the test split in output LSB, against the Keras model the row realises",
        "seconds": f"{time.time() - start:.0f}",
    }
    formats = {"max_lsb": "{:.1f}", "decisions_agree": "{:.4f}", "ap_keras": "{:.4f}", "ap_tflite": "{:.4f}",
               "latency_ms": "{:.3f}", "size_bytes": "{:,.0f}"}
    report.write_table(df, args.out, header, "Shifted log activation quantizer: TFLite realisations", formats)
    md = Path(args.out + ".md")
    write_text_atomic(md, md.read_text() + "\n## Levels of the trained 4-bit log quantizers against the int8 grid\n\n"
                      + report.markdown_table(levels, {"smallest_gap_int8_steps": "{:.2f}", "largest_gap_int8_steps": "{:.2f}",
                                                       "uniform4_gap_int8_steps": "{:.2f}"}) + "\n", overwrite=True)
    print(df.to_string())
    print(levels.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
