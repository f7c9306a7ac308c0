"""The command a manifest records: what the user typed, whatever the clone's folder is called."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tfdefakeq
from tfdefakeq.core.manifest import command_line

PROBE = "from tfdefakeq.core.manifest import command_line\nprint(command_line())\n"


def _clone_named_tfdefakeq(tmp_path: Path) -> Path:
    """A copy of the package inside a folder named `tfdefakeq`, as `git clone` makes it."""
    clone = tmp_path / "tfdefakeq"
    shutil.copytree(Path(tfdefakeq.__file__).parent, clone / "tfdefakeq",
                    ignore=shutil.ignore_patterns("__pycache__", "*.tflite"))
    (clone / "tfdefakeq" / "_probe.py").write_text(PROBE)
    return clone


def _run(args, clone: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(clone))
    done = subprocess.run([sys.executable, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_python_m_in_a_clone_named_tfdefakeq(tmp_path):
    clone = _clone_named_tfdefakeq(tmp_path)
    assert _run(["-m", "tfdefakeq._probe", "--out", "runs/x y"], clone) == "python -m tfdefakeq._probe --out 'runs/x y'"


def test_script_path_in_a_clone_named_tfdefakeq(tmp_path):
    clone = _clone_named_tfdefakeq(tmp_path)
    assert _run([str(clone / "tfdefakeq" / "_probe.py"), "--n", "3"], clone) == "python -m tfdefakeq._probe --n 3"


def test_a_script_outside_the_package_is_recorded_as_typed():
    class Main:
        __spec__ = None

    assert command_line(["benchmarks/runtime.py", "--runs", "5"], Main) == "python benchmarks/runtime.py --runs 5"
