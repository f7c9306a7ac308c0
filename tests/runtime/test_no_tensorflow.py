"""The edge runtime must run where TensorFlow, pandas, sklearn and matplotlib are not installed.

A fresh interpreter blocks those imports with a meta-path finder, imports every module of
tfdefakeq.runtime plus the evaluate/bench CLIs, and runs a real evaluation and benchmark.
"""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    BLOCKED = {"tensorflow", "tf_keras", "keras", "pandas", "sklearn", "matplotlib"}
    attempts = []

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempts.append(name)
                raise ModuleNotFoundError(f"blocked by test: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    try:
        import tensorflow  # noqa: F401
        raise SystemExit("the blocker does not work")
    except ImportError:
        attempts.clear()

    import tfdefakeq.runtime
    names = [m.name for m in pkgutil.iter_modules(tfdefakeq.runtime.__path__, "tfdefakeq.runtime.")]
    for name in names + ["tfdefakeq.evaluate", "tfdefakeq.bench"]:
        importlib.import_module(name)
    print("imported", " ".join(sorted(names)))

    from tfdefakeq import bench, evaluate
    model, data, out = sys.argv[1:4]
    assert evaluate.main(evaluate.parse_args([model, "--data", data, "--split", "test", "--out", out])) == 0
    assert bench.main(bench.parse_args([model, "--runs", "3", "--warmup", "1", "--out", out + "/bench.csv"])) == 0

    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("attempted", attempts)
    print("loaded", loaded)
    assert not attempts and not loaded
    print("NO-TENSORFLOW-OK")
    """
)


def test_runtime_runs_without_tensorflow(tiny_models, forensynths_root, tmp_path):
    script = tmp_path / "edge_check.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_models["int8"]), str(forensynths_root), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NO-TENSORFLOW-OK" in proc.stdout
    for module in ("interpreter", "metrics", "evaluate", "bench", "images"):
        assert f"tfdefakeq.runtime.{module}" in proc.stdout
    assert (out / "tiny_int8.test.eval.csv").exists() and (out / "bench.csv").exists()
