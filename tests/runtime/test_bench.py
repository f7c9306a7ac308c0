import csv
import io

import pytest

from tfdefakeq import bench as bench_cli
from tfdefakeq.runtime.bench import BENCH_COLUMNS, append_csv_row, bench_model, format_result


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
    assert out.read_text().count("date,model,") == 1  # one header row
    assert [p.name for p in out.parent.iterdir()] == ["bench.csv"]  # no temp files left


def test_append_refuses_a_csv_with_other_columns(tmp_path):
    from tfdefakeq.errors import UserError

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
