"""Torch state dicts into our Keras twins: the float logits within 1e-4 (relative) of torch's.

The weights are regenerated with numpy (tests/torchport/weights_gen.py) from the names and shapes
stored with torch's outputs (tests/fixtures/make_torch_fixtures.py made them; torch is not needed
here). The small MobileNetV2 goes through our checkpoint writer and reader as well.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.torchport.fixtures import load_fixture, torch_fake_logit
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import Preprocess

FIXTURE_NAMES = ["resnet18", "resnet34", "resnet50", "mobilenet_v2_w025", "xception", "efficientnet_b0",
                 "efficientnet_b4_dfb"]


def _keras_logit(model, images):
    return model.predict(Preprocess().apply(images), verbose=0)[:, 0]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_ported_twin_matches_torch(name):
    from tfdefakeq.torchport.mapping import max_relative_diff, port_state_dict

    f = load_fixture(name)
    model, kwargs = port_state_dict(f["state"], f["backbone"], f["size"])
    ours, torch_logit = _keras_logit(model, f["images"]), torch_fake_logit(f["logits"])
    assert max_relative_diff(ours, torch_logit) < 1e-4, (name, ours, torch_logit)
    assert np.ptp(torch_logit) > 1e-3 * np.max(np.abs(torch_logit))  # the logits depend on the input
    assert model.get_layer("torch_normalize") is not None and kwargs["torch_layout"]


def test_through_our_writer_and_reader(tmp_path):
    from tfdefakeq.torchport.checkpoint import read_state_dict, state_dict_bytes
    from tfdefakeq.torchport.mapping import max_relative_diff, port_state_dict

    f = load_fixture("mobilenet_v2_w025")
    path = tmp_path / "m.pth"
    path.write_bytes(state_dict_bytes({"module." + k: v for k, v in f["state"].items()}, wrap="model"))
    model, kwargs = port_state_dict(read_state_dict(path), "mobilenet_v2", f["size"])
    assert kwargs["alpha"] == 0.25
    assert max_relative_diff(_keras_logit(model, f["images"]), torch_fake_logit(f["logits"])) < 1e-4


def test_fake_class_zero_flips_the_logit():
    from tfdefakeq.torchport.mapping import port_state_dict

    f = load_fixture("mobilenet_v2_w025")
    model, _ = port_state_dict(f["state"], "mobilenet_v2", f["size"], fake_class=0)
    np.testing.assert_allclose(_keras_logit(model, f["images"]), torch_fake_logit(f["logits"], fake_class=0),
                               rtol=1e-4, atol=1e-5)


def test_head_rules():
    from tfdefakeq.torchport.mapping import head_weights

    w, b = np.arange(6, dtype=np.float32).reshape(3, 2), np.zeros(3, np.float32)
    with pytest.raises(UserError, match="3-logit head"):
        head_weights(w, b, None, "x.pth")
    with pytest.raises(UserError, match="--fake-class 2"):
        head_weights(w[:2], b[:2], 2, "x.pth")
    kernel, bias = head_weights(w[:1], b[:1], 0, "x.pth")
    np.testing.assert_array_equal(kernel[:, 0], -w[0])


def test_another_architecture_is_one_line():
    from tfdefakeq.torchport.mapping import port_state_dict

    state = load_fixture("resnet18")["state"]
    with pytest.raises(UserError) as e:
        port_state_dict(state, "resnet34", 64, path="r18.pth")
    message = str(e.value)
    assert "\n" not in message and message.startswith("r18.pth: does not fit resnet34")
    assert "missing (layer1.2.conv1.weight [64, 64, 3, 3]" in message and "80 missing" in message


def test_shape_mismatch_is_one_line():
    from tfdefakeq.torchport.mapping import port_state_dict

    state = dict(load_fixture("resnet18")["state"])
    state["layer1.0.conv1.weight"] = np.zeros((64, 64, 5, 5), np.float32)
    with pytest.raises(UserError, match=r"1 with other shapes \(layer1.0.conv1.weight file \[64, 64, 5, 5\] vs model \[64, 64, 3, 3\]\)"):
        port_state_dict(state, "resnet18", 64, path="r18.pth")
