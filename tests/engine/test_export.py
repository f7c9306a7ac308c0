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
