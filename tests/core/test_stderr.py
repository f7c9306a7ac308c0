"""Native start-up noise is dropped from stderr; real messages from the same native code stay visible."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tfdefakeq.core.stderr import dropping

ROOT = Path(__file__).resolve().parents[2]
NOISE = re.compile(r"INFO: noise")


def test_dropping_keeps_other_lines_and_replays_everything_on_failure(capfd):
    with dropping(NOISE):
        os.write(2, b"INFO: noise from C++\nW0000 a real warning\n")
    assert capfd.readouterr().err == "W0000 a real warning\n"
    with pytest.raises(RuntimeError):
        with dropping(NOISE):
            os.write(2, b"INFO: noise from C++\nE0000 why it failed\n")
            raise RuntimeError("load failed")
    assert capfd.readouterr().err == "INFO: noise from C++\nE0000 why it failed\n"


def _stderr_of(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_tensorflow_import_prints_no_banner():
    err = _stderr_of("from tfdefakeq.core.tfcompat import tf; import sys; print('after', file=sys.stderr)")
    assert err == "after\n"  # was: the absl notice, oneDNN and cuda-driver lines, twice


def test_loading_a_model_prints_no_delegate_info():
    err = _stderr_of("from tfdefakeq.runtime.loader import load_model; "
                     "load_model('tflite_models/resnet18_64_int8.tflite')[0].invoke_raw")
    assert "XNNPACK delegate" not in err and err == ""
