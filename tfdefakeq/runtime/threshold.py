"""The decision threshold a converted model ships with, and which one a verb uses (no TensorFlow).

Quantization keeps the ranking of the scores (AP, AUC) but moves them: the shipped int4 ResNet-18 kept
its AP while its real-image accuracy at 0.5 fell from 0.828 (float) to 0.761 (issue 14). `convert`
therefore calibrates each quantized model's threshold on the val split so that it calls the same
share of REAL val images fake as the float model does at its own threshold (0.5): the float model's
real-image false-positive rate, kept (`match_real_fpr`). Why this operating point, not equal error:
the user trained and validated the float model, so its behaviour is the specification; a user sees
the quantized model's mistakes on real photos (a real photo flagged as fake) first, and holding that
rate fixed makes the quantized model a drop-in replacement. The fake-image recall at that point then
measures what quantization cost. Equal error would move the float model's own operating point too.

The threshold lives in the manifest (`Manifest.threshold`: `value` plus how it was chosen). `evaluate`
and `predict` use it by default, `--threshold` overrides it, and an old manifest without one means 0.5
(`resolve_threshold`, which says so).
"""

from __future__ import annotations

import sys

import numpy as np

from tfdefakeq.core.errors import UserError

FLOAT_THRESHOLD = 0.5  # the float model's operating point: a logistic head trained on balanced classes
DEFAULT_THRESHOLD = 0.5  # a manifest that records no threshold
METHOD = "float_real_fpr"


def check_threshold(value: float, flag: str = "--threshold") -> float:
    """`value` if it is a probability strictly between 0 and 1 (a threshold of 0 or 1 calls everything
    fake or everything real), else UserError."""
    value = float(value)
    if not 0.0 < value < 1.0:  # also False for NaN
        raise UserError(f"{flag} must be a probability between 0 and 1 (exclusive), got {value}")
    return value


def _between(low: float | None, high: float | None) -> float:
    """A threshold strictly between two adjacent distinct scores (either end may be missing)."""
    low = 0.0 if low is None else low
    high = 1.0 if high is None else high
    return float(np.clip((low + high) / 2.0, 1e-7, 1.0 - 1e-7))


def match_real_fpr(labels, probs, reference_probs, reference_threshold: float = FLOAT_THRESHOLD) -> dict:
    """The threshold at which `probs` call as many real images fake as `reference_probs` do at
    `reference_threshold` (an image is fake when its probability > threshold).

    labels: (N,) 0 real / 1 fake; probs: (N,) the quantized model's probabilities; reference_probs: (N,)
    the float model's, on the same images. Quantized scores take few distinct values, so the target rate
    is met as closely as their ties allow: each candidate threshold lies halfway between two adjacent
    distinct scores (never on a score, so an image scored like a val image gets the same call); among
    candidates equally close to the target, the one nearest `reference_threshold` (the least move).
    Returns dict(value, method, n_real, n_fake, target_real_fpr, real_fpr, fake_tpr, reference_threshold,
    reference_fake_tpr); rates in [0, 1]. Raises UserError when there is no real image.
    """
    labels = np.asarray(labels).reshape(-1)
    probs = np.asarray(probs, np.float64).reshape(-1)
    reference_probs = np.asarray(reference_probs, np.float64).reshape(-1)
    if not (len(labels) == len(probs) == len(reference_probs)):
        raise ValueError(f"labels, probs and reference_probs differ in length: {len(labels)}, {len(probs)}, "
                         f"{len(reference_probs)}")
    if not (np.isfinite(probs).all() and np.isfinite(reference_probs).all()):
        raise UserError("the scores hold NaN or inf values: no threshold can be calibrated on them")
    real, fake = labels == 0, labels == 1
    if not real.any():
        raise UserError(f"no real images among the {len(labels)} calibration images: the float model's "
                        "real-image false-positive rate cannot be matched")
    target = float(np.mean(reference_probs[real] > reference_threshold))
    distinct = np.unique(probs)  # every val score, real or fake: the gaps a threshold can sit in
    real_sorted = np.sort(probs[real])
    candidates = [_between(None if i == 0 else distinct[i - 1], distinct[i]) for i in range(len(distinct))]
    candidates.append(_between(distinct[-1], None))
    best = None
    for t in candidates:
        fpr = (len(real_sorted) - np.searchsorted(real_sorted, t, side="right")) / len(real_sorted)
        key = (abs(fpr - target), abs(t - reference_threshold))
        if best is None or key < best[0]:
            best = (key, t, fpr)
    _, value, fpr = best
    return {
        "value": float(value),
        "method": METHOD,
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
        "target_real_fpr": target,
        "real_fpr": float(fpr),
        "fake_tpr": float(np.mean(probs[fake] > value)) if fake.any() else None,
        "reference_threshold": float(reference_threshold),
        "reference_fake_tpr": float(np.mean(reference_probs[fake] > reference_threshold)) if fake.any() else None,
    }


def resolve_threshold(manifest, flag: float | None, note: str | None = None) -> tuple[float, str]:
    """(threshold, source) a verb uses: `flag` ("flag") when given, else the manifest's calibrated value
    ("manifest"), else DEFAULT_THRESHOLD ("default": the manifest records none, e.g. written before
    thresholds were calibrated; said once on stderr, prefixed by `note`, when `note` is given)."""
    if flag is not None:
        return check_threshold(flag), "flag"
    recorded = (getattr(manifest, "threshold", None) or {}).get("value")
    if recorded is not None:
        return check_threshold(recorded, "the manifest's threshold"), "manifest"
    if note is not None:
        print(f"{note}: the manifest records no calibrated threshold; using {DEFAULT_THRESHOLD}", file=sys.stderr)
    return DEFAULT_THRESHOLD, "default"


def describe_source(source: str, manifest=None) -> str:
    """Where a threshold came from, in one line: `manifest: matches the float model's ...`."""
    if source == "flag":
        return "flag: --threshold"
    if source == "default":
        return "default: the manifest records no calibrated threshold"
    record = manifest.threshold
    how = record.get("method", "?")
    if how == METHOD:
        how = (f"matches the float model's real-image false-positive rate {record['target_real_fpr']:.4f} at "
               f"{record['reference_threshold']:g} on {record.get('split') or 'the calibration images'} "
               f"({record['n_real']} real, {record['n_fake']} fake images; reached {record['real_fpr']:.4f})")
    elif record.get("reason"):
        how = f"{how}, {record['reason']}"
    return f"manifest: {how}"
