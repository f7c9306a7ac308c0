"""Detection metrics in numpy alone (DESIGN.md section 7), so they run on the device.

Labels: 0 real, 1 fake. Scores: any real numbers, higher = more likely fake (probabilities or
logits). `average_precision` equals sklearn's `average_precision_score` and `roc_auc` equals
`roc_auc_score`, ties included; tests check both against sklearn.
"""

from __future__ import annotations

import numpy as np


class SingleClassError(ValueError):
    """The labels hold only real or only fake images: AP, AUC and EER are undefined."""


def _check(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise ValueError(f"labels and scores must be 1-D of the same length, got shapes {y.shape} and {p.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got values {np.unique(y)[:5].tolist()}")
    if not np.isfinite(p).all():
        raise ValueError(f"scores hold {int((~np.isfinite(p)).sum())} NaN/inf values")
    n_fake = int(y.sum())
    if n_fake == 0 or n_fake == len(y):
        kind = "fake" if n_fake else "real"
        raise SingleClassError(f"only {kind} images ({len(y)}): AP, AUC and EER need both real and fake images")
    return y.astype(np.int64), p


def _curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct score, highest score first."""
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = last_of_tie + 1 - tps
    return tps.astype(np.float64), fps.astype(np.float64)


def average_precision(y, p) -> float:
    """AP in [0, 1]: sum over thresholds of (R_n - R_{n-1}) * P_n, as sklearn (no interpolation)."""
    y, p = _check(y, p)
    tps, fps = _curve(y, p)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _average_ranks(p: np.ndarray) -> np.ndarray:
    """1-based ranks of `p`, tied values sharing the mean of their ranks (scipy's rankdata 'average')."""
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_p)) + 1]
    ends = np.r_[starts[1:], len(p)]
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(p), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(y, p) -> float:
    """ROC AUC in [0, 1] (Mann-Whitney U with average ranks for ties: a tie counts one half)."""
    y, p = _check(y, p)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    rank_sum = _average_ranks(p)[y == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at each distinct threshold, from (0, 0) to (1, 1)."""
    y, p = _check(y, p)
    tps, fps = _curve(y, p)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def pr_curve(y, p) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at each distinct threshold, highest threshold first (AP's step curve)."""
    y, p = _check(y, p)
    tps, fps = _curve(y, p)
    return tps / tps[-1], tps / (tps + fps)


def eer(y, p) -> float:
    """Equal error rate in [0, 1]: where the false positive rate equals the false negative rate.

    Interpolated linearly on the ROC curve between the two thresholds that bracket the crossing,
    so it is exact for a piecewise-linear ROC: 0 for perfect separation, 0.5 when all scores tie,
    1 for a perfectly inverted detector.
    """
    fpr, tpr = roc_curve(y, p)
    gap = (1.0 - tpr) - fpr  # fnr - fpr: from +1 at (0, 0) down to -1 at (1, 1), non-increasing
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def detection_metrics(y, p, threshold: float = 0.5) -> dict:
    """All section-7 metrics of one test set.

    `p` are probabilities of fake; an image is called fake when `p > threshold` (as CNNDetection).
    Returns dict(ap, auc, acc, real_acc, fake_acc, eer, n, n_real, n_fake); rates in [0, 1].
    """
    y, p = _check(y, p)
    pred = p > threshold
    real, fake = y == 0, y == 1
    return {
        "ap": average_precision(y, p),
        "auc": roc_auc(y, p),
        "acc": float(np.mean(pred == fake)),
        "real_acc": float(np.mean(~pred[real])),
        "fake_acc": float(np.mean(pred[fake])),
        "eer": eer(y, p),
        "n": int(len(y)),
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
    }
