"""Bootstrap intervals and the paired test, against scipy."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from glimpse.errors import GlimpseError
from glimpse.eval.stats import bootstrap_mean, paired_bootstrap


def test_the_bootstrap_interval_matches_scipys_percentile_bootstrap():
    data = np.random.default_rng(0).gamma(2.0, size=150)
    ours = bootstrap_mean(data)
    theirs = scipy_stats.bootstrap((data,), np.mean, method="percentile", n_resamples=10_000,
                                   random_state=np.random.default_rng(1)).confidence_interval
    width = theirs.high - theirs.low
    assert ours.mean == pytest.approx(data.mean()) and ours.n == 150
    assert ours.low == pytest.approx(theirs.low, abs=0.05 * width) and ours.high == pytest.approx(theirs.high, abs=0.05 * width)
    assert ours.low < ours.mean < ours.high and ours.text(2).count("[") == 1


def test_items_without_a_score_are_left_out():
    assert bootstrap_mean(np.array([1.0, np.nan, 3.0])).n == 2
    with pytest.raises(GlimpseError, match="no item"):
        bootstrap_mean(np.array([np.nan]))


@pytest.mark.parametrize("shift", [0.0, 0.12, 0.2, 1.0])
def test_the_paired_bootstrap_agrees_with_the_paired_t_test_on_normal_data(shift):
    rng = np.random.default_rng(3)
    a = rng.normal(size=300)
    b = a - shift + rng.normal(scale=1.0, size=300)
    p = paired_bootstrap(a, b)
    assert p == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, abs=0.03)
    assert paired_bootstrap(a, a.copy()) == 1.0
    with pytest.raises(GlimpseError, match="same items"):
        paired_bootstrap(a, b[:10])
