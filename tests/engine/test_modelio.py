"""save_detector publishes the weights and their manifest together: both or neither."""

from pathlib import Path

import pytest

from tests.support import fail_os_replace_on_call

from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import Manifest, manifest_path
from tfdefakeq.engine.modelio import save_detector


def _model():
    from tfdefakeq.core.tfcompat import keras

    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, keras.layers.Dense(1, name="predictions")(keras.layers.GlobalAveragePooling2D()(inputs)))


def test_second_rename_failing_leaves_neither_weights_nor_manifest(tmp_path, monkeypatch):
    calls = fail_os_replace_on_call(monkeypatch, 2)
    path = tmp_path / "run" / "model.weights.h5"
    with pytest.raises(UserError, match=r"model\.weights\.h5: cannot write"):
        save_detector(_model(), path, Manifest(backbone="test", input_shape=[8, 8, 3], format="keras"))
    assert [Path(c).name for c in calls] == ["model.manifest.json", "model.weights.h5"]
    assert list(path.parent.iterdir()) == []


def test_saved_pair_loads(tmp_path):
    path = save_detector(_model(), tmp_path / "model.weights.h5", Manifest(backbone="test", input_shape=[8, 8, 3], format="keras"))
    assert path.is_file() and Manifest.load(manifest_path(path)).backbone == "test"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.manifest.json", "model.weights.h5"]
