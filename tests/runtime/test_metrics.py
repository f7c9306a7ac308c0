import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tfdefakeq.runtime.metrics import (
    SingleClassError,
    average_precision,
    detection_metrics,
    eer,
    roc_auc,
)


def _cases(seed=0, count=300):
    rng = np.random.default_rng(seed)
    while count:
        n = int(rng.integers(2, 80))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            continue
        count -= 1
        if count % 3 == 0:
            p = rng.random(n)  # distinct scores
        elif count % 3 == 1:
            p = rng.integers(0, rng.integers(1, 5), n).astype(float)  # heavy ties
        else:
            p = np.round(rng.random(n), 1)  # some ties
        yield y, p


def test_average_precision_matches_sklearn_random_and_tied():
    for y, p in _cases():
        assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_roc_auc_matches_sklearn_random_and_tied():
    for y, p in _cases(seed=1):
        assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_known_values():
    # sklearn's documentation examples
    y, p = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert average_precision(y, p) == pytest.approx(0.8333333333)
    assert roc_auc(y, p) == pytest.approx(0.75)
    # all scores tied: AUC one half, AP the fake fraction
    assert roc_auc([0, 1, 1, 1], [0.3] * 4) == 0.5
    assert average_precision([0, 1, 1, 1], [0.3] * 4) == 0.75


def test_eer_known_cases():
    assert eer([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 0.0  # perfect
    assert eer([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 1.0  # inverted
    assert eer([0, 1, 0, 1], [0.5] * 4) == 0.5  # all tied
    # one real scores above one of two fakes: FPR = FNR = 0.5 at threshold 0.3
    assert eer([0, 0, 1, 1], [0.1, 0.3, 0.2, 0.4]) == 0.5
    # 4 reals, 4 fakes, one real above every fake: FPR = FNR = 0.25 at threshold 0.4
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    p = [0.9, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.4]
    assert eer(y, p) == pytest.approx(0.25)
    # a real tied with two fakes at 0.5: the ROC segment (0, 1/3) -> (1/3, 1) crosses FPR = FNR at 2/9
    y = [0, 0, 0, 1, 1, 1]
    p = [0.5, 0.1, 0.2, 0.9, 0.5, 0.5]
    assert eer(y, p) == pytest.approx(2 / 9)


def test_eer_invariant_to_monotone_maps_and_between_rates():
    y = np.r_[np.zeros(10), np.ones(10)]
    p = np.r_[np.arange(10) / 10, np.arange(10) / 10 + 0.75]
    # descending: 8 fakes, a real (0.9), a fake (0.85): FPR = FNR = 0.1 there
    assert eer(y, p) == pytest.approx(0.1)
    assert eer(y, 2 * p + 1) == pytest.approx(eer(y, p))


def test_detection_metrics_counts_and_rates():
    y = [0, 0, 0, 1, 1]
    p = [0.1, 0.6, 0.5, 0.9, 0.4]  # 0.5 is not above the threshold: real
    m = detection_metrics(y, p)
    assert (m["n"], m["n_real"], m["n_fake"]) == (5, 3, 2)
    assert m["real_acc"] == pytest.approx(2 / 3)
    assert m["fake_acc"] == pytest.approx(1 / 2)
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["ap"] == pytest.approx(average_precision_score(y, p))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert set(m) == {"ap", "auc", "acc", "real_acc", "fake_acc", "eer", "n", "n_real", "n_fake"}
    assert detection_metrics(y, p, threshold=0.05)["fake_acc"] == 1.0


@pytest.mark.parametrize("fn", [average_precision, roc_auc, eer, detection_metrics])
def test_single_class_is_a_clear_error(fn):
    with pytest.raises(SingleClassError, match="only real images"):
        fn([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only fake images"):
        fn([1, 1], [0.1, 0.2])


def test_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        roc_auc([0, 1], [0.1])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, float("nan")])
