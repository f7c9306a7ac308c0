"""The shipped models reach a non-editable install (Colab's `pip install git+...`, a Pi) as package data,
and notebook 03 finds them there through `tfdefakeq.shipped_model`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tfdefakeq
from tfdefakeq.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_a_checkout_reads_tflite_models():
    assert tfdefakeq.shipped_model("resnet18_64_int8") == ROOT / "tflite_models" / "resnet18_64_int8.tflite"
    with pytest.raises(UserError, match=r"nope.tflite: not a shipped model \(shipped: .*resnet18_64_int4"):
        tfdefakeq.shipped_model("nope")


def _notebook_cell(name: str, marker: str) -> str:
    cells = json.loads((ROOT / "notebooks" / name).read_text())["cells"]
    (cell,) = [c for c in cells if c["cell_type"] == "code" and marker in "".join(c["source"])]
    return "".join(cell["source"])


@pytest.mark.slow
def test_non_editable_install_carries_the_models_and_notebook_03_loads_them(tmp_path):
    source = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("setup.py", "setup.cfg", "README.md", "MANIFEST.in"):
        shutil.copyfile(ROOT / name, source / name)
    for folder in ("tfdefakeq", "tflite_models"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "_shipped"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, timeout=600,
                   env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert not (target / "tflite_models").exists()  # nothing beside the package, as in site-packages

    cell = _notebook_cell("03_deployment.ipynb", "shipped_model")
    script = f"""
import pathlib, tfdefakeq
WORK = {str(tmp_path / "work")!r}
{cell}
assert pathlib.Path(tfdefakeq.__file__).resolve().parent == pathlib.Path({str(target / "tfdefakeq")!r})
model = tfdefakeq.shipped_model("resnet18_64_int4")
assert model.parent.name == "_shipped", model
from tfdefakeq.runtime.loader import load_model
loaded, manifest = load_model(pathlib.Path(WORK) / "device_models" / "resnet18_64_int4.tflite")
print("OK", manifest.format, loaded.size_bytes)
"""
    run = tmp_path / "run"
    run.mkdir()
    done = subprocess.run([sys.executable, "-c", script], cwd=run, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(target)))
    assert done.returncode == 0, done.stderr
    size = (ROOT / "tflite_models" / "resnet18_64_int4.tflite").stat().st_size
    assert done.stdout.split() == ["OK", "int4", str(size)]
