"""benchmarks/plan_quality.py: the paired difference across seeds and the sentence made from it."""

import numpy as np
import pytest

from tests.support import load_benchmark


@pytest.fixture(scope="module")
def pq():
    return load_benchmark("plan_quality")


def test_paired_difference_is_the_t_interval_of_the_differences(pq):
    current, former = [0.90, 0.92, 0.94], [0.89, 0.90, 0.91]
    d = pq.paired_difference(current, former)
    diffs = np.array([0.01, 0.02, 0.03])
    half = 4.302652729911275 * diffs.std(ddof=1) / np.sqrt(3)  # t(0.975, df=2)
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(0.02)
    assert (d["low"], d["high"]) == pytest.approx((0.02 - half, 0.02 + half))
    assert d["spread"] == pytest.approx(0.02)  # the larger arm's sample std


def test_verdict_says_lost_gained_or_unresolved(pq):
    lost = pq.paired_difference([0.80, 0.81, 0.82], [0.90, 0.91, 0.92])
    assert pq.verdict(lost).startswith("AP lost: difference -10.00 pp")
    gained = pq.paired_difference([0.90, 0.91, 0.92], [0.80, 0.81, 0.82])
    assert pq.verdict(gained).startswith("AP gained")
    noise = pq.paired_difference([0.90, 0.80, 0.85], [0.85, 0.86, 0.84])
    text = pq.verdict(noise)
    assert text.startswith("no AP difference resolved") and "within the seed spread" in text
    # a consistent difference (CI excludes 0) smaller than the seed spread is not a finding
    small = pq.paired_difference([0.901, 0.951, 0.851], [0.90, 0.95, 0.85])
    assert small["low"] > 0 and small["mean"] < small["spread"]
    assert pq.verdict(small).startswith("higher AP but not a finding")


def test_paired_difference_refuses_unpaired_samples(pq):
    with pytest.raises(ValueError, match="equal 1-d lengths"):
        pq.paired_difference([0.9, 0.8], [0.9])
    one = pq.paired_difference([0.9], [0.8])
    assert np.isnan(one["low"]) and "not a finding" in pq.verdict(one)
