"""The adaptive bidirectional scheme end to end: plan -> QAT with distillation -> .tflite whose
bits are the plan's, through `python -m tfdefakeq.convert --scheme adaptive`."""

import pytest

from tests.conftest import build_once
from tests.test_cli_errors import run


@pytest.fixture(scope="module")
def adaptive_avg3(tmp_path_factory, tiny_float_model, easy_synthetic_root):
    """(tflite path, float32 size) of the tiny float detector quantized at 3 average bits."""
    from tfdefakeq import convert

    def build(out):
        assert convert.main(convert.parse_args([str(tiny_float_model), "--data", str(easy_synthetic_root), "--out",
                                                str(out / "avg3.tflite"), "--scheme", "adaptive", "--avg-bits", "3",
                                                "--epochs", "1", "--batch-size", "8", "--calib-images", "32"])) == 0
        assert convert.main(convert.parse_args([str(tiny_float_model), "--data", str(easy_synthetic_root), "--out",
                                                str(out / "fp32.tflite"), "--calib-images", "8"])) == 0

    out = build_once(tmp_path_factory, "adaptive_avg3", build)
    return out / "avg3.tflite", (out / "fp32.tflite").stat().st_size


def test_the_file_holds_the_plan(adaptive_avg3):
    from tfdefakeq.core.manifest import Manifest, manifest_path
    from tfdefakeq.quant.horizontal import QuantPlan
    from tfdefakeq.runtime.modelinfo import read_model_info

    path, fp32_size = adaptive_avg3
    manifest = Manifest.load(manifest_path(path))
    plan = QuantPlan.load(path.with_name("avg3.qat") / "bit_plan.json")
    assert manifest.scheme == "adaptive" and manifest.format == "int4"
    assert manifest.metrics["parity"]["agrees"]
    # the budget bought a mix: first conv and classifier at 8 bits, some 2-bit layers (INT2 in the
    # file), and the bits in the manifest are the plan's
    bits = {n: b for n, b in manifest.weight_bits.items() if not n.endswith("_salient")}
    assert bits == plan.weight_bits and bits["conv1_conv"] == 8 and bits["predictions"] == 8
    assert 2 in bits.values()
    info = read_model_info(path)
    assert info.tensor_types["INT2"] == sum(b == 2 for b in bits.values())
    assert manifest.salient_channels == plan.salient_channels
    for name, channels in plan.salient_channels.items():
        assert manifest.weight_bits[name + "_salient"] == 8 and channels == sorted(set(channels))
    # whole file at ~3 bits per weight: ~32/3 smaller than float32; the plan's estimate of the file
    # (graph bytes measured, weights, scales and biases priced) within 1% of the trained file (issue 13)
    assert fp32_size / path.stat().st_size > 32 / 3 * 0.93
    assert plan.budget["file_bits_avg"] <= 3.0
    assert abs(plan.budget["planned_bytes"] - path.stat().st_size) <= 0.01 * path.stat().st_size


def test_plan_is_reused_without_measuring(adaptive_avg3, tiny_float_model, easy_synthetic_root):
    """The saved QAT detector rebuilds from its manifest alone (no calibration data) into the network
    the .tflite was made from; a saved plan applies to the float model without measuring again."""
    from tfdefakeq.engine.export import check_parity
    from tfdefakeq.data.folders import balanced_subset, scan_forensynths
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.quant import quantize, weight_bits
    from tfdefakeq.quant.horizontal import QuantPlan
    from tfdefakeq.runtime.images import load_images

    path, _ = adaptive_avg3
    qat, manifest = load_detector(path.with_name("avg3.qat") / "model.weights.h5")
    images = load_images([s.path for s in balanced_subset(scan_forensynths(easy_synthetic_root, "val"), 16)], (32, 32))
    assert check_parity(qat, path, images, manifest.preprocess)["agrees"]
    plan = QuantPlan.load(path.with_name("avg3.qat") / "bit_plan.json")
    float_model, _ = load_detector(tiny_float_model)
    again = quantize(float_model, "adaptive", None, bit_plan=plan.weight_bits, salient_channels=plan.salient_channels)
    assert weight_bits(again) == manifest.weight_bits


def test_impossible_budget_is_one_line(tmp_path, tiny_float_model, easy_synthetic_root):
    code, errors = run("tfdefakeq.train", "--data", str(easy_synthetic_root), "--out", str(tmp_path / "run"),
                       "--init", str(tiny_float_model), "--input-size", "32", "--scheme", "adaptive", "--avg-bits", "1.5",
                       "--calib-images", "16", "--epochs", "1")
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.quant.adaptive import smallest_budget

    assert code == 2 and len(errors) == 1
    floor = smallest_budget(load_detector(tiny_float_model)[0])
    assert 1.5 < floor < 3
    assert "bit budget 1.5 (1.47 after the 2% reserve for the size estimate) average bits is impossible: " \
           f"the cheapest plan needs {floor:.3f}" in errors[0]
    assert not (tmp_path / "run" / "model.weights.h5").exists()


def test_budget_needs_the_adaptive_scheme(tmp_path, tiny_float_model, easy_synthetic_root):
    code, errors = run("tfdefakeq.train", "--data", str(easy_synthetic_root), "--out", str(tmp_path / "run"),
                       "--init", str(tiny_float_model), "--input-size", "32", "--scheme", "w4a8", "--avg-bits", "3")
    assert code == 2 and errors == ["tfdefakeq train: error: --avg-bits needs --scheme adaptive"]


def test_without_a_budget_the_bits_of_a_uniform_w4_file_are_redistributed(tiny_float_model, easy_synthetic_root):
    """`--scheme adaptive` alone spends what the uniform 4-bit file would hold, no more, and spends it
    unevenly: the allocator moves bits between layers instead of keeping every layer at 4."""
    from tfdefakeq.data.folders import balanced_subset, scan_forensynths
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.quant.adaptive import plan_adaptive
    from tfdefakeq.quant.fold import fold_batchnorm
    from tfdefakeq.quant.schemes import plan_weight_bits
    from tfdefakeq.runtime.images import load_images

    model, manifest = load_detector(tiny_float_model)
    images = load_images([s.path for s in balanced_subset(scan_forensynths(easy_synthetic_root, "val"), 32)], (32, 32))
    calib = manifest.preprocess.apply(images)
    default = plan_adaptive(model, calib)
    uniform = plan_adaptive(model, None, salient_ratio=0, bit_plan=plan_weight_bits(fold_batchnorm(model), 4),
                            measure_graph=True)
    assert set(uniform.weight_bits.values()) == {4, 8}
    assert default.budget["avg_bits"] == pytest.approx(uniform.budget["file_bits_avg"], abs=1e-3)
    assert default.budget["file_bits_avg"] <= uniform.budget["file_bits_avg"] + 1e-9
    assert default.weight_bits != uniform.weight_bits
    assert default.sensitivity  # measured, not assumed


def test_depthwise_channels_and_byte_budgets_are_priced_as_the_file_holds_them():
    """A depthwise kernel (kh, kw, C, M) stores C * M per-channel scales, zero points and biases; a
    byte budget keeps the estimate's error in reserve."""
    from tfdefakeq.quant.adaptive import BYTES_RESERVE, budget_bits, plan_adaptive
    from tfdefakeq.core.tfcompat import keras

    L = keras.layers
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, name="stem")(inputs)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = L.Conv2D(32, 1, name="pw")(x)
    outputs = L.Dense(1, name="head")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    plan = plan_adaptive(model, None, bit_plan={"stem": 8, "dw": 8, "pw": 4, "head": 8}, salient_ratio=0)
    assert plan.layers["dw"] == {"weights": 3 * 3 * 8 * 2, "cin": 8, "cout": 16}
    assert plan.layers["pw"] == {"weights": 16 * 32, "cin": 16, "cout": 32}
    sizes = {"a": 1000}
    assert budget_bits({"bytes": 500}, sizes) == pytest.approx(4.0 * (1 - BYTES_RESERVE))
    assert budget_bits(3.0, sizes) == pytest.approx(3.0 * (1 - BYTES_RESERVE))  # both are hard limits
    assert budget_bits(3.0, sizes, reserve=0.0) == 3.0


def test_plan_records_its_budget_prices_the_containers_and_draws_the_frontier(tmp_path):
    """The plan is priced for the containers that will be written (INT2, or INT4 under --no-int2),
    records the byte limit the file must hold and the exact and greedy allocators' summed
    sensitivities, and writes the frontier, on whose staircase the chosen plan lies."""
    import csv

    import numpy as np

    from tfdefakeq.quant.adaptive import plan_adaptive, smallest_budget
    from tfdefakeq.core.tfcompat import keras

    L = keras.layers
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, name="stem", activation="relu")(inputs)
    x = L.Conv2D(64, 3, name="c1", activation="relu")(x)
    x = L.Conv2D(64, 3, name="c2", activation="relu")(x)
    x = L.Conv2D(128, 1, name="c3")(x)
    outputs = L.Dense(1, name="head")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).normal(size=(8, 12, 12, 3)).astype(np.float32)
    # the allocator and its record are tested here, not the size estimate (tests/quant/test_size_estimate.py):
    # this toy's fused ReLUs have no QAT model to convert, so the graph bytes are the fixed guesses
    fixed = dict(measure_graph=False)
    floor, floor_no_int2 = smallest_budget(model, **fixed), smallest_budget(model, int2=False, **fixed)
    assert floor < floor_no_int2
    with pytest.raises(Exception, match=f"cheapest plan needs {floor_no_int2:.3f}.*INT4 containers"):
        plan_adaptive(model, images, budget=(floor + floor_no_int2) / 2, int2=False, salient_ratio=0, **fixed)

    budget = (floor + floor_no_int2) / 2
    plan = plan_adaptive(model, images, budget=budget, frontier_path=tmp_path / "front.csv", **fixed)
    record = plan.budget
    assert record["int2"] is True and record["allocator"] == "exact"
    assert record["budget_bytes"] == int(budget * record["total_weights"] + 1e-6) // 8
    assert record["planned_bytes"] <= record["budget_bytes"] + 1  # both whole bytes of whole-bit figures
    assert record["sensitivity_sum"] == record["exact_sensitivity_sum"] <= record["greedy_sensitivity_sum"]
    rows = list(csv.DictReader((tmp_path / "front.csv").open()))
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"
    best = [r for r in rows if int(r["file_bytes"]) <= record["planned_bytes"]][-1]
    assert float(best["predicted_loss"]) == record["sensitivity_sum"]

    limit = int(floor_no_int2 * record["total_weights"] / 8 / 0.98) + 100  # feasible in INT4 containers
    bytes_plan = plan_adaptive(model, images, budget={"bytes": limit}, int2=False, **fixed)
    assert bytes_plan.budget["int2"] is False and bytes_plan.budget["budget_bytes"] == bytes_plan.budget["bytes"] == limit
    assert bytes_plan.budget["planned_bytes"] <= limit


def test_frontier_flag_reaches_the_plan(tmp_path):
    from tfdefakeq import train
    from tfdefakeq.core.errors import UserError
    from tfdefakeq.engine.training import adaptive_options

    base = ["--data", "d", "--out", str(tmp_path), "--init", "m.weights.h5"]
    args = train.parse_args(base + ["--scheme", "adaptive", "--avg-bits", "3", "--frontier", str(tmp_path / "f.csv")])
    options = adaptive_options(args, tmp_path)
    assert options["frontier_path"] == str(tmp_path / "f.csv") and options["int2"] is True and options["budget"] == 3.0
    with pytest.raises(UserError, match="--frontier needs --scheme adaptive"):
        adaptive_options(train.parse_args(base + ["--scheme", "w4a8", "--frontier", "f.csv"]), tmp_path)
    with pytest.raises(UserError, match="--no-int2 needs --scheme adaptive"):
        adaptive_options(train.parse_args(base + ["--scheme", "w4a8", "--no-int2"]), tmp_path)
    assert adaptive_options(train.parse_args(base + ["--scheme", "adaptive", "--no-int2"]), tmp_path)["int2"] is False
    with pytest.raises(UserError, match="--frontier needs a measured plan"):
        adaptive_options(train.parse_args(base + ["--scheme", "adaptive", "--bit-plan", "p.json", "--frontier", "f.csv"]),
                         tmp_path)


def test_a_resumed_run_keeps_its_saved_plan_and_a_given_plan_gets_channels_picked(tmp_path):
    """--salient-ratio picks channels for a --bit-plan without a split; a resumed run reuses its own
    saved plan as it is, even one whose allocator took no split (picking then would build another
    model than the one checkpointed)."""
    from tfdefakeq import train
    from tfdefakeq.engine.training import adaptive_options
    from tfdefakeq.quant.horizontal import QuantPlan

    QuantPlan(weight_bits={"conv": 2}).save(tmp_path / "bit_plan.json")
    base = ["--data", "d", "--out", str(tmp_path), "--init", "m.weights.h5", "--scheme", "adaptive", "--salient-ratio", "0.05"]
    resumed = adaptive_options(train.parse_args(base + ["--avg-bits", "3", "--resume"]), tmp_path)
    assert resumed["bit_plan"] == {"conv": 2} and resumed["salient_channels"] == {}
    given = adaptive_options(train.parse_args(base + ["--bit-plan", str(tmp_path / "bit_plan.json")]), tmp_path)
    assert given["bit_plan"] == {"conv": 2} and given["salient_channels"] is None and given["salient_ratio"] == 0.05
