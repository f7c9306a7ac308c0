"""Structural validation of .tflite files before any interpreter parses them, and the child-process probe."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import manifest_path
from tfdefakeq.runtime import loader
from tfdefakeq.runtime import probe as probe_module
from tfdefakeq.runtime.fuzz import UnvalidatedChild
from tfdefakeq.runtime.interpreter import check_tflite_file
from tfdefakeq.runtime.loader import load_model
from tfdefakeq.runtime.probe import ChildProbe, probe_in_child
from tfdefakeq.runtime.validate import SCHEMA, validate_flatbuffer

SHIPPED = Path(__file__).resolve().parents[2] / "tflite_models"
INT8_MODEL = SHIPPED / "resnet18_64_int8.tflite"
INT4_MODEL = SHIPPED / "resnet18_64_int4.tflite"
CONV_2D, ADD = 3, 0


def rewritten(edit, source: Path = INT8_MODEL) -> bytes:
    """`source` parsed with the schema's object API, changed by `edit(model)`, serialized again."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(source.read_bytes()), 0)  # writable arrays
    edit(model)
    builder = flatbuffers.Builder(source.stat().st_size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def first_op(model, code: int):
    graph = model.subgraphs[0]
    return next(op for op in graph.operators if model.operatorCodes[op.opcodeIndex].builtinCode == code)


def constant_tensor(model) -> int:
    graph = model.subgraphs[0]
    return next(i for i, t in enumerate(graph.tensors) if model.buffers[t.buffer].data is not None)


def test_shipped_models_pass_quickly():
    for path, packed in ((INT8_MODEL, 0), (INT4_MODEL, 19)):
        data = path.read_bytes()
        summary = validate_flatbuffer(data, path.name)
        assert (summary.subgraphs, summary.tensors, summary.operators, summary.packed_tensors) == (1, 85, 37, packed)
        best = min(_seconds(validate_flatbuffer, data) for _ in range(5))
        assert best < 0.1  # ~3 ms on a 2-core x86 VM
    assert check_tflite_file(INT8_MODEL) == INT8_MODEL.stat().st_size


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def test_schema_slots_match_the_generated_accessors():
    """SCHEMA restates schema.fbs field order; each slot must be the vtable offset the generated code reads."""
    from ai_edge_litert import schema_py_generated as schema

    for table, fields in SCHEMA.items():
        for slot, spec in enumerate(fields):
            if spec is None:
                continue
            accessor = getattr(getattr(schema, table), "".join(w.capitalize() for w in spec[0].split("_")))
            assert f"Offset({4 + 2 * slot})" in inspect.getsource(accessor), (table, spec[0])


SEMANTIC = {
    "buffer index": (lambda m: setattr(m.subgraphs[0].tensors[3], "buffer", 999), "buffer 999 of 88"),
    "op input index": (lambda m: m.subgraphs[0].operators[2].inputs.__setitem__(0, 500), "tensor index 500 of 85"),
    "op code index": (lambda m: setattr(m.subgraphs[0].operators[0], "opcodeIndex", 7), "op code index 7 of 7"),
    "negative shape": (lambda m: m.subgraphs[0].tensors[6].shape.__setitem__(1, -3), "negative dimension"),
    "weights size": (lambda m: m.subgraphs[0].tensors[8].shape.__setitem__(0, 33),
                     "4704 constant bytes for shape [33, 7, 7, 3] of INT8 (4851 expected)"),
    "huge shape": (lambda m: m.subgraphs[0].tensors[6].shape.__setitem__(1, 2**31 - 1), "needs over 2 GiB"),
    "tensor type": (lambda m: setattr(m.subgraphs[0].tensors[6], "type", 77), "unknown tensor type 77"),
    "scale": (lambda m: m.subgraphs[0].tensors[8].quantization.scale.__setitem__(0, np.nan), "scale nan not a finite"),
    "zero points": (lambda m: setattr(m.subgraphs[0].tensors[8].quantization, "zeroPoint", np.zeros(3, np.int64)),
                    "32 scales but 3 zero points"),
    "zero point range": (lambda m: m.subgraphs[0].tensors[6].quantization.zeroPoint.__setitem__(0, 300),
                         "zero point outside [-128, 127] for INT8"),
    "activation scale": (lambda m: m.subgraphs[0].tensors[6].quantization.scale.__setitem__(0, 0.0),
                         "scale 0.0 not a finite positive number"),
    "unquantized activation": (lambda m: setattr(m.subgraphs[0].tensors[6].quantization, "scale", None),
                               "INT8 activation without quantization parameters"),
    "channel axis": (lambda m: setattr(m.subgraphs[0].tensors[8].quantization, "quantizedDimension", 3),
                     "32 per-channel scales on axis 3"),
    "conv filter omitted": (lambda m: first_op(m, CONV_2D).inputs.__setitem__(1, -1),
                            "operator 2 (CONV_2D): input 1 omitted (-1), which CONV_2D requires"),
    "writes a constant": (lambda m: first_op(m, ADD).outputs.__setitem__(0, constant_tensor(m)),
                          "writes tensor 1, a constant"),
    "read before written": (lambda m: m.subgraphs[0].operators[2].inputs.__setitem__(0, 84),
                            "input 0 reads tensor 84 before any operator writes it"),
    "graph output": (lambda m: m.subgraphs[0].operators.pop(), "output tensor 84 is never written"),
    "schema version": (lambda m: setattr(m, "version", 2), "schema version 2, expected 3"),
}


@pytest.mark.parametrize("kind", sorted(SEMANTIC))
def test_contradictory_contents_are_named(kind, tmp_path):
    edit, needle = SEMANTIC[kind]
    path = tmp_path / "model.tflite"
    path.write_bytes(rewritten(edit))
    with pytest.raises(UserError) as info:
        check_tflite_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid TFLite model (") and needle in message, message
    assert "\n" not in message


def _patched(data: bytes, pos: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, pos, value)
    return bytes(out)


def _tensor(data: bytes, index: int):
    from ai_edge_litert import schema_py_generated as schema

    return schema.Model.GetRootAs(data, 0).Subgraphs(0).Tensors(index)


def _structural_cases(data: bytes) -> dict:
    tensor = _tensor(data, 8)
    pos = tensor._tab.Pos
    name_field = pos + tensor._tab.Offset(10)
    name = tensor._tab.Vector(tensor._tab.Offset(10))
    shape = tensor._tab.Vector(tensor._tab.Offset(4))
    return {
        "vtable before the file": (_patched(data, pos, "<i", pos + 8), "vtable at byte -8"),
        "vtable past the end": (_patched(data, pos, "<i", -len(data)), "vtable at byte"),
        "offset past the end": (_patched(data, name_field, "<I", len(data)), "points outside"),
        "misaligned table": (_patched(data, 0, "<I", struct.unpack_from("<I", data, 0)[0] + 2), "misaligned"),
        "vector too long": (_patched(data, shape - 4, "<I", 10**8), "vector of 100000000 elements"),
        "unterminated string": (_patched(data, name - 4, "<I", len(data) - name), "no terminating zero"),
        "identifier": (data[:4] + b"TFL2" + data[8:], "file identifier b'TFL2'"),
        "truncated": (data[: len(data) // 2], "not a TFLite flatbuffer"),
        "tiny": (data[:12], "only 12 bytes"),
        "empty": (b"", "empty file"),
    }


STRUCTURAL = ["vtable before the file", "vtable past the end", "offset past the end", "misaligned table",
              "vector too long", "unterminated string", "identifier", "truncated", "tiny", "empty"]


@pytest.mark.parametrize("kind", STRUCTURAL)
def test_structural_damage_is_named(kind, tmp_path):
    data, needle = _structural_cases(INT8_MODEL.read_bytes())[kind]
    path = tmp_path / "model.tflite"
    path.write_bytes(data)
    with pytest.raises(UserError) as info:
        check_tflite_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a TFLite flatbuffer (") and needle in message, message
    assert "\n" not in message


def test_names_in_messages_are_one_short_line(tmp_path):
    def edit(model):
        tensor = model.subgraphs[0].tensors[6]
        tensor.name = b"evil\nname" + b"x" * 500
        tensor.shape[1] = -1

    path = tmp_path / "model.tflite"
    path.write_bytes(rewritten(edit))
    with pytest.raises(UserError) as info:
        check_tflite_file(path)
    assert "\n" not in str(info.value) and "'evil?namexx" in str(info.value) and len(str(info.value)) < 300


# --- the child probe -----------------------------------------------------------------------------


class SegfaultingChild(ChildProbe):
    child_code = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"


class SilentChild(ChildProbe):
    child_code = "import time; time.sleep(60)"


def test_probe_runs_models_and_reports_errors(tmp_path):
    text = tmp_path / "notes.tflite"
    text.write_text("not a model at all\n")
    with ChildProbe() as probe:
        assert probe.run(INT4_MODEL).status == "ok"
        error = probe.run(text)
        assert probe.run(INT8_MODEL, num_threads=2, use_xnnpack=False).status == "ok"
        assert probe.starts == 1  # one child served all three
    assert error.status == "error" and error.message.startswith(f"{text}: not a TFLite flatbuffer")
    assert probe_in_child(INT8_MODEL).status == "ok"


def test_a_crashing_child_is_a_one_line_user_error():
    with SegfaultingChild() as probe:
        result = probe.run(INT8_MODEL)
    assert result.status == "crashed" and result.signal == 11
    assert result.message.startswith(
        f"{INT8_MODEL}: crashed the TFLite interpreter in a child process (signal 11, SIGSEGV)")
    assert "\n" not in result.message


def test_a_silent_child_times_out():
    with SilentChild(timeout_s=1) as probe:
        result = probe.run(INT8_MODEL)
    assert result.status == "timeout" and "took over 1 s" in result.message


def test_probe_restarts_after_a_crash(tmp_path):
    """A conv with its filter omitted segfaults the XNNPACK delegate (found by the fuzz campaign):
    validation rejects it; unvalidated, it kills the child, and the next model gets a new child."""
    path = tmp_path / "no_filter.tflite"
    path.write_bytes(rewritten(lambda m: first_op(m, CONV_2D).inputs.__setitem__(1, -1), INT4_MODEL))
    with pytest.raises(UserError, match="input 1 omitted"):
        check_tflite_file(path)
    with UnvalidatedChild() as probe:
        crashed = probe.run(path)
        assert probe.run(INT8_MODEL).status == "ok"
    # the delegate reads out of bounds: a segfault on x86 so far, an error message where the read is harmless
    assert crashed.status in ("crashed", "error") and crashed.message.startswith(str(path)), crashed
    assert probe.starts == (2 if crashed.status == "crashed" else 1)


def test_an_add_whose_scales_abort_the_interpreter_is_rejected(tmp_path):
    """Scales that are each plausible but whose ratio trips a kernel's TFLITE_CHECK (ADD inputs
    ~1e7 times coarser than its output: the output multiplier leaves (0, 1)): validation rejects the
    file, naming the op and the rule; unvalidated, the interpreter aborts (the probe reports it)."""
    def coarse_add_input(model):
        graph = model.subgraphs[0]
        made_by = {int(t): model.operatorCodes[op.opcodeIndex].builtinCode for op in graph.operators for t in op.outputs}
        add = next(op for op in graph.operators if model.operatorCodes[op.opcodeIndex].builtinCode == ADD
                   and made_by.get(int(op.inputs[0])) == CONV_2D)  # a block whose shortcut is a conv
        graph.tensors[add.outputs[0]].quantization.scale[:] *= 1e-7  # inputs ~1e7 times coarser than it

    path = tmp_path / "coarse.tflite"
    path.write_bytes(rewritten(coarse_add_input))
    with pytest.raises(UserError, match=r"operator \d+ \(ADD\): output multiplier .* outside \[0, 1\)"):
        check_tflite_file(path)
    with UnvalidatedChild() as unvalidated:
        result = unvalidated.run(path)
    assert result.status == "crashed" and result.signal == 6, result
    assert result.message.startswith(f"{path}: crashed the TFLite interpreter in a child process (signal 6, SIGABRT)")
    assert "\n" not in result.message


def test_load_model_probes_every_file_its_manifest_does_not_vouch_for(tmp_path, monkeypatch):
    """Trust by bytes: only a file whose bytes hash to its manifest's sha256 skips the probe."""
    calls = []
    monkeypatch.setattr(loader, "probe_in_child", lambda path, **kw: calls.append(Path(path)))
    bare = tmp_path / "bare.tflite"
    shutil.copy(INT8_MODEL, bare)
    load_model(bare)
    made_here = tmp_path / "made.tflite"
    shutil.copy(INT8_MODEL, made_here)
    shutil.copy(manifest_path(INT8_MODEL), manifest_path(made_here))
    load_model(made_here)  # the shipped manifest records these bytes' hash: no probe
    load_model(made_here, probe=True)
    other = tmp_path / "other.tflite"  # the int4 model beside a copy of the int8 one's manifest (same input)
    shutil.copy(INT4_MODEL, other)
    shutil.copy(manifest_path(INT8_MODEL), manifest_path(other))
    load_model(other)
    unhashed = tmp_path / "unhashed.tflite"
    shutil.copy(INT8_MODEL, unhashed)
    manifest = json.loads(manifest_path(INT8_MODEL).read_text())
    del manifest["sha256"]
    manifest_path(unhashed).write_text(json.dumps(manifest))
    load_model(unhashed)
    assert calls == [bare, made_here, other, unhashed]


def test_load_model_refuses_a_model_that_crashes_its_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(probe_module, "ChildProbe", SegfaultingChild)
    bare = tmp_path / "bare.tflite"
    shutil.copy(INT8_MODEL, bare)
    with pytest.raises(UserError, match=re.escape(f"{bare}: crashed the TFLite interpreter")):
        load_model(bare)


MEAN, FULLY_CONNECTED = 40, 9


def _scale(model, tensor: int, factor: float) -> None:
    model.subgraphs[0].tensors[tensor].quantization.scale[:] *= factor


@pytest.mark.parametrize("edit, message", [
    # a conv output 1e6 times finer: input x weight / output >= 256, which XNNPACK's qs8 conv refuses
    (lambda m: _scale(m, first_op(m, CONV_2D).outputs[0], 1e-6), r"\(CONV_2D\): requantization scale .* outside \[2\.32831e-10, 256\)"),
    # the classifier's weights 1e-9 times smaller: below XNNPACK's 2^-32
    (lambda m: _scale(m, first_op(m, FULLY_CONNECTED).inputs[1], 1e-9), r"\(FULLY_CONNECTED\): requantization scale"),
    # a MEAN input 2^32 times coarser than its output: QuantizeMultiplier's shift would exceed 31
    (lambda m: _scale(m, first_op(m, MEAN).outputs[0], 2.0**-33), r"\(MEAN\): input 0 / output scale ratio .* outside \[0, 2\.14748e\+09\)"),
], ids=["conv", "fully_connected", "mean"])
def test_requantization_multipliers_outside_the_kernels_range_are_named(tmp_path, edit, message):
    path = tmp_path / "model.tflite"
    path.write_bytes(rewritten(edit))
    with pytest.raises(UserError, match=message):
        check_tflite_file(path)


def test_shipped_models_pass_every_requantization_rule():
    for path in sorted(SHIPPED.glob("*.tflite")):
        assert validate_flatbuffer(path.read_bytes(), str(path)).operators > 0


def test_the_tensor_type_table_is_the_schemas():
    """modelinfo.TENSOR_TYPES (the one table validate, unpack and the benchmarks read) names each code
    as the schema ai-edge-litert ships does, and covers every type that schema defines."""
    from ai_edge_litert import schema_py_generated as schema

    from tfdefakeq.runtime.modelinfo import TENSOR_TYPES
    from tfdefakeq.runtime.unpack import INT2, INT4, PACKED_BITS

    codes = {name: code for name, code in vars(schema.TensorType).items() if not name.startswith("_")}
    assert {code: name for code, (name, _) in TENSOR_TYPES.items()} == {code: name for name, code in codes.items()}
    assert (INT4, INT2) == (codes["INT4"], codes["INT2"]) and PACKED_BITS == {INT4: 4, INT2: 2}
