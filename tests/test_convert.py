import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import fail_os_replace_on_call
from tfdefakeq import convert
from tfdefakeq.engine import export
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import Manifest, manifest_path
from tfdefakeq.runtime.modelinfo import read_model_info


def _convert(model, data, out, *extra):
    return convert.main(convert.parse_args([str(model), "--data", str(data), "--out", str(out), *extra]))


def test_float_model_converts_to_float32_and_ptq_int8(tmp_path, tiny_float_model, easy_synthetic_root):
    assert _convert(tiny_float_model, easy_synthetic_root, tmp_path / "fp32.tflite") == 0
    assert _convert(tiny_float_model, easy_synthetic_root, tmp_path / "ptq.tflite", "--format", "int8") == 0
    fp32 = Manifest.load(manifest_path(tmp_path / "fp32.tflite"))
    ptq = Manifest.load(manifest_path(tmp_path / "ptq.tflite"))
    assert fp32.format == "float32" and fp32.metrics["parity"]["agrees"]
    assert ptq.format == "int8" and ptq.scheme == "ptq_int8"
    info = read_model_info(tmp_path / "ptq.tflite")
    assert info.input_types == ["INT8"] and info.output_types == ["INT8"]
    assert "FLOAT32" not in info.weight_bytes
    assert ptq.size_bytes < 0.35 * fp32.size_bytes
    # the float32 model keeps the float model's 0.5; the PTQ model's threshold keeps its real-image FPR on val
    assert fp32.threshold == {"value": 0.5, "method": "float_model", "reason": "a float model keeps its own operating point"}
    record = ptq.threshold
    assert record["method"] == "float_real_fpr" and record["split"] == "val" and 0 < record["value"] < 1
    assert record["reference"] == f"the float model {tiny_float_model}" and record["reference_threshold"] == 0.5
    assert record["n_real"] > 0 and record["n_fake"] > 0
    assert abs(record["real_fpr"] - record["target_real_fpr"]) <= 2 / record["n_real"]  # as near as ties allow


def test_w4a8_model_converts_to_int4(tmp_path, tiny_w4a8_model, easy_synthetic_root):
    out = tmp_path / "int4.tflite"
    assert _convert(tiny_w4a8_model, easy_synthetic_root, out) == 0
    manifest = Manifest.load(manifest_path(out))
    assert manifest.format == "int4" and manifest.scheme == "w4a8"
    assert manifest.metrics["parity"]["max_diff_lsb"] <= export.MAX_LOGIT_LSB
    assert manifest.metrics["parity"]["decision_agreement"] >= 0.9  # flips only where |logit| is a few LSB
    assert read_model_info(out).weight_bytes["INT4"] > 0
    assert manifest.size_bytes == out.stat().st_size
    # trust by bytes: the manifest records the written file's hash, so the runtime opens it without a probe
    assert manifest.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    from tfdefakeq.runtime.loader import read_model_file

    assert read_model_file(out).trusted


def test_a_qat_models_threshold_needs_its_float_model(tmp_path, tiny_w4a8_model, tiny_float_model, easy_synthetic_root,
                                                      capsys):
    """Without --float-model a QAT model's manifest records 0.5 and why (a warning says so); with it, the
    threshold at which the int4 model flags as many real val images as the float model does at 0.5."""
    import numpy as np

    from tfdefakeq.data.folders import scan_forensynths
    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.runtime.images import load_images
    from tfdefakeq.runtime.loader import load_model

    assert _convert(tiny_w4a8_model, easy_synthetic_root, tmp_path / "plain.tflite") == 0
    plain = Manifest.load(manifest_path(tmp_path / "plain.tflite"))
    assert plain.threshold["value"] == 0.5 and plain.threshold["method"] == "default"
    assert "--float-model" in plain.threshold["reason"]
    out = capsys.readouterr()
    assert "warning: threshold 0.5 not calibrated: no float model to match" in out.err
    assert "threshold 0.5 (manifest: default, no float model to match" in out.out

    out = tmp_path / "int4.tflite"
    assert _convert(tiny_w4a8_model, easy_synthetic_root, out, "--float-model", str(tiny_float_model)) == 0
    record = Manifest.load(manifest_path(out)).threshold
    assert record["method"] == "float_real_fpr" and record["reference"] == f"the float model {tiny_float_model}"
    # recomputed here: the float model's FPR on the val reals, and the int4 model's at the stored threshold
    val = scan_forensynths(easy_synthetic_root, "val")
    images, labels = load_images([s.path for s in val], (32, 32)), np.array([s.label for s in val])
    float_model, float_manifest = load_detector(tiny_float_model)
    float_probs = export.keras_probs(float_model, float_manifest.preprocess, images)
    assert record["target_real_fpr"] == pytest.approx(np.mean(float_probs[labels == 0] > 0.5))
    tfl, manifest = load_model(out)
    int4_probs = tfl.predict_proba(images, manifest.preprocess)
    assert record["real_fpr"] == pytest.approx(np.mean(int4_probs[labels == 0] > record["value"]))
    assert abs(record["real_fpr"] - record["target_real_fpr"]) <= 2 / record["n_real"]
    assert (record["n_real"], record["n_fake"]) == (int((labels == 0).sum()), int((labels == 1).sum()))


@pytest.mark.parametrize("extra, message", [
    (["--threshold-images", "0"], "--threshold-images must be >= 1, got 0"),
    (["--float-model", "missing.weights.h5"], "missing.weights.h5: --float-model not found"),
    (["--scheme", "w4a8", "--float-model", "{float}"], "--float-model: with --scheme the float model is"),
    (["--format", "int8", "--float-model", "{float}"], "--float-model: .* is a float model, its own reference"),
    (["--float-model", "{float}"], "--float-model calibrates a quantized model.s threshold; a float32 model keeps"),
    (["--threshold-images", "100"], "--threshold-images calibrates a quantized model's threshold; a float32 model keeps"),
])
def test_threshold_flags_that_would_not_act_are_errors(tmp_path, tiny_float_model, easy_synthetic_root, extra, message):
    extra = [str(tiny_float_model) if e == "{float}" else e for e in extra]
    with pytest.raises(UserError, match=message):
        _convert(tiny_float_model, easy_synthetic_root, tmp_path / "m.tflite", *extra)
    assert list(tmp_path.iterdir()) == []


def test_int4_from_a_float_model_is_refused(tmp_path, tiny_float_model, easy_synthetic_root):
    with pytest.raises(UserError, match="int4 needs a model fine-tuned with --scheme w4a8"):
        _convert(tiny_float_model, easy_synthetic_root, tmp_path / "x.tflite", "--format", "int4")
    assert not (tmp_path / "x.tflite").exists()


def test_existing_output_needs_overwrite(tmp_path, tiny_float_model, easy_synthetic_root):
    out = tmp_path / "m.tflite"
    out.write_bytes(b"keep me")
    with pytest.raises(UserError, match="already exists"):
        _convert(tiny_float_model, easy_synthetic_root, out)
    assert out.read_bytes() == b"keep me"


def test_parity_failure_writes_nothing(tmp_path, tiny_float_model, easy_synthetic_root, monkeypatch):
    """A .tflite that disagrees with Keras is never written (here: a parity bound no model meets)."""
    monkeypatch.setattr(export, "MAX_FLOAT_DIFF", -1.0)
    with pytest.raises(export.ParityError, match="disagrees with Keras"):
        _convert(tiny_float_model, easy_synthetic_root, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_logits_beyond_the_bound_are_judged_op_by_op(tmp_path, tiny_w4a8_model, easy_synthetic_root, monkeypatch, capsys):
    """A QAT export whose logits miss the bound (here: a bound no model meets) is written when every
    op computes what Keras computes on TFLite's own inputs (rounding ties aside)."""
    monkeypatch.setattr(export, "MAX_LOGIT_LSB", -1.0)
    out = tmp_path / "int4.tflite"
    assert _convert(tiny_w4a8_model, easy_synthetic_root, out) == 0
    parity = Manifest.load(manifest_path(out)).metrics["parity"]
    assert parity["agrees"] and not parity["logits_agree"] and "error" not in parity
    verdict = parity["per_layer"]
    assert verdict["agrees"] and verdict["first_failing"] is None and verdict["max_local_lsb"] <= 1.0 + 1e-3
    assert verdict["matched"] >= 0.8 * verdict["tensors"] > 0
    assert "checking op by op" in capsys.readouterr().err


def test_a_corrupted_export_is_refused_op_by_op(tmp_path, tiny_w4a8_model, easy_synthetic_root, monkeypatch):
    """The same path with one weight of the converted file's first conv pushed to the far end: the
    file is not written and the error names the layer that departs."""
    import numpy as np

    from tfdefakeq.runtime.unpack import schema_module, serialize_model

    real = export.to_tflite

    def corrupted(model, fmt, representative=None):
        data = real(model, fmt, representative)
        schema = schema_module()
        flat = schema.ModelT.InitFromPackedBuf(data, 0)
        graph = flat.subgraphs[0]
        conv = next(op for op in graph.operators
                    if flat.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.CONV_2D)
        buffer = flat.buffers[graph.tensors[conv.inputs[1]].buffer]
        buffer.data = np.array(buffer.data, dtype=np.uint8)
        weights = buffer.data.view(np.int8)  # the stem conv: int8 (the stem stays at 8 bits)
        weights[:9] = np.where(weights[:9] > 0, -127, 127)
        return serialize_model(schema, flat, len(data))

    monkeypatch.setattr(export, "to_tflite", corrupted)
    monkeypatch.setattr(export, "MAX_LOGIT_LSB", -1.0)  # straight to the op-by-op check
    out = tmp_path / "int4.tflite"
    with pytest.raises(export.ParityError, match="op by op: .* departs from Keras"):
        _convert(tiny_w4a8_model, easy_synthetic_root, out)
    assert not out.exists()


def test_cli_reports_missing_manifest_in_one_line(tmp_path, easy_synthetic_root):
    weights = tmp_path / "orphan.weights.h5"
    weights.write_bytes(b"not weights")
    result = subprocess.run([sys.executable, "-m", "tfdefakeq.convert", str(weights), "--data", str(easy_synthetic_root),
                             "--out", str(tmp_path / "o.tflite")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("tfdefakeq convert: error: ")
    assert "orphan.manifest.json: manifest missing" in result.stderr


def test_interrupted_publish_leaves_neither_model_nor_manifest(tmp_path, tiny_float_model, easy_synthetic_root,
                                                               monkeypatch):
    """convert_model stages the .tflite and its manifest, then renames them: the second rename failing
    leaves neither file (nor a temp file) behind."""
    calls = fail_os_replace_on_call(monkeypatch, 2)
    out = tmp_path / "out" / "m.tflite"
    with pytest.raises(UserError, match=r"m\.tflite: cannot write"):
        _convert(tiny_float_model, easy_synthetic_root, out)
    assert [Path(c).name for c in calls] == ["m.manifest.json", "m.tflite"]
    assert list((tmp_path / "out").iterdir()) == []


def test_qat_fine_tuning_gets_the_flags_given_and_train_its_own_defaults(tmp_path):
    """convert --scheme runs train with the QAT flags that were given: --calib-images (also the
    representative / parity images) then sets the QAT calibration and sensitivity images too."""
    from tfdefakeq import convert

    def finetune(*flags):
        args = convert.parse_args(["f.weights.h5", "--data", "d", "--out", str(tmp_path / "m.tflite"), "--scheme", "adaptive",
                                   *flags])
        return convert._finetune_args(args, tmp_path / "m.tflite", args.given)

    given = finetune("--calib-images", "16", "--avg-bits", "3")
    assert given.calib_images == 16 and given.avg_bits == 3.0 and given.out == str(tmp_path / "m.qat")
    assert finetune().calib_images == 128  # train's default, not convert's 64
