"""ci/rpi_emulated.sh: the shell parses, and its Python half (raw outputs per configuration) runs on x86."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support import random_images

ROOT = Path(__file__).resolve().parents[1]


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "ci" / "rpi_emulated.sh")]).returncode == 0


def test_outputs_script_writes_every_configuration(tmp_path):
    images, _ = random_images(3, 64, seed=1)
    np.savez(tmp_path / "inputs.npz", **{"64": images})
    models = [ROOT / "tflite_models" / f"resnet18_64_{name}.tflite" for name in ("int8", "int4", "adaptive-avg2.5")]
    proc = subprocess.run([sys.executable, str(ROOT / "ci" / "rpi_outputs.py"), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "out.npz"), *map(str, models)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = np.load(tmp_path / "out.npz")
    assert sorted(out.files) == sorted([
        "resnet18_64_int8|no-int4|xnnpack", "resnet18_64_int8|no-int4|builtin",
        "resnet18_64_int4|unpacked|xnnpack", "resnet18_64_int4|unpacked|builtin",
        "resnet18_64_int4|packed|xnnpack", "resnet18_64_int4|packed|builtin",
        "resnet18_64_adaptive-avg2.5|unpacked|xnnpack", "resnet18_64_adaptive-avg2.5|unpacked|builtin",
        # the TFLite kernels take no INT2 filter: kept packed, the adaptive model is refused, and recorded so
        "error|resnet18_64_adaptive-avg2.5|packed|xnnpack", "error|resnet18_64_adaptive-avg2.5|packed|builtin"])
    assert "CONV_2D" in str(out["error|resnet18_64_adaptive-avg2.5|packed|builtin"])
    assert all(out[k].shape == (3, 1) and out[k].dtype == np.int8 for k in out.files if not k.startswith("error|"))
    # same kernels, packed or unpacked: the same bits
    np.testing.assert_array_equal(out["resnet18_64_int4|unpacked|builtin"], out["resnet18_64_int4|packed|builtin"])


def _report(tmp_path, arm: dict[str, dict | None]):
    """Runs ci/rpi_report.py on made-up outputs: x86 has one default row, one builtin row, one refused row."""
    import csv

    sys.path.insert(0, str(ROOT / "ci"))
    import rpi_report

    x86 = {"m_int8|no-int4|xnnpack": np.array([[-5], [7], [-128]], np.int8),
           "m_adapt|unpacked|builtin": np.array([[1], [2], [3]], np.int8),
           "m_adapt|unpacked|xnnpack": np.array([[1], [2], [3]], np.int8),
           "error|m_adapt|packed|xnnpack": np.array("filter->type == kTfLiteInt8 was not true")}
    np.savez(tmp_path / "inputs.npz", **{"64": np.zeros((3, 64, 64, 3), np.uint8)})
    np.savez(tmp_path / "x86.npz", **x86)
    for cpu, changes in arm.items():
        if changes is not None:
            np.savez(tmp_path / f"{cpu}.npz", **{**x86, **changes})
    models = [ROOT / "tflite_models" / "resnet18_64_int8.tflite"]
    code = rpi_report.main([str(tmp_path), *arm, "--md", str(tmp_path / "r.md"), "--commit", "abc123",
                            "--models", *map(str, models)])
    with open(tmp_path / "r.csv") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    return code, (tmp_path / "r.md").read_text(), rows


def test_report_all_equal_says_so(tmp_path):
    code, md, rows = _report(tmp_path, {"cortex-a72": {}, "cortex-a76": {}})
    assert code == 0
    assert "- commit: abc123" in md
    assert "bit-identical outputs to x86 for all 2 models under cortex-a72 (Pi 4), cortex-a76 (Pi 5)" in md
    assert "The other 1 configurations (builtin kernels, packed INT4/INT2) were bit-identical too" in md
    assert "1 configurations do not load in the TFLite runtime on x86 nor under any emulated CPU" in md
    assert "1 of the 9 x86 outputs compared (11%) sit at an int8 end" in md
    assert "cortex-a72 and cortex-a76 gave the same raw outputs as each other in 3 of the 3 configurations" in md
    assert "None of the 2 models holds INT2 tensors: this run does not cover them." in md  # --models named neither
    assert len(rows) == 8 and {r["max_abs_diff_lsb"] for r in rows if r["refused"] == ""} == {"0"}


def test_report_difference_follows_numbers(tmp_path):
    code, md, rows = _report(tmp_path, {
        "cortex-a72": {"m_adapt|unpacked|builtin": np.array([[1], [5], [3]], np.int8)},  # informative row, 3 LSB
        "cortex-a76": {"m_int8|no-int4|xnnpack": np.array([[-5], [8], [-128]], np.int8)}})  # default row, 1 LSB
    assert code == 1
    assert "DIFFERS from x86: m_int8|no-int4|xnnpack under cortex-a76." in md
    assert "1 of the other 1 configurations (builtin kernels or packed INT4/INT2) differ from x86, by at most 3 LSB" in md
    assert "| m_int8 | (none) | XNNPACK (default) | **equal** (max 0 LSB) | 1/3 differ, max 1 LSB |" in md
    assert "cortex-a72 and cortex-a76 gave the same raw outputs as each other in 1 of the 3 configurations" in md
    row = next(r for r in rows if r["cpu"] == "cortex-a72" and r["model"] == "m_adapt" and r["kernels"] == "builtin")
    assert (row["images_differ"], row["max_abs_diff_lsb"], row["equal"]) == ("1", "3", "False")


def test_report_missing_cpu_fails(tmp_path):
    code, md, rows = _report(tmp_path, {"cortex-a72": {}, "cortex-a76": None})
    assert code == 1
    assert "Did not run under cortex-a76: no result for those CPUs." in md
    assert {r["cpu"] for r in rows} == {"cortex-a72"}


def test_report_names_the_int2_and_gather_models():
    sys.path.insert(0, str(ROOT / "ci"))
    import rpi_report

    same = {"same": True, "differ": 0, "images": 3, "max_lsb": 0}
    res = {"m_adapt|unpacked|xnnpack": same, "m_int8|no-int4|xnnpack": same,
           "m_adapt|unpacked|builtin": {"same": False, "differ": 1, "images": 3, "max_lsb": 2}}
    contents = {"m_adapt": {"INT4": 3, "INT2": 2, "GATHER": 1}, "m_int8": {"INT4": 0, "INT2": 0, "GATHER": 0}}
    lines = rpi_report.conclusions({"cortex-a72": res}, contents)
    assert "- 1 of the 2 models hold INT2 tensors (m_adapt): 1 of their 2 configuration x CPU results are " \
           "bit-identical to x86, the others differ by at most 2 LSB." in lines
    assert any(line.startswith("- 1 of the 2 models hold GATHER ops (adaptive channel splits) (m_adapt)") for line in lines)
