import shutil
import sys
import types

import numpy as np
import pytest

from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import Manifest, manifest_path
from tfdefakeq.runtime.interpreter import (
    TFLiteModel,
    check_tflite_file,
    cpu_name,
    find_runtime,
    machine_info,
    sigmoid,
)
from tfdefakeq.runtime.loader import load_interpreter, load_model


@pytest.fixture(scope="module")
def models(tiny_models):
    return {fmt: load_model(tiny_models[fmt]) for fmt in ("float32", "int8")}


def test_float_model_properties(models):
    model, manifest = models["float32"]
    assert model.input_shape == (1, 16, 16, 3)
    assert model.input_dtype is np.float32
    assert model.input_quant == (0.0, 0)
    assert model.image_size == (16, 16)
    assert model.runtime.name == "ai-edge-litert"
    assert manifest.backbone == "tiny_cnn" and manifest.format == "float32"


def test_int8_model_properties(models):
    model, manifest = models["int8"]
    assert model.input_dtype is np.int8
    scale, zero_point = model.input_quant
    assert scale > 0 and -128 <= zero_point <= 127
    assert model.output_quant[0] > 0
    assert manifest.format == "int8"


def test_float_tflite_matches_keras_logits(models, tiny_models):
    model, manifest = models["float32"]
    logits = model.predict_logits(tiny_models["images"], manifest.preprocess)
    assert logits.dtype == np.float32 and logits.shape == (8,)
    np.testing.assert_allclose(logits, tiny_models["keras_logits"], atol=1e-4)


def test_int8_predictions_close_to_float(models, tiny_models):
    images = tiny_models["images"]
    f_model, f_manifest = models["float32"]
    q_model, q_manifest = models["int8"]
    f_logits = f_model.predict_logits(images, f_manifest.preprocess)
    q_logits = q_model.predict_logits(images, q_manifest.preprocess)
    spread = f_logits.max() - f_logits.min()
    assert spread > 1.0  # the fixture model separates real from fake
    np.testing.assert_allclose(q_logits, f_logits, atol=0.05 * spread + 4 * q_model.output_quant[0])
    f_prob = f_model.predict_proba(images, f_manifest.preprocess)
    q_prob = q_model.predict_proba(images, q_manifest.preprocess)
    assert np.abs(q_prob - f_prob).max() < 0.05
    assert ((q_prob > 0.5) == (f_prob > 0.5)).mean() >= 7 / 8


def test_predict_proba_is_sigmoid_of_logits(models, tiny_models):
    model, manifest = models["int8"]
    probs = model.predict_proba(tiny_models["images"], manifest.preprocess)
    logits = model.predict_logits(tiny_models["images"], manifest.preprocess)
    assert probs.dtype == np.float32 and probs.shape == (8,)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits.astype(np.float64))), rtol=1e-6)
    # a single (H, W, 3) image is accepted as a batch of one
    assert model.predict_proba(tiny_models["images"][0], manifest.preprocess).shape == (1,)


def test_sigmoid_is_stable():
    out = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_array_equal(out, [0.0, 0.5, 1.0])
    assert not np.isnan(out).any()


def test_quantize_input_rounds_and_clips(models):
    model, _ = models["int8"]
    scale, zero_point = model.input_quant
    x = np.array([-100.0, 100.0, 0.0, 2.4 * scale, 2.6 * scale], dtype=np.float32)
    q = model.quantize_input(x)
    assert q.dtype == np.int8
    assert q.tolist() == [-128, 127, zero_point, zero_point + 2, zero_point + 3]


def test_xnnpack_off_gives_the_same_outputs(tiny_models):
    for fmt in ("float32", "int8"):
        on, manifest = load_model(tiny_models[fmt])
        off, _ = load_model(tiny_models[fmt], num_threads=2, use_xnnpack=False)
        assert off.use_xnnpack is False and off.num_threads == 2
        np.testing.assert_allclose(
            off.predict_logits(tiny_models["images"], manifest.preprocess),
            on.predict_logits(tiny_models["images"], manifest.preprocess),
            atol=1e-5 if fmt == "float32" else on.output_quant[0] * 1.01,
        )


def test_load_interpreter_returns_an_allocated_interpreter(tiny_models):
    interpreter = load_interpreter(tiny_models["int8"], num_threads=1)
    assert interpreter.get_input_details()[0]["shape"].tolist() == [1, 16, 16, 3]


def test_wrong_image_shape_is_a_user_error(models):
    model, manifest = models["float32"]
    with pytest.raises(UserError, match=r"do not match the model input"):
        model.predict_proba(np.zeros((2, 20, 20, 3), np.uint8), manifest.preprocess)


def test_missing_manifest_warns_and_uses_defaults(tiny_models, tmp_path, capsys):
    path = tmp_path / "bare.tflite"
    shutil.copy(tiny_models["int8"], path)
    model, manifest = load_model(path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "bare.manifest.json" in err[0]
    assert manifest.input_shape == [16, 16, 3]
    assert manifest.format == "int8"


def test_manifest_shape_mismatch_is_a_user_error(tiny_models, tmp_path):
    path = tmp_path / "m.tflite"
    shutil.copy(tiny_models["float32"], path)
    Manifest(backbone="x", input_shape=[32, 32, 3], format="float32").save(manifest_path(path))
    with pytest.raises(UserError, match=r"m\.manifest\.json: input_shape \[32, 32, 3\]"):
        load_model(path)


def _bad_files(tmp_path, good_path):
    text = tmp_path / "notes.tflite"
    text.write_text("this is a text file, not a model\n" * 3)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(good_path.read_bytes()[:600])
    bad_root = tmp_path / "bad_root.tflite"
    bad_root.write_bytes((10_000).to_bytes(4, "little") + b"TFL3" + bytes(100))
    missing = tmp_path / "missing.tflite"
    return {
        "text": (text, "file identifier"),
        "empty": (empty, "empty file"),
        "truncated": (truncated, "not a TFLite flatbuffer"),
        "bad_root": (bad_root, "root offset 10000"),
        "missing": (missing, "no such file"),
    }


@pytest.mark.parametrize("kind", ["text", "empty", "truncated", "bad_root", "missing"])
def test_bad_files_are_user_errors_naming_the_file(kind, tiny_models, tmp_path):
    path, message = _bad_files(tmp_path, tiny_models["float32"])[kind]
    with pytest.raises(UserError) as info:
        TFLiteModel(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_check_tflite_file_returns_size(tiny_models):
    assert check_tflite_file(tiny_models["int8"]) == tiny_models["int8"].stat().st_size


def test_no_interpreter_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    with pytest.raises(UserError, match=r"install tfdefakeq\[edge\]"):
        find_runtime()


def test_tflite_runtime_with_numpy2_is_refused(monkeypatch):
    fake = types.ModuleType("tflite_runtime")
    fake.__version__ = "2.14.0"
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", fake)
    monkeypatch.setattr(np, "__version__", "2.1.0")
    with pytest.raises(UserError, match=r"tflite_runtime 2\.14\.0 does not work with numpy 2\.1\.0.*tfdefakeq\[edge\]"):
        find_runtime()


def test_tflite_runtime_fallback_with_numpy1(monkeypatch):
    class FakeInterpreter:
        pass

    fake = types.ModuleType("tflite_runtime")
    fake.__version__ = "2.14.0"
    fake_interp = types.ModuleType("tflite_runtime.interpreter")
    fake_interp.Interpreter = FakeInterpreter
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", fake)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake_interp)
    monkeypatch.setattr(np, "__version__", "1.26.4")
    runtime = find_runtime()
    assert runtime.name == "tflite-runtime" and runtime.interpreter_class is FakeInterpreter


def test_machine_info_names_the_cpu():
    info = machine_info()
    assert info["machine"] and info["processor"] == cpu_name()
    assert not info["processor"].isdigit()


def test_malformed_manifest_is_a_user_error(tiny_models, tmp_path):
    path = tmp_path / "m.tflite"
    shutil.copy(tiny_models["float32"], path)
    manifest_path(path).write_text('{"backbone": "x", "input_shape": [16, 16, 3], "format": "int8", "preprocess": {"scale": 2}}')
    with pytest.raises(UserError, match=r"m\.manifest\.json: not a valid manifest"):
        load_model(path)
    manifest_path(path).write_text("{not json")
    with pytest.raises(UserError, match=r"m\.manifest\.json"):
        load_model(path)


def test_broken_litert_install_is_named(monkeypatch):
    import importlib

    real_import = importlib.import_module

    def fake_import(name, *args):
        if name == "ai_edge_litert.interpreter":
            raise ImportError("libfoo.so: cannot open shared object file")
        if name == "tflite_runtime":
            raise ModuleNotFoundError("No module named 'tflite_runtime'", name="tflite_runtime")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    with pytest.raises(UserError, match=r"install tfdefakeq\[edge\].*fails to import: libfoo\.so"):
        find_runtime()
