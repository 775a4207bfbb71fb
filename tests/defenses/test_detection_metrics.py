"""AUROC, TPR at FPR, thresholds, confusion metrics and their intervals on hand-made scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, binomtest
from sklearn.metrics import roc_auc_score

from pixelguard.defenses.detection_metrics import (
    average_ranks,
    binomial_interval,
    conformal_threshold,
    detection_metrics,
    empirical_threshold,
    roc_auc,
    tpr_at_fpr,
)
from pixelguard.errors import ConfigError, RangeError, ShapeError


def test_auroc_of_perfect_reversed_and_identical_scores() -> None:
    assert roc_auc([0.1, 0.2, 0.3], [0.5, 0.9]) == 1.0
    assert roc_auc([0.5, 0.9], [0.1, 0.2, 0.3]) == 0.0
    assert roc_auc([0.4] * 5, [0.4] * 3) == 0.5
    assert roc_auc(torch.zeros(4), torch.zeros(4)) == 0.5


def test_auroc_counts_ties_as_one_half() -> None:
    # pairs (clean, adv): (1,1) tie, (1,2) win, (3,1) loss, (3,2) loss -> 1.5 / 4
    assert roc_auc([1.0, 3.0], [1.0, 2.0]) == pytest.approx(0.375)


def test_auroc_matches_scikit_learn_with_many_ties() -> None:
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 6, 300).astype(float)
    adv = rng.integers(2, 9, 200).astype(float)
    expected = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[clean, adv])
    assert roc_auc(clean, adv) == pytest.approx(expected, abs=1e-12)


def test_average_ranks_share_ties() -> None:
    assert average_ranks(torch.tensor([2.0, 1.0, 2.0, 2.0, 0.0])).tolist() == [
        4.0,
        2.0,
        4.0,
        4.0,
        1.0,
    ]


def test_empirical_threshold_and_tpr_at_fpr() -> None:
    clean = torch.arange(100, dtype=torch.float32)  # 0..99
    threshold = empirical_threshold(clean, 0.05)
    assert threshold == 94.0 and int((clean > threshold).sum()) == 5
    assert empirical_threshold(clean, 1.0) == -math.inf
    adv = torch.tensor([10.0, 94.0, 95.0, 200.0])
    assert tpr_at_fpr(clean, adv, 0.05) == 0.5
    assert tpr_at_fpr(clean, adv, 0.0) == 0.25


def test_conformal_threshold_is_the_finite_sample_quantile(caplog) -> None:
    calibration = torch.arange(1, 20, dtype=torch.float64)  # 19 scores
    # ceil(0.9 * 20) = 18th smallest
    assert conformal_threshold(calibration, 0.1) == 18.0
    assert conformal_threshold(calibration, 1.0) == -math.inf
    assert conformal_threshold(calibration, 0.01) == math.inf
    assert "cannot guarantee" in caplog.text


def test_detection_metrics_on_a_hand_made_case() -> None:
    m = detection_metrics([0.1, 0.6, 0.2, 0.3], [0.7, 0.2, 0.9], 0.5)
    assert (m.true_positives, m.false_positives, m.false_negatives, m.true_negatives) == (
        2,
        1,
        1,
        3,
    )
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.fpr == 0.25
    assert m.to_dict()["threshold"] == 0.5
    nothing = detection_metrics([0.1], [0.2], 1.0)
    assert (nothing.precision, nothing.recall, nothing.f1) == (0.0, 0.0, 0.0)


def test_bad_scores_raise() -> None:
    with pytest.raises(ShapeError):
        roc_auc([], [1.0])
    with pytest.raises(ShapeError):
        roc_auc(torch.zeros(2, 2), [1.0])
    with pytest.raises(RangeError):
        roc_auc([float("nan")], [1.0])
    with pytest.raises(ConfigError):
        tpr_at_fpr([1.0], [1.0], 1.5)


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [(0, 100, 0.0, 0.0362), (5, 100, 0.0164, 0.1128), (100, 100, 0.9638, 1.0), (1, 1, 0.025, 1.0)],
)
def test_binomial_interval_matches_known_clopper_pearson_values(
    successes, trials, low, high
) -> None:
    lo, hi = binomial_interval(successes, trials)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


@pytest.mark.parametrize(("successes", "trials"), [(0, 7), (3, 7), (7, 7), (1, 60), (37, 250)])
def test_binomial_interval_agrees_with_scipy_exact_interval(successes, trials) -> None:
    for confidence in (0.9, 0.95, 0.99):
        expected = binomtest(successes, trials).proportion_ci(confidence, method="exact")
        lo, hi = binomial_interval(successes, trials, confidence)
        assert lo == pytest.approx(expected.low, abs=1e-9)
        assert hi == pytest.approx(expected.high, abs=1e-9)


def test_binomial_interval_holds_the_estimate_and_narrows_with_more_images() -> None:
    widths = []
    for trials in (20, 100, 500, 2500):
        for successes in (0, trials // 20, trials // 2, trials):
            lo, hi = binomial_interval(successes, trials)
            assert 0.0 <= lo <= successes / trials <= hi <= 1.0
        lo, hi = binomial_interval(trials // 20, trials)
        widths.append(hi - lo)
    assert all(wider > 1.5 * narrower for wider, narrower in zip(widths, widths[1:], strict=False))
    assert binomial_interval(5, 100, 0.99)[0] < binomial_interval(5, 100, 0.9)[0]


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.3])
def test_binomial_interval_covers_the_true_rate_at_least_as_often_as_promised(rate) -> None:
    # Exact coverage: the chance, over every count the 60 trials can give, that the
    # interval holds the true rate. Clopper-Pearson never falls below its level.
    trials = 60
    coverage = sum(
        binom.pmf(k, trials, rate)
        for k in range(trials + 1)
        if binomial_interval(k, trials)[0] <= rate <= binomial_interval(k, trials)[1]
    )
    assert 0.95 <= coverage <= 1.0


@pytest.mark.parametrize(
    ("successes", "trials", "confidence"),
    [(1, 0, 0.95), (-1, 10, 0.95), (11, 10, 0.95), (3, 10, 1.0), (3, 10, 0.0)],
)
def test_a_bad_binomial_interval_raises(successes, trials, confidence) -> None:
    with pytest.raises(ConfigError):
        binomial_interval(successes, trials, confidence)


def test_detection_metrics_give_the_intervals_of_their_rates() -> None:
    m = detection_metrics([0.1, 0.6, 0.2, 0.3], [0.7, 0.2, 0.9], 0.5)
    assert m.fpr_interval() == binomial_interval(1, 4)
    assert m.recall_interval(0.9) == binomial_interval(2, 3, 0.9)
    no_adversarial = detection_metrics([0.1, 0.6], [], 0.5)
    assert no_adversarial.recall_interval() is None
    assert no_adversarial.fpr_interval() == binomial_interval(1, 2)
