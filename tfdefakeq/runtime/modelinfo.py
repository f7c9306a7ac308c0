"""Reads a .tflite flatbuffer's structure (ops, tensors, weight bytes, MACs) without TensorFlow.

The interpreter reports INT4 tensors as int8, so the stored types are read from the file itself
with the schema classes that ship in ai-edge-litert.

Multiply-accumulates per op (batch N, output N x oh x ow x oc):
  CONV_2D            N*oh*ow*oc * kh*kw*(in_c/groups)   (the filter's last dim is in_c/groups)
  DEPTHWISE_CONV_2D  N*oh*ow*oc * kh*kw
  FULLY_CONNECTED    output elements * input features
  TRANSPOSE_CONV     N*ih*iw*in_c * kh*kw*oc
Other ops count 0 MACs (adds, pools, pads and means are memory-bound and small next to these).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tfdefakeq.core.errors import UserError


# The schema's TensorType codes: name and bits per element (None: variable size, STRING, RESOURCE,
# VARIANT). The one table of them (validate, unpack and the benchmarks read it).
TENSOR_TYPES = {
    0: ("FLOAT32", 32), 1: ("FLOAT16", 16), 2: ("INT32", 32), 3: ("UINT8", 8), 4: ("INT64", 64),
    5: ("STRING", None), 6: ("BOOL", 8), 7: ("INT16", 16), 8: ("COMPLEX64", 64), 9: ("INT8", 8),
    10: ("FLOAT64", 64), 11: ("COMPLEX128", 128), 12: ("UINT64", 64), 13: ("RESOURCE", None),
    14: ("VARIANT", None), 15: ("UINT32", 32), 16: ("UINT16", 16), 17: ("INT4", 4), 18: ("BFLOAT16", 16),
    19: ("INT2", 2), 20: ("UINT4", 4), 21: ("FLOAT8_E4M3FN", 8), 22: ("FLOAT8_E5M2", 8),
}


def schema_module():
    """The TFLite flatbuffer schema (object API) that ai-edge-litert ships: one copy for every reader."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:  # pragma: no cover - depends on the install
        raise UserError("reading a .tflite's structure needs ai-edge-litert (pip install tfdefakeq[edge])") from e
    return schema


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class TensorInfo:
    index: int
    name: str
    type: str  # schema TensorType name: "INT8", "INT4", "FLOAT32", ...
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None  # -1 marks a dynamic dimension; None when not stored
    data_bytes: int  # bytes of constant data (0 for activations)
    quantized: bool  # carries scales

    @property
    def is_constant(self) -> bool:
        return self.data_bytes > 0

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature or ()) or any(d < 0 for d in self.shape)


@dataclass
class OpInfo:
    index: int  # position in the execution order of subgraph 0
    name: str  # builtin op name, "CUSTOM:<code>" for custom ops
    version: int
    inputs: list[int]  # tensor indices (-1: optional input left out)
    outputs: list[int]
    macs: int = 0
    options: dict = field(default_factory=dict)  # a few builtin options: fused_activation, stride, ...
    subgraph: int = 0


@dataclass
class ModelInfo:
    size_bytes: int
    op_counts: Counter = field(default_factory=Counter)  # builtin op name -> count
    tensor_types: Counter = field(default_factory=Counter)  # type name -> count of constant tensors
    weight_bytes: Counter = field(default_factory=Counter)  # type name -> bytes of constant data
    input_types: list[str] = field(default_factory=list)
    output_types: list[str] = field(default_factory=list)
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)
    subgraphs: int = 1
    ops: list[OpInfo] = field(default_factory=list)  # every subgraph's operators, subgraph 0 first
    tensors: list[TensorInfo] = field(default_factory=list)  # subgraph 0's tensors, by index

    @property
    def float_ops(self) -> list[str]:
        """Ops that compute in float (a full-integer model has none but its I/O quantize ops)."""
        return sorted(op for op in self.op_counts if op in _FLOAT_HINTS)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one invoke (see the module docstring for what counts)."""
        return sum(op.macs for op in self.ops)

    @property
    def parameter_bytes(self) -> int:
        """Bytes of constant data (weights, biases, shape constants) as stored in the file."""
        return sum(self.weight_bytes.values())

    def macs_by_op(self) -> Counter:
        out = Counter()
        for op in self.ops:
            out[op.name] += op.macs
        return out


_FLOAT_HINTS = {"DEQUANTIZE"}


def read_model_info(path) -> ModelInfo:
    """Op and tensor statistics of the .tflite at `path`; UserError if it is not a TFLite model."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from e
    return model_info_from_bytes(buf, label=str(path))


def model_info_from_bytes(buf, label: str = "model") -> ModelInfo:
    """`read_model_info` of a flatbuffer already in memory; `label` names it in errors."""
    schema = schema_module()
    if len(buf) < 8 or bytes(buf[4:8]) != b"TFL3":
        raise UserError(f"{label}: not a TFLite flatbuffer (missing TFL3 identifier)")
    try:
        model = schema.Model.GetRootAsModel(buf, 0)
        op_names = _enum_names(schema.BuiltinOperator)
        type_names = _enum_names(schema.TensorType)
        info = ModelInfo(size_bytes=len(buf), subgraphs=model.SubgraphsLength())
        codes = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if builtin == schema.BuiltinOperator.CUSTOM:
                custom = code.CustomCode()
                name = "CUSTOM:" + (custom.decode("utf-8", "replace") if custom else "?")
            else:
                name = op_names.get(builtin, f"OP_{builtin}")
            codes.append((name, code.Version()))
        for s in range(model.SubgraphsLength()):
            graph = model.Subgraphs(s)
            tensors = [_tensor_info(model, graph.Tensors(i), i, type_names) for i in range(graph.TensorsLength())]
            if s == 0:
                info.tensors = tensors
            for i in range(graph.OperatorsLength()):
                op = graph.Operators(i)
                name, version = codes[op.OpcodeIndex()]
                info.op_counts[name.split(":")[0] if name.startswith("CUSTOM:") else name] += 1
                inputs = [int(op.Inputs(j)) for j in range(op.InputsLength())]
                outputs = [int(op.Outputs(j)) for j in range(op.OutputsLength())]
                op_info = OpInfo(i, name, version, inputs, outputs, subgraph=s,
                                 options=_options(schema, op))
                op_info.macs = _macs(name, inputs, outputs, tensors)
                info.ops.append(op_info)
            for t in tensors:
                if t.data_bytes:
                    info.tensor_types[t.type] += 1
                    info.weight_bytes[t.type] += t.data_bytes
            ins = [tensors[graph.Inputs(i)] for i in range(graph.InputsLength())]
            outs = [tensors[graph.Outputs(i)] for i in range(graph.OutputsLength())]
            info.input_types += [t.type for t in ins]
            info.output_types += [t.type for t in outs]
            if s == 0:
                info.input_shapes = [t.shape for t in ins]
                info.output_shapes = [t.shape for t in outs]
    except UserError:
        raise
    except Exception as e:  # a damaged flatbuffer raises anything from IndexError to struct.error
        raise UserError(f"{label}: damaged TFLite flatbuffer ({e.__class__.__name__}: {e})") from e
    return info


def _tensor_info(model, tensor, index: int, type_names) -> TensorInfo:
    data = model.Buffers(tensor.Buffer()).DataLength() if 0 < tensor.Buffer() < model.BuffersLength() else 0
    name = tensor.Name()
    quant = tensor.Quantization()
    signature = tuple(int(tensor.ShapeSignature(j)) for j in range(tensor.ShapeSignatureLength()))
    return TensorInfo(
        index=index,
        name=name.decode("utf-8", "replace") if name else "",
        type=type_names.get(tensor.Type(), str(tensor.Type())),
        shape=tuple(int(tensor.Shape(j)) for j in range(tensor.ShapeLength())),
        shape_signature=signature or None,
        data_bytes=int(data),
        quantized=bool(quant is not None and quant.ScaleLength() > 0),
    )


_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


def _options(schema, op) -> dict:
    """The options an edge check needs (fused activation, strides, dilation, filter size), when set.

    An op without an options table has the schema defaults ({}). Options that are present but cannot
    be read give {"unreadable": reason}: a check must then treat them as unknown, not as defaults.
    """
    table = op.BuiltinOptions()
    if table is None:
        return {}
    try:
        opts = schema.BuiltinOptionsCreator(op.BuiltinOptionsType(), table)
    except Exception as e:  # noqa: BLE001 - an options type this schema does not know, or a damaged table
        return {"unreadable": f"options type {op.BuiltinOptionsType()}: {type(e).__name__}: {' '.join(str(e).split())}"[:160]}
    if opts is None:
        return {"unreadable": f"options type {op.BuiltinOptionsType()} unknown to this schema"}
    out = {}
    for attr, key in (("fusedActivationFunction", "fused_activation"), ("strideH", "stride_h"), ("strideW", "stride_w"),
                      ("dilationHFactor", "dilation_h"), ("dilationWFactor", "dilation_w"),
                      ("filterHeight", "filter_h"), ("filterWidth", "filter_w"), ("depthMultiplier", "depth_multiplier"),
                      ("keepNumDims", "keep_num_dims"), ("axis", "axis"), ("weightsFormat", "weights_format"),
                      ("alpha", "alpha")):
        if hasattr(opts, attr):
            value = getattr(opts, attr)
            out[key] = _ACTIVATIONS.get(value, str(value)) if key == "fused_activation" else value
    return out


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _macs(name: str, inputs: list[int], outputs: list[int], tensors: list[TensorInfo]) -> int:
    """Multiply-accumulates of one op from its static shapes (0 when unknown or not a MAC op)."""

    def shape(i):
        return tensors[i].shape if 0 <= i < len(tensors) else ()

    try:
        out = shape(outputs[0]) if outputs else ()
        if any(d < 0 for d in out):
            return 0
        if name == "CONV_2D" and len(inputs) >= 2:
            f = shape(inputs[1])  # (out_c, kh, kw, in_c / groups)
            return _prod(out) * f[1] * f[2] * f[3] if len(f) == 4 else 0
        if name == "DEPTHWISE_CONV_2D" and len(inputs) >= 2:
            f = shape(inputs[1])  # (1, kh, kw, out_c)
            return _prod(out) * f[1] * f[2] if len(f) == 4 else 0
        if name == "FULLY_CONNECTED" and len(inputs) >= 2:
            w = shape(inputs[1])  # (units, in_features)
            return _prod(out) * w[-1] if len(w) == 2 else 0
        if name == "TRANSPOSE_CONV" and len(inputs) >= 3:
            w, x = shape(inputs[1]), shape(inputs[2])  # (out_c, kh, kw, in_c), (N, ih, iw, in_c)
            return _prod(x) * w[0] * w[1] * w[2] if len(w) == 4 else 0
    except (IndexError, TypeError):
        return 0
    return 0
