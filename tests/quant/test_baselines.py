"""Baselines for the quantization benchmark: tfmot n-bit QAT and ai-edge-quantizer PTQ, converted,
inspected in the flatbuffer and run in our runtime."""

import numpy as np
import pytest

from tests.support import random_images
from tfdefakeq.backbones import build
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import Preprocess

pytest.importorskip("ai_edge_quantizer")

INT4, INT8, FLOAT32 = 17, 9, 0
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@pytest.fixture(scope="module")
def trained():
    """A briefly trained ResNet-18 (width 1/4, high-pass front end, 32 px): logits that depend on
    the image, so agreement with the float model means something. (model, uint8 calib, uint8 test)."""
    from tfdefakeq.core.tfcompat import keras

    images, labels = random_images(48, 32)
    keras.utils.set_random_seed(0)
    model = build("resnet18", input_shape=(32, 32, 3), width=0.25, highpass=True)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(Preprocess().apply(images), labels, batch_size=8, epochs=8, verbose=0)
    return model, images, random_images(24, 32, seed=5)[0]


@pytest.fixture(scope="module")
def float_tflite(trained):
    from tfdefakeq.engine.export import to_tflite

    return to_tflite(trained[0], "float32")


def _weights_by_op(flatbuffer: bytes) -> list[tuple[str, int, np.ndarray]]:
    """(op name, stored tensor type, filter values as stored integers or floats) per weighted op."""
    from ai_edge_litert import schema_py_generated as schema

    from tfdefakeq.runtime.unpack import unpack_values

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = model.subgraphs[0]
    out = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        if name not in WEIGHTED_OPS:
            continue
        tensor = graph.tensors[op.inputs[1]]
        shape = tuple(int(d) for d in tensor.shape)
        raw = np.asarray(model.buffers[tensor.buffer].data, dtype=np.uint8)
        if tensor.type == INT4:
            values = unpack_values(raw, int(np.prod(shape)), 4).reshape(shape)
        elif tensor.type == INT8:
            values = raw.view(np.int8).reshape(shape)
        else:
            values = raw.view(np.float32).reshape(shape)
        out.append((name, int(tensor.type), values))
    return out


def _assert_tracks(reference: np.ndarray, logits: np.ndarray, min_corr: float, max_error: float) -> None:
    """`logits` follow `reference`: correlation, and the largest error as a share of the reference's
    spread (correlation alone passes a clipped output)."""
    error = np.abs(logits - reference).max() / np.ptp(reference)
    print(f"corr {np.corrcoef(reference, logits)[0, 1]:.4f}, max error {error:.3f} of the logit spread")
    assert np.corrcoef(reference, logits)[0, 1] > min_corr and error < max_error


def _run(flatbuffer: bytes, tmp_path, name: str, images):
    from tfdefakeq.runtime.interpreter import TFLiteModel

    path = tmp_path / f"{name}.tflite"
    path.write_bytes(flatbuffer)
    model = TFLiteModel(path)
    return model, model.predict_logits(images, Preprocess())


def test_tfmot_nbit_w4a8_stores_int4_kernels_on_a_15_level_grid(trained, float_tflite, tmp_path):
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.quant.baselines import apply_tfmot_nbit

    model, calib, test = trained
    qat = apply_tfmot_nbit(model, weight_bits=4, activation_bits=8, calib_images=Preprocess().apply(calib))
    flatbuffer = to_tflite(qat, "int8", Preprocess().apply(calib))
    weights = _weights_by_op(flatbuffer)
    assert [n for n, _, _ in weights].count("CONV_2D") == 20
    assert all(t == INT4 for _, t, _ in weights)  # packed INT4, not INT8 holding 4-bit values
    levels = []
    for name, _, values in weights:
        if name == "CONV_2D":  # (out_c, kh, kw, in_c)
            assert values.min() >= -7 and values.max() <= 7  # symmetric narrow range
            levels += [len(np.unique(channel)) for channel in values.reshape(len(values), -1)]
    assert max(levels) <= 15 and np.median(levels) >= 12  # the whole 4-bit grid is used, nothing finer

    runtime, logits = _run(flatbuffer, tmp_path, "nbit", test)
    assert runtime.input_dtype is np.int8 and runtime.unpacked_tensors == len(weights)
    _assert_tracks(qat.predict(Preprocess().apply(test), verbose=0).ravel(), logits, 0.99, 0.1)
    _assert_tracks(model.predict(Preprocess().apply(test), verbose=0).ravel(), logits, 0.95, 0.3)


def test_tfmot_nbit_quantizes_every_mobilenet_v2_weight_at_4_bits():
    from tfdefakeq.quant import weight_bits
    from tfdefakeq.quant.baselines import apply_tfmot_nbit

    model = build("mobilenet_v2", input_shape=(32, 32, 3), alpha=0.35)
    bits = weight_bits(apply_tfmot_nbit(model, weight_bits=4))
    depthwise = [layer.name for layer in model.layers if type(layer).__name__ == "DepthwiseConv2D"]
    assert depthwise and all(bits[name] == 4 for name in depthwise)
    assert bits["Conv1"] == bits["predictions"] == 4 and set(bits.values()) == {4}


def test_aeq_dynamic_wi4_keeps_depthwise_and_io_float(float_tflite, trained, tmp_path):
    from tfdefakeq.quant.baselines import aeq_quantize

    model, _, test = trained
    flatbuffer = aeq_quantize(float_tflite, "aeq_dyn_wi4", None)
    weights = _weights_by_op(flatbuffer)
    assert {(n, t) for n, t, _ in weights} == {("CONV_2D", INT4), ("FULLY_CONNECTED", INT4), ("DEPTHWISE_CONV_2D", FLOAT32)}
    assert len(flatbuffer) < 0.2 * len(float_tflite)

    runtime, logits = _run(flatbuffer, tmp_path, "dyn", test)  # weights inline, INT4 unpacked at load
    assert runtime.input_dtype is np.float32 and runtime.output_quant == (0.0, 0)
    assert runtime.unpacked_tensors == sum(t == INT4 for _, t, _ in weights) == 21
    _assert_tracks(model.predict(Preprocess().apply(test), verbose=0).ravel(), logits, 0.99, 0.2)


def test_aeq_static_w4a8_is_full_integer_with_int4_convs(float_tflite, trained, tmp_path):
    from tfdefakeq.quant.baselines import aeq_quantize
    from tfdefakeq.runtime.modelinfo import model_info_from_bytes

    model, calib, test = trained
    flatbuffer = aeq_quantize(float_tflite, "aeq_w4a8", Preprocess().apply(calib))
    weights = _weights_by_op(flatbuffer)
    assert {(n, t) for n, t, _ in weights} == {("CONV_2D", INT4), ("FULLY_CONNECTED", INT4), ("DEPTHWISE_CONV_2D", INT8)}
    for name, _, values in weights:
        if name == "CONV_2D":
            assert max(len(np.unique(channel)) for channel in values.reshape(len(values), -1)) <= 15
    info = model_info_from_bytes(flatbuffer)
    assert info.input_types == info.output_types == ["INT8"]
    assert "FLOAT32" not in info.weight_bytes and not {"QUANTIZE", "DEQUANTIZE"} & set(info.op_counts)

    runtime, logits = _run(flatbuffer, tmp_path, "w4a8", test)
    assert runtime.input_dtype is np.int8 and runtime.unpacked_tensors == 21
    # the int8 output spans the calibration logits (aeq's own moving-average range would collapse
    # a one-logit output to its running mean, and every logit would clip)
    scale, zero_point = runtime.output_quant
    calib_logits = model.predict(Preprocess().apply(calib), verbose=0).ravel()
    assert (-128 - zero_point) * scale <= calib_logits.min() + scale and calib_logits.max() - scale <= (127 - zero_point) * scale
    _assert_tracks(model.predict(Preprocess().apply(test), verbose=0).ravel(), logits, 0.95, 0.3)


def test_aeq_bad_requests_are_user_errors(float_tflite, trained):
    from tfdefakeq.quant.baselines import aeq_quantize

    with pytest.raises(UserError, match="unknown ai-edge-quantizer recipe 'aeq_w2'"):
        aeq_quantize(float_tflite, "aeq_w2", None)
    with pytest.raises(UserError, match="needs calibration images"):
        aeq_quantize(float_tflite, "aeq_w4a8", None)
    with pytest.raises(UserError, match="normalised float32"):
        aeq_quantize(float_tflite, "aeq_w4a8", trained[1])


def _plan_layers(model) -> list[str]:
    from tfdefakeq.core.tfcompat import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return [layer.name for layer in model.layers if isinstance(layer, kinds)]


def test_aeq_plan_stores_each_layer_at_the_plans_bits(float_tflite, trained, tmp_path):
    """Our allocation, their PTQ: every conv at its plan's bits (3 -> 4, depthwise at 8), one kernel
    scale where the plan says per tensor; at 8 bits everywhere the file tracks the float model."""
    from ai_edge_litert import schema_py_generated as schema

    from tfdefakeq.quant.baselines import aeq_quantize_plan

    model, _, test = trained
    names = _plan_layers(model)
    bits = {name: (2, 3, 4, 8)[i % 4] for i, name in enumerate(names)}
    scalar = [n for n in names if bits[n] == 2][:2]
    flatbuffer, stored = aeq_quantize_plan(float_tflite, bits, scalar)
    depthwise = {n for n in names if type(model.get_layer(n)).__name__ == "DepthwiseConv2D"}
    assert depthwise and stored == {n: 8 if n in depthwise else {3: 4}.get(b, b) for n, b in bits.items()}

    parsed = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = parsed.subgraphs[0]
    kinds = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    by_layer = {}
    for op in graph.operators:
        code = parsed.operatorCodes[op.opcodeIndex]
        if kinds[max(code.builtinCode, code.deprecatedBuiltinCode)] not in WEIGHTED_OPS:
            continue
        said = " ".join(graph.tensors[i].name.decode() for i in (op.outputs[0], op.inputs[1]))
        layer = [n for n in names if f"/{n}/" in said]  # the kernel names the classifier (its output is the graph's)
        if layer:
            by_layer[layer[0]] = graph.tensors[op.inputs[1]]
    assert set(by_layer) == set(names)
    types = {2: 19, 4: INT4, 8: INT8}
    for name, kernel in by_layer.items():
        assert kernel.type == types[stored[name]], name
        assert (len(kernel.quantization.scale) == 1) == (name in scalar or type(model.get_layer(name)).__name__ == "Dense")
    _, logits = _run(flatbuffer, tmp_path, "plan", test)  # INT2 and INT4 unpacked at load
    assert np.all(np.isfinite(logits))

    eight, _ = aeq_quantize_plan(float_tflite, dict.fromkeys(names, 8))
    _, logits8 = _run(eight, tmp_path, "plan8", test)
    _assert_tracks(model.predict(Preprocess().apply(test), verbose=0).ravel(), logits8, 0.99, 0.1)


def test_aeq_plan_refuses_what_it_cannot_apply(float_tflite, trained):
    from tfdefakeq.quant.baselines import aeq_quantize_plan
    from tfdefakeq.runtime.unpack import shorten_tensor_names

    names = _plan_layers(trained[0])
    plan = dict.fromkeys(names, 4)
    with pytest.raises(UserError, match="named after layer"):
        aeq_quantize_plan(shorten_tensor_names(float_tflite)[0], plan)
    with pytest.raises(UserError, match="named after layer.*no_such_conv"):
        aeq_quantize_plan(float_tflite, {**plan, "no_such_conv": 2})
    with pytest.raises(UserError, match="not in the bit plan"):
        aeq_quantize_plan(float_tflite, {names[1]: 4}, [names[2]])
