"""What benchmarks write into their reports follows from what they measured (issue 15, item 10)."""

import importlib.util
from pathlib import Path


from tfdefakeq.core.machineload import LoadSampler, load_sentence

ROOT = Path(__file__).resolve().parents[1]


def _script(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_under_test", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entry(identical=True, xnn=0, int8=None):
    e = {"outputs_identical_builtin": identical, "all_tensors_identical_builtin": identical,
         "xnnpack_unpacked_vs_packed_max_lsb": xnn, "unpacked_xnnpack_vs_builtin_max_lsb": xnn}
    if int8 is not None:
        e["int8_xnnpack_vs_builtin_max_lsb"] = int8
    return e


def test_runtime_prose_states_the_measured_lsb_not_a_fixed_claim():
    prose = " ".join(_script("benchmarks/runtime.py").parity_prose(
        {"resnet18": _entry(xnn=14, int8=17), "mobilenet_v2": _entry(xnn=0, int8=0)}))
    assert "every tensor was bit-identical (resnet18, mobilenet_v2)" in prose
    assert "differ by up to 14 LSB (resnet18 14, mobilenet_v2 0)" in prose and "up to 17 LSB" in prose
    assert "outputs were bit-identical too" not in prose and "Untrained weights" not in prose
    prose = " ".join(_script("benchmarks/runtime.py").parity_prose({"m": _entry(xnn=0)}))
    assert "With XNNPACK on, outputs were bit-identical too" in prose
    prose = " ".join(_script("benchmarks/runtime.py").parity_prose({"m": _entry(identical=False, xnn=3)}))
    assert "DIFFER (m)" in prose and "not from unpacking" not in prose


def test_load_is_stated_as_measured():
    assert load_sentence([1.0, 3.5, 2.0], 2, 10) == (
        "1-minute load average sampled 3 times (every 10 s): min 1.00, median 2.00, max 3.50; above the 2 CPUs "
        "for part of the run: other work competed, absolute times are inflated, same-run ratios are what to read")
    assert load_sentence([0.5, 1.0], 2, 10).endswith("median 0.75, max 1.00; within the 2 CPUs throughout")
    sampler = LoadSampler(every_s=0.01).start()
    sampler.stop()
    assert len(sampler.samples) >= 2 and "sampled" in sampler.sentence()
    for path in ("benchmarks/runtime.py", "benchmarks/quant_methods.py"):
        assert "shared with other" not in (ROOT / path).read_text()


def test_backbones_header_counts_the_calibration_images_it_used():
    backbones = _script("benchmarks/backbones.py")
    assert backbones.calib_phrase([{"calib_images": 32}, {"calib_images": 32}]) == "32 synthetic images"
    assert backbones.calib_phrase([{"calib_images": 8}, {"calib_images": ""}]) == \
        "8 synthetic images; 1 older row(s) without a recorded count"
    assert "16 synthetic images" not in (ROOT / "benchmarks" / "backbones.py").read_text()


def test_backbones_speed_columns_are_computed_from_the_row():
    backbones = _script("benchmarks/backbones.py")
    row = {"macs": 300_000_000, "latency_fp32_ms": 4.0, "latency_int8_ms": 2.5}
    assert backbones.speed_columns(row) == {"int8_over_fp32": 0.625, "gmacs_per_s_fp32": 75.0, "gmacs_per_s_int8": 120.0}
    assert backbones.speed_columns({"macs": 300_000_000, "latency_fp32_ms": 4.0}) == {"gmacs_per_s_fp32": 75.0}
    assert {"int8_over_fp32", "gmacs_per_s_fp32", "gmacs_per_s_int8"} <= set(backbones.COLUMNS)


def test_backbones_closing_note_names_what_holds_each_miss_back():
    backbones = _script("benchmarks/backbones.py")
    rows = [{"backbone": "resnet18", "int8_over_fp32": 0.33},
            {"backbone": "mobilenet_v3_small", "int8_over_fp32": 0.61, "int8_not_delegated": "",
             "int8_held_back_by": "MUL x56 int8 0.406 ms vs fp32 0.038 ms"},
            {"backbone": "mesoinception4", "int8_over_fp32": 1.9, "int8_not_delegated": "SPACE_TO_BATCH_ND x4",
             "int8_held_back_by": "SPACE_TO_BATCH_ND x4 int8 1.000 ms vs fp32 0.000 ms (4 not delegated)"},
            {"backbone": "broken", "int8_over_fp32": "", "error": "int8: failed"}]
    note = backbones.closing_note(rows).splitlines()
    assert note[0] == ("int8 p50 <= 0.5 x float32 p50 (side by side, 1 thread, XNNPACK): 1 of 3 backbones"
                       " (resnet18 0.33).")
    assert note[1].startswith("- mesoinception4: 1.90, held back by SPACE_TO_BATCH_ND x4") and "not delegated: SPACE" in note[1]
    assert note[2] == "- mobilenet_v3_small: 0.61, held back by MUL x56 int8 0.406 ms vs fp32 0.038 ms."
    assert backbones.commits([{"commit": "abc"}, {"commit": ""}, {"commit": "abc"}], "def") == "abc"
    assert backbones.commits([{}], "def") == "def"


def test_mnv2_floor_prose_reports_the_measured_bytes_and_parity():
    import pandas as pd

    base = {"alpha": 0.35, "input_px": 32, "weights": 1000, "layers": 5, "weight_values": 300, "weight_scales": 40,
            "weight_zero_points": 80, "bias_scales": 40, "bias_zero_points": 80, "estimated_bits_per_weight": 7.0}
    rows = [dict(base, scales="per_channel", per_tensor_layers=0, file_bytes=800, file_bits_per_weight=6.4, parity_agrees=True),
            dict(base, scales="per_tensor", per_tensor_layers=3, file_bytes=400, file_bits_per_weight=3.2, parity_agrees=False,
                 weight_scales=4, weight_zero_points=8, bias_scales=4, bias_zero_points=8, estimated_bits_per_weight=3.5)]
    (line,) = _script("benchmarks/mnv2_floor.py").prose(pd.DataFrame(rows))
    assert "800 bytes (6.400 bits per weight)" in line and "take 240 (30.0%) against 300 of weight values" in line
    assert "the 3 of 5 layers offered it, 400 bytes (3.200 bits per weight; scales and zero points 24), 2.00x smaller" in line
    assert "parity: per-channel passed, per-tensor FAILED" in line and "7.000 / 3.500" in line


def test_qat_step_time_prose_says_whether_the_target_was_met():
    import pandas as pd

    def rows(adaptive, lo, hi):
        out = [("float", 1.0, 1.0, 1.0), ("lsq_w4a8", 1.1, 1.0, 1.2), ("adaptive_no_kd", 1.2, 1.1, 1.3),
               ("adaptive_no_kd_tf_gather", 1.5, 1.4, 1.6), ("adaptive", adaptive, lo, hi), ("teacher_forward", 0.2, 0.1, 0.3)]
        return pd.DataFrame([{"backbone": "r", "input_px": 64, "variant": v, "ratio_to_float": r, "ratio_min": a,
                              "ratio_max": b} for v, r, a, b in out])

    module = _script("benchmarks/qat_step_time.py")
    (line,) = module.prose(rows(1.4, 1.3, 1.45))
    assert "took 1.40x the float step (rounds 1.30-1.45x), which meets the 1.5x target" in line
    assert "LSQ QAT itself 0.10, the salient split and the adaptive plan 0.10, distillation 0.20" in line
    assert "by tf.gather, as before, the step without distillation took 1.50x float against 1.20x" in line
    assert "does not meet" in module.prose(rows(1.8, 1.6, 2.0))[0]
    assert "straddles" in module.prose(rows(1.5, 1.2, 1.9))[0]
    assert "no split conv" not in line  # tables from before the variant existed
    split = rows(1.8, 1.6, 2.0).assign(split_convs=[0, 0, 20, 20, 20, 0])
    split.loc[len(split)] = {"backbone": "r", "input_px": 64, "variant": "adaptive_no_split", "ratio_to_float": 1.3,
                             "ratio_min": 1.2, "ratio_max": 1.4, "split_convs": 0}
    (line,) = module.prose(split)
    assert "With the same plan and no split conv, the adaptive step took 1.30x float (rounds 1.20-1.40x), which meets " \
           "the target; splitting all 20 low-bit convs added 0.50 float steps, 0.025 per split conv." in line


def test_backbones_closing_note_names_the_backbones_not_measured():
    backbones = _script("benchmarks/backbones.py")
    rows = [{"backbone": "resnet18", "int8_over_fp32": 0.3}, {"backbone": "meso4", "int8_over_fp32": 0.6}]
    note = backbones.closing_note(rows, ["meso4", "resnet18", "resnet50", "xception"])
    assert note.endswith("Not measured in this run (2 of 4 requested): resnet50, xception.")
    assert "1 of 2 backbones (resnet18 0.30)" in note
    assert "Not measured" not in backbones.closing_note(rows, ["meso4", "resnet18"])
    assert "Not measured in this run (1 of 1 requested): xception." in backbones.closing_note([], ["xception"])


def test_mnv3_int8_floor_prose_bounds_the_ratio_by_the_graph_without_hard_swish_and_se():
    import pandas as pd

    def row(graph, fp32, int8, muls=0):
        return {"backbone": "mobilenet_v3_small", "graph": graph, "latency_fp32_ms": fp32, "latency_int8_ms": int8,
                "int8_over_fp32": int8 / fp32, "ratio_min": int8 / fp32 - 0.01, "ratio_max": int8 / fp32 + 0.01,
                "int8_mul": muls}

    module = _script("benchmarks/mnv3_int8_floor.py")
    models = pd.DataFrame([row("full", 2.0, 1.2, 56), row("hswish_as_relu", 2.0, 1.1), row("no_se", 2.0, 1.15),
                           row("core", 2.0, 1.16)])
    depthwise = pd.DataFrame([
        {"output": "112x112x64", "latency_int8_per_channel_ms": 1.2, "latency_int8_per_tensor_ms": 1.2,
         "per_channel_over_fp32": 1.2, "per_tensor_over_fp32": 1.2},
        {"output": "14x14x240", "latency_int8_per_channel_ms": 0.8, "latency_int8_per_tensor_ms": 0.76,
         "per_channel_over_fp32": 0.8, "per_tensor_over_fp32": 0.76}])
    first, second = module.prose(models, depthwise)
    assert "int8/float32 0.600 for the model (0.590-0.610; 1.200 vs 2.000 ms, 56 int8 MULs)" in first
    assert "without both 0.580" in first and "in every repeat (0.570-0.590 over the repeats)" in first
    assert "no formulation of hard-swish or SE can bring the model under it" in first
    assert "0.80-1.20x the float32 time" in second and "more than 5% slower than float32 at 112x112x64;" in second
    assert "at most 5.0%" in second
    core = models["graph"] == "core"
    models.loc[core, ["ratio_min", "ratio_max"]] = 0.45, 0.49
    assert "could at best bring the model there" in module.prose(models, depthwise.iloc[:0])[0]
    models.loc[core, ["ratio_min", "ratio_max"]] = 0.49, 0.51
    (line,) = module.prose(models, depthwise.iloc[:0])
    assert "on the target 0.5 within the spread of the repeats (0.490-0.510 over the repeats)" in line


def test_quant_methods_names_the_rows_that_failed():
    import pandas as pd

    done = pd.DataFrame([{"backbone": "resnet50", "method": "mct_mixed_13x", "seed": 0, "error": "RuntimeError: MCT failed"},
                         {"backbone": "resnet50", "method": "adaptive_fp32_16x", "seed": 1, "error": "UserError: impossible"},
                         {"backbone": "resnet50", "method": "adaptive_fp32_16x", "seed": 0, "error": "UserError: impossible"},
                         {"backbone": "resnet50", "method": "float", "seed": 0, "error": None}])
    lines = _script("benchmarks/quant_methods.py").failure_sentences(done)
    assert lines == ["resnet50 mct_mixed_13x (seed 0): RuntimeError: MCT failed.",
                     "resnet50 adaptive_fp32_16x (seed 0, 1): UserError: impossible."]
