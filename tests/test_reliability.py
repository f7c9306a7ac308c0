"""A battery of bad inputs through the command lines, in process: each gives one stderr line that
names the file and the problem, exit code 2, and nothing half-written. (Issue: reliability.)"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfdefakeq import bench, convert, evaluate, train
from tfdefakeq.core.errors import UserError

SHIPPED_INT8 = Path(__file__).resolve().parents[1] / "tflite_models" / "resnet18_64_int8.tflite"


def fails(cli, argv, capsys, *needles):
    """Runs `cli(argv)`; asserts exit code 2 and one error line containing every needle."""
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tfdefakeq ")]
    assert len(errors) == 1, errors
    for needle in needles:
        assert str(needle) in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def data(tmp_path, synthetic_root):
    """A writable copy of the tiny synthetic dataset (64 px crops)."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    return root


def first_image(root: Path, split="test", gen="upsampler", cls="0_real") -> Path:
    return sorted((root / split / gen / cls).glob("*.png"))[0]


def evaluate_argv(root, *extra):
    return [str(SHIPPED_INT8), "--data", str(root), "--split", "test", *extra]


# ---- images -----------------------------------------------------------------------------------------

def test_zero_byte_image(data, capsys):
    victim = first_image(data)
    victim.write_bytes(b"")
    fails(evaluate.cli, evaluate_argv(data), capsys, victim, "not a readable image")


def test_truncated_png(data, capsys):
    victim = first_image(data)
    victim.write_bytes(victim.read_bytes()[:200])
    fails(evaluate.cli, evaluate_argv(data), capsys, victim)


def test_truncated_jpeg_in_training_data(data, tmp_path, capsys):
    victim = first_image(data, "train")
    jpeg = victim.with_suffix(".jpg")
    Image.open(victim).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:-300])
    victim.unlink()
    fails(train.cli, ["--data", str(data), "--out", str(tmp_path / "run"), "--width", "0.125", "--input-size", "32"],
          capsys, jpeg)
    assert not (tmp_path / "run" / "model.weights.h5").exists()


def test_text_file_named_png(data, capsys):
    victim = first_image(data)
    victim.write_text("not an image")
    fails(evaluate.cli, evaluate_argv(data), capsys, victim, "not a readable image")


def test_image_smaller_than_the_model_input(data, capsys):
    victim = first_image(data)
    Image.new("RGB", (40, 40)).save(victim)
    fails(evaluate.cli, evaluate_argv(data), capsys, victim, "smaller than the model input 64x64")


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16"])
def test_other_colour_modes_are_converted(data, capsys, mode):
    """Grayscale, RGBA, CMYK and 16-bit images are handled (converted to 8-bit RGB), not refused."""
    victim = first_image(data)
    rgb = Image.open(victim).convert("RGB")
    if mode == "I;16":
        Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257)).save(victim)
    elif mode == "CMYK":
        victim.unlink()
        rgb.convert("CMYK").save(victim.with_suffix(".jpg"), quality=95)
    else:
        rgb.convert(mode).save(victim)
    with pytest.raises(SystemExit) as exit_info:
        evaluate.cli(evaluate_argv(data))
    assert exit_info.value.code == 0


# ---- dataset layout -----------------------------------------------------------------------------------

def test_empty_real_folder(data, capsys):
    folder = data / "test" / "autoencoder" / "0_real"
    for p in folder.iterdir():
        p.unlink()
    fails(evaluate.cli, evaluate_argv(data), capsys, folder, "holds no images")


def test_missing_fake_folder(data, capsys):
    folder = data / "test" / "autoencoder" / "1_fake"
    shutil.rmtree(folder)
    fails(evaluate.cli, evaluate_argv(data), capsys, folder, "missing class folder")


def test_mislabeled_class_folder(data, capsys):
    folder = data / "test" / "autoencoder" / "1_fake"
    folder.rename(folder.with_name("2_fake"))
    fails(evaluate.cli, evaluate_argv(data), capsys, folder.with_name("2_fake"), "not a label")


def test_dataset_with_one_class_only(data, capsys):
    for gen in ("autoencoder", "upsampler"):
        shutil.rmtree(data / "test" / gen / "1_fake")
        (data / "test" / gen / "0_real").rename(data / "test" / gen / "real")
    fails(evaluate.cli, evaluate_argv(data), capsys, "has no fake folder")


def test_missing_split(data, tmp_path, capsys):
    shutil.rmtree(data / "val")
    fails(train.cli, ["--data", str(data), "--out", str(tmp_path / "run")], capsys, data / "val", "not found")


def test_non_image_files_are_ignored(data, capsys):
    (data / "test" / "upsampler" / "0_real" / "README.txt").write_text("notes")
    with pytest.raises(SystemExit) as exit_info:
        evaluate.cli(evaluate_argv(data))
    assert exit_info.value.code == 0


# ---- models -------------------------------------------------------------------------------------------

def test_truncated_tflite(tmp_path, data, capsys):
    model = tmp_path / "cut.tflite"
    model.write_bytes(SHIPPED_INT8.read_bytes()[: 5000])
    fails(bench.cli, [str(model)], capsys, model)


def test_manifest_that_is_not_json(tmp_path, data, capsys):
    model = tmp_path / "m.tflite"
    shutil.copyfile(SHIPPED_INT8, model)
    (tmp_path / "m.manifest.json").write_text("{broken")
    fails(evaluate.cli, [str(model), "--data", str(data), "--split", "test"], capsys, tmp_path / "m.manifest.json")


def test_model_input_size_differs_from_manifest(tmp_path, data, capsys):
    model = tmp_path / "m.tflite"
    shutil.copyfile(SHIPPED_INT8, model)
    manifest = json.loads(SHIPPED_INT8.with_name("resnet18_64_int8.manifest.json").read_text())
    manifest["input_shape"] = [32, 32, 3]
    (tmp_path / "m.manifest.json").write_text(json.dumps(manifest))
    fails(evaluate.cli, [str(model), "--data", str(data), "--split", "test"], capsys, tmp_path / "m.manifest.json",
          "does not match the model's [64, 64, 3]")


def test_weights_without_manifest(tmp_path, data, capsys):
    weights = tmp_path / "orphan.weights.h5"
    weights.write_bytes(b"\x89HDF\r\n")
    fails(convert.cli, [str(weights), "--data", str(data), "--out", str(tmp_path / "o.tflite")], capsys,
          "orphan.manifest.json", "manifest missing")


def test_unknown_backbone(tmp_path, data, capsys):
    fails(train.cli, ["--data", str(data), "--out", str(tmp_path / "r"), "--backbone", "resnet81"], capsys,
          "unknown backbone 'resnet81'", "did you mean")


def test_bad_augmentation_probability(tmp_path, data, capsys):
    fails(train.cli, ["--data", str(data), "--out", str(tmp_path / "r"), "--aug-prob", "1.5", "--width", "0.125",
                      "--input-size", "32"], capsys, "--aug-prob must be in [0, 1]")


# ---- outputs --------------------------------------------------------------------------------------------

def test_output_folder_that_cannot_be_created(tmp_path, data, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    fails(evaluate.cli, evaluate_argv(data, "--out", str(blocker / "results")), capsys, blocker)


def test_existing_results_are_not_overwritten(tmp_path, data, capsys):
    out = tmp_path / "results"
    with pytest.raises(SystemExit):
        evaluate.cli(evaluate_argv(data, "--out", str(out)))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    fails(evaluate.cli, evaluate_argv(data, "--out", str(out)), capsys, "already exists", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    """A writer that fails mid-way (ENOSPC) gives a UserError and leaves neither the target nor a temp file."""
    import os

    from tfdefakeq.core.fileio import write_atomic

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    target = tmp_path / "report.csv"
    with pytest.raises(UserError, match=r"report.csv: cannot write \(No space left on device\)"):
        write_atomic(target, b"x" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    import os

    from tfdefakeq.core.fileio import write_atomic

    target = tmp_path / "model.tflite"
    target.write_bytes(b"old model")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(UserError):
        write_atomic(target, b"new model")
    assert target.read_bytes() == b"old model" and sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


@pytest.mark.parametrize("field, value, problem", [
    ("preprocess", {"mean": 128.0, "std": 0.0}, "preprocess.std is 0"),
    ("preprocess", {"mean": "128", "std": 128.0}, "preprocess.mean '128' is not a finite number"),
    # a manifest's threshold is user input too
    ("threshold", 1.5, "threshold '1.5' is not an object"),
    ("threshold", {"value": 1.5}, "threshold.value '1.5' is not a probability between 0 and 1 (exclusive)"),
    ("threshold", {"value": "0.4"}, "threshold.value '0.4' is not a probability between 0 and 1 (exclusive)"),
])
def test_manifest_with_a_bad_field(tmp_path, data, capsys, field, value, problem):
    model = tmp_path / "m.tflite"
    shutil.copyfile(SHIPPED_INT8, model)
    manifest = json.loads(SHIPPED_INT8.with_name("resnet18_64_int8.manifest.json").read_text())
    manifest[field] = value
    (tmp_path / "m.manifest.json").write_text(json.dumps(manifest))
    fails(evaluate.cli, [str(model), "--data", str(data), "--split", "test"], capsys, tmp_path / "m.manifest.json",
          f"not a valid manifest ({problem})")

