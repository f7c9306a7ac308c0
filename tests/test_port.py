"""python -m tfdefakeq.port: a torch checkpoint in, a detector that convert and load_detector take out;
bad checkpoints: one stderr line naming the file, exit code 2, nothing written."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest

from tests.torchport.fixtures import FIXTURES, load_fixture, torch_fake_logit
from tfdefakeq import port


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        port.cli([str(a) for a in argv])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tfdefakeq ")]
    return e.value.code, errors


@pytest.fixture(scope="module")
def ported(tmp_path_factory):
    out = tmp_path_factory.mktemp("port") / "det.weights.h5"
    ckpt = FIXTURES / "mobilenet_v2_w025.pth"
    assert port.main(port.parse_args([str(ckpt), "--backbone", "mobilenet_v2", "--out", str(out), "--input-size", "64"])) == 0
    return out


def test_port_writes_a_detector_that_loads_and_matches_torch(ported):
    from tfdefakeq.core.manifest import Manifest, manifest_path
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.torchport.checkpoint import sha256

    model, manifest = load_detector(ported)
    f = load_fixture("mobilenet_v2_w025")
    ours = model.predict(manifest.preprocess.apply(f["images"]), verbose=0)[:, 0]
    np.testing.assert_allclose(ours, torch_fake_logit(f["logits"]), rtol=1e-4, atol=1e-5)
    saved = Manifest.load(manifest_path(ported))
    assert saved.backbone == "mobilenet_v2" and saved.input_shape == [64, 64, 3] and saved.scheme == "float"
    assert saved.build_kwargs["torch_layout"] == "torchvision" and saved.build_kwargs["alpha"] == 0.25
    assert saved.source["file"] == "mobilenet_v2_w025.pth" and saved.source["format"] == "zip"
    assert saved.source["sha256"] == sha256(FIXTURES / "mobilenet_v2_w025.pth")


@pytest.mark.slow
def test_convert_takes_the_ported_detector(ported, tmp_path):
    from tfdefakeq.engine.export import convert_model
    from tfdefakeq.engine.modelio import load_detector

    model, manifest = load_detector(ported)
    images = load_fixture("mobilenet_v2_w025")["images"]
    written = convert_model(model, manifest, "float32", images, tmp_path / "det.tflite")
    assert written.metrics["parity"]["agrees"] and written.source["file"] == "mobilenet_v2_w025.pth"


def test_existing_output_is_refused(ported, capsys):
    before = ported.read_bytes()
    code, errors = _cli([FIXTURES / "mobilenet_v2_w025.safetensors", "--backbone", "mobilenet_v2", "--out", ported], capsys)
    assert code == 2 and len(errors) == 1 and "already exists" in errors[0]
    assert ported.read_bytes() == before


def _evil_zip(path, marker):
    class RunsCode:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"fc.weight": RunsCode()}, protocol=2))
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("case", ["code", "truncated", "architecture", "three_class"])
def test_bad_checkpoints_exit_2_and_write_nothing(case, tmp_path, capsys):
    ckpt = tmp_path / "in.pth"
    marker = tmp_path / "pwned"
    backbone = "mobilenet_v2"
    if case == "code":
        _evil_zip(ckpt, marker)
    elif case == "truncated":
        whole = (FIXTURES / "mobilenet_v2_w025.pth").read_bytes()
        ckpt.write_bytes(whole[: len(whole) * 2 // 3])
    elif case == "three_class":  # a 3-logit head (real / face swap / reenactment), no --fake-class
        from tfdefakeq.torchport.checkpoint import state_dict_bytes

        state = dict(load_fixture("mobilenet_v2_w025")["state"])
        rng = np.random.default_rng(0)
        state["classifier.1.weight"] = rng.normal(size=(3, state["classifier.1.weight"].shape[1])).astype(np.float32)
        state["classifier.1.bias"] = np.zeros(3, np.float32)
        ckpt.write_bytes(state_dict_bytes(state))
    else:  # a MobileNetV2 checkpoint offered as a ResNet-18
        ckpt.write_bytes((FIXTURES / "mobilenet_v2_w025.pth").read_bytes())
        backbone = "resnet18"
    out = tmp_path / "out" / "det.weights.h5"
    code, errors = _cli([ckpt, "--backbone", backbone, "--out", out, "--input-size", "64"], capsys)
    assert code == 2 and len(errors) == 1 and str(ckpt) in errors[0], errors
    assert errors[0].startswith("tfdefakeq port: error: ")
    assert not marker.exists()
    assert not out.exists() and not (tmp_path / "out" / "det.manifest.json").exists()
    if case == "architecture":
        assert "does not fit resnet18" in errors[0] and "missing (conv1.weight [64, 3, 7, 7]" in errors[0]
        assert "unexpected (features.0.0.weight [8, 3, 3, 3]" in errors[0]
    if case == "three_class":
        assert "a 3-logit head has no single-logit equivalent" in errors[0]
