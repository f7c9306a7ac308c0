"""A model and its manifest are published together: an interruption leaves both or neither."""

import pytest

from tests.support import fail_os_replace_on_call
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.fileio import publish_together, stage_bytes


def test_second_rename_failing_leaves_neither(tmp_path, monkeypatch):
    model, manifest = tmp_path / "m.tflite", tmp_path / "m.manifest.json"
    staged = (stage_bytes(model, b"model"), model), (stage_bytes(manifest, b"{}"), manifest)
    calls = fail_os_replace_on_call(monkeypatch, 2)
    with pytest.raises(UserError, match=r"m\.tflite: cannot write .*neither it nor m\.manifest\.json was written"):
        publish_together(*staged)
    assert calls == [manifest, model]  # the manifest first, the model (what a reader opens first) last
    assert list(tmp_path.iterdir()) == []  # no model, no manifest, no temp file


def test_an_old_pair_is_replaced_by_the_new_pair(tmp_path):
    model, manifest = tmp_path / "m.tflite", tmp_path / "m.manifest.json"
    model.write_bytes(b"old model")
    manifest.write_bytes(b"old manifest")
    publish_together((stage_bytes(model, b"new model"), model), (stage_bytes(manifest, b"new manifest"), manifest))
    assert (model.read_bytes(), manifest.read_bytes()) == (b"new model", b"new manifest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.manifest.json", "m.tflite"]


def test_interrupted_overwrite_never_pairs_a_new_model_with_an_old_manifest(tmp_path, monkeypatch):
    model, manifest = tmp_path / "m.tflite", tmp_path / "m.manifest.json"
    model.write_bytes(b"old model")
    manifest.write_bytes(b"old manifest")
    staged = (stage_bytes(model, b"new model"), model), (stage_bytes(manifest, b"new manifest"), manifest)
    fail_os_replace_on_call(monkeypatch, 1)  # the manifest's rename fails: the old model is already gone
    with pytest.raises(UserError):
        publish_together(*staged)
    assert not model.exists()
