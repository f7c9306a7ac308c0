"""Evaluate a `.tflite` detector on a ForenSynths-style folder: per-generator AP/AUC/acc/EER.

No TensorFlow, no pandas: runs on a Raspberry Pi. `evaluate_arrays` builds the same table from
labels and probabilities computed elsewhere (e.g. the Keras float model), so every number in the
project comes from one implementation.

    >>> rows, scores = evaluate_model("m_int8.tflite", "data/forensynths", split="test")  # doctest: +SKIP
    >>> print(format_table(rows))                                                       # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from tfdefakeq.data.folders import Sample, group_by_video, scan_dataset
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.fileio import check_writable, write_text_atomic
from tfdefakeq.runtime.images import load_images
from tfdefakeq.runtime.interpreter import TFLiteModel
from tfdefakeq.runtime.loader import load_model
from tfdefakeq.runtime.metrics import SingleClassError, detection_metrics

METRIC_COLUMNS = ["ap", "auc", "acc", "real_acc", "fake_acc", "eer"]
ROW_COLUMNS = ["generator", *METRIC_COLUMNS, "n", "n_real", "n_fake"]
VIDEO_COLUMNS = ["video_auc", "n_videos"]  # present when the frames carry video ids
SCORE_COLUMNS = ["path", "generator", "label", "prob"]
MEAN_ROW = "mean"

BatchCallback = Callable[[int, int], None]  # (images done, images total)


def video_level(labels, probs, videos) -> tuple[np.ndarray, np.ndarray]:
    """Frame scores -> one score per video (the mean probability of its frames) and its label.

    Frames without a video id (None) are left out. Raises UserError when a video mixes labels.
    """
    groups = group_by_video(videos)
    video_labels, video_probs = [], []
    for video, idx in sorted(groups.items()):
        frame_labels = {int(labels[i]) for i in idx}
        if len(frame_labels) != 1:
            raise UserError(f"video {video}: its frames carry both labels")
        video_labels.append(frame_labels.pop())
        video_probs.append(float(np.mean([probs[i] for i in idx])))
    return np.asarray(video_labels), np.asarray(video_probs)


def evaluate_arrays(labels, probs, generators, threshold: float = 0.5, videos=None) -> list[dict]:
    """Per-generator metrics, then one row "mean": the unweighted mean over generators.

    labels: (N,) 0 real / 1 fake; probs: (N,) probability of fake; generators: (N,) test set names;
    videos: optional (N,) video id per frame (None for stills): adds `video_auc` (frames averaged
    per video) and `n_videos` to every row.
    Each row has the keys of ROW_COLUMNS; in the mean row n, n_real and n_fake are totals.
    Raises UserError when a generator lacks real or fake images.
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    generators = np.asarray([str(g) for g in generators])
    if not (len(labels) == len(probs) == len(generators)):
        raise ValueError(f"labels, probs and generators differ in length: {len(labels)}, {len(probs)}, {len(generators)}")
    if len(labels) == 0:
        raise UserError("no images to evaluate")
    rows = []
    for name in sorted(set(generators.tolist())):
        mask = generators == name
        try:
            metrics = detection_metrics(labels[mask], probs[mask], threshold=threshold)
        except SingleClassError as e:
            raise UserError(f"generator {name}: {e}") from e
        row = {"generator": name, **metrics}
        if videos is not None:
            video_labels, video_probs = video_level(labels[mask], probs[mask], [videos[i] for i in np.flatnonzero(mask)])
            try:
                row["video_auc"] = detection_metrics(video_labels, video_probs, threshold=threshold)["auc"]
            except SingleClassError as e:
                raise UserError(f"generator {name}: videos: {e}") from e
            row["n_videos"] = int(len(video_labels))
        rows.append(row)
    mean = {"generator": MEAN_ROW}
    mean.update({k: float(np.mean([r[k] for r in rows])) for k in METRIC_COLUMNS})
    mean.update({k: int(sum(r[k] for r in rows)) for k in ("n", "n_real", "n_fake")})
    if videos is not None:
        mean["video_auc"] = float(np.mean([r["video_auc"] for r in rows]))
        mean["n_videos"] = int(sum(r["n_videos"] for r in rows))
    rows.append(mean)
    return rows


def predict_samples(
    model: TFLiteModel,
    preprocess,
    samples: list[Sample],
    batch_size: int = 32,
    batch_callback: BatchCallback | None = None,
) -> np.ndarray:
    """Decodes, center-crops and scores `samples` in batches -> float32 (N,) probability of fake."""
    probs = np.empty(len(samples), dtype=np.float32)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        images = load_images([s.path for s in chunk], model.image_size)
        probs[start : start + len(chunk)] = model.predict_proba(images, preprocess)
        if batch_callback is not None:
            batch_callback(start + len(chunk), len(samples))
    return probs


def scores_of(samples: list[Sample], probs) -> list[dict]:
    """Per-image rows: dict(path, generator, label, prob)."""
    return [
        {"path": str(s.path), "generator": s.generator, "label": int(s.label), "prob": float(p)}
        for s, p in zip(samples, probs)
    ]


def evaluate_model(
    model_path,
    data_root,
    split: str | None = None,
    num_threads: int = 1,
    batch_callback: BatchCallback | None = None,
    threshold: float = 0.5,
    use_xnnpack: bool = True,
    unpack_packed: bool = True,
) -> tuple[list[dict], list[dict]]:
    """Runs `model_path` (with its sidecar manifest's preprocessing) over `data_root`[/split].

    Returns (rows, scores): rows as `evaluate_arrays`, scores as `scores_of`.
    """
    model, manifest = load_model(model_path, num_threads=num_threads, use_xnnpack=use_xnnpack, unpack_packed=unpack_packed)
    samples = scan_dataset(data_root, split=split)
    probs = predict_samples(model, manifest.preprocess, samples, batch_callback=batch_callback)
    videos = [s.video for s in samples] if any(s.video for s in samples) else None
    rows = evaluate_arrays([s.label for s in samples], probs, [s.generator for s in samples], threshold, videos)
    return mark_seen(rows, manifest.train_generators), scores_of(samples, probs)


# ---- tables: hand-formatted, no pandas -------------------------------------------------------


def _cell(value, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def mark_seen(rows: list[dict], seen_generators) -> list[dict]:
    """Cross-generator protocol: tags each generator row seen/unseen in training and adds the
    row "mean_unseen" (mean over generators never seen in training: the generalisation figure)."""
    seen = set(seen_generators)
    if not seen:
        return rows
    tagged = [dict(r, seen=r["generator"] in seen) if r["generator"] != MEAN_ROW else dict(r, seen="") for r in rows]
    unseen = [r for r in tagged if r["seen"] is False]
    if unseen:
        row = {"generator": "mean_unseen", "seen": False}
        row.update({k: float(np.mean([r[k] for r in unseen])) for k in METRIC_COLUMNS + [c for c in ("video_auc",) if c in unseen[0]]})
        row.update({k: int(sum(r[k] for r in unseen)) for k in ("n", "n_real", "n_fake")})
        tagged.append(row)
    return tagged


def row_columns(rows: list[dict]) -> list[str]:
    """ROW_COLUMNS, plus the video-level and seen/unseen columns when the rows have them."""
    return ROW_COLUMNS + [c for c in VIDEO_COLUMNS + ["seen"] if rows and c in rows[0]]


def format_table(rows: list[dict], columns: list[str] | None = None, digits: int = 4) -> str:
    """Markdown pipe table with aligned columns (text left, numbers right)."""
    columns = columns or [c for c in row_columns(rows) if c not in ("n_real", "n_fake")]
    cells = [[_cell(r.get(c, ""), digits) for c in columns] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float)) for r in rows) for c in columns]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values):
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(columns), rule] + [line(row) for row in cells])


def rows_to_csv(rows: list[dict], header: dict | None = None, columns: list[str] | None = None) -> str:
    """CSV text; `header` items become leading `# key: value` comment lines (pandas: comment="#")."""
    buf = io.StringIO()
    for key, value in (header or {}).items():
        buf.write(f"# {key}: {' '.join(str(value).split())}\n")
    columns = columns or list(rows[0].keys() if rows else [])
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def markdown_report(rows: list[dict], header: dict, title: str) -> str:
    lines = [f"# {title}", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    return "\n".join(lines + ["", format_table(rows), ""])


def output_paths(out_dir, name: str) -> dict[str, Path]:
    """Where `write_results` puts its files: DIR/NAME.eval.csv, DIR/NAME.eval.md, DIR/NAME.scores.csv."""
    out_dir = Path(out_dir)
    return {
        "csv": out_dir / f"{name}.eval.csv",
        "md": out_dir / f"{name}.eval.md",
        "scores": out_dir / f"{name}.scores.csv",
    }


def write_results(rows, scores, out_dir, name: str, header: dict, overwrite: bool = False) -> list[Path]:
    """Writes the metrics CSV + Markdown and the per-image scores CSV atomically.

    Raises UserError, before writing anything, when one of them exists and `overwrite` is False.
    """
    paths = output_paths(out_dir, name)
    for path in paths.values():
        check_writable(path, overwrite=overwrite)
    write_text_atomic(paths["csv"], rows_to_csv(rows, header, row_columns(rows)))
    write_text_atomic(paths["md"], markdown_report(rows, header, f"Evaluation of {name}"))
    write_text_atomic(paths["scores"], rows_to_csv(scores, None, SCORE_COLUMNS))
    return list(paths.values())


class Progress:
    """`(done, total)` callback that reports progress on stderr.

    On a terminal: a live bar (tqdm when installed, else a counter redrawn with \\r). Anywhere else (a log
    file, a pipe, CI): no carriage returns, one plain line at most every `log_every_s` seconds plus one at
    the end. `enabled=False` (`--quiet`) reports nothing. `unit` names what is counted ("images", "levels").
    """

    def __init__(self, desc: str = "evaluate", stream=None, unit: str = "images", enabled: bool = True,
                 log_every_s: float = 30.0, clock=None):
        import time

        self.desc = desc
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.log_every_s = log_every_s
        self._clock = clock or time.monotonic  # seconds
        self._start = self._last = self._clock()
        self._bar = None
        self._shown = False
        self._logged = None  # (done, total) of the last plain line, or None
        self._pending = None  # (done, total) of the last call
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty())
        tqdm = None
        if self.live:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
        self._tqdm = tqdm

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if not self.live:
            now = self._clock()
            if now - self._last >= self.log_every_s:
                self._log(done, total)
                self._last = now
            self._pending = (done, total)
            return
        if self._tqdm is not None:
            if self._bar is None:
                self._bar = self._tqdm(total=total, desc=self.desc, unit=self.unit.rstrip("s"), file=self.stream,
                                       leave=False)
            self._bar.update(done - self._bar.n)
            return
        self.stream.write(f"\r{self.desc}: {done}/{total} {self.unit}")
        self.stream.flush()
        self._shown = True

    def _log(self, done: int, total: int) -> None:
        self.stream.write(f"{self.desc}: {done}/{total} {self.unit}, {self._clock() - self._start:.0f} s\n")
        self.stream.flush()
        self._logged = (done, total)

    def close(self) -> None:
        if self.enabled and not self.live and self._pending is not None and self._pending != self._logged:
            self._log(*self._pending)
        self._pending = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
