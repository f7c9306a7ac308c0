"""Edge TPU compatibility report: shipped models, a model that falls back mid-graph, compiler and delegate."""

import json
import os
import stat
from pathlib import Path

import pytest

from tfdefakeq import edgetpu
from tfdefakeq.runtime.edgetpu_ops import check_model, format_report, run_compiler

SHIPPED = Path(__file__).resolve().parents[1] / "tflite_models"
INT8_MODELS = sorted(SHIPPED.glob("*_int8.tflite"))
INT4_MODEL = SHIPPED / "resnet18_64_int4.tflite"


def run_cli(argv, capfd):
    with pytest.raises(SystemExit) as info:
        edgetpu.cli([str(a) for a in argv])
    out, err = capfd.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize("path", INT8_MODELS, ids=[p.name for p in INT8_MODELS])
def test_every_shipped_int8_model_maps_fully(path):
    report = check_model(path)
    assert report.compatible and report.first_unsupported is None and not report.model_problems
    assert report.ops_on_edgetpu == report.ops_total > 0
    assert all(c.placement == "edgetpu" and not c.problems for c in report.ops)
    assert report.fits_on_chip and 0 < report.parameter_bytes_on_edgetpu <= report.parameter_bytes_total
    assert "COMPATIBLE" in format_report(report)


def test_int4_model_is_not_edge_tpu_compatible():
    report = check_model(INT4_MODEL)
    assert not report.compatible
    assert any("INT4 weights" in p and "8-bit" in p for p in report.model_problems)
    first = report.first_unsupported
    assert first["op"] == "CONV_2D" and first["index"] == 2  # the high-pass and its pad are int8
    assert report.ops_on_edgetpu == 2
    placements = [c.placement for c in report.ops]
    assert placements[:2] == ["edgetpu", "edgetpu"] and all(p.startswith("cpu") for p in placements[2:])


def _with_op_version(src: Path, dst: Path, op: str, version: int) -> Path:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(src.read_bytes(), 0)
    code = getattr(schema.BuiltinOperator, op)
    for c in model.operatorCodes:
        if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
            c.version = version
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))
    return dst


def test_cpu_fallback_starts_at_the_first_unsupported_op(tmp_path):
    """ADD v4 appeared after compiler 16: the graph maps up to the first ADD, the rest falls back."""
    path = _with_op_version(INT8_MODELS[0], tmp_path / "add_v4.tflite", "ADD", 4)
    report = check_model(path)
    first = report.first_unsupported
    assert not report.compatible and first["op"] == "ADD"
    assert "version 4" in first["problems"][0]
    before = [c for c in report.ops if c.index < first["index"]]
    after = [c for c in report.ops if c.index > first["index"]]
    assert before and all(c.placement == "edgetpu" for c in before)
    assert after and all(c.placement.startswith("cpu") for c in after)
    assert {c.placement for c in after if c.op == "ADD"} == {"cpu (unsupported)"}
    assert {c.placement for c in after if c.op == "CONV_2D"} == {"cpu (after first unsupported)"}
    assert report.ops_on_edgetpu == len(before)
    assert f"CPU fallback starts at op {first['index']} (ADD)" in format_report(report)


def test_float_input_is_reported_at_the_first_op(tmp_path):
    """A float32 tensor (here: the model input retyped) keeps the op that reads it off the Edge TPU."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(INT8_MODELS[0].read_bytes(), 0)
    graph = model.subgraphs[0]
    graph.tensors[graph.inputs[0]].type = schema.TensorType.FLOAT32
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "float_in.tflite"
    path.write_bytes(bytes(builder.Output()))
    report = check_model(path)
    assert not report.compatible and report.first_unsupported["index"] == 0
    assert any("FLOAT32" in p for p in report.first_unsupported["problems"])
    assert any("model input is FLOAT32" in n for n in report.notes)


def test_cli_table_json_and_missing_tools(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    out = tmp_path / "etpu.json"
    code, stdout, _ = run_cli([*INT8_MODELS, INT4_MODEL, "--json", out], capfd)
    assert code == 0
    assert "edgetpu_compiler is not on PATH" in stdout
    assert "libedgetpu.so.1 not found" in stdout or "libedgetpu.so.1 loaded" in stdout
    reports = json.loads(out.read_text())
    assert [r["compatible"] for r in reports] == [True] * len(INT8_MODELS) + [False]
    assert reports[-1]["first_unsupported"]["op"] == "CONV_2D"
    assert {"index", "op", "version", "placement", "problems"} <= set(reports[0]["ops"][0])
    code, _, err = run_cli([INT8_MODELS[0], "--json", out], capfd)
    assert code == 2 and "already exists" in err
    code, _, _ = run_cli([INT4_MODEL, "--strict", "--no-delegate"], capfd)
    assert code == 1


def test_compiler_runs_when_on_path(tmp_path, monkeypatch):
    """A stand-in `edgetpu_compiler` shows the call: version query, then -s -o OUT MODEL."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "edgetpu_compiler"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "Edge TPU Compiler version 16.0.384591198"; exit 0; fi\n'
        'out="$3"; model="$4"; name=$(basename "$model" .tflite)\n'
        'cp "$model" "$out/${name}_edgetpu.tflite"; echo "Model compiled successfully"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = run_compiler(INT8_MODELS[0], tmp_path / "compiled")
    assert result["found"] and result["version"].endswith("16.0.384591198")
    assert result["returncode"] == 0 and "compiled successfully" in result["output"]
    assert Path(result["compiled"]).name == INT8_MODELS[0].stem + "_edgetpu.tflite"


def test_bad_file_is_a_user_error(tmp_path, capfd):
    path = tmp_path / "x.tflite"
    path.write_text("not a model at all")
    code, _, err = run_cli([path], capfd)
    assert code == 2 and err.startswith(f"tfdefakeq edgetpu: error: {path}: not a TFLite flatbuffer")


def test_unreadable_op_options_make_the_op_incompatible_with_the_reason(monkeypatch):
    """Options that cannot be read are unknown, not the defaults (no fused activation, dilation 1)."""
    from tfdefakeq.runtime import modelinfo

    read_options = modelinfo._options

    def unreadable_for_convs(schema, op):
        options = read_options(schema, op)
        return {"unreadable": "options type 1: ValueError: damaged"} if "dilation_h" in options else options

    monkeypatch.setattr(modelinfo, "_options", unreadable_for_convs)
    report = check_model(INT8_MODELS[0])
    assert not report.compatible
    text = format_report(report)
    assert "its options could not be read (options type 1: ValueError: damaged)" in text
