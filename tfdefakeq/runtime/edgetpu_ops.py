"""Edge TPU (Coral) compatibility of a .tflite, op by op: the TensorFlow-free engine behind
`python -m tfdefakeq.edgetpu`, read from the flatbuffer (no TensorFlow, no Coral software needed):

- every tensor the accelerator touches must be 8-bit (int8/uint8; int32 biases and shape
  constants are fine) with a static shape, and only the 3 innermost dimensions may exceed 1;
- each op must be in the Edge TPU's supported set (`SUPPORTED_OPS`, with the limitations Coral
  documents), at an op version compiler 16 knows (`MAX_OP_VERSION`, see below);
- the compiler maps ops in execution order and stops at the FIRST unsupported one: it and every
  op after it run on the CPU. The report names that op;
- parameter data should fit the ~8 MiB on-chip memory, or it is streamed from host memory on
  every invoke (slower); the compiler also keeps part of that memory for itself.

INT4 (and INT2) weights are not Edge TPU compatible: the accelerator computes with 8-bit
operands only. Use the int8 export of the same detector for Coral.

When `edgetpu_compiler` is on PATH it is run too (its verdict is the real one); when
`libedgetpu.so.1` loads, the delegate is reported as available. Neither exists on most
development machines: the report says so rather than guessing.

`MAX_OP_VERSION`: the newest version of each op that the TensorFlow Lite runtime of mid-2021
(TF 2.5, the generation compiler 16.0 was built with) defines, from TF's runtime_version table.
Newer converters write newer versions for some ops (e.g. ADD v4 and MUL v5 appeared in TF 2.6);
the compiler answers "Operation version not supported" for those. This is a best-known table,
not the compiler's own: `edgetpu_compiler` settles it."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path



ON_CHIP_BYTES = 8 * 1024 * 1024


EIGHT_BIT = {"INT8", "UINT8"}


PACKED = {"INT4", "INT2", "UINT4"}


# Coral "TensorFlow models on the Edge TPU", supported operations, with their known limitations
# (paraphrased; only the limitations a flatbuffer can show are checked).
SUPPORTED_OPS: dict[str, str] = {
    "ADD": "",
    "AVERAGE_POOL_2D": "no fused activation function",
    "CONCATENATION": "no fused activation function; a constant input must be all zeros and the only other input",
    "CONV_2D": "same dilation in x and y",
    "DEPTHWISE_CONV_2D": "same dilation in x and y",
    "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "only the default weights format",
    "HARD_SWISH": "",
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "MAX_POOL_2D": "no fused activation function",
    "MAXIMUM": "",
    "MEAN": "reduction along x and/or y only",
    "MINIMUM": "",
    "MUL": "",
    "PACK": "no packing in the batch dimension",
    "PAD": "padding along x and/or y only",
    "PRELU": "alpha must be constant",
    "QUANTIZE": "",
    "REDUCE_MAX": "no reduction in the batch dimension",
    "REDUCE_MIN": "no reduction in the batch dimension",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "RESHAPE": "",
    "RESIZE_BILINEAR": "may stay on the CPU for some sizes (precision)",
    "RESIZE_NEAREST_NEIGHBOR": "may stay on the CPU for some sizes (precision)",
    "RSQRT": "",
    "SLICE": "",
    "SOFTMAX": "1-D input of at most 16,000 elements",
    "SPACE_TO_DEPTH": "",
    "SPLIT": "no splitting in the batch dimension",
    "SQUARED_DIFFERENCE": "",
    "SQUEEZE": "",
    "STRIDED_SLICE": "",
    "SUB": "",
    "SUM": "reduction along x and/or y only",
    "TANH": "",
    "TRANSPOSE": "",
    "TRANSPOSE_CONV": "",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "",
}


# Newest op version defined by TF Lite 2.5 (runtime_version.cc); see the module docstring.
MAX_OP_VERSION: dict[str, int] = {
    "ADD": 3, "AVERAGE_POOL_2D": 3, "CONCATENATION": 3, "CONV_2D": 5, "DEPTHWISE_CONV_2D": 6,
    "EXPAND_DIMS": 1, "FULLY_CONNECTED": 9, "HARD_SWISH": 1, "L2_NORMALIZATION": 2, "LOGISTIC": 3,
    "MAX_POOL_2D": 3, "MAXIMUM": 4, "MEAN": 3, "MINIMUM": 4, "MUL": 4, "PACK": 3, "PAD": 3,
    "PRELU": 1, "QUANTIZE": 2, "REDUCE_MAX": 3, "REDUCE_MIN": 3, "RELU": 3, "RELU6": 3,
    "RELU_N1_TO_1": 1, "RESHAPE": 1, "RESIZE_BILINEAR": 4, "RESIZE_NEAREST_NEIGHBOR": 4, "RSQRT": 2,
    "SLICE": 5, "SOFTMAX": 3, "SPACE_TO_DEPTH": 2, "SPLIT": 4, "SQUARED_DIFFERENCE": 2, "SQUEEZE": 2,
    "STRIDED_SLICE": 5, "SUB": 5, "SUM": 2, "TANH": 3, "TRANSPOSE": 5, "TRANSPOSE_CONV": 3,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 3,
}


NO_FUSED_ACTIVATION = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}


# ops whose documented limitation this module checks itself (others are shown as warnings)
CHECKED_LIMITATIONS = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "SUM", "PAD"}


SPATIAL_REDUCERS = {"MEAN", "SUM"}


INT32_OK = {  # ops whose int32 inputs are biases or shape/axis constants, not data
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "MEAN", "SUM", "REDUCE_MAX",
    "REDUCE_MIN", "PAD", "RESHAPE", "EXPAND_DIMS", "SLICE", "STRIDED_SLICE", "SPLIT", "TRANSPOSE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "SQUEEZE", "UNIDIRECTIONAL_SEQUENCE_LSTM",
}


@dataclass
class OpCheck:
    index: int
    op: str
    version: int
    placement: str  # "edgetpu" | "cpu (after first unsupported)" | "cpu (unsupported)"
    problems: list[str] = field(default_factory=list)  # why it cannot map (empty when it can)
    warnings: list[str] = field(default_factory=list)  # limitations to confirm with the compiler
    parameter_bytes: int = 0


@dataclass
class EdgeTpuReport:
    model: str
    size_bytes: int
    compatible: bool  # every op would map to the Edge TPU
    ops_total: int
    ops_on_edgetpu: int
    first_unsupported: dict | None  # {"index", "op", "problems"} where CPU fallback starts
    model_problems: list[str]
    parameter_bytes_on_edgetpu: int
    parameter_bytes_total: int
    fits_on_chip: bool
    ops: list[OpCheck]
    compiler: dict = field(default_factory=dict)
    delegate: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _constant_ints(model_t, tensor_index: int) -> list[int] | None:
    """Values of a small constant int32/int64 tensor of subgraph 0 (axes, paddings), else None."""
    import numpy as np

    tensor = model_t.subgraphs[0].tensors[tensor_index]
    buffer = model_t.buffers[tensor.buffer]
    if buffer is None or buffer.data is None or len(buffer.data) == 0:
        return None
    dtype = {2: np.int32, 4: np.int64}.get(tensor.type)
    if dtype is None:
        return None
    return np.frombuffer(np.asarray(buffer.data, dtype=np.uint8).tobytes(), dtype=dtype).tolist()


def check_model(path) -> EdgeTpuReport:
    """Static Edge TPU compatibility of the `.tflite` at `path` (see the module docstring)."""
    from ai_edge_litert import schema_py_generated as schema

    from tfdefakeq.runtime.interpreter import check_tflite_file
    from tfdefakeq.runtime.modelinfo import model_info_from_bytes

    path = Path(path)
    check_tflite_file(path)
    data = path.read_bytes()
    info = model_info_from_bytes(data, str(path))
    model_t = schema.ModelT.InitFromPackedBuf(data, 0)
    tensors = info.tensors
    model_problems, notes = [], []
    if info.subgraphs > 1:
        model_problems.append(f"{info.subgraphs} subgraphs: the Edge TPU compiler supports one")
    packed = {t.type for t in tensors if t.type in PACKED}
    if packed:
        model_problems.append(
            f"{'/'.join(sorted(packed))} weights: the Edge TPU computes with 8-bit operands only "
            "(use the int8 export of this detector for Coral)")
    dynamic = [t for t in tensors if any(d < 0 for d in t.shape)
               or any(d < 0 for d in (t.shape_signature or ())[1:])]
    if dynamic:
        model_problems.append(f"{len(dynamic)} tensor(s) with dynamic shapes, e.g. {dynamic[0].name!r} "
                              f"{dynamic[0].shape_signature or dynamic[0].shape}: the Edge TPU needs static shapes")
    elif any((t.shape_signature or (0,))[0] < 0 for t in tensors):
        notes.append("the batch dimension is -1 in shape_signature (stored shape 1), as the Keras converter writes it: "
                     "the interpreter runs it at batch 1; only the compiler can say whether it objects")
    for i, t in enumerate(info.input_types + info.output_types):
        if t not in EIGHT_BIT:
            which = "input" if i < len(info.input_types) else "output"
            notes.append(f"model {which} is {t}: the CPU converts it around the Edge TPU part (int8/uint8 I/O avoids that)")

    checks: list[OpCheck] = []
    for op in info.ops:
        if op.subgraph != 0:
            continue
        check = OpCheck(op.index, op.name, op.version, placement="edgetpu")
        check.parameter_bytes = sum(tensors[i].data_bytes for i in op.inputs if i >= 0)
        if op.name not in SUPPORTED_OPS:
            check.problems.append("not an Edge TPU op")
        else:
            newest = MAX_OP_VERSION.get(op.name)
            if newest is not None and op.version > newest:
                check.problems.append(f"version {op.version} is newer than compiler 16 is known to take (v{newest})")
            if SUPPORTED_OPS[op.name] and op.name not in CHECKED_LIMITATIONS:
                check.warnings.append(SUPPORTED_OPS[op.name])
        for i in [*op.inputs, *op.outputs]:
            if i < 0:
                continue
            t = tensors[i]
            if t.type in EIGHT_BIT:
                pass
            elif t.type == "INT32" and t.is_constant and op.name in INT32_OK:
                pass
            elif t.type in PACKED:
                check.problems.append(f"{t.type} weights")
            else:
                check.problems.append(f"{t.type} tensor {t.name!r} (needs int8/uint8)")
            if not t.is_constant and len(t.shape) > 3 and any(d > 1 for d in t.shape[:-3]):
                check.problems.append(f"tensor {t.name!r} {t.shape}: a dimension before the 3 innermost exceeds 1")
        if "unreadable" in op.options and op.name in (*NO_FUSED_ACTIVATION, "CONV_2D", "DEPTHWISE_CONV_2D",
                                                       "FULLY_CONNECTED"):
            check.problems.append(f"its options could not be read ({op.options['unreadable']}): fused activation, "
                                  "dilation and weights format unknown")
        if op.name in NO_FUSED_ACTIVATION and op.options.get("fused_activation", "NONE") != "NONE":
            check.problems.append(f"fused {op.options['fused_activation']}")
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D") and op.options.get("dilation_h", 1) != op.options.get("dilation_w", 1):
            check.problems.append("different dilation in x and y")
        if op.name == "FULLY_CONNECTED" and op.options.get("weights_format", 0) != 0:
            check.problems.append("non-default (shuffled) weights format")
        if op.name in SPATIAL_REDUCERS and len(op.inputs) > 1:
            axes = _constant_ints(model_t, op.inputs[1])
            rank = len(tensors[op.inputs[0]].shape)
            if axes is None:
                check.problems.append("reduction axes are not constant")
            elif rank == 4 and not {a % 4 for a in axes} <= {1, 2}:
                check.problems.append(f"reduces axes {axes}, not only x/y")
        if op.name == "PAD" and len(op.inputs) > 1:
            pads = _constant_ints(model_t, op.inputs[1])
            if pads is None:
                check.problems.append("paddings are not constant")
            elif len(pads) == 8 and any(pads[k] for k in (0, 1, 6, 7)):
                check.problems.append(f"pads batch or channels {pads}")
        check.problems = list(dict.fromkeys(check.problems))
        checks.append(check)

    first = next((c for c in checks if c.problems), None)
    if model_problems and first is None and checks:
        first = checks[0]  # a model-level problem (INT4, dynamic shapes) keeps the whole graph off
    for c in checks:
        if first is not None and c.index >= first.index:
            c.placement = "cpu (unsupported)" if (c.problems or c is first) else "cpu (after first unsupported)"
    on_tpu = [c for c in checks if c.placement == "edgetpu"]
    mapped = {c.index for c in on_tpu}
    constants = {i for op in info.ops if op.subgraph == 0 and op.index in mapped for i in op.inputs if i >= 0}
    param_tpu = sum(tensors[i].data_bytes for i in constants)  # a constant shared by several ops counts once
    report = EdgeTpuReport(
        model=str(path),
        size_bytes=len(data),
        compatible=first is None and not model_problems,
        ops_total=len(checks),
        ops_on_edgetpu=len(on_tpu),
        first_unsupported=None if first is None else {
            "index": first.index, "op": first.op, "problems": first.problems or model_problems},
        model_problems=model_problems,
        parameter_bytes_on_edgetpu=param_tpu,
        parameter_bytes_total=info.parameter_bytes,
        fits_on_chip=param_tpu <= ON_CHIP_BYTES,
        ops=checks,
        notes=notes,
    )
    if not report.fits_on_chip:
        report.notes.append(
            f"{param_tpu / 2**20:.1f} MiB of parameters exceed the {ON_CHIP_BYTES // 2**20} MiB on-chip memory: "
            "the rest is streamed from host memory on every invoke")
    elif param_tpu > 6 * 2**20:
        report.notes.append("parameters close to the on-chip limit: the compiler keeps part of the 8 MiB for itself; "
                            "check its 'off-chip memory used' line")
    return report


def run_compiler(path, out_dir) -> dict:
    """Runs `edgetpu_compiler` when it is on PATH -> {"found", "version", "returncode", "output", "compiled"}."""
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return {"found": False, "message": "edgetpu_compiler is not on PATH: only the static check above ran "
                "(the compiler runs on x86-64 Debian/Ubuntu from Coral's apt repository, or in Coral's Colab notebook)"}
    result = {"found": True, "path": exe}
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
        result["version"] = (version.stdout or version.stderr).strip()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([exe, "-s", "-o", str(out_dir), str(path)], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {**result, "returncode": None, "output": f"could not run: {e}"}
    compiled = out_dir / (Path(path).stem + "_edgetpu.tflite")
    result.update(returncode=proc.returncode, output=(proc.stdout + proc.stderr).strip(),
                  compiled=str(compiled) if compiled.exists() else None)
    return result


def probe_delegate(library: str = "libedgetpu.so.1") -> dict:
    """Tries `load_delegate(library)` -> {"library", "loaded", "message"}."""
    try:
        from ai_edge_litert.interpreter import load_delegate
    except ImportError as e:
        return {"library": library, "loaded": False, "message": f"ai-edge-litert not importable ({e})"}
    import ctypes

    hint = "install the Edge TPU runtime (libedgetpu1-std from Coral's apt repository) and plug in the accelerator"
    try:
        ctypes.CDLL(library)  # a missing library: say so without litert's half-built Delegate noise
    except OSError as e:
        return {"library": library, "loaded": False, "message": f"{library} not found ({e}): {hint}"}
    try:
        load_delegate(library)
    except (ValueError, OSError, RuntimeError) as e:
        return {"library": library, "loaded": False,
                "message": f"{library} is installed but the delegate did not load ({' '.join(str(e).split())}): "
                           "is the Edge TPU plugged in?"}
    return {"library": library, "loaded": True, "message": f"{library} loaded: compiled models can run on the Edge TPU"}


def format_report(report: EdgeTpuReport) -> str:
    lines = [f"Edge TPU check of {report.model} ({report.size_bytes:,} bytes)"]
    lines.append(f"{'#':>4}  {'op':<22} {'v':>2}  {'placement':<30} problems / limitations")
    for c in report.ops:
        text = "; ".join(c.problems) if c.problems else ("(" + "; ".join(c.warnings) + ")" if c.warnings else "")
        lines.append(f"{c.index:>4}  {c.op[:22]:<22} {c.version:>2}  {c.placement:<30} {text}")
    verdict = "COMPATIBLE: every op would map to the Edge TPU" if report.compatible else "NOT fully compatible"
    lines.append(verdict)
    for p in report.model_problems:
        lines.append(f"  model: {p}")
    if report.first_unsupported:
        f = report.first_unsupported
        lines.append(f"  CPU fallback starts at op {f['index']} ({f['op']}): {'; '.join(f['problems'])}")
    lines.append(f"ops on the Edge TPU: {report.ops_on_edgetpu} of {report.ops_total}")
    lines.append(f"parameters on the Edge TPU: {report.parameter_bytes_on_edgetpu / 2**20:.2f} MiB of "
                 f"{ON_CHIP_BYTES // 2**20} MiB on-chip ({'fits' if report.fits_on_chip else 'does NOT fit'})")
    for n in report.notes:
        lines.append(f"note: {n}")
    if report.compiler:
        if report.compiler.get("found"):
            lines.append(f"edgetpu_compiler {report.compiler.get('version', '')}: exit {report.compiler.get('returncode')}")
            lines += ["  " + line for line in str(report.compiler.get("output", "")).splitlines()]
        else:
            lines.append(report.compiler["message"])
    if report.delegate:
        lines.append(report.delegate["message"])
    return "\n".join(lines)
