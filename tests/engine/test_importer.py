"""A user's tf.keras detector imported, converted and quantized (tfdefakeq.engine.importer)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfdefakeq.core.errors import UserError

SIZE = 32


def _images(n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8)


def _spread_head(model, images_float):
    """Random-weight MobileNetV2 features are tiny: rescale the Dense so logits span about +-4 (a
    quantized parity check in LSB needs a real output range)."""
    from tfdefakeq.core.tfcompat import keras

    dense = model.layers[-1]
    feature = keras.Model(model.inputs, dense.input).predict(images_float, verbose=0)
    kernel = np.random.default_rng(1).normal(size=dense.kernel.shape).astype(np.float32)
    z = feature @ kernel
    kernel *= 4.0 / max(float(np.abs(z - z.mean()).max()), 1e-12)
    bias = -(feature @ kernel).mean(0)
    dense.set_weights([kernel, bias.astype(np.float32)])


def mobilenet_detector(preprocessing="rescaling"):
    """keras.applications MobileNetV2 (alpha 0.35, random weights) called inside a Functional model, + GAP + Dense(1)."""
    from tfdefakeq.core.tfcompat import keras

    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp) if preprocessing == "rescaling" else inp
    base = keras.applications.MobileNetV2(include_top=False, alpha=0.35, weights=None, input_shape=(SIZE, SIZE, 3))
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(1)(x))
    # random weights: give every BatchNorm the statistics of real inputs (one training-mode pass with
    # momentum 0), or activations die out and the quantized ranges collapse to nothing
    calib = _images(16, seed=5).astype(np.float32)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    base(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(calib) if preprocessing == "rescaling" else calib, training=True)
    _spread_head(model, calib)
    return model


@pytest.fixture(scope="module")
def mobilenet_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("byo")
    model = mobilenet_detector()
    model.save(d / "det.keras")
    model.save(d / "det.h5")
    return model, d / "det.keras", d / "det.h5"


def test_nested_mobilenet_is_flattened_and_preprocessing_folded(mobilenet_files):
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.importer import load_user_model

    original, keras_file, h5_file = mobilenet_files
    images = _images()
    reference = original.predict(images.astype(np.float32), verbose=0).ravel()
    for source in (keras_file, h5_file, original):
        flat, fields = load_user_model(source)
        assert not any(isinstance(layer, keras.Model) for layer in flat.layers)  # one flat graph
        assert not any(isinstance(layer, keras.layers.Rescaling) for layer in flat.layers)
        assert len({layer.name for layer in flat.layers}) == len(flat.layers)
        assert fields["preprocess"].mean == 127.5 and fields["preprocess"].std == 127.5
        assert fields["backbone"] == "custom" and fields["fake_class"] == 1 and len(fields["architecture_sha256"]) == 64
        out = flat.predict(fields["preprocess"].apply(images), verbose=0).ravel()
        np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


@pytest.mark.parametrize("which", ["keras", "h5"])
def test_float32_tflite_matches_the_original_model(mobilenet_files, tmp_path, which):
    from tfdefakeq.core.manifest import Manifest, manifest_path
    from tfdefakeq.engine.export import convert_model
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.runtime.loader import load_model

    original, keras_file, h5_file = mobilenet_files
    model, manifest = load_detector(keras_file if which == "keras" else h5_file)
    images = _images()
    out = tmp_path / "det.tflite"
    convert_model(model, manifest, "float32", images, out)
    written = Manifest.load(manifest_path(out))
    assert written.backbone == "custom" and written.source == {"file": f"det.{which}"} and written.architecture_sha256
    tfl, tfl_manifest = load_model(out)
    logits = tfl.predict_logits(images, tfl_manifest.preprocess)
    reference = original.predict(images.astype(np.float32), verbose=0).ravel()
    assert np.abs(logits - reference).max() <= 1e-4 * np.abs(reference).max()


# lsq_w4a8 / lsq_w3a8 and explicit adaptive budgets on an imported model: tests/test_convert_byo.py (a smaller model)
@pytest.mark.parametrize("scheme,options", [
    ("tfmot_int8", {}), ("w4a8", {}), ("lsq_w2a8", {}),
    ("adaptive", {}),  # the uniform 4-bit file's bytes: 9.2 bits per weight here (scales and biases count), once refused
])
def test_quantized_schemes_pass_parity(mobilenet_files, tmp_path, scheme, options):
    import dataclasses

    from tfdefakeq.engine.export import convert_model, target_format
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.quant import quantize, weight_bits

    _, keras_file, _ = mobilenet_files
    model, manifest = load_detector(keras_file)
    calib = _images(16, seed=3)
    qat = quantize(model, scheme, manifest.preprocess.apply(calib), input_range=manifest.preprocess.input_range(), **options)
    qmanifest = dataclasses.replace(manifest, scheme=scheme, weight_bits=weight_bits(qat),
                                    salient_channels=qat.quant_plan.salient_channels if qat.quant_plan else {})
    fmt = target_format(qmanifest, "auto")
    written = convert_model(qat, qmanifest, fmt, calib, tmp_path / "det.tflite")
    parity = written.metrics["parity"]
    assert parity["agrees"] and parity["images"] == len(calib)
    assert written.format == fmt and fmt in ("int8", "int4") and written.backbone == "custom"
    if scheme == "adaptive":
        assert set(written.weight_bits.values()) <= {2, 3, 4, 8} and written.weight_bits
    elif scheme != "tfmot_int8":  # the body at the scheme's bits, first conv and classifier at 8
        low = int(scheme.split("_")[-1][1])
        assert set(written.weight_bits.values()) == {low, 8}
    assert (tmp_path / "det.tflite").stat().st_size == written.size_bytes


def test_custom_detector_round_trips_through_modelio(mobilenet_files, tmp_path):
    from tfdefakeq.core.manifest import Manifest, manifest_path
    from tfdefakeq.engine.modelio import architecture_path, import_detector, load_detector, save_detector

    _, keras_file, _ = mobilenet_files
    model, manifest, architecture = import_detector(keras_file)
    path = save_detector(model, tmp_path / "model.weights.h5", manifest, architecture=architecture)
    again, manifest2 = load_detector(path)
    x = manifest.preprocess.apply(_images(4))
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    assert manifest2.architecture_sha256 == manifest.architecture_sha256
    # an architecture that is not the one the manifest hashed is refused
    arch = json.loads(architecture_path(path).read_text())
    arch["name"] = "tampered"
    architecture_path(path).write_text(json.dumps(arch))
    with pytest.raises(UserError, match="architecture_sha256"):
        load_detector(path)
    assert Manifest.load(manifest_path(path)).backbone == "custom"


def test_sequential_sigmoid_head_gives_the_same_probability():
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.importer import load_user_model
    from tfdefakeq.runtime.interpreter import sigmoid

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.BatchNormalization(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, activation="sigmoid")])
    flat, fields = load_user_model(model)
    assert fields["preprocess"].mean == 0.0 and fields["preprocess"].std == pytest.approx(255.0)
    assert flat.layers[-1].get_config()["activation"] == "linear"
    assert any(isinstance(layer, keras.layers.ReLU) for layer in flat.layers)  # the fused relu split off
    images = _images()
    prob = sigmoid(flat.predict(fields["preprocess"].apply(images), verbose=0).ravel())
    np.testing.assert_allclose(prob, model.predict(images.astype(np.float32), verbose=0).ravel(), rtol=1e-5, atol=1e-6)
    flat0, _ = load_user_model(model, fake_class=0)
    prob0 = sigmoid(flat0.predict(fields["preprocess"].apply(images), verbose=0).ravel())
    np.testing.assert_allclose(prob0, 1 - prob, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fake_class", [0, 1])
def test_two_class_softmax_head_scores_the_fake_class(fake_class):
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.importer import load_user_model
    from tfdefakeq.runtime.interpreter import sigmoid

    keras.utils.set_random_seed(1)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    flat, fields = load_user_model(model, fake_class=fake_class, preprocess="torch")
    assert fields["fake_class"] == fake_class
    assert flat.output_shape == (None, 1)
    images = _images()
    x_in = fields["preprocess"].apply(images)
    np.testing.assert_allclose(x_in[..., 0], (images[..., 0] / 255.0 - 0.485) / 0.229, rtol=1e-5, atol=1e-5)
    prob = sigmoid(flat.predict(x_in, verbose=0).ravel())
    softmax = model.predict(x_in, verbose=0)[:, fake_class]
    np.testing.assert_allclose(prob, softmax, rtol=1e-5, atol=1e-6)


def test_caffe_preprocess_input_in_the_graph_becomes_bgr_preprocess():
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.importer import load_user_model

    keras.utils.set_random_seed(2)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.applications.resnet50.preprocess_input(inp)  # TFOpLambda: x[..., ::-1], bias_add(-mean)
    x = keras.layers.Conv2D(4, 3)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(1)(x))
    flat, fields = load_user_model(model)
    assert fields["preprocess"].channel_order == "bgr"
    assert fields["preprocess"].mean == pytest.approx([103.939, 116.779, 123.68])
    images = _images()
    np.testing.assert_allclose(flat.predict(fields["preprocess"].apply(images), verbose=0),
                               model.predict(images.astype(np.float32), verbose=0), rtol=1e-5, atol=1e-4)


def test_hard_swish_arithmetic_maps_to_layers():
    from tfdefakeq.core.tfcompat import keras, tf
    from tfdefakeq.engine.importer import load_user_model

    keras.utils.set_random_seed(3)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3)(inp)
    x = keras.layers.Multiply()([x, keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)])  # MobileNetV3's hard-swish
    x = tf.nn.relu6(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(1)(x))
    flat, fields = load_user_model(model, preprocess="tf")
    assert not any(type(layer).__name__ == "TFOpLambda" for layer in flat.layers)
    x_in = fields["preprocess"].apply(_images())
    np.testing.assert_allclose(flat.predict(x_in, verbose=0), model.predict(x_in, verbose=0), rtol=1e-5, atol=1e-5)


def test_an_op_without_a_layer_twin_is_refused_by_name():
    from tfdefakeq.core.tfcompat import keras, tf
    from tfdefakeq.engine.importer import load_user_model

    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3)(inp)
    x = tf.math.square(x)
    model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(UserError, match=r"tf\.math\.square"):
        load_user_model(model, preprocess="none")


def test_no_preprocessing_and_no_flag_is_refused():
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.importer import load_user_model

    inp = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(inp)))
    with pytest.raises(UserError, match="--preprocess"):
        load_user_model(model)
