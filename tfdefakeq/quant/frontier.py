"""The bytes -> least predicted loss frontier of a bit allocation, as CSV and PNG, so a budget can be
picked from a picture (`--frontier PATH` on the adaptive scheme; `horizontal.frontier` computes it).

Each row is a plan no other plan beats on both file size and summed sensitivity; the optimum under
any budget is the last row that fits. Numpy and the standard library only; matplotlib (Agg) is
imported when the PNG is drawn.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from tfdefakeq.quant.horizontal import Frontier, parse_option

COLUMNS = ("file_bytes", "file_bits_per_weight", "avg_bits_flag", "budget_bytes_flag", "predicted_loss",
           "layers_8", "layers_4", "layers_3", "layers_2", "split_layers")


def frontier_rows(front: Frontier, bytes_reserve: float = 0.0) -> list[dict]:
    """One dict per frontier point (sorted by size). file_bytes: the plan's estimated file bytes
    (bits / 8, rounded up); avg_bits_flag / budget_bytes_flag: the smallest `--avg-bits` /
    `--budget-bytes` that buy this plan (a byte budget keeps `bytes_reserve` of it in reserve);
    predicted_loss: summed sensitivity (mean squared logit change, per layer, added up)."""
    rows = []
    total = front.total_weights
    for cost, loss, options in zip(front.cost_bits.tolist(), front.loss.tolist(), front.options):
        parsed = [parse_option(k) for k in options.values()]
        file_bytes = math.ceil(cost / 8)
        rows.append({
            "file_bytes": file_bytes,
            "file_bits_per_weight": round(cost / total, 6),
            # rounded up at 6 decimals: floor(flag * weights) >= cost, so the flag buys this plan
            "avg_bits_flag": math.ceil(cost / total * 1e6) / 1e6,
            "budget_bytes_flag": math.ceil(cost / 8 / (1.0 - bytes_reserve)) if bytes_reserve else file_bytes,
            "predicted_loss": loss,
            **{f"layers_{b}": sum(bits == b for bits, _ in parsed) for b in (8, 4, 3, 2)},
            "split_layers": sum(split for _, split in parsed),
        })
    return rows


def write_frontier(front: Frontier, path, chosen_bits: int | None = None, budget_bits: int | None = None,
                   bytes_reserve: float = 0.0, title: str = "", overwrite: bool = True) -> tuple[Path, Path]:
    """Writes the frontier to `path` (.csv; a bare name gets .csv) and the same stem + .png: loss
    (log scale) against file bytes as a staircase, the chosen plan and the budget marked.
    Returns (csv path, png path)."""
    from tfdefakeq.core.fileio import write_atomic, write_text_atomic

    path = Path(path)
    csv_path = path if path.suffix.lower() == ".csv" else path.with_name(path.name + ".csv")
    png_path = csv_path.with_suffix(".png")
    rows = frontier_rows(front, bytes_reserve)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(csv_path, buf.getvalue(), overwrite=overwrite)
    write_atomic(png_path, _plot(rows, front.total_weights, chosen_bits, budget_bits, title), overwrite=overwrite)
    return csv_path, png_path


def _plot(rows, total_weights: int, chosen_bits, budget_bits, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["file_bytes"] / 1024 for r in rows]
    loss = [r["predicted_loss"] for r in rows]
    positive = [v for v in loss if v > 0]
    floor = min(positive) / 10 if positive else 1e-12
    y = [max(v, floor) for v in loss]  # log axis: a zero-loss (all 8-bit) plan sits on the floor
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.step(x, y, where="post", color="C0", lw=1.2, label=f"least predicted loss ({len(rows)} optimal plans)")
    ax.set_yscale("log")
    ax.set_xlabel("estimated .tflite size (KiB)")
    ax.set_ylabel("predicted loss (sum of layer sensitivities)")
    top = ax.secondary_xaxis("top", functions=(lambda k: k * 1024 * 8 / total_weights, lambda b: b * total_weights / 8 / 1024))
    top.set_xlabel("bits per weight (whole file)")
    if budget_bits is not None:
        ax.axvline(budget_bits / 8 / 1024, color="C3", ls="--", lw=1, label="budget")
    if chosen_bits is not None:
        i = max(j for j, r in enumerate(rows) if r["file_bytes"] <= math.ceil(chosen_bits / 8))
        ax.plot([x[i]], [y[i]], "o", color="C3", label="chosen plan")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
