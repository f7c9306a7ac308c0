"""Untrusted `.tflite` files: checked before an interpreter parses them, and tried in a child process.

The TFLite interpreter is C++: a damaged or crafted flatbuffer can make it read out of bounds or
trip a check, and that kills the whole process that loaded it. Two defences, neither needing
TensorFlow:

- `validate_flatbuffer(data, label)` walks the flatbuffer as a verifier does (every table, vtable,
  offset, vector and string inside the buffer and aligned) for the parts of the TFLite schema the
  interpreter reads, then checks what the schema cannot say: buffer, tensor, op-code and subgraph
  indices in range, shapes non-negative and matching the bytes of constant tensors (packed INT4 /
  INT2 counted as packed), quantization parameters consistent, operators reading only tensors that
  hold a value and writing none twice nor any weights, no required input of an XNNPACK op omitted.
  Pure python + numpy, ~3 ms for the shipped models. `interpreter.check_tflite_file` runs it on
  every load. It checks tensors one at a time, not each kernel's preconditions across tensors (an
  ADD whose output scale is ~2^19 times finer than an input's trips a TFLITE_CHECK and aborts).
- `probe_in_child(path)` loads the model and invokes it once on zero inputs in a child process, so
  that a file which passes validation yet still crashes the interpreter only kills the child; the
  parent raises a one-line UserError. `load_model` probes files that come without a manifest.

What the fuzz campaign found the interpreter (ai-edge-litert 2.3.0) crashing on, all rejected here:
a conv whose filter index is -1 (XNNPACK segfault), an op output or an activation's buffer index
moved onto weights (abort, or segfault writing the read-only weights), an INT8 activation whose
scale vector is emptied or zero (abort). See tests/runtime/test_fuzz.py, benchmarks/results/reliability.md.

    >>> validate_flatbuffer(Path("det.tflite").read_bytes(), "det.tflite")   # doctest: +SKIP
    >>> probe_in_child("downloaded.tflite")                                    # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.unpack import INT8, PACKED_BITS, TFLITE_FILE_IDENTIFIER

MIN_TFLITE_BYTES = 16  # root offset + identifier + the smallest possible root table
TFLITE_SCHEMA_VERSION = 3  # the interpreter refuses any other Model.version
MAX_TENSOR_BYTES = 2**31 - 1  # one tensor larger than a flatbuffer can be is a damaged shape
MAX_NAME_CHARS = 60  # names quoted in messages are cut here (they can be long, or crafted)

# Bits per element of each schema TensorType; None: variable size (STRING, RESOURCE, VARIANT).
TENSOR_TYPES = {
    0: ("FLOAT32", 32), 1: ("FLOAT16", 16), 2: ("INT32", 32), 3: ("UINT8", 8), 4: ("INT64", 64),
    5: ("STRING", None), 6: ("BOOL", 8), 7: ("INT16", 16), 8: ("COMPLEX64", 64), 9: ("INT8", 8),
    10: ("FLOAT64", 64), 11: ("COMPLEX128", 128), 12: ("UINT64", 64), 13: ("RESOURCE", None),
    14: ("VARIANT", None), 15: ("UINT32", 32), 16: ("UINT16", 16), 17: ("INT4", 4), 18: ("BFLOAT16", 16),
    19: ("INT2", 2), 20: ("UINT4", 4), 21: ("FLOAT8_E4M3FN", 8), 22: ("FLOAT8_E5M2", 8),
}
# Zero points an integer tensor can hold; quantized kernels index tables with them.
ZERO_POINT_RANGE = {3: (0, 255), 7: (-32768, 32767), 9: (-128, 127), 17: (-8, 7), 19: (-2, 1), 20: (0, 15)}

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
    if not np.all(np.isfinite(scale)) or np.any(scale < 0) or (not stored and np.any(scale == 0)):
        raise _Damaged(f"scale {float(scale[~np.isfinite(scale) | (scale <= 0)][0])} "
                       f"not a finite positive number")
    if len(scale) > 1:
        axis = quant["quantized_dimension"]
        if not 0 <= axis < len(shape) or shape[axis] != len(scale):
            raise _Damaged(f"{len(scale)} per-channel scales on axis {axis} of shape {shape}")
    low, high = ZERO_POINT_RANGE.get(tensor["type"], (-(2**63), 2**63 - 1))
    if zero_point.min() < low or zero_point.max() > high:
        raise _Damaged(f"zero point outside [{low}, {high}] for {type_name}")
    return stored > 0


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


# --- the child-process probe ---------------------------------------------------------------------


@dataclass
class ProbeResult:
    """What loading and invoking a model in a child process did."""

    status: str  # "ok" | "error" (a UserError in the child) | "crashed" (the child died) | "timeout"
    message: str = ""  # one line naming the file; "" when ok
    signal: int | None = None  # the signal that ended the child, when it crashed
    seconds: float = 0.0  # wall time of the request, the child's start included when it started for it


class ChildProbe:
    """A child python that loads models and invokes them once on zero inputs, one request at a time.

    The child outlives requests (one start, ~0.3 s, for many models) and is restarted after a crash or
    a timeout. `memory_limit_bytes` caps the child's address space, so that a shape that asks for
    terabytes fails there instead of swapping the machine.

        >>> with ChildProbe() as probe:                          # doctest: +SKIP
        ...     probe.run("a.tflite").status                     # "ok"
    """

    # what the child runs ({limit}: memory_limit_bytes); a test swaps in a child that crashes
    child_code = "from tfdefakeq.runtime.validate import _serve; _serve({limit!r})"

    def __init__(self, timeout_s: float = 120.0, memory_limit_bytes: int | None = None):
        self.timeout_s = float(timeout_s)
        self.memory_limit_bytes = memory_limit_bytes
        self.starts = 0  # children started so far
        self._proc = None

    def __enter__(self) -> ChildProbe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, path, num_threads: int = 1, use_xnnpack: bool = True, unpack_int4: bool = True) -> ProbeResult:
        start = time.perf_counter()
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        request = {"path": str(path), "num_threads": num_threads, "use_xnnpack": use_xnnpack,
                   "unpack_int4": unpack_int4}
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
            reply = self._replies.get(timeout=self.timeout_s)
        except queue.Empty:
            self._stop()
            return ProbeResult("timeout", f"{path}: loading and running the model took over {self.timeout_s:g} s "
                               "(child process stopped)", seconds=time.perf_counter() - start)
        except (BrokenPipeError, OSError):
            reply = None  # the child died before reading the request
        seconds = time.perf_counter() - start
        if reply is not None:
            return ProbeResult(reply["status"], reply.get("message", ""), seconds=seconds)
        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it closed its replies but lives on: stop it
            self._proc.kill()
            code = self._proc.wait()
        last = self._stderr_tail()
        self._stop()
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else "unknown"
            what = f"signal {-code}, {name}"
        else:
            what = f"exit code {code}"
        return ProbeResult("crashed", f"{path}: crashed the TFLite interpreter in a child process ({what})"
                           + (f": {last}" if last else ""), signal=-code if code < 0 else None, seconds=seconds)

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.close()  # the child's loop ends at EOF
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._stop()

    def _start(self) -> None:
        self._stop()
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        self._stderr = tempfile.TemporaryFile()
        code = self.child_code.format(limit=self.memory_limit_bytes)
        self._proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, env=env)
        self.starts += 1
        self._replies: queue.Queue = queue.Queue()
        threading.Thread(target=_read_replies, args=(self._proc.stdout, self._replies), daemon=True).start()

    def _stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self._stderr.close()
        self._proc = None

    def _stderr_tail(self) -> str:
        """The child's last stderr line (an abort message names the failed check), cut to one short line."""
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - 2000))
        lines = [line.strip() for line in self._stderr.read().decode("utf-8", "replace").splitlines() if line.strip()]
        return " ".join(lines[-1].split())[:200] if lines else ""


def _read_replies(stream, replies: queue.Queue) -> None:
    for line in stream:
        try:
            replies.put(json.loads(line))
        except ValueError:  # not a reply (nothing else should write here): skip it
            continue
    replies.put(None)  # EOF: the child is gone


def probe_in_child(path, num_threads: int = 1, use_xnnpack: bool = True, unpack_int4: bool = True,
                   timeout_s: float = 120.0) -> ProbeResult:
    """Loads `path` and invokes it once on zero inputs in a child process; returns the ProbeResult.

    Raises UserError naming the file when the model cannot be loaded or run there, and when the
    child crashes ("... crashed the TFLite interpreter in a child process (signal 11, SIGSEGV)").
    """
    with ChildProbe(timeout_s=timeout_s) as probe:
        result = probe.run(path, num_threads, use_xnnpack, unpack_int4)
    if result.status != "ok":
        raise UserError(result.message)
    return result


def _serve(memory_limit_bytes: int | None = None) -> None:
    """The child's loop: one JSON request per stdin line, one JSON reply per line on the original stdout."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the interpreter prints goes to stderr, never into the replies
    sys.stdout = sys.stderr
    if memory_limit_bytes:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    for line in sys.stdin:
        request = json.loads(line)
        replies.write(json.dumps(_load_and_invoke(**request)) + "\n")
        replies.flush()


def _load_and_invoke(path: str, num_threads: int, use_xnnpack: bool, unpack_int4: bool) -> dict:
    from tfdefakeq.runtime.interpreter import _load, _one_line

    loaded = None
    try:
        loaded = _load(path, num_threads, use_xnnpack, unpack_int4)
        interpreter = loaded.interpreter
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
        interpreter.invoke()
        for detail in interpreter.get_output_details():
            interpreter.get_tensor(detail["index"])
    except UserError as e:
        return {"status": "error", "message": str(e)}
    except Exception as e:  # noqa: BLE001 - the interpreter's own errors (RuntimeError, ValueError, MemoryError)
        runtime = loaded.runtime.name if loaded is not None else "the interpreter"
        return {"status": "error", "message": f"{path}: {runtime} cannot run this model ({_one_line(e)})"}
    return {"status": "ok"}
