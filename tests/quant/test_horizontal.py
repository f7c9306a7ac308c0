"""Horizontal direction: sensitivity per layer and the bit allocator under a storage budget."""

import numpy as np
import pytest

from tfdefakeq.core.errors import UserError
from tfdefakeq.quant.horizontal import QuantPlan, allocate_bits, average_bits, layer_sensitivity, parse_option, quantize_kernel


def _sens(**layers):
    return {name: {8: 0.0, 4: s4, 3: s3, 2: s2} for name, (s4, s3, s2) in layers.items()}


def _bits(options):
    return {name: parse_option(key)[0] for name, key in options.items()}


def test_allocator_meets_the_budget_and_spends_bits_where_they_matter():
    # "fragile" suffers at low bits, "robust" barely; same size: the budget goes to "fragile"
    sens = _sens(fragile=(1.0, 5.0, 50.0), robust=(0.01, 0.02, 0.05))
    sizes = {"stem": 100, "fragile": 1000, "robust": 1000, "head": 100}
    plan = _bits(allocate_bits(sens, sizes, budget_bits=3.5, fixed={"stem": 8, "head": 8}))
    assert plan["stem"] == plan["head"] == 8
    assert plan["fragile"] > plan["robust"]
    assert average_bits(plan, sizes) <= 3.5 + 1e-9
    # 3-bit weights cost INT4 storage, so with 4 available at the same price 3 is never chosen
    assert 3 not in plan.values()


def test_allocator_uses_a_generous_budget():
    sens = _sens(a=(0.1, 0.5, 2.0), b=(0.2, 1.0, 4.0))
    sizes = {"a": 500, "b": 500}
    assert allocate_bits(sens, sizes, budget_bits=8.0) == {"a": "8", "b": "8"}


def test_impossible_budget_is_a_user_error():
    sens = _sens(a=(0.1, 0.5, 2.0))
    with pytest.raises(UserError, match="impossible: the cheapest plan needs"):
        allocate_bits(sens, {"a": 100, "stem": 100}, budget_bits=2.5, fixed={"stem": 8})


def test_split_competes_for_the_same_budget():
    # splitting a quarter of "a" to 8 bits costs 2 + 0.25 * 6 = 3.5 bits: it wins over 2 bits plain
    # when it removes most of the damage, and it is never bought beyond the budget
    sens = {"a": {"8": 0.0, "4": 0.1, "2": 2.0, "4s": 0.05, "2s": 0.2}}
    assert allocate_bits(sens, {"a": 100}, budget_bits=3.6, salient_fraction={"a": 0.25}) == {"a": "2s"}
    assert allocate_bits(sens, {"a": 100}, budget_bits=3.4, salient_fraction={"a": 0.25}) == {"a": "2"}
    assert allocate_bits(sens, {"a": 100}, budget_bits=5.0, salient_fraction={"a": 0.25}) == {"a": "4s"}
    # file overhead counts against the budget too
    assert allocate_bits(sens, {"a": 100}, budget_bits=4.0, salient_fraction={"a": 0.25},
                         overhead_bits=lambda n, b, s: 100.0) == {"a": "2"}


def test_sensitivity_finds_the_layer_that_carries_the_signal():
    from tfdefakeq.core.tfcompat import keras

    rng = np.random.default_rng(0)
    inputs = keras.Input((8, 8, 3))
    wide = keras.layers.Conv2D(4, 3, name="wide")(inputs)
    narrow = keras.layers.Conv2D(4, 3, name="narrow")(inputs)
    x = keras.layers.Concatenate()([wide, narrow])
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1, name="head")(x)
    model = keras.Model(inputs, out)
    head = np.zeros((8, 1), np.float32)
    head[:4] = 10.0  # only "wide" reaches the logit
    model.get_layer("head").set_weights([head, np.zeros(1, np.float32)])
    kernel, bias = model.get_layer("wide").get_weights()
    kernel[:, :, 0, :] *= 10  # input channel 0 dominates "wide": its rounding error is most of the damage
    model.get_layer("wide").set_weights([kernel, bias])
    images = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)
    scores = layer_sensitivity(model, ["wide", "narrow"], images, salient={"wide": [0]})
    assert scores["narrow"]["2"] == pytest.approx(0.0, abs=1e-10)
    assert scores["wide"]["2"] > scores["wide"]["4"] > scores["wide"]["8"] >= 0
    assert scores["wide"]["2s"] < scores["wide"]["2"]  # one input channel back at 8 bits helps
    assert "2s" not in scores["narrow"]
    kernel = model.get_layer("wide").get_weights()[0]
    assert len(np.unique(quantize_kernel(kernel, 2)[..., 0])) <= 4


def test_plan_file_round_trip_and_bad_bits(tmp_path):
    plan = QuantPlan(weight_bits={"a": 4, "b": 2}, salient_channels={"a": [0, 3]}, budget={"avg_bits": 3.0})
    path = plan.save(tmp_path / "plan.json")
    assert QuantPlan.load(path) == plan
    path.write_text('{"weight_bits": {"a": 5}}')
    with pytest.raises(UserError, match=r"plan.json: unsupported bits \{'a': 5\}"):
        QuantPlan.load(path)
    path.write_text('[1, 2]')
    with pytest.raises(UserError, match="not a bit plan"):
        QuantPlan.load(path)
