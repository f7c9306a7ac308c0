"""Issue 17: untrusted .tflite files never crash the harness; trust is earned by bytes, not by a sidecar."""

from __future__ import annotations

import ast
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import manifest_path
from tfdefakeq.runtime.loader import read_model_file, sha256_hex
from tfdefakeq.runtime.validate import validate_flatbuffer

REPO = Path(__file__).resolve().parents[2]
AVG25 = REPO / "tflite_models" / "resnet18_64_adaptive-avg2.5.tflite"
# the conv output that feeds the ADD of conv4_block1: its scale set to 1e38 aborted bench, evaluate and
# predict (SIGABRT, exit 134) in issue 17 (byte 840,696 of the shipped file)
LAYER = b"quant_conv4_block1_2_conv"
ADD = 0


def scale_position(data: bytes, layer: bytes) -> int:
    """Byte position of the scale of the ADD input that the conv `layer` writes (found by name)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        if model.OperatorCodes(op.OpcodeIndex()).BuiltinCode() != ADD:
            continue
        for k in range(op.InputsLength()):
            tensor = graph.Tensors(op.Inputs(k))
            if layer in tensor.Name():
                quant = tensor.Quantization()
                return quant._tab.Vector(quant._tab.Offset(8))
    raise AssertionError(f"no ADD input from {layer!r}")


@pytest.fixture(scope="module")
def issue_file(tmp_path_factory):
    data = bytearray(AVG25.read_bytes())
    pos = scale_position(bytes(data), LAYER)
    assert 0.01 < struct.unpack_from("<f", data, pos)[0] < 1
    struct.pack_into("<f", data, pos, 1e38)
    folder = tmp_path_factory.mktemp("issue17")
    path = folder / "avg25_huge_scale.tflite"
    path.write_bytes(bytes(data))
    rng = np.random.default_rng(0)
    for cls in ("0_real", "1_fake"):
        (folder / "data" / "test" / "g" / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "data" / "test" / "g" / cls / "a.png")
    return path


def test_the_validator_rejects_the_issue_file(issue_file):
    with pytest.raises(UserError, match=r"operator \d+ \(ADD\): output multiplier .* outside \[0, 1\)"):
        validate_flatbuffer(issue_file.read_bytes(), str(issue_file))


@pytest.mark.parametrize("manifest", ["none", "copied", "matching"])
@pytest.mark.parametrize("verb", ["bench", "evaluate", "predict"])
def test_each_command_exits_2_with_one_line_on_the_issue_file(issue_file, tmp_path, verb, manifest):
    path = tmp_path / issue_file.name
    shutil.copy(issue_file, path)
    if manifest != "none":
        shipped = json.loads(manifest_path(AVG25).read_text())
        if manifest == "matching":  # a sender can write the right hash too: validation alone must hold
            shipped["sha256"] = sha256_hex(path.read_bytes())
        manifest_path(path).write_text(json.dumps(shipped))
    data = issue_file.parent / "data"
    argv = {"bench": [str(path), "--runs", "2"], "evaluate": [str(path), "--data", str(data), "--split", "test"],
            "predict": [str(path), str(data / "test" / "g" / "0_real" / "a.png")]}[verb]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    proc = subprocess.run([sys.executable, "-m", f"tfdefakeq.{verb}", *argv], capture_output=True, text=True,
                          env=env, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert lines == [lines[0]] and lines[0].startswith(f"tfdefakeq {verb}: error: {path}: invalid TFLite model"), lines
    assert "(ADD)" in lines[0] and proc.stdout == ""


def test_trust_needs_the_bytes_hash(tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy(AVG25, model)
    assert not read_model_file(model).trusted and read_model_file(model).trust == "no manifest"
    shipped = json.loads(manifest_path(AVG25).read_text())
    manifest_path(model).write_text(json.dumps(shipped))
    assert read_model_file(model).trusted  # the shipped manifest records these bytes' hash
    data = bytearray(model.read_bytes())
    data[-1] ^= 1  # one bit of padding: still a valid model, no longer the bytes the manifest vouches for
    model.write_bytes(bytes(data))
    assert read_model_file(model).trust == "bytes differ from the manifest's sha256"
    with pytest.raises(UserError, match="is not the"):
        read_model_file(model, expected_sha256=shipped["sha256"])


def test_shipped_manifests_record_their_models_hash():
    proc = subprocess.run([sys.executable, str(REPO / "tflite_models" / "record_hashes.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.count("(up to date)") == len(list((REPO / "tflite_models").glob("*.tflite"))) == 4


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_no_module_opens_a_model_by_itself():
    """Every TFLiteModel / interpreter on a user's path comes from the loader; no private reach."""
    package = REPO / "tfdefakeq"
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        text = path.read_text()
        if rel not in ("runtime/interpreter.py", "runtime/loader.py"):
            assert "TFLiteModel(" not in text, rel
        if rel.startswith(("backbones/", "quant/", "data/")):
            continue  # the private-reach rule below is checked for the runtime, the engines and the verbs
        for name in _imports(path):
            module, _, attr = name.rpartition(".")
            assert not (module.startswith("tfdefakeq.") and attr.startswith("_")), (rel, name)


def test_dependencies_point_one_way():
    """validate <- interpreter <- probe <- loader: no module imports one after it."""
    order = ["validate", "interpreter", "probe", "loader"]
    runtime = REPO / "tfdefakeq" / "runtime"
    for i, name in enumerate(order):
        imported = {n.split(".")[2] for n in _imports(runtime / f"{name}.py") if n.startswith("tfdefakeq.runtime.")}
        assert not imported & set(order[i + 1:]), (name, imported)
