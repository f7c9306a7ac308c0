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
