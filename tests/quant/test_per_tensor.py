"""A per-tensor kernel scale as one of the adaptive scheme's options (issue 14: MobileNetV2's cheapest
plan spent more bytes on per-channel scales and zero points than on weights). The allocator takes
it only where the bytes it frees buy more than it costs; the .tflite then really stores one scale
for the kernel and its bias; parity and the file-size check hold."""

import pytest

from tests.support import random_images
from tfdefakeq.quant.horizontal import QUANT_PARAM_BYTES, layer_overhead_bits, option_cost_bits, solve_allocation


def _channels():
    # a depthwise layer (9 weights a channel) and a pointwise one, as in a MobileNetV2 block
    return {"dw": (64, 64), "pw": (64, 64), "stem": (3, 8)}


def _overhead(name, bits, split, per_tensor=False):
    if name is None:
        return 0.0
    cin, cout = _channels()[name]
    return layer_overhead_bits(cout, cin, split, per_tensor)


def test_per_tensor_saves_the_per_channel_scales_and_zero_points_exactly():
    per_channel = option_cost_bits(576, "2", overhead=_overhead("dw", 2, False))
    per_tensor = option_cost_bits(576, "2t", overhead=_overhead("dw", 2, False, per_tensor=True))
    # kernel and bias: a float32 scale and an int64 zero point each, 64 of them -> 1; the int32 biases stay
    assert per_channel - per_tensor == 8 * 2 * QUANT_PARAM_BYTES * (64 - 1)
    assert per_tensor == 576 * 2 + 8 * (2 * QUANT_PARAM_BYTES + 4 * 64 + 600)


def test_the_allocator_picks_per_tensor_only_when_it_pays():
    import itertools

    sizes = {"stem": 216, "dw": 9 * 64, "pw": 64 * 64}
    args = dict(fixed={"stem": 8}, overhead_bits=_overhead)
    total = sum(sizes.values())

    def cost(n, k):
        return option_cost_bits(sizes[n], k, overhead=_overhead(n, int(k[0]), False, per_tensor=k.endswith("t")))

    fixed_cost = cost("stem", "8")
    per_channel_floor = fixed_cost + cost("dw", "2") + cost("pw", "2")
    # one scale for the whole kernel ruins both layers: at any budget the per-channel options meet, none is taken
    ruinous = {n: {"8": 0.0, "4": 0.02, "2": 0.2, "8t": 5.0, "4t": 6.0, "2t": 9.0} for n in ("dw", "pw")}
    for budget in (per_channel_floor, fixed_cost + cost("dw", "8") + cost("pw", "8")):
        got = solve_allocation(ruinous, sizes, budget / total, **args)
        assert not any(k.endswith("t") for k in got.options.values())
    # below that floor only per-tensor scales fit
    got = solve_allocation(ruinous, sizes, (per_channel_floor - 8 * 24 * 63) / total, **args)
    assert sorted(got.options.values()) == ["2", "2t", "8"]  # one layer per tensor is enough, so only one is
    # where a per-tensor scale costs little, its bytes buy bits elsewhere: the optimum, as brute force says
    mild = {"dw": {"8": 0.0, "4": 0.01, "2": 0.2, "8t": 0.05, "4t": 0.3, "2t": 2.0},
            "pw": {"8": 0.0, "4": 0.02, "2": 0.1, "8t": 0.001, "4t": 0.03, "2t": 0.15}}
    for budget in range(per_channel_floor - 8 * 24 * 126, fixed_cost + cost("dw", "8") + cost("pw", "8"), 4000):
        got = solve_allocation(mild, sizes, budget / total, **args)
        fits = [(mild["dw"][a] + mild["pw"][b], (a, b)) for a, b in itertools.product(mild["dw"], mild["pw"])
                if fixed_cost + cost("dw", a) + cost("pw", b) <= got.budget_bits]
        assert got.loss == pytest.approx(min(fits)[0])
        assert got.spent_bits <= got.budget_bits


def _depthwise_model():
    from tfdefakeq.core.tfcompat import keras

    keras.utils.set_random_seed(7)
    L = keras.layers
    inputs = keras.Input((32, 32, 3), name="image")
    x = L.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    x = L.ReLU(name="stem_relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.ReLU(name="dw_relu")(x)
    x = L.Conv2D(128, 1, name="expand")(x)
    x = L.ReLU(name="expand_relu")(x)
    x = L.Conv2D(16, 3, strides=2, padding="same", name="wide")(x)  # 128 inputs: 24 B a channel is 8% of it
    x = L.ReLU(name="wide_relu")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(1, name="logit")(x))


def test_candidates_are_the_layers_whose_bytes_are_mostly_metadata():
    from tfdefakeq.quant.adaptive import _weighted_layers, per_tensor_candidates, smallest_budget
    from tfdefakeq.quant.fold import fold_batchnorm

    model = _depthwise_model()
    folded, default, sizes, _ = _weighted_layers(fold_batchnorm(model), 4)
    assert per_tensor_candidates(folded, ["dw", "expand", "wide", "logit"], sizes) == ["dw", "expand"]
    assert smallest_budget(model) < smallest_budget(model, per_tensor=False)


@pytest.fixture(scope="module")
def cheapest(tmp_path_factory):
    """The depthwise model planned at the smallest budget (every free layer at 2 bits, per tensor
    where offered) and converted through convert's engine: (manifest, plan, path)."""
    from tfdefakeq.core.manifest import Manifest, Preprocess
    from tfdefakeq.engine.export import convert_model
    from tfdefakeq.quant import quantize, weight_bits
    from tfdefakeq.quant.adaptive import smallest_budget

    model = _depthwise_model()
    images, _ = random_images(32, 32, seed=11)
    x = Preprocess().apply(images)
    floor = smallest_budget(model)
    qat = quantize(model, "adaptive", x, budget=floor / (1 - 0.02) + 1e-6, salient_ratio=0)
    plan = qat.quant_plan
    manifest = Manifest(backbone="test", input_shape=[32, 32, 3], format="keras", scheme="adaptive",
                        weight_bits=weight_bits(qat), per_tensor=plan.per_tensor)
    path = tmp_path_factory.mktemp("per_tensor") / "floor.tflite"
    written = convert_model(qat, manifest, "int4", images, path, plan=plan)
    return written, plan, path


def test_the_floor_plan_is_per_tensor_where_offered_and_the_file_stores_it(cheapest):
    from tfdefakeq.runtime.modelinfo import schema_module

    manifest, plan, path = cheapest
    assert plan.per_tensor == ["dw", "expand"] and manifest.per_tensor == ["dw", "expand"]
    assert {n: plan.weight_bits[n] for n in ("dw", "expand", "wide")} == {"dw": 2, "expand": 2, "wide": 2}
    schema = schema_module()
    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    graph = model.subgraphs[0]
    scales = {}
    for op in graph.operators:
        kernel, bias = graph.tensors[op.inputs[1]], graph.tensors[op.inputs[2]] if len(op.inputs) > 2 else None
        if bias is None or model.buffers[kernel.buffer].data is None:
            continue
        # the file names tensors by index; the converter's names are in the manifest
        name = manifest.tensor_names[op.inputs[1]]
        layer = next(n for n in ("stem", "dw", "expand", "wide", "logit") if f"quant_{n}/" in name)
        scales[layer] = (len(kernel.quantization.scale), len(kernel.quantization.zeroPoint),
                         len(bias.quantization.scale), len(bias.quantization.zeroPoint), kernel.type)
    int2 = schema.TensorType.INT2
    assert scales["dw"] == (1, 1, 1, 1, int2) and scales["expand"] == (1, 1, 1, 1, int2)
    assert scales["wide"] == (16, 16, 16, 16, int2) and scales["stem"][:4] == (8, 8, 8, 8)


def test_the_floor_plan_passes_parity_and_holds_its_budget(cheapest):
    manifest, plan, path = cheapest
    assert manifest.metrics["parity"]["agrees"]
    assert path.stat().st_size <= plan.budget["budget_bytes"]
    # the estimate errs on the safe side: it is made for a trained model's nonzero biases (within 1%:
    # tests/quant/test_size_estimate.py), and this untrained one's zero biases take fewer bytes
    assert plan.budget["planned_bytes"] >= path.stat().st_size


def test_a_saved_plan_rebuilds_its_per_tensor_quantizers(cheapest, tmp_path):
    from tfdefakeq.quant import quantize
    from tfdefakeq.quant.horizontal import QuantPlan
    from tfdefakeq.quant.quantizers import LSQWeightQuantizer

    _, plan, _ = cheapest
    plan.save(tmp_path / "plan.json")
    again = QuantPlan.load(tmp_path / "plan.json")
    assert again.per_tensor == plan.per_tensor
    qat = quantize(_depthwise_model(), "adaptive", None, bit_plan=again.weight_bits, per_tensor=again.per_tensor,
                   salient_ratio=0)
    per_axis = {w.layer.name: q.per_axis for w in qat.layers if hasattr(w, "_weight_vars")
                for _, q, _ in w._weight_vars if isinstance(q, LSQWeightQuantizer)}
    assert per_axis == {"stem": True, "dw": False, "expand": False, "wide": True, "logit": False}


def test_a_plan_file_with_unknown_per_tensor_layers_is_refused(tmp_path):
    import json

    from tfdefakeq.core.errors import UserError
    from tfdefakeq.quant.horizontal import QuantPlan

    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"weight_bits": {"a": 4}, "per_tensor": ["b"]}))
    with pytest.raises(UserError, match="plan.json: 'per_tensor' must list layers of 'weight_bits'"):
        QuantPlan.load(path)
