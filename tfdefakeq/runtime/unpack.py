"""INT4 storage at int8 speed: unpack packed sub-byte weights of a `.tflite` to INT8 at load time.

The TF 2.21 converter stores W4A8 weights as packed INT4 tensors (schema type 17, two values per
byte, LOW nibble first, two's complement). XNNPACK takes no INT4 convolution, so such a model runs
on the reference kernels, 4-5x slower than the same network in int8. The integer arithmetic of an
INT4 weight is that of the same value held in an int8, so rewriting every INT4 tensor as INT8
(nibbles unpacked and sign-extended, same scales and zero points) gives bit-identical outputs kernel
for kernel (the builtin kernels on both sides) at int8 speed, while the file on disk stays half the
size. With XNNPACK on, the unpacked model runs in XNNPACK and the packed one on the builtin kernels,
which round differently: outputs may then differ by a few LSB (benchmarks/results/runtime.md). INT2 tensors (type 19, four values per
byte, lowest bits first) unpack the same way.

Only the object API of the flatbuffer schema that ships in ai-edge-litert is used (plus numpy and
the `flatbuffers` package ai-edge-litert depends on): no TensorFlow.

    >>> content = unpack_packed_weights(Path("det_int4.tflite").read_bytes())      # doctest: +SKIP
    >>> Interpreter(model_content=content)                                # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.modelinfo import TENSOR_TYPES, schema_module

TFLITE_FILE_IDENTIFIER = b"TFL3"
_CODES = {name: code for code, (name, _) in TENSOR_TYPES.items()}
INT8, INT4, INT2 = _CODES["INT8"], _CODES["INT4"], _CODES["INT2"]
PACKED_BITS = {code: TENSOR_TYPES[code][1] for code in (INT4, INT2)}  # schema TensorType -> bits per value
BUFFER_ALIGNMENT = 16  # as the TFLite converter aligns constant data


class UnpackError(UserError):
    """The flatbuffer cannot be rewritten (damaged, or a layout this module does not handle)."""


@dataclass
class UnpackReport:
    """What `unpack_model` changed. Sizes in bytes."""

    tensors: int = 0  # tensors rewritten as INT8
    packed_bytes: int = 0  # their constant data before
    unpacked_bytes: int = 0  # ... and after
    skipped: list[str] = field(default_factory=list)  # packed tensors left as they are, with the reason
    size_before: int = 0
    size_after: int = 0


def unpack_values(packed, count: int, bits: int = 4) -> np.ndarray:
    """Packed two's-complement values, lowest bits first in each byte -> int8 array of `count` values.

    bits=4: byte 0x3F holds (-1, 3) in that order; bits=2: four values per byte.
    """
    packed = np.frombuffer(memoryview(np.ascontiguousarray(packed, dtype=np.uint8)), dtype=np.uint8)
    per_byte = 8 // bits
    if len(packed) != -(-count // per_byte):
        raise UnpackError(f"{len(packed)} packed bytes cannot hold {count} {bits}-bit values")
    out = np.empty(len(packed) * per_byte, dtype=np.int8)
    for k in range(per_byte):
        # move field k to the top bits, then an arithmetic right shift sign-extends it
        out[k::per_byte] = (packed << (8 - bits * (k + 1))).view(np.int8) >> (8 - bits)
    return out[:count]


def pack_values(values, bits: int = 4) -> np.ndarray:
    """Inverse of `unpack_values`: int values in the signed `bits` range -> packed uint8 bytes."""
    values = np.asarray(values).reshape(-1).astype(np.int16)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"values outside the {bits}-bit range [{lo}, {hi}]")
    per_byte = 8 // bits
    padded = np.zeros(-(-values.size // per_byte) * per_byte, dtype=np.uint16)
    padded[: values.size] = values.astype(np.uint16) & ((1 << bits) - 1)
    shifts = (np.arange(per_byte, dtype=np.uint16) * bits)[None, :]
    return (padded.reshape(-1, per_byte) << shifts).sum(axis=1).astype(np.uint8)


def _check_identifier(buf) -> None:
    if len(buf) < 8 or bytes(buf[4:8]) != TFLITE_FILE_IDENTIFIER:
        raise UnpackError("not a TFLite flatbuffer (missing TFL3 identifier)")


def packed_tensor_count(flatbuffer) -> int:
    """How many tensors of `flatbuffer` are stored packed (INT4 or INT2). Reads without copying."""
    schema = schema_module()
    _check_identifier(flatbuffer)
    try:
        model = schema.Model.GetRootAsModel(flatbuffer, 0)
        count = 0
        for s in range(model.SubgraphsLength()):
            graph = model.Subgraphs(s)
            for i in range(graph.TensorsLength()):
                count += graph.Tensors(i).Type() in PACKED_BITS
    except Exception as e:  # a damaged flatbuffer raises anything from IndexError to struct.error
        raise UnpackError(f"not a TFLite flatbuffer (damaged: {e.__class__.__name__}: {e})") from e
    return count


def _aligned_buffer_class(schema):
    class AlignedBufferT(schema.BufferT):
        """BufferT whose data vector starts on a 16-byte boundary, as the TFLite converter writes it."""

        def Pack(self, builder):
            data = None
            if self.data is not None:
                payload = np.ascontiguousarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
                builder.head -= len(payload)
                builder.Bytes[builder.head : builder.head + len(payload)] = payload
                data = builder.EndVector(len(payload)) if _end_vector_takes_length(builder) else builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def _end_vector_takes_length(builder) -> bool:
    import inspect

    return len(inspect.signature(builder.EndVector).parameters) >= 1


def unpack_model(flatbuffer, types=(INT4, INT2)) -> tuple[bytes, UnpackReport]:
    """Rewrites every dense tensor of a packed type in `types` as INT8 -> (new flatbuffer, report).

    Quantization parameters, shapes, names, op codes and metadata are kept. A buffer shared by several
    packed tensors is unpacked once; a sparse packed tensor is left as it is (listed in
    `report.skipped`). A model without packed tensors is returned unchanged (same bytes).
    Raises UnpackError on a damaged flatbuffer or one whose weights live outside it (buffer offsets).
    """
    schema = schema_module()
    flatbuffer = bytes(flatbuffer)
    report = UnpackReport(size_before=len(flatbuffer), size_after=len(flatbuffer))
    if not packed_tensor_count(flatbuffer):
        return flatbuffer, report
    try:
        model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    except Exception as e:
        raise UnpackError(f"not a TFLite flatbuffer (damaged: {e.__class__.__name__}: {e})") from e
    if any(b is not None and b.offset > 1 for b in model.buffers or []):
        _inline(model, flatbuffer)  # ai-edge-quantizer writes big weights after the flatbuffer

    users: dict[int, set[int]] = {}  # buffer index -> tensor types that read it
    for graph in model.subgraphs or []:
        for tensor in graph.tensors or []:
            users.setdefault(tensor.buffer, set()).add(tensor.type)
    unpacked: dict[tuple[int, int], int] = {}  # (old buffer, type) -> buffer holding the int8 values
    for graph in model.subgraphs or []:
        for tensor in graph.tensors or []:
            if tensor.type not in PACKED_BITS or tensor.type not in types:
                continue
            name = _name(tensor)
            if tensor.sparsity is not None:
                report.skipped.append(f"{name}: sparse")
                continue
            buffer = model.buffers[tensor.buffer]
            if buffer is None or buffer.data is None or len(buffer.data) == 0:
                report.skipped.append(f"{name}: no constant data")  # a packed activation: not ours to change
                continue
            key = (tensor.buffer, tensor.type)
            if key not in unpacked:
                count = int(np.prod(tensor.shape)) if tensor.shape is not None and len(tensor.shape) else 1
                values = unpack_values(buffer.data, count, PACKED_BITS[tensor.type])
                report.packed_bytes += len(buffer.data)
                report.unpacked_bytes += values.size
                if users[tensor.buffer] == {tensor.type}:
                    buffer.data = values.view(np.uint8)
                    unpacked[key] = tensor.buffer
                else:  # the same bytes also read as another type: give the int8 values their own buffer
                    model.buffers.append(schema.BufferT(data=values.view(np.uint8)))
                    unpacked[key] = len(model.buffers) - 1
            tensor.buffer = unpacked[key]
            tensor.type = INT8
            report.tensors += 1
    if not report.tensors:
        return flatbuffer, report
    out = serialize_model(schema, model, len(flatbuffer) + report.unpacked_bytes)
    report.size_after = len(out)
    return out, report


def _inline(model, flatbuffer: bytes) -> int:
    """Moves the data of buffers stored after the flatbuffer (offset/size) into the object-API
    `model`; returns how many moved."""
    raw = np.frombuffer(flatbuffer, dtype=np.uint8)
    moved = 0
    for buffer in model.buffers or []:
        if buffer is None or buffer.offset <= 1:
            continue
        if buffer.offset + buffer.size > len(raw):
            raise UnpackError(f"damaged TFLite flatbuffer: buffer data at {buffer.offset}+{buffer.size} past its {len(raw)} bytes")
        buffer.data = raw[buffer.offset:buffer.offset + buffer.size].copy()
        buffer.offset = buffer.size = 0
        moved += 1
    return moved


def inline_buffers(flatbuffer) -> bytes:
    """`flatbuffer` with every constant buffer stored after it (buffer offset/size, as
    ai-edge-quantizer writes models over 256 KiB of weights) moved back inside it, so that
    `unpack_model` and `modelinfo` see the weights. Other models are returned unchanged."""
    schema = schema_module()
    flatbuffer = bytes(flatbuffer)
    _check_identifier(flatbuffer)
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    if not _inline(model, flatbuffer):
        return flatbuffer
    return serialize_model(schema, model, len(flatbuffer))


def serialize_model(schema, model, size_hint: int) -> bytes:
    """The object-API `model` as a .tflite, constant buffers 16-byte aligned."""
    import flatbuffers

    aligned = _aligned_buffer_class(schema)
    for i, b in enumerate(model.buffers):
        if b is not None and b.data is not None:
            model.buffers[i] = aligned(data=b.data, offset=b.offset, size=b.size)
    builder = flatbuffers.Builder(size_hint + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())


def pack_int2(flatbuffer) -> tuple[bytes, int]:
    """Repacks every constant INT4 tensor whose values all fit in 2 bits ([-2, 1]) as INT2 (four
    values per byte) -> (new flatbuffer, tensors repacked). Lossless: the integers and scales are
    the same. The TF 2.21 converter stores 2-bit weights in INT4 containers; this halves them.
    INT2 tensors need `unpack_model` (done by `TFLiteModel` at load) before an interpreter runs them.
    """
    schema = schema_module()
    flatbuffer = bytes(flatbuffer)
    if not packed_tensor_count(flatbuffer):
        return flatbuffer, 0
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    readers: dict[int, list] = {}
    for graph in model.subgraphs or []:
        for tensor in graph.tensors or []:
            readers.setdefault(tensor.buffer, []).append(tensor)
    repacked = 0
    for index, tensors in readers.items():
        buffer = model.buffers[index]
        if {t.type for t in tensors} != {INT4} or buffer is None or buffer.data is None or len(buffer.data) == 0:
            continue
        if any(t.sparsity is not None for t in tensors):
            continue
        count = int(np.prod(tensors[0].shape)) if tensors[0].shape is not None and len(tensors[0].shape) else 1
        values = unpack_values(buffer.data, count, 4)
        if values.min() < -2 or values.max() > 1:
            continue
        buffer.data = pack_values(values, 2)
        for t in tensors:
            t.type = INT2
        repacked += 1
    if not repacked:
        return flatbuffer, 0
    return serialize_model(schema, model, len(flatbuffer)), repacked


def shorten_tensor_names(flatbuffer) -> tuple[bytes, list[str]]:
    """Names every tensor of the first subgraph, except the graph's inputs and outputs, by its index
    ("17") -> (new flatbuffer, the original names by tensor index). Lossless for inference: the
    interpreter finds tensors by index, never by name. The converter's names ('model/quant_conv1/
    Conv2D;model/quant_conv1/FakeQuantWithMinMaxVarsPerChannel') are 10% of a small MobileNetV2's
    int4 file; an index up to 999 takes the same 8 bytes as an empty string. Keep the returned
    names (convert stores them in the manifest, `tensor_names`) to map tensors back to layers.
    A model whose names are already indices is returned unchanged (same bytes).
    """
    schema = schema_module()
    flatbuffer = bytes(flatbuffer)
    _check_identifier(flatbuffer)
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    if not model.subgraphs:
        return flatbuffer, []
    graph = model.subgraphs[0]
    kept = {int(i) for ends in (graph.inputs, graph.outputs) if ends is not None for i in ends}
    names = [_name(t) if t.name is not None else "" for t in graph.tensors or []]
    changed = False
    for index, tensor in enumerate(graph.tensors or []):
        if index not in kept and names[index] != str(index):
            tensor.name, changed = str(index), True
    if not changed:
        return flatbuffer, names
    return serialize_model(schema, model, len(flatbuffer)), names


def _name(tensor) -> str:
    name = tensor.name
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def unpack_packed_weights(flatbuffer) -> bytes:
    """`flatbuffer` with every packed (INT4 and INT2) weight tensor stored as sign-extended INT8.

    The result computes outputs bit-identical to the packed model's on the same kernels (builtin on both
    sides) and runs on XNNPACK's int8 kernels, whose rounding differs from the builtin kernels'.
    """
    return unpack_model(flatbuffer)[0]


def unpacked_content(flatbuffer) -> tuple[bytes | None, int]:
    """(`flatbuffer` with its packed weights unpacked to INT8, tensors unpacked), or (None, 0) when
    it has no packed weights, or when it is damaged in a way the interpreter will name in its own words
    (or no flatbuffer schema is installed: tflite_runtime alone). Raises UserError when it has packed
    weights this module cannot rewrite."""
    try:
        count = packed_tensor_count(flatbuffer)
    except UnpackError:
        return None, 0
    except UserError:  # no flatbuffer schema (tflite_runtime without ai-edge-litert): run it as it is
        return None, 0
    if not count:
        return None, 0
    content, report = unpack_model(flatbuffer)
    return (content, report.tensors) if report.tensors else (None, 0)
