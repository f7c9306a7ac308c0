"""Reading PyTorch checkpoints without torch: the three formats, and the pickles that are refused.
numpy only (no TensorFlow): these run in a second."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest

from tests.torchport.fixtures import FIXTURES, load_fixture
from tfdefakeq.core.errors import UserError
from tfdefakeq.torchport.checkpoint import checkpoint_format, read_state_dict, state_dict_bytes


@pytest.fixture(scope="module")
def mobilenet_state():
    return load_fixture("mobilenet_v2_w025")["state"]


def _equal(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("suffix,fmt", [(".pth", "zip"), ("_legacy.pth", "legacy"), (".safetensors", "safetensors")])
def test_reads_the_files_torch_wrote(suffix, fmt, mobilenet_state):
    path = FIXTURES / f"mobilenet_v2_w025{suffix}"
    assert checkpoint_format(path) == fmt
    state = read_state_dict(path)
    assert set(state) == set(mobilenet_state)
    assert all(np.array_equal(state[k], v) for k, v in mobilenet_state.items())  # running stats, step counters too


@pytest.mark.parametrize("legacy", [False, True])
def test_our_writer_round_trips(tmp_path, legacy, mobilenet_state):
    path = tmp_path / "m.pth"
    path.write_bytes(state_dict_bytes(mobilenet_state, legacy=legacy))
    assert checkpoint_format(path) == ("legacy" if legacy else "zip")
    assert _equal(read_state_dict(path), mobilenet_state)


def test_unwraps_a_training_checkpoint(tmp_path):
    # {"model": state_dict, "total_steps": n} as CNNDetection saves; written by hand as a legacy pickle
    state = {"fc.weight": np.arange(6, dtype=np.float32).reshape(3, 2), "fc.bias": np.ones(3, np.float16)}
    raw = state_dict_bytes(state, legacy=True, wrap="model")
    assert _equal(read_state_dict(_write(tmp_path / "a.pth", raw)), state)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("container", ["legacy", "zip"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path, container):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"fc.weight": _RunsCode(marker)}, protocol=2)
    path = tmp_path / "evil.pth"
    if container == "legacy":
        header = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
        path.write_bytes(header + payload)
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", payload)
        path.write_bytes(buf.getvalue())
    with pytest.raises(UserError) as e:
        read_state_dict(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and "system" in message and "refused" in message
    assert not marker.exists()


def test_a_pickled_module_is_refused(tmp_path):
    # what torch.save(model) (not its state dict) holds: a class reference
    raw = b"\x80\x02ctorchvision.models.resnet\nResNet\n)\x81."
    header = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {}))
    with pytest.raises(UserError, match="torchvision.models.resnet.ResNet"):
        read_state_dict(_write(tmp_path / "m.pt", header + raw))


def test_a_truncated_zip_is_one_line(tmp_path):
    whole = (FIXTURES / "mobilenet_v2_w025.pth").read_bytes()
    path = _write(tmp_path / "cut.pth", whole[: len(whole) // 2])
    with pytest.raises(UserError) as e:
        read_state_dict(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_a_truncated_legacy_file_is_one_line(tmp_path):
    whole = (FIXTURES / "mobilenet_v2_w025_legacy.pth").read_bytes()
    with pytest.raises(UserError, match="truncated"):
        read_state_dict(_write(tmp_path / "cut.pth", whole[:-1000]))


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        read_state_dict(_write(tmp_path / "x.pth", b"hello world, not a model"))
