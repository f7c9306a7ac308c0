import pandas as pd
import pytest

from tfdefakeq import demo
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import Manifest
from tfdefakeq.runtime.modelinfo import read_model_info


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reports(tmp_path, easy_synthetic_root):
    out, ship = tmp_path / "demo", tmp_path / "shipped"
    args = demo.parse_args(["--out", str(out), "--data", str(easy_synthetic_root), "--input-size", "32", "--width", "0.25",
                            "--epochs", "20", "--qat-epochs", "1", "--batch-size", "8", "--bench-runs", "5",
                            "--ship", str(ship)])
    assert demo.main(args) == 0

    report = pd.read_csv(out / "report.csv", comment="#")
    assert report["model"].tolist() == ["keras float", "tflite float32", "tflite int8", "tflite int4",
                                        "tflite adaptive-avg3"]
    assert report["parity_agrees"].dropna().astype(bool).all()
    tflite_rows = report[report.model.str.startswith("tflite")]
    assert (tflite_rows.latency_ms_p50 > 0).all() and (tflite_rows.size_bytes > 0).all()
    # float32 TFLite computes what Keras computes
    assert abs(report.loc[1, "ap"] - report.loc[0, "ap"]) < 1e-3
    int8, int4, adaptive = report.loc[2], report.loc[3], report.loc[4]
    assert int4.size_bytes <= 0.6 * int8.size_bytes
    assert adaptive.scheme == "adaptive" and adaptive.size_bytes < int4.size_bytes  # ~3 bits per weight
    # thresholds: the float models' 0.5; each quantized model's from its manifest, with the metrics taken at it
    assert report.threshold[:2].tolist() == [0.5, 0.5]
    for row in (int8, int4, adaptive):
        manifest = Manifest.load(out / "tflite" / f"resnet18_32_{row.model.split()[-1]}.manifest.json")
        assert manifest.threshold["method"] == "float_real_fpr" and row.threshold == pytest.approx(manifest.threshold["value"])
        assert manifest.metrics["test_threshold"] == pytest.approx(row.threshold)
        assert manifest.metrics["test"]["mean"]["real_acc"] == pytest.approx(row.real_acc)
        assert manifest.metrics["test_at_0.5"]["mean"]["real_acc"] == pytest.approx(row["real_acc_at_0.5"])
        assert row.delta_real_acc_pp == pytest.approx(100 * (row.real_acc - report.real_acc[0]))
    md = (out / "report.md").read_text()
    assert "machine:" in md and "command:" in md and "load: 1-minute load average" in md and "| tflite int4" in md
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_generator = pd.read_csv(out / "report_per_generator.csv", comment="#")
    assert {"autoencoder", "upsampler", "mean"} <= set(per_generator.generator)

    shipped = sorted(p.name for p in ship.iterdir())
    assert shipped == ["README.md", "resnet18_32_adaptive-avg3.manifest.json", "resnet18_32_adaptive-avg3.tflite",
                       "resnet18_32_int4.manifest.json", "resnet18_32_int4.tflite",
                       "resnet18_32_int8.manifest.json", "resnet18_32_int8.tflite"]
    assert read_model_info(ship / "resnet18_32_int4.tflite").weight_bytes["INT4"] > 0
    manifest = Manifest.load(ship / "resnet18_32_int4.manifest.json")
    assert manifest.metrics["test"]["mean"]["ap"] == pytest.approx(int4.ap)
    index = (ship / "README.md").read_text()
    assert "| resnet18_32_int4.tflite" in index and "| resnet18_32_int8.tflite" in index

    # a finished demo is not redone or replaced silently
    with pytest.raises(UserError, match="report.md: already exists"):
        demo.main(args)


def test_a_bad_adaptive_budget_is_refused_before_any_work(tmp_path):
    with pytest.raises(UserError, match="--avg-bits must be > 0 bits per weight, got -3"):
        demo.main(demo.parse_args(["--out", str(tmp_path / "demo"), "--avg-bits", "3", "-3"]))
    assert not (tmp_path / "demo").exists()
