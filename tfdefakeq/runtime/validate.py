"""Untrusted `.tflite` files: checked before an interpreter parses them.

The TFLite interpreter is C++: a damaged or crafted flatbuffer can make it read out of bounds or
trip a check, and that kills the whole process that loaded it. `validate_flatbuffer(data, label)`
walks the flatbuffer as a verifier does (every table, vtable, offset, vector and string inside the
buffer and aligned) for the parts of the TFLite schema the interpreter reads, then checks what the
schema cannot say: buffer, tensor, op-code and subgraph indices in range, shapes non-negative and
matching the bytes of constant tensors (packed INT4 / INT2 counted as packed), quantization
parameters sound (every scale a finite, normal, positive float32, every zero point inside its
type), operators reading only tensors that hold a value and writing none twice nor any weights, no
required input of an XNNPACK op omitted, and, per op type, every requantization the kernels derive
from the scales of an op's tensors within what TFLite's `QuantizeMultiplier` and XNNPACK accept
(`REQUANTIZATION_RULES`, each rule beside its check in `_check_requantization`). Pure python +
numpy, a few ms for the shipped models (`benchmarks/results/reliability.md`). `read_tflite(path)`
reads a file and runs it; `check_tflite_file(path)` too, returning the size.

A file that passes can still crash the interpreter in ways no static check foresees: the loader
(`tfdefakeq.runtime.loader`) opens it in a child process first (`tfdefakeq.runtime.probe`) unless its
bytes hash to the SHA-256 its manifest records.

What the fuzz campaign found the interpreter (ai-edge-litert 2.3.0) crashing on, all rejected here:
a conv whose filter index is -1 (XNNPACK segfault), an op output or an activation's buffer index
moved onto weights (abort, or segfault writing the read-only weights), an INT8 activation whose
scale vector is emptied or zero (abort), an ADD input whose scale is 1e38 (abort: TFLITE_CHECK in
QuantizeMultiplierSmallerThanOneExp). See tests/runtime/test_fuzz.py, benchmarks/results/reliability.md.

    >>> validate_flatbuffer(Path("det.tflite").read_bytes(), "det.tflite")   # doctest: +SKIP
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.modelinfo import TENSOR_TYPES
from tfdefakeq.runtime.unpack import INT8, PACKED_BITS, TFLITE_FILE_IDENTIFIER

MIN_TFLITE_BYTES = 16  # root offset + identifier + the smallest possible root table
TFLITE_SCHEMA_VERSION = 3  # the interpreter refuses any other Model.version
MAX_TENSOR_BYTES = 2**31 - 1  # one tensor larger than a flatbuffer can be is a damaged shape
MAX_NAME_CHARS = 60  # names quoted in messages are cut here (they can be long, or crafted)
MAX_FLATBUFFER_BYTES = 2**31 - 1  # flatbuffer offsets are 32-bit signed
FLOAT32_MIN_NORMAL = 2.0**-126  # XNNPACK's xnn_define_quantized_tensor refuses a scale that is not normal

# Zero points an integer tensor can hold; quantized kernels index tables with them.
ZERO_POINT_RANGE = {3: (0, 255), 7: (-32768, 32767), 9: (-128, 127), 17: (-8, 7), 19: (-2, 1), 20: (0, 15),
                    2: (-(2**31), 2**31 - 1), 16: (0, 65535), 15: (0, 2**32 - 1)}

# Builtin ops the XNNPACK delegate (on by default) may take -> the inputs that may be omitted (-1).
# The delegate reads every other input of these ops without checking for -1: a conv whose filter
# index is -1 segfaults the interpreter (found by tests/runtime/test_fuzz.py). Other ops run on the
# builtin kernels, which check omitted inputs themselves.
XNNPACK_OPTIONAL_INPUTS = {
    0: ("ADD", ()), 1: ("AVERAGE_POOL_2D", ()), 2: ("CONCATENATION", ()), 3: ("CONV_2D", (2,)),
    4: ("DEPTHWISE_CONV_2D", (2,)), 5: ("DEPTH_TO_SPACE", ()), 6: ("DEQUANTIZE", ()), 8: ("FLOOR", ()),
    9: ("FULLY_CONNECTED", (2,)), 14: ("LOGISTIC", ()), 17: ("MAX_POOL_2D", ()), 18: ("MUL", ()), 19: ("RELU", ()),
    20: ("RELU_N1_TO_1", ()), 21: ("RELU6", ()), 22: ("RESHAPE", ()), 23: ("RESIZE_BILINEAR", ()), 25: ("SOFTMAX", ()),
    26: ("SPACE_TO_DEPTH", ()), 28: ("TANH", ()), 34: ("PAD", ()), 39: ("TRANSPOSE", ()), 40: ("MEAN", ()),
    41: ("SUB", ()), 42: ("DIV", ()), 45: ("STRIDED_SLICE", ()), 47: ("EXP", ()), 49: ("SPLIT", ()),
    54: ("PRELU", ()), 55: ("MAXIMUM", ()), 57: ("MINIMUM", ()), 59: ("NEG", ()), 60: ("PADV2", ()),
    65: ("SLICE", ()), 67: ("TRANSPOSE_CONV", (3,)), 74: ("SUM", ()), 75: ("SQRT", ()), 76: ("RSQRT", ()),
    82: ("REDUCE_MAX", ()), 92: ("SQUARE", ()), 98: ("LEAKY_RELU", ()), 99: ("SQUARED_DIFFERENCE", ()),
    101: ("ABS", ()), 104: ("CEIL", ()), 111: ("ELU", ()), 114: ("QUANTIZE", ()), 116: ("ROUND", ()),
    117: ("HARD_SWISH", ()), 126: ("BATCH_MATMUL", ()), 150: ("GELU", ()), 152: ("RELU_0_TO_1", ()),
}

# The TFLite schema (schema.fbs) as far as the interpreter reads it: per table, its fields in vtable
# slot order (None: a deprecated slot). Kinds: a struct format letter (scalar), "str", ("vec", letter),
# ("table", name), ("tables", name), ("union", type field, {type: table name} or "options"/"options2").
_SPARSE_INDEX = {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"}
SCHEMA = {
    "Model": [("version", "I"), ("operator_codes", ("tables", "OperatorCode")), ("subgraphs", ("tables", "SubGraph")),
              ("description", "str"), ("buffers", ("tables", "Buffer")), ("metadata_buffer", ("vec", "i")),
              ("metadata", ("tables", "Metadata")), ("signature_defs", ("tables", "SignatureDef")),
              ("external_buffer_groups", ("tables", "ExternalBufferGroup")),
              ("external_buffers", ("tables", "ExternalBuffer"))],
    "OperatorCode": [("deprecated_builtin_code", "b"), ("custom_code", "str"), ("version", "i"), ("builtin_code", "i")],
    "SubGraph": [("tensors", ("tables", "Tensor")), ("inputs", ("vec", "i")), ("outputs", ("vec", "i")),
                 ("operators", ("tables", "Operator")), ("name", "str"), ("debug_metadata_index", "i")],
    "Tensor": [("shape", ("vec", "i")), ("type", "b"), ("buffer", "I"), ("name", "str"),
               ("quantization", ("table", "QuantizationParameters")), ("is_variable", "?"),
               ("sparsity", ("table", "SparsityParameters")), ("shape_signature", ("vec", "i")), ("has_rank", "?"),
               ("variant_tensors", ("tables", "VariantSubType")), ("external_buffer", "I")],
    "QuantizationParameters": [
        ("min", ("vec", "f")), ("max", ("vec", "f")), ("scale", ("vec", "f")), ("zero_point", ("vec", "q")),
        ("details_type", "B"),
        ("details", ("union", "details_type", {1: "CustomQuantization", 2: "BlockwiseQuantization",
                                               3: "MultiAxisQuantization"})),
        ("quantized_dimension", "i")],
    "CustomQuantization": [("custom", ("vec", "B"))],
    "BlockwiseQuantization": [("scales", "i"), ("zero_points", "i"), ("block_size", "i"),
                              ("block_shape", ("vec", "i"))],
    "MultiAxisQuantization": [("scales", "i"), ("zero_points", "i"), ("block_size", "i"),
                              ("quantized_dimensions", ("vec", "i"))],
    "SparsityParameters": [("traversal_order", ("vec", "i")), ("block_map", ("vec", "i")),
                           ("dim_metadata", ("tables", "DimensionMetadata"))],
    "DimensionMetadata": [("format", "b"), ("dense_size", "i"), ("array_segments_type", "B"),
                          ("array_segments", ("union", "array_segments_type", _SPARSE_INDEX)),
                          ("array_indices_type", "B"),
                          ("array_indices", ("union", "array_indices_type", _SPARSE_INDEX))],
    "Int32Vector": [("values", ("vec", "i"))],
    "Uint16Vector": [("values", ("vec", "H"))],
    "Uint8Vector": [("values", ("vec", "B"))],
    "VariantSubType": [("shape", ("vec", "i")), ("type", "b"), ("has_rank", "?")],
    "Buffer": [("data", ("vec", "B")), ("offset", "Q"), ("size", "Q")],
    "Operator": [("opcode_index", "I"), ("inputs", ("vec", "i")), ("outputs", ("vec", "i")),
                 ("builtin_options_type", "B"), ("builtin_options", ("union", "builtin_options_type", "options")),
                 ("custom_options", ("vec", "B")), ("custom_options_format", "b"),
                 ("mutating_variable_inputs", ("vec", "?")), ("intermediates", ("vec", "i")),
                 ("large_custom_options_offset", "Q"), ("large_custom_options_size", "Q"),
                 ("builtin_options_2_type", "B"),
                 ("builtin_options_2", ("union", "builtin_options_2_type", "options2")), ("debug_metadata_index", "i")],
    "Metadata": [("name", "str"), ("buffer", "I")],
    "TensorMap": [("name", "str"), ("tensor_index", "I")],
    "SignatureDef": [("inputs", ("tables", "TensorMap")), ("outputs", ("tables", "TensorMap")),
                     ("signature_key", "str"), None, ("subgraph_index", "I")],
    "ExternalBufferGroup": [("name", "str")],
    "ExternalBuffer": [("id", "I"), ("group", "I"), ("offset", "Q"), ("length", "Q"), ("packing", "str")],
}
DEFAULTS = {("OperatorCode", "version"): 1}  # every other absent scalar reads as 0


class _Damaged(Exception):
    """Raised inside the walk; validate_flatbuffer turns it into a UserError naming the file.

    `where` is filled in on the way up ("subgraphs[0].tensors[12].shape"), so that the walk of a
    sound file builds no strings."""

    def __init__(self, message: str):
        super().__init__(message)
        self.where: list[str] = []

    def __str__(self) -> str:
        where = "".join(self.where).lstrip(".")
        return f"{where}: {self.args[0]}" if where else self.args[0]


def _compile(schema: dict) -> dict:
    """SCHEMA -> {table: [(vtable entry, field, kind, struct or argument, width)]}."""
    out = {}
    for name, fields in schema.items():
        out[name] = []
        for slot, spec in enumerate(fields):
            if spec is None:
                continue
            field, kind = spec
            if isinstance(kind, str) and kind != "str":
                packer = struct.Struct("<" + kind)
                out[name].append((4 + 2 * slot, field, "scalar", packer, packer.size))
            elif kind == "str":
                out[name].append((4 + 2 * slot, field, "str", None, 4))
            else:
                out[name].append((4 + 2 * slot, field, kind[0], kind[1:], 4))
    return out


_FIELDS = _compile(SCHEMA)
_I32, _U32, _U16 = struct.Struct("<i"), struct.Struct("<I"), struct.Struct("<H")


@dataclass
class ModelSummary:
    """What validation saw: counts over all subgraphs."""

    size_bytes: int
    subgraphs: int
    tensors: int
    operators: int
    buffers: int
    packed_tensors: int  # INT4 / INT2 tensors (unpacked to INT8 at load)


class _Walker:
    """Reads the flatbuffer into dicts, checking every read the way flatbuffers' C++ Verifier does:
    tables, vtables, offsets, vectors and strings aligned and inside the buffer."""

    def __init__(self, data: memoryview, options=None):
        self.buf = data
        self.n = len(self.buf)
        self.options = options  # (BuiltinOptionsCreator, BuiltinOptions2Creator, Table), or None

    def read(self, packer: struct.Struct, pos: int):
        if pos < 0 or pos + packer.size > self.n:
            raise _Damaged(f"read at byte {pos} outside the {self.n}-byte file")
        return packer.unpack_from(self.buf, pos)[0]

    def table(self, pos: int, name: str) -> dict:
        """The table of schema type `name` at `pos` as a dict of its fields (absent scalars: their default)."""
        vtable, vtable_size, inline_size = self.vtable(pos)
        out = {}
        for entry, field, kind, arg, width in _FIELDS[name]:
            try:
                offset = self.read(_U16, vtable + entry) if entry + 2 <= vtable_size else 0  # 0: absent
                if offset and (offset + width > inline_size or (pos + offset) % min(width, 4)):
                    raise _Damaged(f"field at table offset {offset} misaligned or outside its {inline_size}-byte table")
                if kind == "scalar":
                    out[field] = self.read(arg, pos + offset) if offset else DEFAULTS.get((name, field), 0)
                elif not offset:
                    out[field] = None
                elif kind == "str":
                    out[field] = self.string(self.follow(pos + offset))
                elif kind == "vec":
                    out[field] = self.vector(self.follow(pos + offset), arg[0])
                elif kind == "table":
                    out[field] = self.table(self.follow(pos + offset), arg[0])
                elif kind == "tables":
                    out[field] = self.tables(self.follow(pos + offset), arg[0])
                else:  # union: its type field comes first in the schema, so it is already read
                    out[field] = self.union(out[arg[0]], self.follow(pos + offset), arg[1])
            except _Damaged as e:
                e.where.insert(0, f".{field}")
                raise
        return out

    def vtable(self, pos: int) -> tuple[int, int, int]:
        if pos % 4 or pos + 4 > self.n:
            raise _Damaged(f"table at byte {pos} misaligned or outside the file")
        vtable = pos - self.read(_I32, pos)
        if vtable < 0 or vtable % 2 or vtable + 4 > self.n:
            raise _Damaged(f"vtable at byte {vtable} misaligned or outside the file")
        vtable_size, inline_size = self.read(_U16, vtable), self.read(_U16, vtable + 2)
        if vtable_size < 4 or vtable_size % 2 or vtable + vtable_size > self.n:
            raise _Damaged(f"vtable of {vtable_size} bytes at byte {vtable} does not fit the file")
        if inline_size < 4 or pos + inline_size > self.n:
            raise _Damaged(f"table of {inline_size} bytes at byte {pos} does not fit the file")
        return vtable, vtable_size, inline_size

    def follow(self, pos: int) -> int:
        """The target of the uoffset stored at `pos`: always forward, inside the file."""
        if pos % 4:
            raise _Damaged(f"offset at byte {pos} misaligned")
        offset = self.read(_U32, pos)
        if offset == 0 or offset >= 2**31 or pos + offset >= self.n:
            raise _Damaged(f"offset {offset} at byte {pos} points outside the {self.n}-byte file")
        return pos + offset

    def vector(self, pos: int, fmt: str) -> np.ndarray:
        dtype = np.dtype("<" + fmt)
        if pos % 4:
            raise _Damaged(f"vector at byte {pos} misaligned")
        length = self.read(_U32, pos)
        if pos + 4 + length * dtype.itemsize > self.n:
            raise _Damaged(f"vector of {length} elements at byte {pos} runs past the {self.n}-byte file")
        return np.frombuffer(self.buf, dtype=dtype, count=length, offset=pos + 4)

    def string(self, pos: int) -> bytes:
        chars = self.vector(pos, "B")
        end = pos + 4 + len(chars)
        if end >= self.n or self.buf[end] != 0:
            raise _Damaged(f"string at byte {pos} has no terminating zero inside the file")
        return chars.tobytes()

    def tables(self, pos: int, name: str) -> list[dict]:
        out = []
        for i in range(len(self.vector(pos, "I"))):
            try:
                out.append(self.table(self.follow(pos + 4 + 4 * i), name))
            except _Damaged as e:
                e.where.insert(0, f"[{i}]")
                raise
        return out

    def union(self, kind: int, pos: int, members):
        if isinstance(members, dict):
            if kind not in members:
                raise _Damaged(f"unknown union type {kind}")
            return self.table(pos, members[kind])
        # builtin options (~150 table types): the table and where its fields start are checked
        # here, the fields by the generated object API, whose reads past the end raise (numpy / struct)
        vtable, vtable_size, inline_size = self.vtable(pos)
        entries = np.frombuffer(self.buf, dtype="<u2", count=vtable_size // 2 - 2, offset=vtable + 4)
        if np.any((entries != 0) & ((entries < 4) | (entries >= inline_size))):
            raise _Damaged(f"options of type {kind}: a field outside its {inline_size}-byte table")
        if self.options is not None:
            creator = self.options[0 if members == "options" else 1]
            try:
                creator(kind, self.options[2](self.buf, pos))
            except Exception as e:  # noqa: BLE001 - any exception means a read went wrong
                raise _Damaged(f"options of type {kind} unreadable ({e.__class__.__name__})") from e
        return kind


def read_tflite(path) -> bytes:
    """The bytes of the `.tflite` at `path`, checked by `validate_flatbuffer`.

    Raises UserError naming the file when it is missing, unreadable, over 2 GiB or not a sound
    TFLite flatbuffer. The caller hands these same bytes to the interpreter (what was checked is
    what runs, whatever happens to the file afterwards).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    size = path.stat().st_size
    if size > MAX_FLATBUFFER_BYTES:
        raise UserError(f"{path}: not a TFLite flatbuffer ({size} bytes, over the 2 GiB flatbuffer limit)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from e
    validate_flatbuffer(data, str(path))
    return data


def check_tflite_file(path) -> int:
    """`read_tflite(path)`, returning the size in bytes: a fast first check of a user's file."""
    return len(read_tflite(path))


def validate_flatbuffer(data, label: str = "model") -> ModelSummary:
    """Checks that `data` (the bytes of a .tflite file) is a TFLite model the interpreter can parse safely.

    Raises UserError "`label`: not a TFLite flatbuffer (...)" for structural damage (offsets, vtables,
    vectors or strings outside the buffer or misaligned, wrong identifier) and "`label`: invalid TFLite
    model (...)" for contents that contradict each other (indices out of range, shapes that do not
    match the constant bytes, inconsistent quantization parameters). Returns a ModelSummary.
    """
    data = memoryview(data).cast("B")  # bytes, bytearray, mmap, numpy: read in place, sized in bytes
    size = len(data)
    if size == 0:
        raise UserError(f"{label}: not a TFLite flatbuffer (empty file)")
    if size < MIN_TFLITE_BYTES:
        raise UserError(f"{label}: not a TFLite flatbuffer (only {size} bytes)")
    if bytes(data[4:8]) != TFLITE_FILE_IDENTIFIER:
        raise UserError(f"{label}: not a TFLite flatbuffer (file identifier {bytes(data[4:8])!r}, "
                        f"expected {TFLITE_FILE_IDENTIFIER!r})")
    (root,) = struct.unpack_from("<I", data, 0)
    if not 8 <= root <= size - 4:
        raise UserError(f"{label}: not a TFLite flatbuffer (root offset {root} outside the {size}-byte file)")
    try:
        model = _Walker(data, _options_parsers()).table(root, "Model")
    except _Damaged as e:
        raise UserError(f"{label}: not a TFLite flatbuffer ({e})") from None
    try:
        return _check_model(model, size)
    except _Damaged as e:
        raise UserError(f"{label}: invalid TFLite model ({e})") from None


def _options_parsers():
    try:
        from flatbuffers.table import Table
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # tflite_runtime alone: option tables get the structural check only
        return None
    return schema.BuiltinOptionsCreator, schema.BuiltinOptions2Creator, Table


def _check_model(model: dict, size: int) -> ModelSummary:
    if model["version"] != TFLITE_SCHEMA_VERSION:
        raise _Damaged(f"schema version {model['version']}, expected {TFLITE_SCHEMA_VERSION}")
    if model["external_buffers"] or model["external_buffer_groups"]:
        raise _Damaged("weights in external files are not supported")
    subgraphs, buffers, codes = model["subgraphs"] or [], model["buffers"] or [], model["operator_codes"] or []
    if not subgraphs:
        raise _Damaged("no subgraph")
    for b, buffer in enumerate(buffers):
        if buffer["offset"] > 1 and buffer["offset"] + buffer["size"] > size:
            raise _Damaged(f"buffer {b}: {buffer['size']} bytes at offset {buffer['offset']} "
                           f"run past the {size}-byte file")
    for c, code in enumerate(codes):
        if max(code["deprecated_builtin_code"], code["builtin_code"]) < 0:
            raise _Damaged(f"operator code {c}: negative builtin code")
    for s, graph in enumerate(subgraphs):
        _check_subgraph(graph, s, buffers, codes, size)
    for d, signature in enumerate(model["signature_defs"] or []):
        if signature["subgraph_index"] >= len(subgraphs):
            raise _Damaged(f"signature {d}: subgraph {signature['subgraph_index']} of {len(subgraphs)}")
        n = len(subgraphs[signature["subgraph_index"]]["tensors"] or [])
        for io in ("inputs", "outputs"):
            _check_indices([m["tensor_index"] for m in signature[io] or []], n, f"signature {d} {io}")
    for m, metadata in enumerate(model["metadata"] or []):
        if metadata["buffer"] >= len(buffers):
            raise _Damaged(f"metadata {m} {_quote(metadata['name'])}: buffer {metadata['buffer']} of {len(buffers)}")
    return ModelSummary(
        size, len(subgraphs), sum(len(g["tensors"] or []) for g in subgraphs),
        sum(len(g["operators"] or []) for g in subgraphs), len(buffers),
        sum(t["type"] in PACKED_BITS for g in subgraphs for t in g["tensors"] or []),
    )


def _check_subgraph(graph: dict, s: int, buffers: list[dict], codes: list[dict], size: int) -> None:
    """Tensors, then operators in execution order: each reads tensors that hold a value by then and
    writes tensors nobody else writes (the interpreter aborts, or writes into read-only weights, otherwise)."""
    tensors = graph["tensors"] or []
    n = len(tensors)
    constants = set()  # tensors with weights: read-only
    ready = set()  # tensors holding a value: constants, variables, empty ones, inputs, outputs of earlier operators
    for t, tensor in enumerate(tensors):
        try:
            if _check_tensor(tensor, buffers):
                constants.add(t)
        except _Damaged as e:  # the name only now: a sound file builds no messages
            raise _Damaged(f"subgraph {s} tensor {t} {_quote(tensor['name'])}: {e}") from None
        if tensor["is_variable"] or (tensor["shape"] is not None and not tensor["shape"].all()):
            ready.add(t)
    ready |= constants
    _check_indices(graph["inputs"], n, f"subgraph {s} inputs")
    _check_indices(graph["outputs"], n, f"subgraph {s} outputs")
    written = set()
    for t in [] if graph["inputs"] is None else graph["inputs"].tolist():
        if t in written or t in constants:
            raise _Damaged(f"subgraph {s} input tensor {t} is {'listed twice' if t in written else 'a constant'}")
        written.add(t)
    ready |= written
    for o, op in enumerate(graph["operators"] or []):
        what = f"subgraph {s} operator {o}"
        if op["opcode_index"] >= len(codes):
            raise _Damaged(f"{what}: op code index {op['opcode_index']} of {len(codes)}")
        code = codes[op["opcode_index"]]
        name, optional = XNNPACK_OPTIONAL_INPUTS.get(max(code["deprecated_builtin_code"], code["builtin_code"]),
                                                     (None, None))
        what += f" ({name})" if name else ""
        _check_indices(op["inputs"], n, f"{what} inputs", optional=True)
        _check_indices(op["outputs"], n, f"{what} outputs")
        _check_indices(op["intermediates"], n, f"{what} intermediates", optional=True)
        for k, t in enumerate([] if op["inputs"] is None else op["inputs"].tolist()):
            if t == -1 and name is not None and k not in optional:
                raise _Damaged(f"{what}: input {k} omitted (-1), which {name} requires")
            if t != -1 and t not in ready:
                raise _Damaged(f"{what}: input {k} reads tensor {t} before any operator writes it")
        for t in [] if op["outputs"] is None else op["outputs"].tolist():
            if t in constants or t in written:
                raise _Damaged(f"{what}: writes tensor {t}, {'a constant' if t in constants else 'already written'}")
            written.add(t)
            ready.add(t)
        _check_requantization(max(code["deprecated_builtin_code"], code["builtin_code"]), op, tensors, what)
        custom_at, custom_bytes = op["large_custom_options_offset"], op["large_custom_options_size"]
        if custom_at > 1 and custom_at + custom_bytes > size:
            raise _Damaged(f"{what}: custom options run past the {size}-byte file")
    for t in [] if graph["outputs"] is None else graph["outputs"].tolist():
        if t not in ready:
            raise _Damaged(f"subgraph {s} output tensor {t} is never written")


def _check_tensor(tensor: dict, buffers: list[dict]) -> bool:
    """Checks one tensor; returns True when it is a constant (its buffer holds data)."""
    if tensor["type"] not in TENSOR_TYPES:
        raise _Damaged(f"unknown tensor type {tensor['type']}")
    if tensor["external_buffer"]:
        raise _Damaged("weights in an external file are not supported")
    type_name, bits = TENSOR_TYPES[tensor["type"]]
    shape = [] if tensor["shape"] is None else tensor["shape"].tolist()
    if any(d < 0 for d in shape):
        raise _Damaged(f"negative dimension in shape {shape}")
    count = math.prod(shape)
    if bits is not None and count * bits > 8 * MAX_TENSOR_BYTES:
        raise _Damaged(f"shape {shape} of {type_name} needs over 2 GiB")
    if tensor["buffer"] >= len(buffers):
        raise _Damaged(f"buffer {tensor['buffer']} of {len(buffers)}")
    buffer = buffers[tensor["buffer"]]
    stored = len(buffer["data"]) if buffer["data"] is not None else buffer["size"] if buffer["offset"] > 1 else 0
    if stored and bits is not None and tensor["sparsity"] is None and stored != -(-count * bits // 8):
        raise _Damaged(f"{stored} constant bytes for shape {shape} of {type_name} ({-(-count * bits // 8)} expected)")
    quant = tensor["quantization"]
    scale = None if quant is None else quant["scale"]
    if scale is None or not len(scale):
        if tensor["type"] == INT8 and not stored:  # quantized kernels would run it with scale 0 and abort
            raise _Damaged("INT8 activation without quantization parameters")
        return stored > 0
    zero_point = quant["zero_point"]
    if zero_point is None or len(zero_point) != len(scale):
        raise _Damaged(f"{len(scale)} scales but {0 if zero_point is None else len(zero_point)} zero points")
    # every scale a finite, normal, positive float32: XNNPACK's xnn_define_quantized_tensor and
    # xnn_define_channelwise_quantized_tensor refuse any other ("scale must be finite, normalized,
    # and positive"); TFLite's QuantizeMultiplier turns inf / NaN into an undefined int64 cast
    bad = ~np.isfinite(scale) | (scale < FLOAT32_MIN_NORMAL)
    if np.any(bad):
        raise _Damaged(f"scale {float(scale[bad][0])} not a finite positive number (a normal float32)")
    if len(scale) > 1:
        axis = quant["quantized_dimension"]
        if not 0 <= axis < len(shape) or shape[axis] != len(scale):
            raise _Damaged(f"{len(scale)} per-channel scales on axis {axis} of shape {shape}")
    low, high = ZERO_POINT_RANGE.get(tensor["type"], (-(2**63), 2**63 - 1))
    if zero_point.min() < low or zero_point.max() > high:
        raise _Damaged(f"zero point outside [{low}, {high}] for {type_name}")
    return stored > 0


# --- requantization: what the kernels derive from the scales of an op's tensors ---------------

ADD, SUB, MUL = 0, 41, 18
UINT8, INT16 = 3, 7
ACTIVATION_TYPES = (UINT8, INT8, INT16)  # the integer types quantized kernels run activations in
# op code -> (activation input, weights input) of the ops that requantize an accumulator of
# input x weights products (conv.cc, depthwise_conv.cc, fully_connected.cc, transpose_conv.cc)
WEIGHTED_OPS = {3: (0, 1), 4: (0, 1), 9: (0, 1), 67: (2, 1)}
ADD_LEFT_SHIFT = {UINT8: 20, INT8: 20, INT16: 15}  # add.cc / sub.cc: inputs shifted left before rescaling
QUANTIZE_MULTIPLIER_MAX = 2.0**31  # QuantizeMultiplier: m = q * 2^shift, q in [0.5, 1); shift <= 31
XNNPACK_CONV_SCALE = (2.0**-32, 256.0)  # xnn_init_qs8/qu8_conv_minmax params: scale in [2^-32, 256)
# Not checked: XNNPACK's own ADD / SUB ([2^-10, 2^8)) and MUL ([2^-16, 2^8)) scale-ratio ranges. The delegate
# tests them before it takes a node (xnnpack_delegate.cc, CheckTensorsInputOutputScale /
# CheckTensorsInputProductOutputScale) and leaves a node outside them to the builtin kernel, so such a
# model runs; refusing it refused sound files (MesoInception-4 at test size: an ADD ratio of 2.5e-4).
REQUANTIZATION_RULES = {
    "CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / TRANSPOSE_CONV":
        "per output channel, input scale x weight scale / output scale in [2^-32, 256) (XNNPACK's conv "
        "requantization; TFLite's GetQuantizedConvolutionMultipler + QuantizeMultiplier take any finite value)",
    "ADD / SUB": "2 x max(input scales) < 2^20 x output scale (2^15 for INT16): TFLite's "
                 "QuantizeMultiplierSmallerThanOneExp aborts otherwise",
    "MUL": "input scale x input scale / output scale < 2^31 (QuantizeMultiplier)",
    "any other op": "each quantized activation input's scale / the output's scale < 2^31 (QuantizeMultiplier)",
}


def _activation_scales(tensor: dict) -> np.ndarray | None:
    """The scales of a quantized 8/16-bit tensor (float64), None when it is not one."""
    quant = tensor["quantization"]
    if tensor["type"] not in ACTIVATION_TYPES or quant is None or quant["scale"] is None or not len(quant["scale"]):
        return None
    return quant["scale"].astype(np.float64)


def _check_requantization(code: int, op: dict, tensors: list[dict], what: str) -> None:
    """Per op type, the requantization multipliers the kernels compute from the scales must be ones
    they accept (REQUANTIZATION_RULES); the scales themselves were checked with their tensors."""
    inputs = [] if op["inputs"] is None else op["inputs"].tolist()
    outputs = [] if op["outputs"] is None else op["outputs"].tolist()
    if not outputs or outputs[0] < 0:
        return
    out_tensor = tensors[outputs[0]]
    out = _activation_scales(out_tensor)
    if out is None:
        return
    eight_bit = out_tensor["type"] in (UINT8, INT8)

    def scales(k):
        return _activation_scales(tensors[inputs[k]]) if k < len(inputs) and inputs[k] >= 0 else None

    def bad(name: str, values: np.ndarray, low: float, high: float, source: str) -> None:
        outside = values[(values < low) | (values >= high) | ~np.isfinite(values)]
        if outside.size:
            raise _Damaged(f"{what}: {name} {float(outside[0]):.6g} outside [{low:.6g}, {high:.6g}), "
                           f"which {source} accepts")

    if code in WEIGHTED_OPS:
        a, w = WEIGHTED_OPS[code]
        x, weights = scales(a), scales(w)
        if x is None or weights is None:
            return  # float or hybrid op: no integer requantization
        # per channel: input scale x weight scale / output scale (GetQuantizedConvolutionMultipler,
        # PopulateConvolutionQuantizationParams); XNNPACK's qs8 conv refuses >= 256 and asserts >= 2^-32
        multipliers = np.concatenate([x.min() * weights / out.max(), x.max() * weights / out.min()])
        high = XNNPACK_CONV_SCALE[1] if eight_bit else QUANTIZE_MULTIPLIER_MAX
        bad("requantization scale (input x weight / output)", multipliers, XNNPACK_CONV_SCALE[0] if eight_bit else 0.0,
            high, "XNNPACK" if eight_bit else "QuantizeMultiplier")
        return
    if code in (ADD, SUB):
        ins = [sc for sc in (scales(0), scales(1)) if sc is not None]
        if len(ins) != 2:
            return
        # add.cc / sub.cc Prepare: real_output_multiplier = 2 max(s1, s2) / (2^left_shift x s_out) goes through
        # QuantizeMultiplierSmallerThanOneExp, whose TFLITE_CHECK_LT(multiplier, 1) aborts the process
        shift = ADD_LEFT_SHIFT.get(out_tensor["type"], 20)
        largest = max(float(ins[0].max()), float(ins[1].max()))
        bad("output multiplier (2 x max input scale / (2^%d x output scale))" % shift,
            np.array([2 * largest / (2.0**shift * float(out.min()))]), 0.0, 1.0, "TFLite's add/sub kernel")
        return
    if code == MUL:
        ins = [sc for sc in (scales(0), scales(1)) if sc is not None]
        if len(ins) != 2:
            return
        # mul.cc: real_multiplier = s1 s2 / s_out through QuantizeMultiplier (XNNPACK: see above)
        products = np.array([ins[0].max() * ins[1].max() / out.min(), ins[0].min() * ins[1].min() / out.max()])
        bad("product / output scale ratio", products, 0.0, QUANTIZE_MULTIPLIER_MAX, "QuantizeMultiplier")
        return
    # any other op that rescales (MEAN, SUM, CONCATENATION, QUANTIZE, pooling, PAD, ...): the multiplier
    # input scale / output scale goes through QuantizeMultiplier, whose shift must stay <= 31
    for k in range(len(inputs)):
        sc = scales(k)  # None for an omitted input and for tensors that are not quantized 8/16-bit
        if sc is not None:
            bad(f"input {k} / output scale ratio", np.array([sc.max() / out.min()]), 0.0, QUANTIZE_MULTIPLIER_MAX,
                "QuantizeMultiplier")


def _check_indices(indices, n: int, what: str, optional: bool = False) -> None:
    """Tensor indices in [0, n); -1 (an omitted optional tensor) too when `optional`."""
    if indices is None or not len(indices):
        return
    indices = np.asarray(indices, dtype=np.int64)
    low = -1 if optional else 0
    bad = indices[(indices < low) | (indices >= n)]
    if bad.size:
        raise _Damaged(f"{what}: tensor index {int(bad[0])} of {n}")


def _quote(name) -> str:
    """A tensor or metadata name fit for a one-line message: printable, at most MAX_NAME_CHARS."""
    text = (name or b"").decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 3] + "...")
