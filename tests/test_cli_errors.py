"""Bad input through the real command lines: one stderr line naming the file, exit code 2, nothing
half-written."""

import json
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


# A flag that would be ignored, or a value no run can use, is refused at once: before TensorFlow is
# imported (the child cannot import it), with nothing created under --out.
NO_TF = ("import sys\n"
         "for name in ('tensorflow', 'tf_keras', 'tensorflow_model_optimization'): sys.modules[name] = None\n"
         "from tfdefakeq.{verb} import cli\n"
         "cli(sys.argv[1:])\n")

REFUSED = [
    ("convert", ["{model}", "--data", "{data}", "--out", "{out}/m.tflite", "--avg-bits", "3"],
     "--avg-bits acts on the QAT fine-tuning, which only --scheme starts"),
    ("convert", ["{model}", "--data", "{data}", "--out", "{out}/m.tflite", "--epochs", "2"], "--epochs acts on the QAT"),
    ("convert", ["{model}", "--data", "{data}", "--out", "{out}/m.tflite", "--budget-bytes", "90000"], "--budget-bytes"),
    ("convert", ["{model}", "--data", "{data}", "--out", "{out}/m.tflite", "--bit-plan", "p.json"], "--bit-plan"),
    ("convert", ["{model}", "--data", "{data}", "--out", "{out}/m.tflite", "--salient-ratio", "0.1"], "--salient-ratio"),
    ("convert", ["{model}", "--data", "{data}", "--out", "{out}/m.tflite", "--distill", "off"], "--distill acts"),
    ("convert", ["{model}", "--data", "{data}", "--out", "{out}/m.tflite", "--scheme", "w4a8", "--avg-bits", "3"],
     "--avg-bits needs --scheme adaptive"),
    ("convert", ["{model}", "--data", "{data}", "--out", "{out}/m.onnx"], "output path must end in .tflite"),
    ("train", ["--data", "{data}", "--out", "{out}/run", "--init", "{model}", "--backbone", "resnet50"],
     "--backbone is fixed by --init's model"),
    ("train", ["--data", "{data}", "--out", "{out}/run", "--init", "{model}", "--width", "0.5"], "--width is fixed by --init"),
    ("train", ["--data", "{data}", "--out", "{out}/run", "--init", "{model}", "--highpass"], "--highpass is fixed by --init"),
    ("train", ["--data", "{data}", "--out", "{out}/run", "--avg-bits", "3"], "--scheme"),
    ("train", ["--data", "{data}", "--out", "{out}/run", "--scheme", "w4a8"], "--scheme needs --init"),
    ("train", ["--data", "{data}", "--out", "{out}/run", "--init", "{model}", "--scheme", "w4a8", "--kd-alpha", "0.3"],
     "--kd-alpha weighs distillation, which is off"),
    ("train", ["--data", "{data}", "--out", "{out}/run", "--init", "{model}", "--scheme", "adaptive", "--distill", "off",
               "--learn-steps", "off"], "--learn-steps weighs distillation, which is off"),
    ("train", ["--data", "{data}", "--out", "{out}/run", "--init", "{model}", "--scheme", "adaptive", "--salient-ratio", "0",
               "--channel-choice", "random"], "--channel-choice picks the channels of the vertical split, which --salient-ratio 0 turns off"),
    ("train", ["--data", "{data}", "--out", "{out}/run", "--init", "{model}", "--scheme", "adaptive", "--bit-plan",
               "{split_plan}", "--channel-choice", "random"], "split_plan.json brings its own (its 'salient_channels')"),
    ("train", ["--data", "{data}", "--out", "{out}/run", "--init", "{model}", "--scheme", "adaptive", "--bit-plan",
               "{plain_plan}", "--channel-choice", "random"], "plain_plan.json has no split and none is picked without"),
    ("train", ["--data", "{data}", "--out", "{out}/run", "--partial"], "--partial loosens --weights"),
    ("train", ["--data", "{data}", "--out", "{out}/run", "--aug-prob", "2"], "--aug-prob must be in [0, 1]"),
    ("train", ["--data", "{out}/nowhere", "--out", "{out}/run"], "nowhere/train: dataset split not found"),
    ("predict", ["{model}", "{data}", "--margin", "0.5"], "--margin sets the face crop: add --face-crop"),
    ("predict", ["{model}", "{data}", "--face-model", "full"], "--face-model sets the face crop"),
    ("evaluate", ["{model}", "--data", "{data}", "--curves"], "--curves draws into --out"),
]


@pytest.mark.parametrize("verb,argv,message", REFUSED, ids=[f"{v}-{i}" for i, (v, _, _) in enumerate(REFUSED)])
def test_bad_arguments_are_refused_before_tensorflow_and_before_any_output(verb, argv, message, tmp_path, synthetic_root):
    model = tmp_path / "model.weights.h5"
    model.write_bytes(b"never read: the arguments are refused first")
    out = tmp_path / "out"
    plans = {"split_plan": {"weight_bits": {"conv": 4}, "salient_channels": {"conv": [0]}}, "plain_plan": {"weight_bits": {"conv": 4}}}
    for name, plan in plans.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(plan))
    argv = [a.format(model=model, data=synthetic_root, out=out, **{n: tmp_path / f"{n}.json" for n in plans}) for a in argv]
    result = subprocess.run([sys.executable, "-c", NO_TF.format(verb=verb), *argv], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"tfdefakeq {verb}: error: " + result.stderr.split(": error: ", 1)[1].strip()]
    assert message in result.stderr
    assert "replica" not in result.stdout
    assert not out.exists()


def test_train_refuses_fixed_steps_where_no_quantizer_learns_them(tmp_path, easy_synthetic_root, tiny_float_model):
    # tfmot's 8-bit scheme keeps its ranges as moving averages: --learn-steps off would change nothing
    code, errors = run("tfdefakeq.train", "--data", str(easy_synthetic_root), "--out", str(tmp_path / "run"),
                       "--init", str(tiny_float_model), "--scheme", "tfmot_int8", "--distill", "on",
                       "--learn-steps", "off", "--epochs", "1")
    assert code == 2 and len(errors) == 1
    assert "--learn-steps off: --scheme tfmot_int8 has no learned step sizes or ranges" in errors[0]
    assert not (tmp_path / "run" / "model.weights.h5").exists()
