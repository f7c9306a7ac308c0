"""Training step time of the adaptive QAT scheme against the float step (issue 14: target <= 1.5x),
with the steps between them, measured side by side in one process.

    python benchmarks/qat_step_time.py --commit SHA [--backbones resnet18 mobilenet_v2] [--sizes 64 128]
                                       [--batch 32] [--rounds 6] [--steps 3]

Writes benchmarks/results/qat_step_time.{csv,md}. For each backbone and input size, one untrained
float model (seed 0; ResNet-18 at --width, MobileNetV2 at --alpha) and, built from it:
- float: the float model, compiled as `tfdefakeq.train` compiles it (AdamW, BCE from logits, AUC and
  accuracy metrics);
- lsq_w4a8: plain LSQ QAT (4-bit weights, learned activation ranges), no split, no teacher;
- adaptive_no_kd: the adaptive scheme's QAT model (BN folded, LSQ, a W4 plan with 1/32 of each low-bit
  conv's input channels split onto an 8-bit path, as the default salient ratio does; channels drawn
  at random, which costs what salient ones do), trained without the teacher;
- adaptive_no_kd_tf_gather: adaptive_no_kd with the split's channel selections traced as tf.gather, as
  training did before ChannelGather took increasing channels as slices (quant.vertical._sliced_gather):
  what that change saves, measured in the same rounds;
- adaptive: the same model inside the Distiller (logit and feature distillation from the float
  teacher), which is what `tfdefakeq.train --scheme adaptive` runs;
- adaptive_no_split: `adaptive` with the same W4 plan and no conv split (salient ratio 0): the step of
  a plan in which the allocator takes no split, as it did in most protocol-v2 runs (the split_layers
  column of benchmarks/results/quant_methods*_rows.csv). `adaptive` splits every low-bit conv, the
  worst case; the difference, divided by the number of split convs, is what one split conv costs;
- teacher_forward: the float teacher's forward pass alone (training=False), the part of the
  adaptive step that distillation adds besides its losses.
Each is traced and run twice first; then --rounds rounds, each running every variant for --steps
steps on the same fixed batch (random inputs in [-1, 1]), in an order rotated every round so a busy
machine slows all of them alike. step_s is the median over rounds of a round's mean step time; the
ratios divide by the float step of the same round (median over rounds, min-max beside it).
oneDNN's primitive cache is enlarged (ONEDNN_PRIMITIVE_CACHE_CAPACITY) because several models share the
process: with the default 1024 entries it thrashed and made a variant's time depend on build order
(measured on ResNet-18: the same QAT step read 1.26x or 1.58x float; 1.27x / 1.28x with 16384).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16384")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

VARIANTS = ("float", "lsq_w4a8", "adaptive_no_kd", "adaptive_no_kd_tf_gather", "adaptive", "adaptive_no_split",
            "teacher_forward")
TARGET = 1.5


def _compile(model):
    from tfdefakeq.core.tfcompat import keras

    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.AUC(from_logits=True, name="auc"), keras.metrics.BinaryAccuracy(threshold=0.0, name="acc")])
    return model


def build_steps(backbone: str, size: int, batch: int, width: float, alpha: float) -> dict:
    """variant -> a function running one step of it on a fixed batch."""
    from tfdefakeq.backbones import build
    from tfdefakeq.core.tfcompat import keras, tf
    from tfdefakeq.quant import quantize
    from tfdefakeq.quant.adaptive import DEFAULT_SALIENT_RATIO
    from tfdefakeq.quant.distill import Distiller
    from tfdefakeq.quant.fold import fold_batchnorm
    from tfdefakeq.quant.schemes import plan_weight_bits

    keras.utils.set_random_seed(0)
    kwargs = {"alpha": alpha} if backbone.startswith("mobilenet") else {"width": width}
    teacher = build(backbone, input_shape=(size, size, 3), **kwargs)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 2, (batch, 1)).astype(np.float32)
    plan = plan_weight_bits(fold_batchnorm(teacher), 4)

    def adaptive_qat(salient_ratio=DEFAULT_SALIENT_RATIO):
        return quantize(teacher, "adaptive", x[:16], bit_plan=plan, channel_choice="random",
                        salient_ratio=salient_ratio, offer_per_tensor=False)

    models = {
        "float": _compile(teacher),
        "lsq_w4a8": _compile(quantize(teacher, "lsq_w4a8", x[:16])),
        "adaptive_no_kd": _compile(adaptive_qat()),
        "adaptive": _compile(Distiller(adaptive_qat(), teacher, total_steps=10_000)),
        "adaptive_no_split": _compile(Distiller(adaptive_qat(salient_ratio=0.0), teacher, total_steps=10_000)),
    }
    split = len(models["adaptive_no_kd"].quant_plan.salient_channels)
    if split == 0 or models["adaptive_no_split"].student.quant_plan.salient_channels:
        raise RuntimeError(f"{backbone}: expected every low-bit conv split in `adaptive` and none in `adaptive_no_split`")
    models["adaptive_no_kd_tf_gather"] = _compile(adaptive_qat())
    with _tf_gather_while_tracing():
        models["adaptive_no_kd_tf_gather"].train_on_batch(x, y)  # traced now; later steps reuse the trace
    models = {name: models[name] for name in VARIANTS if name in models}
    steps = {name: (lambda m=m: m.train_on_batch(x, y)) for name, m in models.items()}
    forward = tf.function(lambda t: teacher(t, training=False))
    steps["teacher_forward"] = lambda: forward(x).numpy()
    return steps, split


class _tf_gather_while_tracing:
    """Within: ChannelGather traces tf.gather in training too (the former training path)."""

    def __enter__(self):
        from tfdefakeq.quant import vertical

        self.saved = vertical.channel_runs
        vertical.channel_runs = lambda indices, channels: None

    def __exit__(self, *exc):
        from tfdefakeq.quant import vertical

        vertical.channel_runs = self.saved


def time_round_robin(steps: dict, rounds: int, per_round: int) -> dict[str, list[float]]:
    """variant -> mean step seconds of each round; every variant traced and run twice first."""
    for fn in steps.values():
        fn()
        fn()
    names = list(steps)
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            for _ in range(per_round):
                steps[name]()
            times[name].append((time.perf_counter() - start) / per_round)
    return times


def rows_of(backbone: str, size: int, split: int, times: dict[str, list[float]]) -> list[dict]:
    """split: the convs split in the variants that split (adaptive_no_kd*, adaptive)."""
    base = np.asarray(times["float"])
    rows = []
    for name, values in times.items():
        ratios = np.asarray(values) / base
        splits = split if name.startswith("adaptive") and name != "adaptive_no_split" else 0
        rows.append({"backbone": backbone, "input_px": size, "variant": name, "split_convs": splits,
                     "step_s": float(np.median(values)),
                     "ratio_to_float": float(np.median(ratios)), "ratio_min": float(ratios.min()),
                     "ratio_max": float(ratios.max()), "rounds": len(values)})
    return rows


def _against_target(row) -> str:
    """Whether every round of a variant was within TARGET ("meets"), none was, or some were."""
    return "meets" if row["ratio_max"] <= TARGET else ("does not meet" if row["ratio_min"] > TARGET else "straddles")


def prose(df) -> list[str]:
    """Sentences computed from the rows: the adaptive step against the target, and where its time goes."""
    lines = []
    for (backbone, size), group in df.groupby(["backbone", "input_px"], sort=False):
        r = {row["variant"]: row for row in group.to_dict("records")}
        ada = r["adaptive"]
        lines.append(
            f"- {backbone} {size} px: the adaptive step took {ada['ratio_to_float']:.2f}x the float step (rounds "
            f"{ada['ratio_min']:.2f}-{ada['ratio_max']:.2f}x), which {_against_target(ada)} the {TARGET}x target. Of the "
            f"{ada['ratio_to_float'] - 1:.2f} float steps it adds: LSQ QAT itself {r['lsq_w4a8']['ratio_to_float'] - 1:.2f}, "
            f"the salient split and the adaptive plan {r['adaptive_no_kd']['ratio_to_float'] - r['lsq_w4a8']['ratio_to_float']:.2f}, "
            f"distillation {ada['ratio_to_float'] - r['adaptive_no_kd']['ratio_to_float']:.2f} (the teacher's forward pass alone: "
            f"{r['teacher_forward']['ratio_to_float']:.2f}). With the split's channels selected by tf.gather, as "
            f"before, the step without distillation took {r['adaptive_no_kd_tf_gather']['ratio_to_float']:.2f}x float "
            f"against {r['adaptive_no_kd']['ratio_to_float']:.2f}x.")
        if "adaptive_no_split" in r:
            no = r["adaptive_no_split"]
            per = (ada["ratio_to_float"] - no["ratio_to_float"]) / ada["split_convs"]
            lines[-1] += (
                f" With the same plan and no split conv, the adaptive step took {no['ratio_to_float']:.2f}x float (rounds "
                f"{no['ratio_min']:.2f}-{no['ratio_max']:.2f}x), which {_against_target(no)} the target; splitting all "
                f"{ada['split_convs']} low-bit convs added {ada['ratio_to_float'] - no['ratio_to_float']:.2f} float steps, "
                f"{per:.3f} per split conv.")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["resnet18", "mobilenet_v2"])
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=float, default=0.5, help="ResNet width (benchmarks/quant_methods.py's)")
    p.add_argument("--alpha", type=float, default=0.5, help="MobileNetV2 alpha (benchmarks/quant_methods.py's)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=3, help="steps of each variant per round")
    p.add_argument("--commit", required=True, help="the commit the snapshot was taken from (git rev-parse HEAD)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "qat_step_time"))
    args = p.parse_args(argv)

    import pandas as pd

    from tfdefakeq.core.fileio import write_text_atomic
    from tfdefakeq.core.machineload import LoadSampler
    from tfdefakeq.core.report import benchmark_header, write_table

    load = LoadSampler().start()
    started = time.perf_counter()
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            print(f"{backbone} {size} px: building", flush=True)
            steps, split = build_steps(backbone, size, args.batch, args.width, args.alpha)
            rows += rows_of(backbone, size, split, time_round_robin(steps, args.rounds, args.steps))
            print(pd.DataFrame(rows[-len(steps):]).to_string(index=False), flush=True)
            del steps
    load.stop()
    df = pd.DataFrame(rows)
    header = benchmark_header(
        args.commit, "benchmarks/qat_step_time.py", sys.argv[1:] if argv is None else argv, load,
        packages=("python", "tensorflow", "tf-keras", "tensorflow-model-optimization"),
        settings=f"batch {args.batch}; resnet width {args.width:g}, mobilenet alpha {args.alpha:g}; {args.rounds} rounds of "
                 f"{args.steps} steps per variant, order rotated each round; untrained models, random inputs; "
                 f"ONEDNN_PRIMITIVE_CACHE_CAPACITY={os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY')}; "
                 f"{time.perf_counter() - started:.0f} s in all")
    formats = {"step_s": "{:.3f}", "ratio_to_float": "{:.2f}", "ratio_min": "{:.2f}", "ratio_max": "{:.2f}",
               "input_px": "{:.0f}", "rounds": "{:.0f}",
               "split_convs": "{:.0f}"}
    paths = write_table(df, args.out, header, "Training step time: adaptive QAT against float, one process, interleaved", formats)
    write_text_atomic(paths[1], paths[1].read_text() + "\n" + "\n".join(prose(df)) + "\n", overwrite=True)
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
