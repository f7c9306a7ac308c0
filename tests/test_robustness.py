from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tfdefakeq import evaluate, robustness
from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.perturb import degrade

SHIPPED_INT8 = Path(__file__).resolve().parents[1] / "tflite_models" / "resnet18_64_int8.tflite"


def test_degradations_keep_shape_and_grow_with_the_level():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for kind, levels in (("jpeg", (95, 30)), ("blur", (0.5, 3.0)), ("resize", (0.9, 0.5))):
        mild, strong = (degrade(image, kind, level) for level in levels)
        assert mild.shape == strong.shape == image.shape and mild.dtype == np.uint8
        err = lambda x: np.abs(x.astype(float) - image).mean()  # noqa: E731
        assert 0 < err(mild) < err(strong), kind
    assert degrade(image, "blur", 0.0) is image and degrade(image, "resize", 1.0) is image


def test_bad_level_is_a_user_error():
    with pytest.raises(UserError, match="jpeg quality must be in"):
        degrade(np.zeros((8, 8, 3), np.uint8), "jpeg", 0)


def test_jpeg_sweep_on_the_shipped_model_writes_table_and_plot(tmp_path, synthetic_root, capfd):
    args = robustness.parse_args([str(SHIPPED_INT8), "--data", str(synthetic_root), "--sweep", "jpeg",
                                  "--levels", "100", "50", "20", "--out", str(tmp_path)])
    assert robustness.main(args) == 0
    err = capfd.readouterr().err
    assert "robustness jpeg: 3/3 levels" in err and "\r" not in err and "img" not in err  # it counts levels
    table = pd.read_csv(tmp_path / "resnet18_64_int8.jpeg.csv", comment="#")
    means = table[table.generator == "mean"]
    assert means.level.tolist() == [100, 50, 20]
    assert set(table.generator) == {"autoencoder", "upsampler", "mean"}
    assert (tmp_path / "resnet18_64_int8.jpeg.png").read_bytes()[:4] == b"\x89PNG"
    # accuracies at the threshold evaluate and predict use (the manifest's, else 0.5), named in the header
    from tfdefakeq.core.manifest import Manifest, manifest_path

    expected = Manifest.load(manifest_path(SHIPPED_INT8)).threshold.get("value", 0.5)
    header = dict(line[2:].strip().split(": ", 1) for line in open(tmp_path / "resnet18_64_int8.jpeg.csv") if line.startswith("# "))
    assert float(header["threshold"]) == expected and header["threshold_source"].split(":")[0] in ("manifest", "default")
    with pytest.raises(UserError, match="already exists"):
        robustness.main(args)


def test_evaluate_draws_roc_and_pr_curves(tmp_path, synthetic_root):
    args = evaluate.parse_args([str(SHIPPED_INT8), "--data", str(synthetic_root), "--split", "test",
                                "--out", str(tmp_path), "--curves"])
    assert evaluate.main(args) == 0
    assert (tmp_path / "resnet18_64_int8.test.curves.png").read_bytes()[:4] == b"\x89PNG"
