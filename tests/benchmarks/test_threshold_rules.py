"""benchmarks/threshold_rules.py: the alternative threshold rules it measures against convert's."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rules():
    spec = importlib.util.spec_from_file_location("threshold_rules_under_test", ROOT / "benchmarks" / "threshold_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_alternatives_undo_a_shift_of_the_logits(rules):
    rng = np.random.default_rng(1)
    f = 1 / (1 + np.exp(-rng.normal(0, 2, 500)))  # the float model's probabilities
    q = 1 / (1 + np.exp(-(np.log(f / (1 - f)) + 0.8)))  # quantization added 0.8 to every logit
    labels = (f > 0.5).astype(int)
    expected = 1 / (1 + np.exp(-0.8))  # the quantized score of float 0.5
    assert rules.affine_logit(labels, q, f) == pytest.approx(expected, abs=1e-6)
    t = rules.decision_agreement(labels, q, f)
    assert np.mean((q > t) == (f > 0.5)) == 1.0 and abs(t - expected) < 0.02
