"""Latency of a `.tflite` detector on this machine (DESIGN.md section 7), without TensorFlow.

Protocol: load (timed as init_ms: INT4 unpacking when it happens + interpreter construction +
allocate_tensors), `warmup` invokes, then `runs` single invokes on one fixed random input
(batch 1), each timed alone; report p50 (median), p90, p99, mean and min in ms, with threads,
XNNPACK on/off, INT4 handling, model size, MACs and achieved GMAC/s (MACs / p50), machine and
runtime stated.

Memory: TFLite allocates natively, so `tracemalloc` sees none of it. The process's peak resident
set (`VmHWM` in /proc/self/status) is reset before loading by writing "5" to /proc/self/clear_refs
(Linux >= 4.0), so `peak_rss_mb` is this model's peak while loading and running, and
`model_rss_mb` = peak minus the resident set before loading. Where that reset is unavailable
(non-Linux, or /proc not writable), `resource.getrusage(RUSAGE_SELF).ru_maxrss` is used: it only
grows, so the delta is exact for the first model a process loads and a lower bound after that;
`memory_method` says which was used.

    >>> bench_model("m_int8.tflite", threads=1)["latency_ms_p50"]   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.core.fileio import write_atomic
from tfdefakeq.runtime.interpreter import TFLiteModel, machine_info
from tfdefakeq.runtime.loader import admit_model, open_model

BENCH_COLUMNS = [
    "date",
    "device",
    "model",
    "size_bytes",
    "macs",
    "input_dtype",
    "packed_weights",
    "unpacked_tensors",
    "threads",
    "xnnpack",
    "init_ms",
    "unpack_ms",
    "warmup",
    "runs",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p99",
    "latency_ms_mean",
    "latency_ms_min",
    "gmacs_per_s",
    "peak_rss_mb",
    "model_rss_mb",
    "memory_method",
    "runtime",
    "runtime_version",
    "machine",
    "processor",
    "int8_isa",
    "system",
    "python",
]
PACKED_MODES = ("unpacked", "packed")


def random_input(model: TFLiteModel, seed: int = 0) -> np.ndarray:
    """A fixed input in the input tensor's dtype: uniform [-1, 1] floats or the full integer range."""
    rng = np.random.default_rng(seed)
    if model.input_dtype is np.float32:
        return rng.uniform(-1.0, 1.0, model.input_shape).astype(np.float32)
    info = np.iinfo(model.input_dtype)
    return rng.integers(info.min, info.max, model.input_shape, endpoint=True).astype(model.input_dtype)


# ---- memory ---------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _maxrss_kb() -> int:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage // 1024 if sys.platform == "darwin" else usage  # macOS reports bytes, Linux KiB


class PeakMemory:
    """Peak resident memory of what runs between `start()` and `stop()`; see the module docstring."""

    def start(self) -> None:
        self.method = "getrusage"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            if _status_kb("VmHWM") is not None:
                self.method = "VmHWM"
        except OSError:
            pass
        self.rss_before_kb = _status_kb("VmRSS") if self.method == "VmHWM" else _maxrss_kb()

    def stop(self) -> tuple[float, float, str]:
        """-> (peak_rss_mb, model_rss_mb, method)."""
        peak_kb = _status_kb("VmHWM") if self.method == "VmHWM" else _maxrss_kb()
        return peak_kb / 1024, max(0, peak_kb - self.rss_before_kb) / 1024, self.method


# ---- timing ---------------------------------------------------------------------------------


def _percentile(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)), 6)


def bench_model(
    path,
    threads: int = 1,
    warmup: int = 10,
    runs: int = 100,
    use_xnnpack: bool = True,
    seed: int = 0,
    unpack_packed: bool = True,
    device: str = "",
    keep_model: bool = False,
) -> dict:
    """Times single-image invokes of `path`. Returns a dict with the keys of BENCH_COLUMNS.

    `unpack_packed`: run packed INT4/INT2 weights unpacked to INT8 (default) or as stored; `packed_weights` in the
    result is "unpacked"/"packed" for a model with packed weights and "" otherwise. With
    `keep_model`, the loaded TFLiteModel is returned under the extra key "_model".
    """
    from tfdefakeq.runtime.modelinfo import read_model_info

    if warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {warmup}")
    if runs < 1:
        raise UserError(f"--runs must be >= 1, got {runs}")
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    memory = PeakMemory()
    memory.start()
    model = open_model(path, num_threads=threads, use_xnnpack=use_xnnpack, unpack_packed=unpack_packed)
    info = read_model_info(path)
    packed = info.tensor_types.get("INT4", 0) + info.tensor_types.get("INT2", 0)
    interpreter = model.interpreter
    interpreter.set_tensor(model.input_details["index"], random_input(model, seed))
    for _ in range(warmup):
        interpreter.invoke()
    latency_ms = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter_ns()
        interpreter.invoke()
        latency_ms[i] = (time.perf_counter_ns() - start) / 1e6
    peak_mb, model_mb, method = memory.stop()
    machine = machine_info()
    p50 = float(np.median(latency_ms))
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": device,
        "model": str(path),
        "size_bytes": model.size_bytes,
        "macs": info.macs,
        "input_dtype": np.dtype(model.input_dtype).name,
        "packed_weights": ("unpacked" if model.unpacked_tensors else "packed") if packed else "",
        "unpacked_tensors": model.unpacked_tensors,
        "threads": int(threads),
        "xnnpack": bool(use_xnnpack),
        "init_ms": round(model.init_ms, 6),
        "unpack_ms": round(model.unpack_ms, 6),
        "warmup": int(warmup),
        "runs": int(runs),
        "latency_ms_p50": round(p50, 6),
        "latency_ms_p90": _percentile(latency_ms, 90),
        "latency_ms_p99": _percentile(latency_ms, 99),
        "latency_ms_mean": round(float(latency_ms.mean()), 6),
        "latency_ms_min": round(float(latency_ms.min()), 6),
        "gmacs_per_s": round(info.macs / (p50 * 1e6), 4) if p50 > 0 else 0.0,
        "peak_rss_mb": round(peak_mb, 2),
        "model_rss_mb": round(model_mb, 2),
        "memory_method": method,
        "runtime": model.runtime.name,
        "runtime_version": model.runtime.version,
        "machine": machine["machine"],
        "processor": machine["processor"],
        "int8_isa": machine["int8_isa"],
        "system": machine["system"],
        "python": machine["python"],
    }
    if keep_model:
        result["_model"] = model
    return result


def paired_latency(models: dict, runs: int, warmup: int, block: int = 10, seed: int = 0) -> dict:
    """Per-invoke latencies (ms) of several loaded models measured in alternation: `block` invokes of
    each in turn (the order rotating every block) until each has `runs`, so that every format sees
    the same machine load. -> {name: np.ndarray of runs}."""
    names = list(models)
    for name in names:
        m = models[name]
        m.interpreter.set_tensor(m.input_details["index"], random_input(m, seed))
        for _ in range(warmup):
            m.interpreter.invoke()
    times = {name: [] for name in names}
    for b in range(-(-runs // block)):
        order = names[b % len(names):] + names[: b % len(names)]
        for name in order:
            invoke = models[name].interpreter.invoke
            for _ in range(block):
                start = time.perf_counter_ns()
                invoke()
                times[name].append((time.perf_counter_ns() - start) / 1e6)
    return {name: np.array(t[:runs]) for name, t in times.items()}


def profile_model(path, threads: int = 1, use_xnnpack: bool = True, unpack_packed: bool = True,
                  warmup: int = 3, runs: int = 20, seed: int = 0) -> list[dict]:
    """Per-op isolated timings of `path` under the same settings as `bench_model` (see runtime.profile)."""
    from tfdefakeq.runtime.interpreter import find_runtime
    from tfdefakeq.runtime.profile import profile_ops
    from tfdefakeq.runtime.unpack import unpack_model

    data = admit_model(path, num_threads=threads, use_xnnpack=use_xnnpack, unpack_packed=unpack_packed).data
    if unpack_packed:
        data = unpack_model(data)[0]
    runtime = find_runtime()
    kwargs = {"num_threads": int(threads)}
    if not use_xnnpack:
        kwargs["experimental_op_resolver_type"] = runtime.op_resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return profile_ops(data, kwargs, runtime, warmup=warmup, runs=runs, seed=seed, label=str(path))


def format_result(result: dict) -> str:
    """A few human lines: model, runtime, machine, init, latency, throughput and memory."""
    xnn = "on" if result["xnnpack"] else "off"
    packed = ""
    if result.get("packed_weights") == "unpacked":
        packed = f", packed weights unpacked to INT8 at load ({result['unpacked_tensors']} tensors, {result['unpack_ms']:.1f} ms)"
    elif result.get("packed_weights") == "packed":
        packed = ", packed weights run as stored"
    device = f" [{result['device']}]" if result.get("device") else ""
    return "\n".join(
        [
            f"model       {result['model']} ({result['size_bytes']:,} bytes, {result['input_dtype']} input, "
            f"{result['macs'] / 1e6:,.1f} MMAC)",
            f"runtime     {result['runtime']} {result['runtime_version']}, {result['threads']} thread(s), XNNPACK {xnn}{packed}",
            f"machine     {result['machine']}, {result['processor']} (int8: {result['int8_isa']}){device}",
            f"init_ms     {result['init_ms']:.2f}",
            f"latency_ms  p50 {result['latency_ms_p50']:.4g}  p90 {result['latency_ms_p90']:.4g}  "
            f"p99 {result['latency_ms_p99']:.4g}  mean {result['latency_ms_mean']:.4g}  "
            f"({result['runs']} runs after {result['warmup']} warm-up)",
            f"throughput  {result['gmacs_per_s']:.2f} GMAC/s at p50",
            f"memory      peak RSS {result['peak_rss_mb']:.1f} MB, +{result['model_rss_mb']:.1f} MB for this model "
            f"({result['memory_method']})",
        ]
    )


def append_csv_row(path, row: dict) -> Path:
    """Appends `row` to CSV `path` (created with a header row), rewriting the whole file atomically.

    Raises UserError when the existing file's header differs from `row`'s keys.
    """
    return append_csv_rows(path, [row])


def append_csv_rows(path, rows: list[dict]) -> Path:
    """Appends `rows` (same keys) to CSV `path`; see `append_csv_row`."""
    path = Path(path)
    columns = list(rows[0].keys())
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
    for row in rows:
        writer.writerow(row)
    return write_atomic(path, (text + buf.getvalue()).encode("utf-8"))
