"""Result tables (pandas -> CSV + Markdown, with machine and command in a header) and plots."""

from __future__ import annotations

from pathlib import Path

from tfdefakeq.core.fileio import write_atomic, write_text_atomic


def header_lines(header: dict, prefix: str = "# ") -> str:
    return "".join(f"{prefix}{k}: {' '.join(str(v).split())}\n" for k, v in header.items())


def benchmark_header(commit: str, script: str, argv: list[str], load, packages=("python", "tensorflow", "tf-keras",
                     "tensorflow-model-optimization", "ai-edge-litert"), **settings) -> dict:
    """The header a benchmark's tables start with: the commit measured, the machine, the load measured
    while it ran (`machineload.LoadSampler`, stopped), the versions of `packages`, the command line
    (`python SCRIPT ARGV`), then `settings` (name -> sentence) in the order given."""
    import os
    import platform

    from tfdefakeq.core.manifest import versions
    from tfdefakeq.runtime.amx import int8_isa
    from tfdefakeq.runtime.interpreter import cpu_name

    v = versions()
    return {
        "commit": commit,
        "machine": f"{platform.machine()} {cpu_name()}, {os.cpu_count()} cores, int8 extensions: {int8_isa()}",
        "load": load.sentence(),
        "versions": ", ".join(f"{k} {v[k]}" for k in packages if k in v),
        "command": f"python {script} " + " ".join(argv),
        **settings,
    }


def format_cells(df, formats: dict[str, str] | None = None, default: str = "{:.4f}"):
    """A copy of `df` with numbers as display strings: `formats` maps column -> format string
    (e.g. "{:,.0f}" for bytes); NaN/None become empty cells."""
    formats = formats or {}
    shown = df.copy().astype(object)
    for column in df.columns:
        fmt = formats.get(column, default)
        shown[column] = [
            "" if value is None or (isinstance(value, float) and value != value)
            else fmt.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
            for value in df[column]
        ]
    return shown


def markdown_table(df, formats: dict[str, str] | None = None) -> str:
    """Markdown pipe table of `df`: numbers formatted by `format_cells` and right-aligned."""
    import pandas as pd

    align = tuple("right" if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) else "left"
                  for c in df.columns)
    return format_cells(df, formats).to_markdown(index=False, disable_numparse=True, colalign=align)


def write_table(df, stem, header: dict, title: str, formats: dict[str, str] | None = None, overwrite: bool = True) -> list[Path]:
    """Writes `stem`.csv (full precision; header as `# key: value` comments) and `stem`.md (title,
    header as a list, table formatted by `format_cells`)."""
    stem = Path(stem)  # suffixes are appended: a stem like "model.jpeg" keeps its dot
    csv_path = write_text_atomic(stem.with_name(stem.name + ".csv"), header_lines(header) + df.to_csv(index=False), overwrite=overwrite)
    table = markdown_table(df, formats)
    md = f"# {title}\n\n" + header_lines(header, prefix="- ") + "\n" + table + "\n"
    md_path = write_text_atomic(stem.with_name(stem.name + ".md"), md, overwrite=overwrite)
    return [csv_path, md_path]


def save_figure(fig, path, overwrite: bool = True) -> Path:
    """Renders a matplotlib figure to PNG bytes and writes them atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return write_atomic(path, buf.getvalue(), overwrite=overwrite)


def plot_model_comparison(df, path, title: str) -> Path:
    """Three panels over the model variants: AP per variant, file size (MB), p50 latency (ms)."""
    plt = _pyplot()
    labels = df["model"].tolist()
    colors = ["#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b"][: len(labels)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [("ap", "AP (mean over generators)"), ("size_mb", "file size (MB)"), ("latency_ms_p50", "latency p50 (ms, 1 thread)")]
    for ax, (column, name) in zip(axes, panels):
        values = df[column].astype(float)
        bars = ax.bar(labels, values.fillna(0.0), color=colors)
        for bar, value in zip(bars, values):
            ax.annotate("n/a" if value != value else f"{value:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=9)
        ax.set_title(name)
        ax.tick_params(axis="x", rotation=20)
        if column == "ap":
            low = float(values.min())
            ax.set_ylim(max(0.0, low - 0.1), 1.0)
    fig.suptitle(title)
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def record_measurements(tflite_path, rows: list[dict], bench: dict, dataset: str, rows_at_half: list[dict] | None = None) -> None:
    """Writes the test metrics per generator (`rows` from runtime.evaluate) and the latency (`bench`
    from runtime.bench.bench_model) into the model's manifest, so a shipped file explains itself.
    `rows_at_half`: the same metrics at threshold 0.5 when `rows` were taken at the manifest's own threshold
    (then `metrics["test_threshold"]` records that threshold)."""
    from tfdefakeq.core.manifest import Manifest, manifest_path

    def table(rows):
        return {row["generator"]: {k: row[k] for k in ("ap", "auc", "acc", "real_acc", "fake_acc", "eer", "n")} for row in rows}

    manifest = Manifest.load(manifest_path(tflite_path))
    manifest.dataset = dataset
    manifest.metrics["test"] = table(rows)
    if rows_at_half is not None:
        manifest.metrics["test_threshold"] = manifest.threshold.get("value", 0.5)
        manifest.metrics["test_at_0.5"] = table(rows_at_half)
    manifest.metrics["latency"] = {k: bench[k] for k in ("latency_ms_p50", "latency_ms_p90", "threads", "xnnpack", "packed_weights",
                                                          "machine", "processor", "runtime_version")}
    manifest.save(manifest_path(tflite_path), overwrite=True)


def write_models_index(folder) -> Path:
    """(Re)writes FOLDER/README.md: one row per `.tflite` with what its manifest records."""
    import pandas as pd

    from tfdefakeq.core.manifest import Manifest, manifest_path

    folder = Path(folder)
    rows = []
    for model in sorted(folder.glob("*.tflite")):
        m = Manifest.load(manifest_path(model))
        test = m.metrics.get("test", {}).get("mean", {})
        latency = m.metrics.get("latency", {})
        parity = m.metrics.get("parity", {})
        bits = sorted(set(m.weight_bits.values()))
        rows.append({
            "model": model.name, "backbone": m.backbone, "input": "x".join(map(str, m.input_shape)), "format": m.format,
            "scheme": m.scheme, "weight_bits": "/".join(map(str, bits)) if bits else "32",
            "size_bytes": model.stat().st_size, "test_ap": test.get("ap"), "test_auc": test.get("auc"),
            "threshold": m.threshold.get("value"), "test_acc": test.get("acc"), "test_real_acc": test.get("real_acc"),
            "test_acc_at_0.5": m.metrics.get("test_at_0.5", {}).get("mean", {}).get("acc"),
            "latency_ms_p50": latency.get("latency_ms_p50"),
            "keras_parity_lsb": parity.get("max_diff_lsb"),
        })
    df = pd.DataFrame(rows)
    machines = sorted({Manifest.load(manifest_path(p)).metrics.get("latency", {}).get("processor", "?") for p in folder.glob("*.tflite")})
    text = (
        "# Shipped detectors\n\n"
        "Made by `python -m tfdefakeq.demo --out runs/demo --ship tflite_models --avg-bits 3 2.5` (int8, int4 and the\n"
        "adaptive models) on the embedded synthetic data (64 px crops, test split of held-out source photos; AP/AUC/acc are\n"
        "means over the test generators). Each `NAME.tflite` has\n"
        "its `NAME.manifest.json`: preprocessing, bits per layer, decision threshold, per-generator metrics, Keras\n"
        "parity, versions and the command that made it (the `command` field says which recipe made each file).\n"
        "Latency: ai-edge-litert, 1 thread, XNNPACK, median of single-image invokes on " + ", ".join(machines) + ".\n\n"
        "`threshold`: the probability above which the model calls an image fake, stored in the manifest and used by\n"
        "`evaluate` and `predict` (`--threshold` overrides it). `convert` calibrates it on the val split so that the\n"
        "quantized model flags as many real val images as the float model does at 0.5; empty: the manifest predates\n"
        "calibration and the verbs use 0.5. `test_acc` and `test_real_acc` are taken at that threshold,\n"
        "`test_acc_at_0.5` at 0.5.\n\n"
        "Each manifest records the SHA-256 of its model's bytes (`sha256`): the runtime opens a model without first\n"
        "trying it in a child process only when the bytes match. `convert` writes it (`python tflite_models/record_hashes.py`\n"
        "adds it to a manifest written before that field existed; `--check` verifies it, as CI does in\n"
        "tests/runtime/test_trust.py).\n\n"
        "Run one on a device with only `pip install tfdefakeq[edge]`:\n\n"
        "```bash\npython -m tfdefakeq.evaluate tflite_models/MODEL.tflite --data DATA --split test\n"
        "python -m tfdefakeq.bench tflite_models/MODEL.tflite --threads 1\n```\n\n"
        + markdown_table(df, {"size_bytes": "{:,.0f}", "latency_ms_p50": "{:.3f}", "keras_parity_lsb": "{:.0f}"}) + "\n"
    )
    return write_text_atomic(folder / "README.md", text)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sweep(df, path, level_name: str, title: str) -> Path:
    """AP and accuracy against the degradation level: one line per generator, the mean in black."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric in zip(axes, ("ap", "acc")):
        for generator, part in df.groupby("generator"):
            style = dict(color="black", linewidth=2.5) if generator == "mean" else dict(alpha=0.8)
            ax.plot(part["level"], part[metric], marker="o", label=generator, **style)
        ax.set_xlabel(level_name)
        ax.set_ylabel(metric.upper() if metric == "ap" else "accuracy at 0.5")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def pr_step(recall, precision):
    """The precision-recall curve as drawn, `(x, y)` for `step(x, y, where="pre")`: on each recall
    interval (R_{n-1}, R_n] the precision P_n, from recall 0, so the area under the drawn path is
    average_precision's sum of (R_n - R_{n-1}) * P_n (with "post" it would take P_{n-1} instead)."""
    import numpy as np

    return np.r_[0.0, recall], np.r_[precision[0], precision]


def plot_roc_pr(labels, probs, generators, path, title: str, overwrite: bool = True) -> Path:
    """ROC and precision-recall curves, one per generator (labels 0/1, probs of fake); the AP beside
    each PR curve is the area under it as drawn."""
    import numpy as np

    from tfdefakeq.runtime.metrics import average_precision, pr_curve, roc_auc, roc_curve

    plt = _pyplot()
    labels, probs, generators = np.asarray(labels), np.asarray(probs), np.asarray(generators)
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in sorted(set(generators.tolist())):
        mask = generators == name
        fpr, tpr = roc_curve(labels[mask], probs[mask])
        recall, precision = pr_curve(labels[mask], probs[mask])
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(labels[mask], probs[mask]):.3f})")
        pr_ax.step(*pr_step(recall, precision), where="pre",
                   label=f"{name} (AP {average_precision(labels[mask], probs[mask]):.3f})")
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    roc_ax.set(xlabel="false positive rate (reals called fake)", ylabel="true positive rate", title="ROC")
    pr_ax.set(xlabel="recall (fakes found)", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = save_figure(fig, path, overwrite=overwrite)
    plt.close(fig)
    return out
