"""Latency of a `.tflite` detector on this machine (DESIGN.md section 7), without TensorFlow.

Protocol: load (timed as init_ms), `warmup` invokes, then `runs` single invokes on one fixed random
input (batch 1), each timed alone; report median (p50), p90 and mean in ms, with threads, XNNPACK
on/off, model size, machine and runtime stated.

    >>> bench_model("m_int8.tflite", threads=1)["latency_ms_p50"]   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np

from tfdefakeq.errors import UserError
from tfdefakeq.fileio import write_atomic
from tfdefakeq.runtime.interpreter import TFLiteModel, machine_info

BENCH_COLUMNS = [
    "date",
    "model",
    "size_bytes",
    "input_dtype",
    "threads",
    "xnnpack",
    "init_ms",
    "warmup",
    "runs",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_mean",
    "latency_ms_min",
    "runtime",
    "runtime_version",
    "machine",
    "processor",
    "system",
    "python",
]


def random_input(model: TFLiteModel, seed: int = 0) -> np.ndarray:
    """A fixed input in the input tensor's dtype: uniform [-1, 1] floats or the full integer range."""
    rng = np.random.default_rng(seed)
    if model.input_dtype is np.float32:
        return rng.uniform(-1.0, 1.0, model.input_shape).astype(np.float32)
    info = np.iinfo(model.input_dtype)
    return rng.integers(info.min, info.max, model.input_shape, endpoint=True).astype(model.input_dtype)


def bench_model(path, threads: int = 1, warmup: int = 10, runs: int = 100, use_xnnpack: bool = True, seed: int = 0) -> dict:
    """Times single-image invokes of `path`. Returns a dict with the keys of BENCH_COLUMNS.

    init_ms: interpreter construction + allocate_tensors; latency_ms_*: one `invoke()` each.
    """
    if warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {warmup}")
    if runs < 1:
        raise UserError(f"--runs must be >= 1, got {runs}")
    model = TFLiteModel(path, num_threads=threads, use_xnnpack=use_xnnpack)
    interpreter = model.interpreter
    interpreter.set_tensor(model.input_details["index"], random_input(model, seed))
    for _ in range(warmup):
        interpreter.invoke()
    latency_ms = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter_ns()
        interpreter.invoke()
        latency_ms[i] = (time.perf_counter_ns() - start) / 1e6
    machine = machine_info()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "model": str(path),
        "size_bytes": model.size_bytes,
        "input_dtype": np.dtype(model.input_dtype).name,
        "threads": int(threads),
        "xnnpack": bool(use_xnnpack),
        "init_ms": round(model.init_ms, 6),
        "warmup": int(warmup),
        "runs": int(runs),
        "latency_ms_p50": round(float(np.median(latency_ms)), 6),
        "latency_ms_p90": round(float(np.percentile(latency_ms, 90)), 6),
        "latency_ms_mean": round(float(latency_ms.mean()), 6),
        "latency_ms_min": round(float(latency_ms.min()), 6),
        "runtime": model.runtime.name,
        "runtime_version": model.runtime.version,
        "machine": machine["machine"],
        "processor": machine["processor"],
        "system": machine["system"],
        "python": machine["python"],
    }


def format_result(result: dict) -> str:
    """A few human lines: model, runtime, machine, init and latency."""
    xnn = "on" if result["xnnpack"] else "off"
    return "\n".join(
        [
            f"model       {result['model']} ({result['size_bytes']:,} bytes, {result['input_dtype']} input)",
            f"runtime     {result['runtime']} {result['runtime_version']}, {result['threads']} thread(s), XNNPACK {xnn}",
            f"machine     {result['machine']}, {result['processor']}",
            f"init_ms     {result['init_ms']:.2f}",
            f"latency_ms  p50 {result['latency_ms_p50']:.4g}  p90 {result['latency_ms_p90']:.4g}  "
            f"mean {result['latency_ms_mean']:.4g}  ({result['runs']} runs after {result['warmup']} warm-up)",
        ]
    )


def append_csv_row(path, row: dict) -> Path:
    """Appends `row` to CSV `path` (created with a header row), rewriting the whole file atomically.

    Raises UserError when the existing file's header differs from `row`'s keys.
    """
    path = Path(path)
    columns = list(row.keys())
    text = ""
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read the existing results ({e})") from e
        existing = next(csv.reader(io.StringIO(text)), None)
        if text.strip() and existing != columns:
            raise UserError(f"{path}: existing columns {existing} differ from {columns}: choose another --out")
        if text and not text.endswith("\n"):
            text += "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    if not text.strip():
        text = ""
        writer.writeheader()
    writer.writerow(row)
    return write_atomic(path, (text + buf.getvalue()).encode("utf-8"))
