"""Result tables (pandas -> CSV + Markdown, with machine and command in a header) and plots."""

from __future__ import annotations

from pathlib import Path

from tfdefakeq.fileio import write_atomic, write_text_atomic


def header_lines(header: dict, prefix: str = "# ") -> str:
    return "".join(f"{prefix}{k}: {' '.join(str(v).split())}\n" for k, v in header.items())


def write_table(df, stem, header: dict, title: str, floatfmt: str = ".4f", overwrite: bool = True) -> list[Path]:
    """Writes `stem`.csv (header as `# key: value` comments) and `stem`.md (title, header, table)."""
    stem = Path(stem)
    csv_path = write_text_atomic(stem.with_suffix(".csv"), header_lines(header) + df.to_csv(index=False), overwrite=overwrite)
    md = f"# {title}\n\n" + header_lines(header, prefix="- ") + "\n" + df.to_markdown(index=False, floatfmt=floatfmt) + "\n"
    md_path = write_text_atomic(stem.with_suffix(".md"), md, overwrite=overwrite)
    return [csv_path, md_path]


def save_figure(fig, path, overwrite: bool = True) -> Path:
    """Renders a matplotlib figure to PNG bytes and writes them atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return write_atomic(path, buf.getvalue(), overwrite=overwrite)


def plot_model_comparison(df, path, title: str) -> Path:
    """Three panels over the model variants: AP per variant, file size (MB), p50 latency (ms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
