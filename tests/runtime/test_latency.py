import csv
import subprocess
import sys
import io
from pathlib import Path

import numpy as np
import pytest

from tfdefakeq import bench as bench_cli
from tfdefakeq.runtime.latency import BENCH_COLUMNS, append_csv_row, bench_model, format_result, profile_model
from tfdefakeq.runtime.profile import format_profile
from tfdefakeq.runtime.modelinfo import read_model_info


def run_cli(argv, capfd):
    with pytest.raises(SystemExit) as info:
        bench_cli.cli([str(a) for a in argv])
    out, err = capfd.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize("fmt", ["float32", "int8"])
def test_bench_model_reports_the_protocol(fmt, tiny_models):
    result = bench_model(tiny_models[fmt], threads=1, warmup=2, runs=7)
    assert list(result) == BENCH_COLUMNS
    assert result["runs"] == 7 and result["warmup"] == 2 and result["threads"] == 1
    assert result["xnnpack"] is True
    assert result["size_bytes"] == tiny_models[fmt].stat().st_size
    assert result["input_dtype"] == fmt
    assert 0 < result["latency_ms_min"] <= result["latency_ms_p50"] <= result["latency_ms_p90"]
    assert result["latency_ms_mean"] >= result["latency_ms_min"]
    assert result["init_ms"] > 0
    assert result["runtime"] == "ai-edge-litert" and result["runtime_version"]
    assert result["machine"] and result["processor"]
    text = format_result(result)
    assert "XNNPACK on" in text and "p50" in text and "p90" in text


def test_bench_without_xnnpack(tiny_models):
    result = bench_model(tiny_models["int8"], threads=2, warmup=0, runs=3, use_xnnpack=False)
    assert result["xnnpack"] is False and result["threads"] == 2
    assert "XNNPACK off" in format_result(result)


def test_cli_appends_rows_to_a_csv(tiny_models, tmp_path, capfd):
    out = tmp_path / "results" / "bench.csv"
    for fmt in ("float32", "int8"):
        code, stdout, _ = run_cli([tiny_models[fmt], "--runs", "5", "--warmup", "1", "--out", out], capfd)
        assert code == 0
        assert "latency_ms" in stdout and f"appended to {out}" in stdout
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["input_dtype"] for r in rows] == ["float32", "int8"]
    assert list(rows[0]) == BENCH_COLUMNS + ["command"]
    assert rows[1]["command"].startswith("python -m tfdefakeq.bench ") and "--runs 5" in rows[1]["command"]
    assert out.read_text().count("date,device,model,") == 1  # one header row
    assert [p.name for p in out.parent.iterdir()] == ["bench.csv"]  # no temp files left


def test_append_refuses_a_csv_with_other_columns(tmp_path):
    from tfdefakeq.core.errors import UserError

    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="other.csv: existing columns"):
        append_csv_row(path, {"x": 1})
    assert path.read_text() == "a,b\n1,2\n"
    append_csv_row(path, {"a": 3, "b": 4})
    assert path.read_text() == "a,b\n1,2\n3,4\n"


@pytest.mark.parametrize(
    "extra, message",
    [(["--runs", "0"], "--runs must be >= 1"), (["--warmup", "-1"], "--warmup must be >= 0"), (["--threads", "0"], "--threads must be >= 1")],
)
def test_cli_bad_arguments(extra, message, tiny_models, capfd):
    code, _, err = run_cli([tiny_models["int8"], *extra], capfd)
    assert code == 2 and err.strip().splitlines() == [f"tfdefakeq bench: error: {message}, got {extra[1]}"]


def test_cli_bad_model_file(tmp_path, capfd):
    path = tmp_path / "notes.tflite"
    path.write_text("hello\n" * 20)
    code, _, err = run_cli([path], capfd)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tfdefakeq bench: error: {path}: not a TFLite flatbuffer")


# ---- issue 5: thread lists, XNNPACK on/off, INT4 handling, p99, MACs, memory, profile ---------

INT4_MODEL = Path(__file__).resolve().parents[2] / "tflite_models" / "resnet18_64_int4.tflite"
TINY_MACS = 16 * 16 * 8 * (3 * 3 * 3) + 8 * 8 * 8 * (3 * 3 * 8) + 8  # conv, strided conv, dense


@pytest.mark.parametrize("fmt", ["float32", "int8"])
def test_macs_from_the_flatbuffer(fmt, tiny_models):
    info = read_model_info(tiny_models[fmt])
    assert info.macs == TINY_MACS
    assert info.macs_by_op()["CONV_2D"] == TINY_MACS - 8 and info.macs_by_op()["FULLY_CONNECTED"] == 8


def test_shipped_resnet_macs():
    info = read_model_info(INT4_MODEL)
    # ResNet-18 at width 1/2 on 64 px (+ the 3x3 depthwise high-pass): about 40 MMAC
    assert 39_000_000 < info.macs < 40_000_000
    assert info.input_shapes == [(1, 64, 64, 3)] and info.output_shapes == [(1, 1)]


def test_bench_reports_p99_throughput_and_memory(tiny_models):
    result = bench_model(tiny_models["int8"], threads=1, warmup=2, runs=20, device="ci-box")
    assert result["latency_ms_p50"] <= result["latency_ms_p90"] <= result["latency_ms_p99"]
    assert result["macs"] == TINY_MACS and result["device"] == "ci-box"
    assert result["gmacs_per_s"] == pytest.approx(TINY_MACS / (result["latency_ms_p50"] * 1e6), rel=1e-3)
    assert result["peak_rss_mb"] > result["model_rss_mb"]
    assert result["memory_method"] in ("VmHWM", "getrusage")
    assert result["packed_weights"] == "" and result["unpacked_tensors"] == 0
    text = format_result(result)
    assert "p99" in text and "GMAC/s" in text and "[ci-box]" in text and "peak RSS" in text


def test_bench_int4_unpacked_and_packed():
    unpacked = bench_model(INT4_MODEL, warmup=1, runs=5)
    packed = bench_model(INT4_MODEL, warmup=1, runs=5, unpack_packed=False)
    assert unpacked["packed_weights"] == "unpacked" and unpacked["unpacked_tensors"] == 19 and unpacked["unpack_ms"] > 0
    assert packed["packed_weights"] == "packed" and packed["unpacked_tensors"] == 0 and packed["unpack_ms"] == 0
    assert unpacked["size_bytes"] == packed["size_bytes"] == INT4_MODEL.stat().st_size
    assert "packed weights unpacked to INT8" in format_result(unpacked) and "run as stored" in format_result(packed)


def test_cli_grid_of_threads_xnnpack_and_int4(tiny_models, tmp_path, capfd):
    out = tmp_path / "grid.csv"
    argv = [tiny_models["int8"], INT4_MODEL, "--threads", "1", "2", "--xnnpack", "on", "off",
            "--packed", "unpacked", "packed", "--runs", "3", "--warmup", "0", "--device", "pi5-lab", "--out", out]
    code, stdout, _ = run_cli(argv, capfd)
    assert code == 0 and f"appended to {out} (12 row(s))" in stdout
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    # the int8 model has nothing to unpack: 2 threads x 2 XNNPACK; the int4 model: x 2 INT4 modes
    assert len(rows) == 4 + 8
    assert {(r["threads"], r["xnnpack"]) for r in rows} == {("1", "True"), ("2", "True"), ("1", "False"), ("2", "False")}
    assert {r["packed_weights"] for r in rows if r["model"].endswith("int4.tflite")} == {"unpacked", "packed"}
    assert {r["device"] for r in rows} == {"pi5-lab"}
    assert all(float(r["gmacs_per_s"]) > 0 for r in rows)


def test_cli_profile_says_how_it_was_measured(tiny_models, tmp_path, capfd):
    out = tmp_path / "prof.csv"
    code, stdout, _ = run_cli([tiny_models["int8"], "--runs", "3", "--warmup", "0", "--profile", "--out", out], capfd)
    assert code == 0
    assert "exposes no op profiler" in stdout and "isolated" in stdout and "whole-model p50" in stdout
    ops = list(csv.DictReader(io.StringIO((tmp_path / "prof.ops.csv").read_text())))
    assert [r["op"] for r in ops].count("CONV_2D") == 2 and all(r["latency_ms_p50"] for r in ops)
    assert sum(int(r["macs"]) for r in ops) == TINY_MACS


def test_cli_contradicting_xnnpack_flags(tiny_models, capfd):
    code, _, err = run_cli([tiny_models["int8"], "--no-xnnpack", "--xnnpack", "on"], capfd)
    assert code == 2 and "contradicts" in err


def test_peak_memory_measures_what_runs_between_start_and_stop():
    """model_rss_mb is the growth of the peak over the resident set at start: 64 MiB touched in
    between read as 64 MiB (page-table and allocator overhead: a few MiB at most)."""
    from tfdefakeq.runtime.latency import PeakMemory

    meter = PeakMemory()
    meter.start()
    if meter.method != "VmHWM":
        pytest.skip("the peak cannot be reset here (getrusage only rises): no exact figure to check")
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, every page written
    peak_mb, model_mb, method = meter.stop()
    del block
    assert method == "VmHWM"
    assert 64 <= model_mb < 64 + 8 and peak_mb >= model_mb
    meter.start()
    assert meter.stop()[1] < 8  # nothing allocated: no growth


def test_an_op_that_cannot_be_timed_says_why(monkeypatch):
    from tfdefakeq.runtime import profile

    real = profile.single_op_model

    def fails_on_the_first_conv(model_t, op_index, schema):
        if op_index == 1:
            raise ValueError("cannot isolate this op")
        return real(model_t, op_index, schema)

    monkeypatch.setattr(profile, "single_op_model", fails_on_the_first_conv)
    rows = profile_model(INT4_MODEL, warmup=0, runs=1)
    failed = [r for r in rows if r["latency_ms_p50"] is None]
    assert [r["op_index"] for r in failed] == [1] and failed[0]["not_timed"] == "ValueError: cannot isolate this op"
    assert all(r["not_timed"] == "" for r in rows if r["latency_ms_p50"] is not None)
    assert "op 1 " in format_profile(rows) and "not timed: ValueError: cannot isolate this op" in format_profile(rows)


def test_profile_says_which_ops_the_delegate_took(tiny_models):
    with_xnnpack = profile_model(tiny_models["int8"], warmup=0, runs=1)
    builtin = profile_model(tiny_models["int8"], use_xnnpack=False, warmup=0, runs=1)
    assert [r["delegated"] for r in with_xnnpack] == [True] * len(with_xnnpack)  # conv, conv, mean, dense: all XNNPACK's
    assert [r["delegated"] for r in builtin] == [False] * len(builtin)
    assert "left to the builtin kernels" in format_profile(builtin) and "left to" not in format_profile(with_xnnpack)


def test_held_back_by_ranks_op_types_by_their_excess_over_the_target():
    from tfdefakeq.runtime.profile import held_back_by

    def rows(*ops):
        return [{"op": op, "latency_ms_p50": ms, "delegated": d} for op, ms, d in ops]

    fp32 = rows(("CONV_2D", 1.0, True), ("CONV_2D", 1.0, True), ("HARD_SWISH", 0.1, True))
    int8 = rows(("CONV_2D", 0.4, True), ("CONV_2D", 0.4, True), ("ADD", 0.3, False), ("ADD", 0.2, True), ("MUL", 0.1, True))
    ranked = held_back_by(fp32, int8, target=0.5)
    assert [r["op"] for r in ranked] == ["ADD", "MUL", "CONV_2D"]
    assert ranked[0] == {"op": "ADD", "count": 2, "ms": 0.5, "base_ms": 0.0, "excess_ms": 0.5, "not_delegated": 1}
    assert ranked[2]["excess_ms"] == pytest.approx(0.8 - 0.5 * 2.0)


def test_paired_latency_times_every_model_in_alternation(tiny_models):
    from tfdefakeq.runtime.latency import paired_latency
    from tfdefakeq.runtime.loader import open_model

    models = {fmt: open_model(tiny_models[fmt]) for fmt in ("float32", "int8")}
    calls = []
    for fmt, m in models.items():
        real = m.interpreter.invoke
        m.interpreter = type("Counting", (), {"invoke": lambda self, real=real, fmt=fmt: (calls.append(fmt), real())[1],
                                              "set_tensor": m.interpreter.set_tensor})()
    times = paired_latency(models, runs=7, warmup=1, block=3)
    assert {fmt: len(ms) for fmt, ms in times.items()} == {"float32": 7, "int8": 7}
    assert all((ms > 0).all() for ms in times.values())
    timed = calls[2:]  # after one warm-up invoke each: blocks of 3, the order rotating every block
    assert timed[:6] == ["float32"] * 3 + ["int8"] * 3 and timed[6:9] == ["int8"] * 3


def test_bench_no_amx_denies_it_or_refuses_where_there_is_none(tiny_models, capfd):
    """--no-amx is never a silent no-op: on an AMX CPU the row says it was denied, elsewhere exit 2."""
    from tfdefakeq.runtime.amx import has_amx

    code = subprocess.run([sys.executable, "-m", "tfdefakeq.bench", str(tiny_models["int8"]), "--no-amx", "--runs", "3",
                           "--warmup", "0"], capture_output=True, text=True, timeout=300)
    if has_amx():
        assert code.returncode == 0, code.stderr
        assert "amx_int8 (denied)" in code.stdout
    else:
        assert code.returncode == 2 and "no AMX" in code.stderr and len(code.stderr.strip().splitlines()) == 1
