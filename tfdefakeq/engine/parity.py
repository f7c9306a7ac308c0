"""Keras-vs-TFLite parity, tensor by tensor (the engine behind `python -m tfdefakeq.diagnose` and
convert's op-by-op verdict): where does an int8 .tflite first depart from its Keras QAT model?

This module taps every quantized activation of the Keras QAT model (the input QuantizeLayer, every
wrapper output FakeQuant, every post-activation FakeQuant, and range-preserving layers such as
padding and max-pooling, which inherit their input's grid), runs the .tflite on the reference
kernels with every intermediate tensor preserved, matches each Keras tensor to the int8 TFLite
tensor that holds it, and measures the difference in that tensor's own LSB.

    >>> table = layer_parity(qat_model, "det_int8.tflite", images_uint8)    # doctest: +SKIP
    >>> first_divergence(table)                                             # doctest: +SKIP

Matching: a TFLite tensor's name carries the Keras wrapper names of the ops fused into it
(`model/quant_conv1_relu/Relu;model/quant_conv1_conv/Conv2D;...`; for a file convert wrote with
index names, the name its manifest keeps, `converter_names`); among the tensors of the
right shape, those naming the layer are preferred, and among several (or none) the one whose
dequantized values are closest wins. Two Keras tensors that TFLite fuses into one (an Add whose
output FakeQuant is followed by a ReLU with its own) cannot both be matched: the closer one is,
the other is reported unmatched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


COLUMNS = ["keras_layer", "keras_type", "tflite_tensor", "op", "op_index", "scale", "keras_scale",
           "max_lsb", "mean_lsb", "share_differ", "local_max_lsb", "local_share_differ", "local_share_beyond_ties", "match"]


# Rounding ties: Keras (float32 FakeQuant, BatchNorm unfolded under tfmot_int8) and TFLite (int32
# accumulators and bias grid, fixed-point or fp32 multipliers) compute the same real value with
# errors of up to ~0.003 LSB, so they round it to different grid points when it lies that close to
# the boundary between them. For an elementwise op every occurrence of the one input level whose
# product with the multiplier lands there flips: up to a few % of a tensor. Measured on cqb_resnet18
# W4A8: a PReLU whose exact output at one input level is 0.4998 LSB above a grid point, which TFLite
# rounds up (0.3% of that tensor); on a tfmot_int8 stem conv (tests/test_diagnose.py), 1e-3-2.4e-3 LSB.
# A differing output counts as a tie when Keras' unrounded value is within TIE_LSB of the midpoint
# between its grid value and TFLite's; export faults seen so far are 0.1-0.5 LSB or more.
TIE_LSB = 0.01


# Layers that pass int8 values through unchanged: their output lives on their input's grid.
_PASS_THROUGH = ("ZeroPadding2D", "MaxPooling2D", "Reshape", "Flatten", "Dropout", "Cropping2D", "AveragePooling2D")


@dataclass
class _Tap:
    """One quantized Keras tensor: the layer producing it and its FakeQuant range (None: inherited)."""

    layer: object
    name: str  # the Keras layer's own name (the wrapper's is "quant_" + name)
    type: str
    qrange: tuple[float, float] | None


def _layer_range(layer) -> tuple[float, float] | None | bool:
    """The [min, max] of the FakeQuant at `layer`'s output; None when it has none; False when its
    output keeps its input's grid (a pass-through layer)."""
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (
        QuantizeLayer,
    )

    def rng(qvars):
        if not isinstance(qvars, dict) or "min_var" not in qvars or "max_var" not in qvars:
            return None
        return float(qvars["min_var"].numpy()), float(qvars["max_var"].numpy())

    if isinstance(layer, QuantizeLayer):
        return rng(layer.quantizer_vars)
    if not isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2):
        return None
    found = None
    for activation in layer._quantize_activations:
        # a post-activation FakeQuant (tfmot's ReLU / conv activations); later quantizers override
        if activation._should_post_quantize() and hasattr(activation, "_post_activation_vars"):
            found = rng(activation._post_activation_vars) or found
    if layer._output_quantizers:
        found = rng(layer._output_quantizer_vars) or found
    if found is not None:
        return found
    if not layer._weight_vars and type(layer.layer).__name__ in _PASS_THROUGH:
        return False
    return None


def _graph_nodes(model, layer) -> list:
    """The call nodes of `layer` that belong to `model`'s graph (a layer built once may also carry
    nodes from other graphs, and tfmot calls the input QuantizeLayer once per reader in some graphs,
    e.g. MesoInception-4)."""
    nodes = [node for i, node in enumerate(layer._inbound_nodes)
             if f"{layer.name}_ib-{i}" in getattr(model, "_network_nodes", ())]
    return nodes or list(layer._inbound_nodes)


def _sources(model, layer) -> list:
    """The layers feeding `layer` in `model`; a layer called several times must read the same
    layers each time (its outputs are then the same tensor), else a UserError."""
    from tfdefakeq.core.errors import UserError

    found = []
    for node in _graph_nodes(model, layer):
        inbound = node.inbound_layers
        found.append([s.name for s in (inbound if isinstance(inbound, (list, tuple)) else [inbound])])
    if any(names != found[0] for names in found):
        raise UserError(f"layer {layer.name}: called on different inputs {found}; cannot tap it")
    by_name = {s.name: s for s in model.layers}
    return [by_name[n] for n in found[0]]


def _output(model, layer):
    """`layer`'s output tensor in `model`'s graph (its first node there: `layer.output` fails for
    a layer with several nodes, and `Graph disconnected` follows)."""
    return _graph_nodes(model, layer)[0].outputs


def quantized_taps(qat_model) -> list[_Tap]:
    """Every Keras layer of `qat_model` whose output is an int8 tensor in the converted model, in
    layer (topological) order: its own FakeQuant range, or None when it inherits its input's."""

    taps: list[_Tap] = []
    tapped: set[str] = set()
    for layer in qat_model.layers:
        found = _layer_range(layer)
        if found is False:
            sources = _sources(qat_model, layer)
            if len(sources) != 1 or sources[0].name not in tapped:
                continue  # its input is not an int8 tensor we know
            found = None
        elif found is None:
            continue
        inner = getattr(layer, "layer", layer)
        taps.append(_Tap(layer, inner.name, type(inner).__name__, found))
        tapped.add(layer.name)
    return taps


def _fake_quant_scale(qrange: tuple[float, float] | None, bits: int = 8) -> float:
    if qrange is None:
        return float("nan")
    lo, hi = min(qrange[0], 0.0), max(qrange[1], 0.0)  # TF nudges the range to contain 0
    return (hi - lo) / (2**bits - 1)


def _expose_all_tensors(content: bytes) -> bytes:
    """`content` with every op output made a graph output: a delegate (XNNPACK) then has to write
    each intermediate tensor back, so they can be read with the delegate's own arithmetic."""
    from tfdefakeq.runtime.unpack import schema_module, serialize_model

    schema = schema_module()
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    graph = model.subgraphs[0]
    produced = [int(i) for op in graph.operators or [] for i in op.outputs if i >= 0]
    graph.outputs = list(dict.fromkeys([int(i) for i in graph.outputs] + produced))
    return serialize_model(schema, model, len(content))


def _producers(content: bytes) -> dict[int, object]:
    """Tensor index -> the OpInfo of the op writing it (name, index, inputs, options), read from the
    flatbuffer (a delegated interpreter reports only DELEGATE ops)."""
    from tfdefakeq.runtime.modelinfo import model_info_from_bytes

    ops = model_info_from_bytes(content).ops
    return {int(i): op for op in ops if op.subgraph == 0 for i in op.outputs if i >= 0}


def _interpreter(tflite_path, use_xnnpack: bool = False):
    """An interpreter on the INT4/INT2-unpacked model (as the runtime loads it) whose every
    intermediate tensor can be read after invoke: the plain builtin kernels with all tensors
    preserved, or (`use_xnnpack`) XNNPACK, what check_parity runs, with every op output made a
    graph output. Returns (interpreter, content)."""
    from tfdefakeq.runtime.interpreter import find_runtime
    from tfdefakeq.runtime.loader import admit_model
    from tfdefakeq.runtime.unpack import unpacked_content

    data = admit_model(tflite_path, use_xnnpack=use_xnnpack).data  # validated, and probed unless trusted
    runtime = find_runtime()
    content = unpacked_content(data)[0] or data
    kwargs = {"num_threads": 1}
    if use_xnnpack:
        content = _expose_all_tensors(content)
    else:
        kwargs["experimental_preserve_all_tensors"] = True
        if runtime.op_resolver_type is not None:
            kwargs["experimental_op_resolver_type"] = runtime.op_resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = runtime.interpreter_class(model_content=content, **kwargs)
    interpreter.allocate_tensors()
    return interpreter, content


class _TfliteTensors:
    """The .tflite's quantized activations, read chunk by chunk: `info[tensor index]` = {name,
    shape, scale, zero_point, op, op_index, inputs (the op's input tensor indices), options (a few
    of its builtin options)} for every quantized activation (op outputs and the graph input);
    `raw(x)` runs float inputs `x` (n, H, W, 3) one image at a time (the models have batch 1) and
    returns tensor index -> its integer values stacked over the n images. `use_xnnpack`: see
    `_interpreter`."""

    def __init__(self, tflite_path, use_xnnpack: bool = False):
        interpreter, content = _interpreter(tflite_path, use_xnnpack)
        self.interpreter = interpreter
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        for index, name in enumerate(converter_names(tflite_path)):
            if index in details:
                details[index]["name"] = name
        self.info: dict[int, dict] = {}

        def add(index, op, op_index, inputs=(), options=None):
            d = details[index]
            q = d.get("quantization_parameters") or {}
            scales = np.asarray(q.get("scales", []))
            if d["dtype"] not in (np.int8, np.uint8, np.int16) or scales.size != 1:
                return  # float, int32 (bias) or per-channel (a weight) tensors are not activations
            self.info[index] = {"name": d["name"], "shape": tuple(int(s) for s in d["shape"]), "scale": float(scales[0]),
                                "zero_point": int(np.asarray(q["zero_points"])[0]), "op": op, "op_index": op_index,
                                "inputs": [int(i) for i in inputs], "options": dict(options or {})}

        self.input = interpreter.get_input_details()[0]
        add(self.input["index"], "INPUT", -1)
        for index, op in _producers(content).items():
            add(index, op.name, op.index, op.inputs, op.options)

    def raw(self, x: np.ndarray) -> dict[int, np.ndarray]:
        in_scale, in_zp = self.input["quantization"]
        dtype = np.dtype(self.input["dtype"])
        values: dict[int, list] = {i: [] for i in self.info}
        for image in np.asarray(x, dtype=np.float32):
            if dtype == np.float32:
                q = image[None]
            else:
                limits = np.iinfo(dtype)
                q = np.clip(np.round(image[None] / in_scale) + in_zp, limits.min, limits.max).astype(dtype)
            self.interpreter.set_tensor(self.input["index"], q)
            self.interpreter.invoke()
            for index in self.info:
                values[index].append(self.interpreter.get_tensor(index).copy())
        return {i: np.concatenate(v, axis=0) for i, v in values.items()}

    def real(self, raw: np.ndarray, index: int) -> np.ndarray:
        """Tensor `index`'s integer values -> the float64 values they stand for."""
        meta = self.info[index]
        return (raw.astype(np.float64) - meta["zero_point"]) * meta["scale"]


def converter_names(tflite_path) -> list[str]:
    """The converter's tensor names by index, from the manifest beside a .tflite that convert wrote
    with index names (`Manifest.tensor_names`); [] when there is none, or when the manifest is not
    this file's (another sha256): the file's own names are then all there is."""
    from tfdefakeq.core.manifest import Manifest, manifest_path
    from tfdefakeq.runtime.loader import sha256_hex

    path = manifest_path(tflite_path)
    if not path.exists():
        return []
    manifest = Manifest.load(path)
    if not manifest.tensor_names or manifest.sha256 != sha256_hex(Path(tflite_path).read_bytes()):
        return []
    return list(manifest.tensor_names)


def run_tflite_tensors(tflite_path, x: np.ndarray, use_xnnpack: bool = False) -> tuple[dict[int, dict], dict[int, np.ndarray]]:
    """Runs the .tflite on float inputs `x` (N, H, W, 3). Returns (info, values): info[index] = {name
    (the converter's, `converter_names`), shape, scale, zero_point, op, op_index, inputs, options} of
    every quantized activation, values[index] = the dequantized float64 tensor stacked over the N
    images (all in memory: `layer_parity` reads chunk by chunk instead)."""
    tensors = _TfliteTensors(tflite_path, use_xnnpack)
    raw = tensors.raw(x)
    return tensors.info, {i: tensors.real(v, i) for i, v in raw.items()}


class _Differences:
    """Running |Keras - TFLite| statistics of one tensor pair in the TFLite tensor's LSB, over
    chunks of images: exactly the max, mean and shares the whole arrays would give."""

    def __init__(self):
        self.total, self.max, self.over, self.beyond, self.count = 0.0, 0.0, 0, 0, 0

    def add(self, diff: np.ndarray, beyond: np.ndarray | None = None) -> None:
        self.total += float(diff.sum())
        self.max = max(self.max, float(diff.max()))
        self.over += int(np.count_nonzero(diff > 0.5))
        self.beyond += 0 if beyond is None else int(np.count_nonzero(beyond))
        self.count += diff.size

    @property
    def mean(self) -> float:
        return self.total / self.count


def name_fragments(tensor_name: str) -> set[str]:
    """'model/quant_conv1_relu/Relu;model/quant_conv1_conv/Conv2D' -> {'model', 'quant_conv1_relu', ...}."""
    return {frag for part in tensor_name.split(";") for frag in part.split("/") if frag}


def _same_layout(keras_shape, tflite_shape) -> bool:
    return int(np.prod(keras_shape)) == int(np.prod(tflite_shape[1:])) and keras_shape[-1] == tflite_shape[-1]


def layer_parity(qat_model, tflite_path, images: np.ndarray, preprocess=None, batch_size: int = 8, local: bool = True,
                 use_xnnpack: bool = False):
    """Per-layer Keras-vs-TFLite difference of a quantized model -> pandas DataFrame, one row per
    quantized Keras activation in layer order (COLUMNS):

    keras_layer, keras_type; tflite_tensor, op (the TFLite op producing it, after fusion), op_index;
    scale (the TFLite tensor's), keras_scale (from the Keras FakeQuant range; NaN when inherited);
    max_lsb / mean_lsb: |Keras - TFLite| in that tensor's LSB over all images and elements;
    share_differ: share of elements that differ (by more than half an LSB); local_max_lsb and
    local_share_differ: the same for the Keras layers since the previous quantized tensors run on
    TFLite's own values of those tensors, i.e. the error this step introduces rather than inherits
    (`local=False` skips it); local_share_beyond_ties: the share of outputs that differ other than
    as a rounding tie (see TIE_LSB); match: "name", "value" (closest values among tensors of the right
    shape) or "none" (no TFLite tensor holds it).

    images: uint8 (N, H, W, 3) mapped by `preprocess` (the manifest's Preprocess, default
    normalisation), or float inputs already preprocessed. The TFLite model runs on the builtin
    kernels, or with `use_xnnpack` on XNNPACK (what check_parity runs), whose requantization
    rounds differently. `batch_size` images are read at a time (the TFLite model runs twice per
    chunk with `local`): memory grows with it and with the model, not with the number of images.
    """
    import pandas as pd

    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.core.tfcompat import keras

    images = np.asarray(images)
    taps = quantized_taps(qat_model)
    tap_model = keras.Model(qat_model.inputs, [_output(qat_model, t.layer) for t in taps])
    tflite = _TfliteTensors(tflite_path, use_xnnpack)
    info = tflite.info
    pools = []  # per tap: (candidate TFLite tensors, how they were found, how many name the layer)
    for tap, output in zip(taps, tap_model.outputs):
        shape = tuple(output.shape[1:])
        candidates = [i for i, m in info.items() if _same_layout(shape, m["shape"])]
        named = [i for i in candidates if {tap.layer.name, tap.name} & name_fragments(info[i]["name"])]
        pools.append((named, "name", len(named)) if named else (candidates, "value", 0))

    # One chunk of images at a time, so memory is bounded by the chunk, not by the image count:
    # every candidate pair's statistics accumulate, the closest pair is chosen at the end.
    stats = [{i: _Differences() for i in pool} for pool, _, _ in pools]
    for x in _chunks(images, preprocess or Preprocess(), batch_size):
        outputs = tap_model.predict(x, batch_size=batch_size, verbose=0)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        raw = tflite.raw(x)
        for row, k in enumerate(outputs):
            k = np.asarray(k, dtype=np.float64)
            for i, acc in stats[row].items():
                acc.add(np.abs(k.reshape(raw[i].shape) - tflite.real(raw[i], i)) / info[i]["scale"])
        del outputs, raw

    claims: dict[int, tuple[float, int]] = {}  # tensor -> (mean LSB, row) of the Keras tensor holding it
    rows = []
    for row, (tap, (pool, how, n_named)) in enumerate(zip(taps, pools)):
        best = min(pool, key=lambda i: stats[row][i].mean) if pool else None
        if best is not None and n_named != 1:
            how = "value"
        record = {"keras_layer": tap.name, "keras_type": tap.type, "keras_scale": _fake_quant_scale(tap.qrange),
                  "tflite_tensor": None, "op": None, "op_index": np.nan, "scale": np.nan, "max_lsb": np.nan,
                  "mean_lsb": np.nan, "share_differ": np.nan, "local_max_lsb": np.nan, "local_share_differ": np.nan,
                  "local_share_beyond_ties": np.nan, "match": "none"}
        if best is not None:
            meta, acc = info[best], stats[row][best]
            record.update(tflite_tensor=meta["name"], op=meta["op"], op_index=meta["op_index"], scale=meta["scale"],
                          max_lsb=acc.max, mean_lsb=acc.mean, share_differ=acc.over / acc.count, match=how)
            previous = claims.get(best)
            if previous is not None and previous[0] <= record["mean_lsb"]:
                record = _unmatched(record)  # a closer Keras tensor already holds this one (fused op)
            else:
                if previous is not None:
                    rows[previous[1]] = _unmatched(rows[previous[1]])
                claims[best] = (record["mean_lsb"], row)
        rows.append(record)
    if local:
        matched = {taps[r].layer.name: (i, r) for i, (_, r) in claims.items() if r != 0}  # row 0: the input
        for name, acc in _local_differences(qat_model, images, preprocess or Preprocess(), tflite, matched,
                                            {taps[r].layer.name: i for i, (_, r) in claims.items()},
                                            batch_size, use_xnnpack).items():
            rows[matched[name][1]].update(local_max_lsb=acc.max, local_share_differ=acc.over / acc.count,
                                          local_share_beyond_ties=acc.beyond / acc.count)
    return pd.DataFrame(rows, columns=COLUMNS)


def _chunks(images: np.ndarray, preprocess, batch_size: int):
    """`images` (uint8, mapped by `preprocess`, or float inputs) as float32 chunks of `batch_size`."""
    for start in range(0, len(images), batch_size):
        part = images[start:start + batch_size]
        yield preprocess.apply(part) if part.dtype == np.uint8 else part.astype(np.float32)


def _int8(values: np.ndarray, meta: dict) -> np.ndarray:
    return np.rint(values / meta["scale"]).astype(np.int64) + meta["zero_point"]


def _xnnpack_leaky_relu(x_q: np.ndarray, x_meta: dict, y_meta: dict, alpha: float) -> np.ndarray:
    """XNNPACK's int8 LEAKY_RELU (qs8-vlrelu, params-init.c): the scale ratio is rounded to a
    multiplier with 8 fractional bits, `lrintf(256 * s_in / s_out)` (times alpha for negative
    inputs), then `y = zp_out + ((x - zp_in) * M + 128) >> 8`. Keras multiplies exactly, so for
    |x - zp_in| of tens of levels the two differ by up to ~0.1 LSB, and an output that close to a
    rounding boundary lands on the other side: a property of the kernel, not of the export."""
    ratio = np.float32(x_meta["scale"]) / np.float32(y_meta["scale"])
    positive = np.rint(np.float32(256.0) * ratio)
    negative = np.rint(np.float32(256.0) * np.float32(ratio * np.float32(alpha)))
    d = x_q - x_meta["zero_point"]
    acc = d * np.where(d >= 0, positive, negative).astype(np.int64)
    return np.clip(((acc + 128) >> 8) + y_meta["zero_point"], -128, 127)


def _kernel_explained(index: int, info: dict, values: dict, use_xnnpack: bool) -> np.ndarray | bool:
    """Elementwise: TFLite's output `index` equals, exactly, what its kernel's documented integer
    arithmetic gives on TFLite's own input, for the kernels whose arithmetic is coarser than Keras'
    float32 FakeQuant simulation (XNNPACK's LEAKY_RELU). Where it holds, a 1-LSB difference from
    Keras is the kernel's rounding, not an export fault (a wrong scale or zero point would move the
    kernel's output and Keras' together, and show as more than 1 LSB). False for other ops."""
    meta = info[index]
    if not (use_xnnpack and meta["op"] == "LEAKY_RELU" and meta["inputs"] and meta["inputs"][0] in info
            and "alpha" in meta["options"]):
        return False
    source = meta["inputs"][0]
    expected = _xnnpack_leaky_relu(_int8(values[source], info[source]), info[source], meta,
                                   float(meta["options"]["alpha"]))
    return expected.reshape(values[index].shape) == _int8(values[index], meta)


def _local_differences(qat_model, images, preprocess, tflite: _TfliteTensors, matched: dict[str, tuple[int, int]],
                       known: dict[str, int], batch_size: int, use_xnnpack: bool) -> dict[str, _Differences]:
    """Runs `qat_model` layer by layer, chunk by chunk, every layer reading the TFLite value of each
    input that has one (`known`: Keras layer name -> TFLite tensor): each layer's output is then
    what Keras computes from TFLite's inputs of its segment. Returns, for each layer in `matched`
    (name -> (TFLite tensor, row)), the statistics of |that output - TFLite's| with the outputs
    beyond rounding ties counted: a difference is a tie when the layer's output before its last
    rounding (`_unrounded`) lies within TIE_LSB of the midpoint of the two values, or when the
    kernel's own integer arithmetic explains it (`_kernel_explained`)."""
    from tfdefakeq.core.tfcompat import keras, tf

    first = qat_model.inputs[0].node.layer.name
    layers = [layer for layer in qat_model.layers if not isinstance(layer, keras.layers.InputLayer)]
    last_use = {}  # layer name -> index of the last layer reading it: its output is dropped after
    for n, layer in enumerate(layers):
        for source in _sources(qat_model, layer):
            last_use[source.name] = n
    stats = {name: _Differences() for name in matched}
    for x in _chunks(images, preprocess, batch_size):
        raw = tflite.raw(x)
        real = {}  # TFLite tensor -> float64 values of this chunk, as they are needed

        def value(i):
            if i not in real:
                real[i] = tflite.real(raw[i], i)
            return real[i]

        tensors = {first: tf.constant(x)}
        for n, layer in enumerate(layers):
            sources = _sources(qat_model, layer)
            args = [tf.constant(value(known[s.name]).reshape((-1,) + tuple(tensors[s.name].shape[1:])), tf.float32)
                    if s.name in known else tensors[s.name] for s in sources]
            args = args[0] if len(args) == 1 else args
            output = layer(args, training=False)
            if layer.name in matched:
                i = matched[layer.name][0]
                theirs, scale = value(i), tflite.info[i]["scale"]
                ours = output.numpy().astype(np.float64).reshape(theirs.shape)
                diff = np.abs(ours - theirs) / scale
                midpoint = (ours + theirs) / 2
                unrounded = _unrounded(layer, args).astype(np.float64).reshape(theirs.shape)
                tie = (diff < 1.5) & (np.abs(unrounded - midpoint) / scale <= TIE_LSB)
                tie |= (diff < 1.5) & _kernel_explained(i, tflite.info, {j: value(j) for j in (i, *tflite.info[i]["inputs"])
                                                                         if j in tflite.info}, use_xnnpack)
                stats[layer.name].add(diff, (diff > 0.5) & ~tie)
            tensors[layer.name] = output
            for source in sources:
                if last_use.get(source.name) == n:
                    tensors.pop(source.name, None)
    return {name: acc for name, acc in stats.items() if acc.count}


def _unrounded(layer, args) -> np.ndarray:
    """`layer`'s output before its last rounding: without its output FakeQuant and without the
    post-activation FakeQuant tfmot puts inside a quantize-aware activation (an Activation layer's
    swish / hard-swish, a conv's fused activation), else its output."""
    quantizers = getattr(layer, "_output_quantizers", None) or []
    post = [a for a in getattr(layer, "_quantize_activations", None) or [] if a._should_post_quantize()]
    if not quantizers and not post:
        return layer(args, training=False).numpy()
    if quantizers:
        layer._output_quantizers = []
    for activation in post:
        activation._should_post_quantize = lambda: False  # an instance attribute shadows the method
    try:
        return layer(args, training=False).numpy()
    finally:
        if quantizers:
            layer._output_quantizers = quantizers
        for activation in post:
            del activation._should_post_quantize


def _unmatched(record: dict) -> dict:
    return {**record, "tflite_tensor": None, "op": None, "op_index": np.nan, "scale": np.nan, "max_lsb": np.nan,
            "mean_lsb": np.nan, "share_differ": np.nan, "match": "none"}


def per_layer_verdict(table, max_local_lsb: float = 1.0, min_matched: float = 0.8) -> dict:
    """The op-by-op parity verdict on a `layer_parity` table (run with `local=True`): at least
    `min_matched` of the quantized Keras tensors found in the .tflite, every op within
    `max_local_lsb` of Keras on TFLite's own inputs, and its outputs different only at rounding ties
    (TIE_LSB). Returns {"agrees", "matched", "tensors", "max_local_lsb", "max_share_differ" (the largest
    share of an op's outputs that differ, ties or not), "max_tie_share" (the largest share that differ
    as rounding ties), "first_failing"}."""
    matched = table[table["match"] != "none"]
    bad = matched[(matched["local_max_lsb"] > max_local_lsb + 1e-3) | (matched["local_share_beyond_ties"] > 0)]
    enough = len(matched) >= min_matched * len(table)
    return {"agrees": bool(enough and bad.empty), "matched": int(len(matched)), "tensors": int(len(table)),
            "max_local_lsb": float(matched["local_max_lsb"].max()) if len(matched) else float("nan"),
            "max_share_differ": float(matched["local_share_differ"].max()) if len(matched) else float("nan"),
            "max_tie_share": float((matched["local_share_differ"] - matched["local_share_beyond_ties"]).max())
            if len(matched) else float("nan"),
            "first_failing": None if bad.empty else str(bad.iloc[0]["keras_layer"])}


def first_divergence(table, lsb: float = 1.0):
    """The first row of a `layer_parity` table whose max difference exceeds `lsb` (None if none)."""
    over = table[table["max_lsb"] > lsb + 1e-6]
    return None if over.empty else over.iloc[0]
