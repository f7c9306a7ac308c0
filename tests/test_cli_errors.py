"""Bad input through the real command lines: one stderr line naming the file, exit code 2, nothing
half-written."""

import shutil
import subprocess
import sys

import pytest


def run(*argv):
    result = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfdefakeq ")]
    return result.returncode, errors


@pytest.fixture
def broken_tree(tmp_path, synthetic_root):
    """A copy of the tiny synthetic test split, to be damaged by each test."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "test", root / "test")
    shutil.copytree(synthetic_root / "test", root / "train")
    shutil.copytree(synthetic_root / "test", root / "val")
    return root


def test_train_names_a_corrupt_image(tmp_path, broken_tree):
    victim = sorted((broken_tree / "train" / "upsampler" / "1_fake").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated PNG
    code, errors = run("tfdefakeq.train", "--data", str(broken_tree), "--out", str(tmp_path / "run"),
                       "--epochs", "1", "--width", "0.125", "--input-size", "32")
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith("tfdefakeq train: error: ") and str(victim) in errors[0]
    assert not (tmp_path / "run" / "model.weights.h5").exists()


def test_evaluate_names_an_empty_class_folder(tmp_path, broken_tree, tiny_float_model):
    from tfdefakeq import convert

    model = tmp_path / "m.tflite"
    convert.main(convert.parse_args([str(tiny_float_model), "--data", str(broken_tree), "--out", str(model)]))
    empty = broken_tree / "test" / "autoencoder" / "1_fake"
    shutil.rmtree(empty)
    empty.mkdir()
    code, errors = run("tfdefakeq.evaluate", str(model), "--data", str(broken_tree), "--split", "test",
                       "--out", str(tmp_path / "results"))
    assert code == 2 and len(errors) == 1
    assert str(empty) in errors[0] and "no images" in errors[0]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_evaluate_and_bench_refuse_a_non_tflite_file(tmp_path, synthetic_root):
    fake = tmp_path / "photo.tflite"
    shutil.copyfile(sorted((synthetic_root / "test" / "upsampler" / "0_real").iterdir())[0], fake)
    for argv in (("tfdefakeq.evaluate", str(fake), "--data", str(synthetic_root)), ("tfdefakeq.bench", str(fake))):
        code, errors = run(*argv)
        assert code == 2 and len(errors) == 1
        assert str(fake) in errors[0] and "not a TFLite flatbuffer" in errors[0]


def test_unknown_backbone_is_named(tmp_path, synthetic_root):
    code, errors = run("tfdefakeq.train", "--data", str(synthetic_root), "--out", str(tmp_path / "r"),
                       "--backbone", "resnet81")
    assert code == 2 and "unknown backbone 'resnet81'" in errors[0] and "resnet18" in errors[0]
