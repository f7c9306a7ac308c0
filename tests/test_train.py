import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import TINY_TRAIN, run_train
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import Manifest, manifest_path


def test_float_training_writes_model_manifest_and_history(tiny_float_model, easy_synthetic_root):
    manifest = Manifest.load(manifest_path(tiny_float_model))
    assert manifest.format == "keras" and manifest.scheme == "float"
    assert manifest.backbone == "resnet18" and manifest.input_shape == [32, 32, 3]
    assert manifest.build_kwargs == {"highpass": True, "width": 0.25}
    history = (tiny_float_model.parent / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 20  # header + one row per epoch
    assert not (tiny_float_model.parent / "backup").exists()  # removed once training finished
    # --keep best (the default): the manifest's metrics are those of the first epoch with the best val AUC
    column = history[0].split(",").index("val_auc")
    val_auc = [float(line.split(",")[column]) for line in history[1:]]
    assert manifest.metrics["kept_by"] == "best" and manifest.metrics["epochs"] == 20
    assert manifest.metrics["kept_epoch"] == 1 + int(np.argmax(val_auc))
    assert manifest.metrics["val_auc"] == pytest.approx(max(val_auc))


def test_trained_detector_beats_chance_on_validation(tiny_float_model, easy_synthetic_root):
    from tfdefakeq.data.folders import scan_forensynths
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.runtime.scoring import evaluate_arrays
    from tfdefakeq.runtime.images import load_images

    model, manifest = load_detector(tiny_float_model)
    samples = scan_forensynths(easy_synthetic_root, "val")
    x = manifest.preprocess.apply(load_images([s.path for s in samples], (32, 32)))
    probs = 1 / (1 + np.exp(-model.predict(x, verbose=0).ravel()))
    mean = evaluate_arrays([s.label for s in samples], probs, [s.generator for s in samples])[-1]
    assert mean["auc"] > 0.6


def test_qat_fine_tune_records_bits(tiny_w4a8_model):
    manifest = Manifest.load(manifest_path(tiny_w4a8_model))
    assert manifest.scheme == "w4a8" and manifest.activation_bits == 8
    assert manifest.weight_bits["highpass"] == manifest.weight_bits["conv1_conv"] == 8
    assert manifest.weight_bits["conv2_block1_1_conv"] == 4


def test_existing_run_is_not_overwritten(tiny_float_model, easy_synthetic_root):
    with pytest.raises(UserError, match="already exists"):
        run_train(easy_synthetic_root, tiny_float_model.parent, ["--epochs", "1"])


def test_scheme_needs_init(tmp_path, easy_synthetic_root):
    with pytest.raises(UserError, match="--scheme needs --init"):
        run_train(easy_synthetic_root, tmp_path, ["--scheme", "w4a8"])


def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path, easy_synthetic_root):
    """SIGKILL after the first epoch's checkpoint; --resume finishes the run, and its weights equal
    those of an uninterrupted run with the same seed."""
    from tfdefakeq.data.folders import scan_forensynths
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.runtime.images import load_images

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "tfdefakeq.train", "--data", str(easy_synthetic_root), "--out", str(out),
            "--epochs", "3"] + TINY_TRAIN
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = out / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        # epoch 1 logged, then checkpointed (the row is written first)
        if history.exists() and len(history.read_text().splitlines()) >= 2 and (out / "backup" / "checkpoint").exists():
            break
        time.sleep(0.1)
    assert proc.poll() is None, "training ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "backup").exists() and not (out / "model.weights.h5").exists()

    with pytest.raises(UserError, match="--resume"):
        run_train(easy_synthetic_root, out, ["--epochs", "3"])
    resumed = run_train(easy_synthetic_root, out, ["--epochs", "3", "--resume"])
    assert (out / "model.weights.h5").exists() and not (out / "backup").exists()
    epochs = [line.split(",")[0] for line in history.read_text().splitlines()[1:]]
    assert epochs[-1] == "2"

    straight = run_train(easy_synthetic_root, tmp_path / "straight", ["--epochs", "3"])
    images = load_images([s.path for s in scan_forensynths(easy_synthetic_root, "val")], (32, 32))
    outputs = []
    for path in (resumed, straight):
        model, manifest = load_detector(path)
        outputs.append(model.predict(manifest.preprocess.apply(images), verbose=0))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=0, atol=1e-5)


def test_train_generators_are_recorded_and_checked(tmp_path, synthetic_root):
    out = run_train(synthetic_root, tmp_path / "ae_only", ["--epochs", "1", "--train-generators", "autoencoder"])
    assert Manifest.load(manifest_path(out)).train_generators == ["autoencoder"]
    with pytest.raises(UserError, match="--train-generators: stylegan not in"):
        run_train(synthetic_root, tmp_path / "bad", ["--epochs", "1", "--train-generators", "stylegan"])


def test_short_runs_cap_batchnorm_memory():
    """MobileNets' BN momentum 0.999 would leave the moving statistics at their initial values after a
    short run (validation AUC exactly 0.5, measured); the cap keeps 10 memory lengths in the run."""
    from tfdefakeq.backbones import build
    from tfdefakeq.engine.training import shorten_batchnorm_memory
    from tfdefakeq.core.tfcompat import keras

    model = build("mobilenet_v2", input_shape=(32, 32, 3), alpha=0.35)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert shorten_batchnorm_memory(model, 1000) == len(bns)
    assert all(bn.momentum == pytest.approx(0.99) for bn in bns)
    assert shorten_batchnorm_memory(model, 100_000) == 0  # a long run keeps what the architecture says


def test_quiet_training_prints_no_progress_and_a_log_gets_lines_not_a_bar(tmp_path, synthetic_root, capfd):
    run_train(synthetic_root, tmp_path / "log", ["--epochs", "1"])
    out, err = capfd.readouterr()
    epoch_lines = [line for line in out.splitlines() if "ms/step" in line]
    assert len(epoch_lines) == 1 and "\r" not in out + err  # not a terminal: one line per epoch, no redrawn bar
    run_train(synthetic_root, tmp_path / "quiet", ["--epochs", "1", "--quiet"])
    out, err = capfd.readouterr()
    assert "ms/step" not in out and "\r" not in out + err and "saved" in out
