"""On an `[edge]` install (numpy, Pillow, ai-edge-litert) a verb that needs more says so in one line,
exit 2, before it does any work: no tables half-written, no empty output folder, no traceback.

Each case runs the verb in a fresh interpreter whose imports of the missing packages are blocked
(the same meta-path finder as tests/runtime/test_no_tensorflow.py)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SHIPPED_INT8 = Path(__file__).resolve().parents[1] / "tflite_models" / "resnet18_64_int8.tflite"

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, json, sys

    BLOCKED = set(sys.argv[1].split(","))

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"blocked by test: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    verb = importlib.import_module("tfdefakeq." + sys.argv[2])
    verb.cli(sys.argv[3:])
    """
)


def _run_blocked(tmp_path, blocked, verb, argv):
    script = tmp_path / "blocked.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), ",".join(blocked), verb, *argv],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("verb, blocked, extra_args, names", [
    ("evaluate", ["matplotlib"], ["--split", "test", "--curves"], "matplotlib"),
    ("robustness", ["pandas"], ["--sweep", "jpeg", "--levels", "90"], "pandas"),
    ("robustness", ["matplotlib"], ["--sweep", "jpeg", "--levels", "90"], "matplotlib"),
])
def test_report_verbs_name_what_to_install_before_any_work(tmp_path, synthetic_root, verb, blocked, extra_args, names):
    out = tmp_path / "out"
    done = _run_blocked(tmp_path, blocked, verb,
                        [str(SHIPPED_INT8), "--data", str(synthetic_root), "--out", str(out)] + extra_args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"tfdefakeq {verb}: error:") and names in lines[0]
    assert "pip install 'tfdefakeq[report]'" in lines[0]
    assert not out.exists()  # nothing written, not even the folder
    assert done.stdout == ""  # no scores printed: the check came first


def test_demo_names_what_to_install_before_any_work(tmp_path):
    out = tmp_path / "demo"
    done = _run_blocked(tmp_path, ["pandas"], "demo", ["--out", str(out), "--data", str(tmp_path / "nowhere")])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pandas" in lines[0] and "pip install 'tfdefakeq[dev]'" in lines[0], done.stderr
    assert not out.exists()
