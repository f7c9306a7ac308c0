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
    models = [ROOT / "tflite_models" / "resnet18_64_int8.tflite", ROOT / "tflite_models" / "resnet18_64_int4.tflite"]
    proc = subprocess.run([sys.executable, str(ROOT / "ci" / "rpi_outputs.py"), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "out.npz"), *map(str, models)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = np.load(tmp_path / "out.npz")
    assert sorted(out.files) == sorted([
        "resnet18_64_int8|no-int4|xnnpack", "resnet18_64_int8|no-int4|builtin",
        "resnet18_64_int4|unpacked|xnnpack", "resnet18_64_int4|unpacked|builtin",
        "resnet18_64_int4|packed|xnnpack", "resnet18_64_int4|packed|builtin"])
    assert all(out[k].shape == (3, 1) and out[k].dtype == np.int8 for k in out.files)
    # same kernels, packed or unpacked: the same bits
    np.testing.assert_array_equal(out["resnet18_64_int4|unpacked|builtin"], out["resnet18_64_int4|packed|builtin"])
