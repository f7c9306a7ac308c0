"""The decision threshold that travels (issue 14, section 5): calibrated to the float model's real-image
false-positive rate, stored in the manifest, used by evaluate and predict unless --threshold says otherwise."""

import math

import numpy as np
import pytest

from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import Manifest
from tfdefakeq.runtime.threshold import check_threshold, describe_source, match_real_fpr, resolve_threshold


def test_the_quantized_threshold_reproduces_the_float_models_real_image_false_positive_rate():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(400, int), np.ones(400, int)]
    float_probs = np.r_[rng.uniform(0.0, 0.625, 400), rng.uniform(0.3, 1.0, 400)]  # 80 reals above 0.5: FPR 0.2
    quant_probs = np.clip(float_probs + 0.1, 0, 1)  # quantization shifted every score up by 0.1
    record = match_real_fpr(labels, quant_probs, float_probs)
    assert record["target_real_fpr"] == pytest.approx(np.mean(float_probs[:400] > 0.5))
    assert record["real_fpr"] == pytest.approx(record["target_real_fpr"])
    assert np.mean(quant_probs[:400] > record["value"]) == pytest.approx(record["target_real_fpr"])
    assert 0.55 < record["value"] < 0.65  # ~0.5 + the shift
    # the shift undone: the same calls on fakes as the float model at 0.5
    assert record["fake_tpr"] == pytest.approx(record["reference_fake_tpr"], abs=0.01)
    assert (record["n_real"], record["n_fake"], record["method"]) == (400, 400, "float_real_fpr")
    # at 0.5 the quantized model would have flagged many more real images
    assert np.mean(quant_probs[:400] > 0.5) > record["target_real_fpr"] + 0.1


def test_tied_scores_give_the_nearest_reachable_rate_and_a_threshold_between_scores():
    """Int8 outputs take few distinct values: the threshold sits between two of them (never on one), at
    the rate nearest the float one, and of equally near rates the one nearest 0.5."""
    labels = np.array([0, 0, 0, 0, 1, 1])
    quant = np.array([0.2, 0.4, 0.4, 0.7, 0.7, 0.9])
    reference = np.array([0.1, 0.2, 0.3, 0.6, 0.8, 0.9])  # 1 of 4 reals above 0.5
    record = match_real_fpr(labels, quant, reference)
    assert record["value"] == pytest.approx(0.55)  # halfway between 0.4 and 0.7: 1 of 4 reals (0.7) above
    assert record["real_fpr"] == 0.25 and record["fake_tpr"] == 1.0
    # target 0.5 (2 of 4): reachable only as 1/4 (above 0.4) or 3/4 (above 0.2): both 0.25 away, 0.55 nearer 0.5
    record = match_real_fpr(labels, quant, np.array([0.1, 0.2, 0.6, 0.6, 0.8, 0.9]))
    assert record["target_real_fpr"] == 0.5 and record["value"] == pytest.approx(0.55)
    # every real above the float threshold: below the lowest score; none: above the highest
    assert match_real_fpr(labels, quant, np.full(6, 0.9))["value"] == pytest.approx(0.1)
    assert match_real_fpr(labels, quant, np.full(6, 0.1))["value"] == pytest.approx(0.8)
    assert match_real_fpr(labels, np.ones(6), np.full(6, 0.1))["value"] < 1.0  # stays a valid probability


def test_no_real_image_is_a_one_line_error():
    with pytest.raises(UserError, match=r"^no real images among the 3 calibration images"):
        match_real_fpr([1, 1, 1], [0.2, 0.5, 0.9], [0.1, 0.6, 0.9])


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 2.0, math.nan])
def test_a_threshold_outside_0_1_is_refused(value):
    with pytest.raises(UserError, match=r"--threshold must be a probability between 0 and 1 \(exclusive\)"):
        check_threshold(value)


def test_which_threshold_a_verb_uses(capsys):
    calibrated = Manifest("resnet18", [64, 64, 3], "int4", threshold={
        "value": 0.62, "method": "float_real_fpr", "target_real_fpr": 0.17, "real_fpr": 0.1702,
        "reference_threshold": 0.5, "split": "val", "n_real": 470, "n_fake": 940})
    assert resolve_threshold(calibrated, None, note="x") == (0.62, "manifest")
    assert resolve_threshold(calibrated, 0.3, note="x") == (0.3, "flag")
    old = Manifest("resnet18", [64, 64, 3], "int4")  # written before thresholds were calibrated
    assert resolve_threshold(old, None, note="tfdefakeq evaluate: note: m.tflite") == (0.5, "default")
    assert capsys.readouterr().err == ("tfdefakeq evaluate: note: m.tflite: the manifest records no calibrated "
                                       "threshold; using 0.5\n")
    assert describe_source("manifest", calibrated) == (
        "manifest: matches the float model's real-image false-positive rate 0.1700 at 0.5 on val "
        "(470 real, 940 fake images; reached 0.1702)")
    broken = Manifest("resnet18", [64, 64, 3], "int4", threshold={"value": 1.5})
    with pytest.raises(UserError, match="the manifest's threshold must be a probability"):
        resolve_threshold(broken, None)


def test_old_manifests_still_load_and_the_threshold_round_trips(tmp_path):
    old = {"backbone": "resnet18", "input_shape": [64, 64, 3], "format": "int8"}
    assert Manifest.from_json(old).threshold == {}
    m = Manifest("resnet18", [64, 64, 3], "int8", threshold={"value": 0.4, "method": "float_real_fpr"})
    m.save(tmp_path / "m.manifest.json")
    assert Manifest.load(tmp_path / "m.manifest.json").threshold == {"value": 0.4, "method": "float_real_fpr"}
