"""Reads a .tflite flatbuffer's structure (op types, tensor types, weight bytes) without TensorFlow.

The interpreter reports INT4 tensors as int8, so the stored types are read from the file itself
with the schema classes that ship in ai-edge-litert.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tfdefakeq.errors import UserError


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:  # pragma: no cover - depends on the install
        raise UserError("reading .tflite structure needs ai-edge-litert (pip install tfdefakeq[edge])") from e
    return schema


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class ModelInfo:
    size_bytes: int
    op_counts: Counter = field(default_factory=Counter)  # builtin op name -> count
    tensor_types: Counter = field(default_factory=Counter)  # type name -> count of constant tensors
    weight_bytes: Counter = field(default_factory=Counter)  # type name -> bytes of constant data
    input_types: list[str] = field(default_factory=list)
    output_types: list[str] = field(default_factory=list)

    @property
    def float_ops(self) -> list[str]:
        """Ops that compute in float (a full-integer model has none but its I/O quantize ops)."""
        return sorted(op for op in self.op_counts if op in _FLOAT_HINTS)


_FLOAT_HINTS = {"DEQUANTIZE"}


def read_model_info(path) -> ModelInfo:
    """Op and tensor statistics of the .tflite at `path`; UserError if it is not a TFLite model."""
    schema = _schema()
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from e
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise UserError(f"{path}: not a TFLite flatbuffer (missing TFL3 identifier)")
    try:
        model = schema.Model.GetRootAsModel(buf, 0)
        op_names = _enum_names(schema.BuiltinOperator)
        type_names = _enum_names(schema.TensorType)
        info = ModelInfo(size_bytes=len(buf))
        codes = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            codes.append(op_names.get(builtin, f"OP_{builtin}") if builtin != schema.BuiltinOperator.CUSTOM else "CUSTOM")
        for s in range(model.SubgraphsLength()):
            graph = model.Subgraphs(s)
            for i in range(graph.OperatorsLength()):
                info.op_counts[codes[graph.Operators(i).OpcodeIndex()]] += 1
            for i in range(graph.TensorsLength()):
                tensor = graph.Tensors(i)
                data = model.Buffers(tensor.Buffer()).DataLength() if tensor.Buffer() < model.BuffersLength() else 0
                tname = type_names.get(tensor.Type(), str(tensor.Type()))
                if data:
                    info.tensor_types[tname] += 1
                    info.weight_bytes[tname] += data
            info.input_types += [type_names[graph.Tensors(graph.Inputs(i)).Type()] for i in range(graph.InputsLength())]
            info.output_types += [type_names[graph.Tensors(graph.Outputs(i)).Type()] for i in range(graph.OutputsLength())]
    except UserError:
        raise
    except Exception as e:  # a damaged flatbuffer raises anything from IndexError to struct.error
        raise UserError(f"{path}: damaged TFLite flatbuffer ({e.__class__.__name__}: {e})") from e
    return info
