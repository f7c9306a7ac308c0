"""convert's verdict refuses a quantized model that collapsed to one constant output: Keras and TFLite
then agree on a constant, and a parity check that passes it proves nothing (issue 13: the adaptive
ResNets of benchmarks/byo.py)."""

import numpy as np
import pytest

from tests.support import random_images


@pytest.fixture(scope="module")
def float_and_qat():
    """A small float detector (32 px) and its tfmot_int8 QAT model, with the float model's P(fake)."""
    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.core.tfcompat import keras

    keras.utils.set_random_seed(3)
    L = keras.layers
    inputs = keras.Input((32, 32, 3), name="image")
    x = L.Conv2D(8, 3, strides=2, padding="same", name="stem_conv")(inputs)
    x = L.ReLU(name="stem_relu")(x)
    x = L.Conv2D(8, 3, strides=2, padding="same", name="body_conv")(x)
    x = L.ReLU(name="body_relu")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(1, name="logit")(x)
    model = keras.Model(inputs, outputs)
    images, labels = random_images(16, 32, seed=5)
    x = Preprocess().apply(images)
    return model, x, images, labels.ravel()


def _convert(model, x, images, labels, path, zero_classifier: bool):
    from tfdefakeq.core.manifest import Manifest, Preprocess
    from tfdefakeq.engine.export import ThresholdReference, convert_model, keras_probs
    from tfdefakeq.quant import quantize, weight_bits

    float_probs = keras_probs(model, Preprocess(), images)
    qat = quantize(model, "tfmot_int8", x)
    if zero_classifier:  # the QAT model now says its bias whatever the image; the float one does not
        kernel = next(w for w in qat.get_layer("quant_logit").weights if "kernel" in w.name)
        kernel.assign(np.zeros(kernel.shape, np.float32))  # the output FakeQuant keeps its calibrated range
    manifest = Manifest(backbone="test", input_shape=[32, 32, 3], format="keras", scheme="tfmot_int8",
                        weight_bits=weight_bits(qat))
    reference = ThresholdReference(images, labels, float_probs, "the float model", "val")
    return convert_model(qat, manifest, "int8", images, path, threshold_reference=reference)


def test_a_collapsed_quantized_model_is_refused_and_nothing_written(float_and_qat, tmp_path):
    from tfdefakeq.core.manifest import manifest_path
    from tfdefakeq.engine.export import ParityError

    path = tmp_path / "collapsed.tflite"
    with pytest.raises(ParityError) as e:
        _convert(*float_and_qat, path, zero_classifier=True)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path))
    assert "one constant output" in message and "16 val images" in message
    spreads = e.value.result
    assert spreads["quantized_logit_spread"] == 0.0
    assert spreads["float_logit_spread"] >= spreads["output_lsb"] > 0
    assert not path.exists() and not manifest_path(path).exists()
    assert list(tmp_path.iterdir()) == []  # no staged file left behind either


def test_the_same_model_unzeroed_passes_with_its_spreads_recorded(float_and_qat, tmp_path):
    written = _convert(*float_and_qat, tmp_path / "ok.tflite", zero_classifier=False)
    collapse = written.metrics["parity"]["collapse"]
    assert written.metrics["parity"]["agrees"]
    # the int8 output resolves the float model's spread: many LSB, not one value
    assert collapse["quantized_logit_spread"] >= 10 * collapse["output_lsb"]
    assert collapse["float_logit_spread"] >= 10 * collapse["output_lsb"]


def test_check_not_collapsed_spares_a_float_model_constant_at_the_output_resolution():
    from tfdefakeq.engine.export import ParityError, check_not_collapsed

    lsb = 0.05
    # float spread below one LSB: the int8 grid cannot show it, so a constant int8 output is no collapse
    assert check_not_collapsed([1.0, 1.0, 1.0], [1.0, 1.01, 1.03], lsb, "m.tflite", "3 images")["float_logit_spread"] < lsb
    # outputs on two grid points: not constant
    check_not_collapsed([1.0, 1.05, 1.0], [0.0, 2.0, 4.0], lsb, "m.tflite", "3 images")
    with pytest.raises(ParityError, match=r"^m\.tflite: the quantized model gives one constant output .* spread 4 \(80 LSB\)"):
        check_not_collapsed([1.0, 1.0, 1.0], [0.0, 2.0, 4.0], lsb, "m.tflite", "3 images")


def _without_conversion_metadata(flatbuffer: bytes):
    """The model as a flatbuffer object tree, with the CONVERSION_METADATA buffer (which records how the
    converter was called) emptied."""
    from tfdefakeq.runtime.modelinfo import schema_module

    schema = schema_module()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    for entry in model.metadata or []:
        if entry.name == b"CONVERSION_METADATA":
            model.buffers[entry.buffer].data = None
    return model


def _same_tree(a, b, path="model") -> list[str]:
    if isinstance(a, (list, tuple)) or (isinstance(a, np.ndarray) and a.dtype == object):
        if b is None or len(a) != len(b):
            return [f"{path}: length {len(a)} != {None if b is None else len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _same_tree(x, y, f"{path}[{i}]")]
    if isinstance(a, np.ndarray):
        return [] if isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b) else [f"{path}: arrays differ"]
    if hasattr(a, "__dict__"):
        return [d for key in vars(a) for d in _same_tree(getattr(a, key), getattr(b, key), f"{path}.{key}")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@pytest.mark.parametrize("scheme,fmt", [("float", "float32"), ("float", "int8"), ("tfmot_int8", "int8"), ("w4a8", "int4")])
def test_conversion_equals_the_converters_keras_path(float_and_qat, scheme, fmt):
    """to_tflite saves one traced inference function instead of letting from_keras_model serialise every
    layer: the file must be the one from_keras_model makes, but for the conversion-metadata entry."""
    from tfdefakeq.core.tfcompat import tf
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.quant import quantize

    model, x, _, _ = float_and_qat
    converted = model if scheme == "float" else quantize(model, scheme, x)
    ours = to_tflite(converted, fmt, x if fmt != "float32" else None)

    converter = tf.lite.TFLiteConverter.from_keras_model(converted)
    if fmt != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        converter.representative_dataset = lambda: ([img[None].astype(np.float32)] for img in x)
    keras_path = converter.convert()
    assert len(ours) == len(keras_path)
    assert _same_tree(_without_conversion_metadata(ours), _without_conversion_metadata(keras_path)) == []


def test_a_dilated_conv_converts_to_one_dilated_conv2d(tmp_path):
    """Conv2D(dilation 2 and 3) -> BN -> ReLU: one CONV_2D each in the .tflite (the BN folded, the
    ReLU fused, no SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND), with Keras' outputs; Keras' own Conv2D is
    left as it was after the conversion."""
    from ai_edge_litert.interpreter import Interpreter

    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.runtime.modelinfo import read_model_info

    L = keras.layers
    keras.utils.set_random_seed(1)
    inputs = keras.Input((17, 17, 3))
    x = inputs
    for dilation in (2, 3):
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, padding="same", dilation_rate=dilation)(x)))
    model = keras.Model(inputs, x)
    model.layers[2].set_weights([np.full(4, 1.5), np.full(4, 0.1), np.full(4, 0.2), np.full(4, 2.0)])
    before = keras.layers.Conv2D.convolution_op
    path = tmp_path / "dilated.tflite"
    path.write_bytes(to_tflite(model, "float32"))
    assert keras.layers.Conv2D.convolution_op is before
    assert read_model_info(path).op_counts == {"CONV_2D": 2}
    images = np.random.default_rng(0).normal(size=(2, 17, 17, 3)).astype(np.float32)
    interpreter = Interpreter(model_path=str(path))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model.predict(images, verbose=0), atol=1e-4)
