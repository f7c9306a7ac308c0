"""The plots say what the tables say: the precision-recall curve drawn beside an AP encloses that AP."""

import numpy as np
import pytest

from tfdefakeq.runtime.metrics import average_precision


def _area_under_drawn_path(line) -> float:
    """Area under a matplotlib line as drawn (its path with the step style applied): the
    trapezoidal rule is exact on a step path, whose risers have zero width."""
    vertices = line.get_path().vertices
    return float(np.sum(np.diff(vertices[:, 0]) * (vertices[1:, 1] + vertices[:-1, 1]) / 2))


def test_pr_curve_area_is_the_printed_ap(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from tfdefakeq.core.report import plot_roc_pr

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(40, int), np.ones(40, int)]
    probs = np.clip(np.r_[rng.normal(0.4, 0.2, 40), rng.normal(0.6, 0.2, 40)], 0, 1).round(2)  # ties included
    generators = np.array(["a"] * 20 + ["b"] * 20 + ["a"] * 20 + ["b"] * 20)
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)  # keep the figure to look at what was drawn
    plot_roc_pr(labels, probs, generators, tmp_path / "curves.png", "test")
    pr_ax = kept[0].axes[1]
    assert len(pr_ax.lines) == 2
    for line, name in zip(pr_ax.lines, ("a", "b")):
        mask = generators == name
        ap = average_precision(labels[mask], probs[mask])
        assert line.get_label() == f"{name} (AP {ap:.3f})"
        assert _area_under_drawn_path(line) == pytest.approx(ap, abs=1e-12)
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
