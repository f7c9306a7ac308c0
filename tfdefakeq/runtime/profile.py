"""Per-op latency of a `.tflite`, measured by running each op alone (no TensorFlow).

ai-edge-litert 2.3.0's Python `Interpreter` exposes no op profiler: the C++ benchmark tool's
`--enable_op_profiling` is not in the wheel, and the C library's profiler (`LiteRtCompiledModel...`)
is not reachable from Python. So this module cuts the model into one-op models (the op, its
constant inputs, its other inputs as graph inputs) with the flatbuffer object API, and times each
with the same interpreter settings. These are ISOLATED timings: caches start warm with that op's
data alone, per-invoke overhead (~µs) is counted once per op, and XNNPACK cannot fuse across ops,
so their sum is compared with the whole model's invoke in the report rather than presented as a
breakdown of it.
"""

from __future__ import annotations

import time

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.core.stderr import dropping
from tfdefakeq.runtime.modelinfo import OpInfo, model_info_from_bytes

PROFILE_COLUMNS = ["op_index", "op", "version", "output_shape", "macs", "latency_ms_p50", "share", "gmacs_per_s", "delegated"]
PROFILER_NOTE = (
    "ai-edge-litert exposes no op profiler to Python: each op was timed alone as a one-op model "
    "(isolated timings; their sum is not the model's latency)"
)


def single_op_model(model_t, op_index: int, schema) -> bytes:
    """Flatbuffer of a model holding only operator `op_index` of subgraph 0 of `model_t` (a ModelT)."""
    import copy

    import flatbuffers

    graph = model_t.subgraphs[0]
    op = copy.deepcopy(graph.operators[op_index])
    used = [i for i in list(op.inputs) + list(op.outputs) if i >= 0]
    order = list(dict.fromkeys(used))
    remap = {old: new for new, old in enumerate(order)}
    new_model = schema.ModelT()
    new_model.version = model_t.version
    new_model.operatorCodes = model_t.operatorCodes
    new_model.description = model_t.description
    new_model.buffers = [schema.BufferT()]  # buffer 0: the empty sentinel
    tensors = []
    for old in order:
        tensor = copy.copy(graph.tensors[old])
        buffer = model_t.buffers[tensor.buffer] if tensor.buffer < len(model_t.buffers) else None
        if buffer is not None and buffer.data is not None and len(buffer.data):
            new_model.buffers.append(schema.BufferT(data=buffer.data))
            tensor.buffer = len(new_model.buffers) - 1
        else:
            new_model.buffers.append(schema.BufferT())
            tensor.buffer = len(new_model.buffers) - 1
        tensors.append(tensor)
    op.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
    op.outputs = [remap[i] for i in op.outputs]
    op.intermediates = None
    sub = schema.SubGraphT()
    sub.tensors = tensors
    sub.operators = [op]
    sub.inputs = [remap[i] for i in dict.fromkeys(graph.operators[op_index].inputs)
                  if i >= 0 and not _has_data(new_model.buffers[tensors[remap[i]].buffer])]
    sub.outputs = [remap[i] for i in graph.operators[op_index].outputs]
    sub.name = graph.name
    new_model.subgraphs = [sub]
    builder = flatbuffers.Builder(1024)
    builder.Finish(new_model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _has_data(buffer) -> bool:
    return buffer.data is not None and len(buffer.data) > 0


def _delegated(interpreter) -> bool | None:
    """Whether a delegate took the one op of this interpreter: its execution plan then holds a
    DELEGATE node (the Python API's only view of it; `_get_ops_details` is private, hence None when
    it is missing). XNNPACK refuses an op it has no kernel for (int8 HARD_SWISH in litert 2.3.0) or
    whose scales it does not take (an int8 ADD whose input/output scale ratio is outside
    [2^-10, 2^8)); the builtin kernel then runs it and the delegated graph is split around it."""
    try:
        return any(d.get("op_name") == "DELEGATE" for d in interpreter._get_ops_details())
    except Exception:  # noqa: BLE001 - a runtime without the private call
        return None


def op_type_totals(rows: list[dict]) -> dict[str, dict]:
    """`profile_ops` rows summed per op type -> {op: {"count", "ms" (sum of isolated p50s),
    "not_delegated" (ops the delegate refused)}}."""
    totals: dict[str, dict] = {}
    for r in rows:
        t = totals.setdefault(r["op"], {"count": 0, "ms": 0.0, "not_delegated": 0})
        t["count"] += 1
        t["ms"] += r["latency_ms_p50"] or 0.0
        t["not_delegated"] += r.get("delegated") is False
    return totals


def held_back_by(base_rows: list[dict], rows: list[dict], target: float) -> list[dict]:
    """The op types that keep the model of `rows` (int8) from running in `target` x the time of the
    model of `base_rows` (its float32 version), worst first: per op type, its isolated time in
    `rows` minus `target` x its time in `base_rows` (ms; positive = above its share of the target).
    Each -> {"op", "count", "ms", "base_ms", "excess_ms", "not_delegated"}."""
    base = op_type_totals(base_rows)
    out = []
    for op, t in op_type_totals(rows).items():
        base_ms = base.get(op, {}).get("ms", 0.0)
        out.append({"op": op, "count": t["count"], "ms": t["ms"], "base_ms": base_ms,
                    "excess_ms": t["ms"] - target * base_ms, "not_delegated": t["not_delegated"]})
    return sorted(out, key=lambda r: -r["excess_ms"])


def _random_fill(interpreter, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        shape = detail["shape"]
        if dtype.kind == "f":
            x = rng.uniform(-1, 1, shape).astype(dtype)
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            x = rng.integers(max(info.min, -128), min(info.max, 127), shape, endpoint=True).astype(dtype)
        else:
            x = np.zeros(shape, dtype)
        interpreter.set_tensor(detail["index"], x)


def profile_ops(flatbuffer: bytes, interpreter_kwargs: dict, runtime, warmup: int = 3, runs: int = 20,
                seed: int = 0, label: str = "model") -> list[dict]:
    """Times every op of subgraph 0 alone. Returns rows with the keys of PROFILE_COLUMNS.

    `flatbuffer` is what the interpreter runs (already INT4-unpacked when that is what is measured);
    `interpreter_kwargs` the same threads / op resolver as the whole-model run. An op that cannot
    be cut out (e.g. a control-flow op) gets latency_ms_p50 = None.
    """
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:  # pragma: no cover - depends on the install
        raise UserError("--profile needs ai-edge-litert (pip install tfdefakeq[edge])") from e
    from tfdefakeq.runtime.interpreter import DELEGATE_INFO

    info = model_info_from_bytes(flatbuffer, label)
    model_t = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    rows = []
    ops: list[OpInfo] = [op for op in info.ops if op.subgraph == 0]
    for op in ops:
        row = {
            "op_index": op.index,
            "op": op.name,
            "version": op.version,
            "output_shape": "x".join(str(d) for d in info.tensors[op.outputs[0]].shape) if op.outputs else "",
            "macs": op.macs,
            "latency_ms_p50": None,
            "not_timed": "",  # why the op could not be timed alone, when it could not
            "delegated": None,  # whether a delegate (XNNPACK) took the op; None when unknown
        }
        try:
            content = single_op_model(model_t, op.index, schema)
            with dropping(DELEGATE_INFO):
                interpreter = runtime.interpreter_class(model_content=content, **interpreter_kwargs)
                interpreter.allocate_tensors()
            row["delegated"] = _delegated(interpreter)
            _random_fill(interpreter, seed)
            for _ in range(warmup):
                interpreter.invoke()
            times = np.empty(runs)
            for i in range(runs):
                start = time.perf_counter_ns()
                interpreter.invoke()
                times[i] = (time.perf_counter_ns() - start) / 1e6
            row["latency_ms_p50"] = float(np.median(times))
        except Exception as e:  # noqa: BLE001 - an op we cannot isolate is reported with the reason, not fatal
            row["not_timed"] = f"{type(e).__name__}: {' '.join(str(e).split())}"[:200]
        rows.append(row)
    total = sum(r["latency_ms_p50"] or 0.0 for r in rows)
    for r in rows:
        ms = r["latency_ms_p50"]
        r["share"] = (ms / total) if (ms is not None and total) else None
        r["gmacs_per_s"] = (r["macs"] / (ms * 1e6)) if (ms and r["macs"]) else None
    return rows


def format_profile(rows: list[dict], whole_ms: float | None = None, top: int | None = None) -> str:
    """Text table of `profile_ops` rows, slowest first, with the sum against the whole invoke."""
    shown = sorted(rows, key=lambda r: -(r["latency_ms_p50"] or 0.0))
    if top:
        shown = shown[:top]
    lines = [PROFILER_NOTE, f"{'#':>4} {'op':<20} {'v':>2} {'output':<16} {'MMAC':>9} {'ms':>9} {'share':>6} {'GMAC/s':>7} delegated"]
    for r in shown:
        ms = r["latency_ms_p50"]
        lines.append(
            f"{r['op_index']:>4} {r['op'][:20]:<20} {r['version']:>2} {r['output_shape'][:16]:<16} {r['macs'] / 1e6:>9.2f} "
            + (f"{ms:>9.4f} {r['share']:>6.1%} " if ms is not None else f"{'n/a':>9} {'':>6} ")
            + (f"{r['gmacs_per_s']:>7.1f}" if r["gmacs_per_s"] else f"{'':>7}")
            + {True: " yes", False: " NO", None: ""}[r.get("delegated")]
        )
    total = sum(r["latency_ms_p50"] or 0.0 for r in rows)
    missing = sum(r["latency_ms_p50"] is None for r in rows)
    tail = f"sum of isolated ops {total:.4f} ms over {len(rows) - missing} ops"
    if missing:
        tail += f" ({missing} could not be isolated)"
    if whole_ms:
        tail += f"; whole-model p50 {whole_ms:.4f} ms"
    refused = sum(r.get("delegated") is False for r in rows)
    if refused:
        tail += f"; {refused} op(s) left to the builtin kernels by the delegate"
    reasons = [f"  op {r['op_index']} {r['op']} not timed: {r.get('not_timed') or 'no reason recorded'}"
               for r in rows if r["latency_ms_p50"] is None]
    return "\n".join(lines + [tail] + reasons)
