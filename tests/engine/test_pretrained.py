"""--weights imagenet: keras.applications weights load into our backbones by layer name; offline the
user gets a clear message. Keras' download function is replaced, so no test touches the network."""

import numpy as np
import pytest

from tfdefakeq.backbones import build
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.tfcompat import keras
from tfdefakeq.engine.training import load_pretrained


@pytest.fixture
def fake_download(monkeypatch, tmp_path):
    """Keras' get_file returns a weights file made from a random-weight keras.applications model."""
    from tf_keras.src.utils import data_utils

    reference = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, include_top=False, weights=None)
    path = tmp_path / "mobilenet_v2_notop.h5"
    reference.save_weights(path)
    monkeypatch.setattr(data_utils, "get_file", lambda *args, **kwargs: str(path))
    return reference


def test_imagenet_weights_load_by_layer_name(fake_download):
    model = build("mobilenet_v2", input_shape=(64, 64, 3), alpha=0.35, highpass=True)
    load_pretrained(model, "mobilenet_v2", "imagenet", {"alpha": 0.35})
    for name in ("Conv1", "block_16_project", "Conv_1_bn"):
        for ours, ref in zip(model.get_layer(name).get_weights(), fake_download.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, ref)


def test_offline_imagenet_download_is_a_clear_error(monkeypatch):
    from tf_keras.src.utils import data_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] name resolution")

    monkeypatch.setattr(data_utils, "get_file", offline)
    model = build("mobilenet_v2", input_shape=(64, 64, 3), alpha=0.35)
    with pytest.raises(UserError, match=r"cannot get MobileNetV2 ImageNet weights .* ~/.keras/models/"):
        load_pretrained(model, "mobilenet_v2", "imagenet", {"alpha": 0.35})


def test_backbone_without_keras_twin_is_refused():
    with pytest.raises(UserError, match="resnet18 has no keras.applications twin"):
        load_pretrained(build("resnet18", input_shape=(32, 32, 3), width=0.25), "resnet18", "imagenet", {})


def _weights(model) -> dict:
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers if layer.weights}


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_imagenet_load_says_which_layers_loaded(fake_download, capsys):
    model = build("mobilenet_v2", input_shape=(64, 64, 3), alpha=0.35, highpass=True)
    mapping = load_pretrained(model, "mobilenet_v2", "imagenet", {"alpha": 0.35})
    with_weights = [layer.name for layer in model.layers if layer.weights]
    # everything but the head and the fixed front end, which keras.applications' file does not hold
    assert sorted(mapping) == sorted(set(with_weights) - {"predictions", "highpass"})
    assert capsys.readouterr().out.strip() == (f"loaded MobileNetV2 ImageNet weights into {len(with_weights) - 2} of "
                                               f"{len(with_weights)} layers with weights of mobilenet_v2; "
                                               "left as built: highpass, predictions")


def test_a_detector_file_loads_every_layer(tmp_path, capsys):
    source = build("resnet18", input_shape=(32, 32, 3), width=0.25)
    source.save_weights(tmp_path / "det.h5")
    model = build("resnet18", input_shape=(32, 32, 3), width=0.25)
    mapping = load_pretrained(model, "resnet18", str(tmp_path / "det.h5"), {})
    assert len(mapping) == sum(1 for layer in model.layers if layer.weights)
    for name, weights in _weights(source).items():
        assert _same(model.get_layer(name).get_weights(), weights), name
    assert "left as built" not in capsys.readouterr().out


def test_a_file_of_another_backbone_is_refused_and_loads_nothing(tmp_path):
    build("resnet18", input_shape=(32, 32, 3), width=0.25).save_weights(tmp_path / "resnet.h5")
    model = build("mobilenet_v2", input_shape=(32, 32, 3), alpha=0.35)
    before = _weights(model)
    with pytest.raises(UserError, match=r"resnet\.h5: covers less than the backbone: .* pass --partial"):
        load_pretrained(model, "mobilenet_v2", str(tmp_path / "resnet.h5"), {"alpha": 0.35})
    assert all(_same(model.get_layer(n).get_weights(), w) for n, w in before.items())
    with pytest.raises(UserError, match="no layer of mobilenet_v2 matches"):
        load_pretrained(model, "mobilenet_v2", str(tmp_path / "resnet.h5"), {"alpha": 0.35}, partial=True)


def test_a_file_covering_part_of_the_backbone_needs_partial_which_lists_the_rest(tmp_path, capsys):
    reference = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    front = keras.Model(reference.input, reference.get_layer("block_2_add").output)  # the first blocks only
    front.save_weights(tmp_path / "front.h5")
    model = build("mobilenet_v2", input_shape=(32, 32, 3), alpha=0.35)
    before = _weights(model)
    with pytest.raises(UserError, match=r"front\.h5: covers less than the backbone: it holds no weights for \d+ of our"):
        load_pretrained(model, "mobilenet_v2", str(tmp_path / "front.h5"), {"alpha": 0.35})
    assert all(_same(model.get_layer(n).get_weights(), w) for n, w in before.items())  # strict: nothing loaded

    mapping = load_pretrained(model, "mobilenet_v2", str(tmp_path / "front.h5"), {"alpha": 0.35}, partial=True)
    stored = {layer.name for layer in front.layers if layer.weights}
    assert set(mapping) == stored
    for name in stored:
        assert _same(model.get_layer(name).get_weights(), front.get_layer(name).get_weights()), name
    skipped = [layer.name for layer in model.layers if layer.weights and layer.name not in stored]
    assert all(_same(model.get_layer(n).get_weights(), before[n]) for n in skipped)
    out = capsys.readouterr().out
    assert f"into {len(stored)} of {len(stored) + len(skipped)} layers" in out
    assert out.strip().endswith("left as built: " + ", ".join(skipped))
