"""The edge runtime must run where TensorFlow, pandas, sklearn and matplotlib are not installed.

A fresh interpreter blocks those imports with a meta-path finder, imports every module of
tfdefakeq.runtime plus the evaluate/bench/predict/edgetpu CLIs, and runs each of them for real
(an int4 model included, unpacked at load).
"""

import subprocess
import sys
import textwrap
from pathlib import Path

INT4_MODEL = Path(__file__).resolve().parents[2] / "tflite_models" / "resnet18_64_int4.tflite"

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
    for name in names + ["tfdefakeq.evaluate", "tfdefakeq.bench", "tfdefakeq.predict", "tfdefakeq.edgetpu"]:
        importlib.import_module(name)
    print("imported", " ".join(sorted(names)))

    from tfdefakeq import bench, edgetpu, evaluate, predict
    model, data, out, int4_model = sys.argv[1:5]
    assert evaluate.main(evaluate.parse_args([model, "--data", data, "--split", "test", "--out", out])) == 0
    assert bench.main(bench.parse_args([model, int4_model, "--runs", "3", "--warmup", "1", "--packed", "unpacked", "packed",
                                        "--out", out + "/bench.csv"])) == 0
    assert predict.main(predict.parse_args([model, data, "--out", out + "/scores.csv"])) == 0
    assert edgetpu.main(edgetpu.parse_args([model, int4_model, "--no-delegate", "--json", out + "/etpu.json"])) == 0

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
        [sys.executable, str(script), str(tiny_models["int8"]), str(forensynths_root), str(out), str(INT4_MODEL)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NO-TENSORFLOW-OK" in proc.stdout
    for module in ("interpreter", "metrics", "scoring", "latency", "images", "unpack", "inference", "faces", "video", "profile",
                       "edgetpu_ops"):
        assert f"tfdefakeq.runtime.{module}" in proc.stdout
    for name in ("tiny_int8.test.eval.csv", "bench.csv", "scores.csv", "etpu.json"):
        assert (out / name).exists()
