"""Detectors: calibration to a target false-positive rate, and separation on few-pixel attacks."""

from __future__ import annotations

import math

import pytest
import torch

from pixelguard.defenses.detect import (
    Detector,
    FeatureSqueezingDetector,
    IsolatedPixelDetector,
    NotFittedError,
)
from pixelguard.defenses.detection_metrics import roc_auc
from pixelguard.errors import ConfigError


def _binomial_slack(p: float, n: int) -> float:
    return 3.0 * math.sqrt(p * (1.0 - p) / n)


@pytest.mark.parametrize("fpr", [0.05, 0.1, 0.2])
def test_threshold_meets_its_false_positive_rate_on_held_out_clean_digits(fpr: float, digits) -> None:
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
