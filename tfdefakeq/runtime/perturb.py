"""Robustness sweeps on a .tflite: the test images degraded step by step (JPEG quality, Gaussian blur,
resize) and scored again. Pillow + numpy only, so a sweep runs on the device too.

A degradation is applied to the decoded, center-cropped uint8 image, the way the image would reach
the detector after a platform re-encoded or rescaled it.
"""

from __future__ import annotations

import io

import numpy as np

from tfdefakeq.core.errors import UserError

SWEEPS = {
    # kind: (default levels, level meaning, the level that means "untouched")
    "jpeg": ((100, 90, 75, 60, 45, 30), "JPEG quality", None),
    "blur": ((0.0, 0.5, 1.0, 1.5, 2.0, 3.0), "Gaussian blur sigma (px)", 0.0),
    "resize": ((1.0, 0.9, 0.75, 0.6, 0.5), "scale of a down-and-up resize", 1.0),
}


def degrade(image: np.ndarray, kind: str, level: float) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H, W, 3) degraded by `kind` at `level`."""
    from PIL import Image, ImageFilter

    if kind not in SWEEPS:
        raise UserError(f"unknown sweep {kind!r} (choose from {', '.join(SWEEPS)})")
    if level == SWEEPS[kind][2]:
        return image
    im = Image.fromarray(image)
    if kind == "jpeg":
        if not 1 <= level <= 100:
            raise UserError(f"jpeg quality must be in [1, 100], got {level}")
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(level))
        buf.seek(0)
        return np.asarray(Image.open(buf).convert("RGB"))
    if kind == "blur":
        if level < 0:
            raise UserError(f"blur sigma must be >= 0, got {level}")
        return np.asarray(im.filter(ImageFilter.GaussianBlur(radius=float(level))))
    if not 0 < level <= 4:
        raise UserError(f"resize scale must be in (0, 4], got {level}")
    h, w = image.shape[:2]
    small = im.resize((max(1, round(w * level)), max(1, round(h * level))), Image.BICUBIC)
    return np.asarray(small.resize((w, h), Image.BICUBIC))


def sweep(model, preprocess, samples, kind: str, levels=None, progress=None, threshold: float = 0.5) -> list[dict]:
    """Scores `samples` at every level of the sweep. Returns rows (level, generator, metrics...):
    one per generator and level plus the "mean" row of each level, as `evaluate_arrays` makes them
    (accuracies at `threshold`)."""
    from tfdefakeq.runtime.scoring import evaluate_arrays
    from tfdefakeq.runtime.images import load_images

    levels = list(SWEEPS[kind][0] if levels is None else levels) if kind in SWEEPS else None
    if levels is None:
        raise UserError(f"unknown sweep {kind!r} (choose from {', '.join(SWEEPS)})")
    images = load_images([s.path for s in samples], model.image_size)
    labels = [s.label for s in samples]
    generators = [s.generator for s in samples]
    rows = []
    for i, level in enumerate(levels):
        degraded = np.stack([degrade(img, kind, level) for img in images])
        probs = model.predict_proba(degraded, preprocess)
        for row in evaluate_arrays(labels, probs, generators, threshold):
            rows.append({"sweep": kind, "level": level, **row})
        if progress is not None:
            progress(i + 1, len(levels))
    return rows
