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
