"""Score images, folders and videos with a `.tflite` detector (no TensorFlow).

Each image is center-cropped to the model input, as in training and evaluation (the detectors
look at pixel-level traces, which resizing would blur), or, with a face detector, the largest
face is cropped square with a margin and resized to the model input (the FaceForensics++ habit).
Whole-image scoring (`tiles=True`, predict's default for images): the model's input-size window
slides over the full image with `stride` (default half the input side; the last row and column of
tiles are aligned to the image's edges so every pixel is seen), every tile is scored, and the image
score aggregates the tile probabilities: "topk" (default: the mean of the `top_k` highest, k = 3),
"mean" or "max". Top-k mean: a plain mean dilutes a manipulated face or object that covers a few
tiles of a large photo, a plain max follows the single noisiest tile; the mean of the few highest
catches a local manipulation and no single tile decides alone. An image smaller than the input in
either side keeps the center-crop path (which refuses it, as before); frames and face crops are
not tiled. `heatmap_dir` writes NAME.heatmap.png: the photo with each pixel tinted by the mean
probability of the tiles covering it (red = fake).

A video is scored on sampled frames (`every` N-th, or `count` spread evenly) and summarised by
the mean and the max frame probability; the decision uses the mean.

    >>> model, manifest = load_model("det_int8.tflite")                          # doctest: +SKIP
    >>> rows = Predictor(model, manifest).predict_path("clips/")                 # doctest: +SKIP
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.images import center_crop, decode_image
from tfdefakeq.runtime.video import VIDEO_SUFFIXES, read_frames

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
PREDICT_COLUMNS = ["path", "kind", "frames", "prob", "prob_max", "decision", "aggregate", "tiles", "face_box", "face_score",
                   "error"]
AGGREGATES = ("topk", "mean", "max")


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of `tile`-long windows over `length` every `stride`, the last one flush with the end."""
    if length <= tile:
        return [0]
    origins = list(range(0, length - tile + 1, stride))
    if origins[-1] != length - tile:
        origins.append(length - tile)
    return origins


def aggregate_probs(probs, how: str = "topk", top_k: int = 3) -> float:
    """One image score from its tile probabilities: "topk" (mean of the top_k highest), "mean", "max"."""
    probs = np.sort(np.asarray(probs, np.float64).reshape(-1))[::-1]
    if how == "mean":
        return float(probs.mean())
    if how == "max":
        return float(probs[0])
    if how == "topk":
        return float(probs[: max(1, min(int(top_k), len(probs)))].mean())
    raise UserError(f"--aggregate {how!r}: choose one of {', '.join(AGGREGATES)}")


def heatmap_png(rgb: np.ndarray, boxes, probs) -> bytes:
    """PNG bytes: `rgb` tinted by the mean probability of the tiles (top, left, h, w) covering each pixel."""
    import io

    from PIL import Image

    total = np.zeros(rgb.shape[:2], np.float64)
    count = np.zeros(rgb.shape[:2], np.float64)
    for (top, left, h, w), p in zip(boxes, probs):
        total[top:top + h, left:left + w] += p
        count[top:top + h, left:left + w] += 1
    heat = total / np.maximum(count, 1)
    tint = np.stack([heat * 255, (1 - heat) * 80, (1 - heat) * 255], axis=-1)
    out = (0.5 * rgb.astype(np.float64) + 0.5 * tint).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Item:
    path: Path
    kind: str  # "image" | "video"


def collect_items(path) -> list[Item]:
    """An image, a video, or every image and video under a folder (recursive, sorted by path).

    Raises UserError when `path` does not exist, is a file of another type, or is a folder with
    no image or video in it.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")

    def kind_of(p: Path) -> str | None:
        suffix = p.suffix.lower()
        return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None

    if path.is_file():
        kind = kind_of(path)
        if kind is None:
            raise UserError(f"{path}: not an image ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                            f"or a video ({', '.join(sorted(VIDEO_SUFFIXES))})")
        return [Item(path, kind)]
    items = [Item(p, kind_of(p)) for p in sorted(path.rglob("*"))
             if p.is_file() and kind_of(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if not items:
        raise UserError(f"{path}: no images or videos in this folder")
    return items


def _row(item_path, kind, **values) -> dict:
    row = dict.fromkeys(PREDICT_COLUMNS, "")
    row.update(path=str(item_path), kind=kind, **values)
    return row


class Predictor:
    """Turns images/frames into model inputs (center crop or face crop) and scores them."""

    def __init__(self, model, manifest, face_detector=None, margin: float = 0.3, threshold: float = 0.5,
                 tiles: bool = False, stride: int | None = None, aggregate: str = "topk", top_k: int = 3,
                 heatmap_dir=None):
        self.model = model
        self.manifest = manifest
        self.faces = face_detector
        self.margin = float(margin)
        self.threshold = float(threshold)
        self.tiles = bool(tiles) and face_detector is None
        side = min(model.image_size)
        self.stride = int(stride) if stride else max(1, side // 2)
        if self.stride < 1:
            raise UserError(f"--stride must be >= 1, got {stride}")
        aggregate_probs([0.0], aggregate)  # fail fast on a bad name
        if top_k < 1:
            raise UserError(f"--top-k must be >= 1, got {top_k}")
        self.aggregate, self.top_k = aggregate, int(top_k)
        self.heatmap_dir = Path(heatmap_dir) if heatmap_dir is not None else None

    def score_tiles(self, rgb: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
        """Probabilities of every tile of `rgb` and their boxes (top, left, height, width)."""
        h, w = self.model.image_size
        boxes = [(top, left, h, w) for top in tile_origins(rgb.shape[0], h, self.stride)
                 for left in tile_origins(rgb.shape[1], w, self.stride)]
        crops = np.stack([np.ascontiguousarray(rgb[t:t + h, l:l + w, :3]) for t, l, _, _ in boxes])
        return self.model.predict_proba(crops, self.manifest.preprocess), boxes

    def _tiled_row(self, path, rgb) -> dict:
        probs, boxes = self.score_tiles(rgb)
        prob = aggregate_probs(probs, self.aggregate, self.top_k)
        label = f"top{min(self.top_k, len(probs))}_mean" if self.aggregate == "topk" else self.aggregate
        if self.heatmap_dir is not None:
            from tfdefakeq.core.fileio import write_atomic

            self.heatmap_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.heatmap_dir / f"{Path(path).stem}.heatmap.png", heatmap_png(rgb, boxes, probs))
        return _row(path, "image", frames=1, prob=prob, prob_max=float(np.max(probs)), decision=self.decision(prob),
                    aggregate=f"{label} of {len(probs)} tiles (stride {self.stride})", tiles=len(probs))

    def decision(self, prob: float) -> str:
        return "fake" if prob > self.threshold else "real"

    def model_input(self, rgb: np.ndarray, label) -> tuple[np.ndarray | None, object]:
        """uint8 RGB frame -> (uint8 crop of the model's input size, or None without a face; the Face)."""
        if self.faces is None:
            return center_crop(rgb, self.model.image_size, label), None
        from tfdefakeq.runtime.faces import crop_face

        face = self.faces.largest(rgb)
        if face is None:
            return None, None
        return crop_face(rgb, face, self.model.image_size, self.margin), face

    def score(self, crop: np.ndarray) -> float:
        return float(self.model.predict_proba(crop[None], self.manifest.preprocess)[0])

    @staticmethod
    def _face_fields(face) -> dict:
        if face is None:
            return {}
        return {"face_box": " ".join(str(int(round(v))) for v in face.box), "face_score": round(face.score, 4)}

    def predict_image(self, path) -> dict:
        rgb = decode_image(path)
        h, w = self.model.image_size
        if self.tiles and rgb.shape[0] >= h and rgb.shape[1] >= w:
            return self._tiled_row(path, rgb)
        crop, face = self.model_input(rgb, path)
        if crop is None:
            return _row(path, "image", frames=0, decision="no_face")
        prob = self.score(crop)
        return _row(path, "image", frames=1, prob=prob, prob_max=prob, decision=self.decision(prob),
                    aggregate="face crop" if face is not None else "center crop", tiles=1, **self._face_fields(face))

    def predict_video(self, path, every: int | None = None, count: int | None = None,
                      per_frame: bool = False) -> list[dict]:
        """One summary row (mean and max over scored frames), preceded by per-frame rows if asked."""
        frame_rows, probs = [], []
        for index, rgb in read_frames(path, every=every, count=count):
            crop, face = self.model_input(rgb, f"{path} frame {index}")
            label = f"{path}#frame={index}"
            if crop is None:
                frame_rows.append(_row(label, "frame", frames=0, decision="no_face"))
                continue
            prob = self.score(crop)
            probs.append(prob)
            frame_rows.append(_row(label, "frame", frames=1, prob=prob, prob_max=prob,
                                   decision=self.decision(prob), **self._face_fields(face)))
        if probs:
            mean = float(np.mean(probs))
            summary = _row(path, "video", frames=len(probs), prob=mean, prob_max=float(np.max(probs)),
                           decision=self.decision(mean))
        else:
            summary = _row(path, "video", frames=0, decision="no_face")
        return (frame_rows if per_frame else []) + [summary]

    def predict_items(self, items: list[Item], every=None, count=None, per_frame=False, keep_going=True,
                      progress=None) -> list[dict]:
        """Rows for `items`. With `keep_going` (folders), an unreadable file becomes a row with
        decision "error" and a warning on stderr; otherwise its UserError propagates."""
        rows = []
        for i, item in enumerate(items):
            try:
                if item.kind == "image":
                    rows.append(self.predict_image(item.path))
                else:
                    rows.extend(self.predict_video(item.path, every=every, count=count, per_frame=per_frame))
            except UserError as e:
                if not keep_going:
                    raise
                print(f"tfdefakeq predict: warning: {e}", file=sys.stderr)
                rows.append(_row(item.path, item.kind, frames=0, decision="error", error=str(e)))
            if progress is not None:
                progress(i + 1, len(items))
        return rows


def format_rows(rows: list[dict]) -> str:
    """Aligned text table: path, kind, frames, prob, prob_max, decision (+ face score)."""
    out = [f"{'decision':<8} {'prob':>7} {'max':>7} {'frames':>6}  {'kind':<5}  path"]
    for r in rows:
        prob = f"{r['prob']:.4f}" if r["prob"] != "" else "-"
        pmax = f"{r['prob_max']:.4f}" if r["prob_max"] != "" else "-"
        face = f"  (face {r['face_score']:.2f})" if r["face_score"] != "" else ""
        out.append(f"{r['decision']:<8} {prob:>7} {pmax:>7} {r['frames']:>6}  {r['kind']:<5}  {r['path']}{face}")
    return "\n".join(out)
