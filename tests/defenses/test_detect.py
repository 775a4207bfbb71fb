"""Detectors: calibration to a target false-positive rate, separation on few-pixel attacks,
and :func:`evaluate_detector`'s seeded ``limit`` subset and intervals."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from pixelguard.attacks import SparseRS
from pixelguard.data.base import Dataset
from pixelguard.defenses.detect import (
    Detector,
    FeatureSqueezingDetector,
    IsolatedPixelDetector,
    NotFittedError,
)
from pixelguard.defenses.detection_metrics import binomial_interval, roc_auc
from pixelguard.errors import ConfigError
from pixelguard.workflows.detection import evaluate_detector


def _binomial_slack(p: float, n: int) -> float:
    return 3.0 * math.sqrt(p * (1.0 - p) / n)


@pytest.mark.parametrize("fpr", [0.05, 0.1, 0.2])
def test_threshold_meets_its_false_positive_rate_on_held_out_clean_digits(
    fpr: float, digits
) -> None:
    x = digits[0][torch.randperm(1797, generator=torch.Generator().manual_seed(0))]
    detector = IsolatedPixelDetector(fpr=fpr).fit(x[:900])
    held_out = x[900:]
    rate = float(detector.flag(held_out).float().mean())
    assert rate <= fpr + _binomial_slack(fpr, held_out.shape[0])
    assert rate >= fpr / 3, "the threshold should not be far more conservative than asked"


def test_feature_squeezing_threshold_holds_on_held_out_digits(digits, digits_model) -> None:
    # Calibrate on digits the model never saw, shuffled: the digits are ordered by
    # writer, and the guarantee needs calibration and new images exchangeable.
    unseen = digits[0][1400:][torch.randperm(397, generator=torch.Generator().manual_seed(0))]
    calibration, held_out = unseen[:200], unseen[200:]
    detector = FeatureSqueezingDetector(digits_model, fpr=0.1).fit(calibration)
    assert detector.threshold == detector.threshold_for_fpr(0.1)
    rate = float(detector.flag(held_out).float().mean())
    assert rate <= 0.1 + _binomial_slack(0.1, held_out.shape[0])


def test_flag_is_score_above_threshold(digits) -> None:
    detector = IsolatedPixelDetector(top=2).fit(digits[0][:300])
    x = digits[0][300:400]
    assert torch.equal(detector.flag(x), detector.score(x) > detector.threshold)
    assert torch.equal(detector.flag(x, threshold=0.0), detector.score(x) > 0.0)
    assert detector.threshold_for_fpr(0.01) >= detector.threshold_for_fpr(0.2)


class _MeanDetector(Detector):
    """A trainable toy: score = distance of the mean brightness from the fitted mean."""

    name = "mean"
    trainable = True

    def _fit(self, clean: torch.Tensor) -> None:
        self.seen = clean
        self.center = float(clean.mean())

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return (x.mean(dim=(1, 2, 3)) - self.center).abs()


def test_trainable_detectors_calibrate_on_a_seeded_held_out_split(digits) -> None:
    x = digits[0][:200]
    detector = _MeanDetector(calibration_fraction=0.25, seed=3).fit(x)
    assert detector.seen.shape[0] == 150 and detector.calibration_scores.shape[0] == 50
    seen = {tuple(img.flatten().tolist()) for img in detector.seen}
    calibration_scores = detector.score(x)
    in_fit = torch.tensor([tuple(img.flatten().tolist()) in seen for img in x])
    assert torch.equal(
        detector.calibration_scores.sort().values, calibration_scores[~in_fit].sort().values
    )
    again = _MeanDetector(calibration_fraction=0.25, seed=3).fit(x)
    assert torch.equal(again.calibration_scores, detector.calibration_scores)
    explicit = _MeanDetector().fit(x[:100], calibration=x[100:130])
    assert explicit.seen.shape[0] == 100 and explicit.calibration_scores.shape[0] == 30


def test_isolated_pixel_scores_on_hand_made_images() -> None:
    x = torch.full((3, 1, 6, 6), 0.25)
    x[1, 0, 2, 2] = 1.0
    x[2, 0, 2, 2], x[2, 0, 4, 1] = 1.0, 0.75
    assert torch.allclose(IsolatedPixelDetector(top=1).score(x), torch.tensor([0.0, 0.75, 0.75]))
    assert torch.allclose(IsolatedPixelDetector(top=2).score(x), torch.tensor([0.0, 0.75, 1.25]))


@pytest.mark.parametrize(
    "make",
    [
        lambda model: FeatureSqueezingDetector(model, squeezers=("bits4",)),
        lambda model: IsolatedPixelDetector(size=3, top=2),
    ],
    ids=["feature-squeezing-bits4", "isolated-pixel"],
)
def test_detectors_separate_three_pixel_adversarials_from_clean_digits(
    make, rs_adversarials, correct_digits, digits_model
) -> None:
    detector = make(digits_model)
    _, _, adversarial = rs_adversarials
    auroc = roc_auc(detector.score(correct_digits[0]), detector.score(adversarial))
    assert auroc > 0.8


def test_unfitted_detector_and_bad_settings_raise(digits_model) -> None:
    with pytest.raises(NotFittedError):
        IsolatedPixelDetector().threshold  # noqa: B018
    assert FeatureSqueezingDetector(digits_model, squeezers="median3, bits2").squeezers == (
        "median3",
        "bits2",
    )
    with pytest.raises(ConfigError):
        FeatureSqueezingDetector(digits_model, squeezers=" , ")
    with pytest.raises(ConfigError):
        FeatureSqueezingDetector(digits_model, squeezers=("blur3",))
    with pytest.raises(ConfigError):
        IsolatedPixelDetector(top=0)
    with pytest.raises(ConfigError):
        IsolatedPixelDetector(fpr=2.0)


# --- evaluate_detector: the held-out subset and the intervals -------------------------


class _RecordingDetector(IsolatedPixelDetector):
    """Remembers every batch it scores: first the fit images, then the held-out clean ones."""

    def __init__(self) -> None:
        super().__init__()
        self.scored: list[torch.Tensor] = []

    def score(self, x: torch.Tensor) -> torch.Tensor:
        self.scored.append(x)
        return super().score(x)


@pytest.fixture(scope="module")
def ordered_digits(digits) -> Dataset:
    """All digits sorted by label, as ordered as the MNIST test file is by writer."""
    order = torch.argsort(digits[1], stable=True)
    return Dataset(digits[0][order], digits[1][order], None, "sorted digits")


def _held_out(dataset: Dataset, digits_model, *, limit: int | None, seed: int, fprs=(0.05,)):
    """Indices of the fit and of the held-out clean images, and the evaluation."""
    detector = _RecordingDetector()
    evaluation = evaluate_detector(
        digits_model,
        dataset,
        detector,
        SparseRS(pixels=1, steps=5, seed=0),
        fprs=fprs,
        adaptive=False,
        limit=limit,
        seed=seed,
    )
    index = {img.numpy().tobytes(): i for i, img in enumerate(dataset.x)}
    fit, held_out = (
        torch.tensor([index[img.numpy().tobytes()] for img in batch])
        for batch in detector.scored[:2]
    )
    return fit, held_out, evaluation


def test_limit_draws_held_out_images_from_across_ordered_data(ordered_digits, digits_model) -> None:
    n = len(ordered_digits)
    fit, held_out, evaluation = _held_out(ordered_digits, digits_model, limit=40, seed=0)
    assert held_out.numel() == evaluation.n_test == 40 and evaluation.limit == 40
    assert not set(held_out.tolist()) & set(fit.tolist()), "the subset must be held out"
    assert torch.equal(held_out, held_out.sort().values), "kept in dataset order"
    assert ordered_digits.y[held_out].unique().numel() >= 8
    assert int(held_out.min()) < n // 5 and int(held_out.max()) > 4 * n // 5


def test_the_limit_subset_follows_the_seed(ordered_digits, digits_model) -> None:
    _, first, _ = _held_out(ordered_digits, digits_model, limit=30, seed=4)
    _, again, _ = _held_out(ordered_digits, digits_model, limit=30, seed=4)
    _, other, _ = _held_out(ordered_digits, digits_model, limit=30, seed=5)
    assert torch.equal(first, again)
    assert len(set(first.tolist()) & set(other.tolist())) < 15


def test_operating_points_carry_clopper_pearson_intervals(ordered_digits, digits_model) -> None:
    _, _, evaluation = _held_out(ordered_digits, digits_model, limit=120, seed=0, fprs=(0.05, 0.2))
    report = evaluation.to_dict()
    assert report["intervals"] == {"method": "clopper-pearson", "confidence": 0.95}
    for point in report["operating_points"]:
        n_clean = point["false_positives"] + point["true_negatives"]
        assert n_clean == 120
        low, high = point["fpr_ci"]
        assert 0.0 <= low <= point["fpr"] <= high <= 1.0
        assert (low, high) == pytest.approx(
            binomial_interval(point["false_positives"], n_clean), abs=1e-6
        )
        assert high - low < 0.25, "120 clean images pin a rate to within a few tens of percent"
        low, high = point["detection_rate_ci"]
        assert 0.0 <= low <= point["detection_rate"] <= high <= 1.0


def test_a_held_out_set_too_small_for_the_rate_warns(ordered_digits, digits_model, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="pixelguard"):
        _held_out(ordered_digits, digits_model, limit=20, seed=0, fprs=(0.01, 0.05))
    assert "20 held-out clean images are too few to measure a false-positive rate of 0.01" in (
        caplog.text
    )
    assert "rate of 0.05" not in caplog.text, "20 images expect one false positive at 5%"


@pytest.mark.parametrize("limit", [0, -3])
def test_a_bad_limit_raises(ordered_digits, digits_model, limit) -> None:
    with pytest.raises(ConfigError, match="limit"):
        evaluate_detector(
            digits_model, ordered_digits, IsolatedPixelDetector(), SparseRS(pixels=1), limit=limit
        )
