"""Model plus detector as one (K + 1)-class classifier, attacked adaptively."""

from __future__ import annotations

import pytest
import torch

from pixelguard.attacks import SparseRS
from pixelguard.defenses.detector_aware import DetectorAwareClassifier
from pixelguard.errors import ConfigError
from pixelguard.models.base import Classifier, OutputKind


def test_argmax_is_the_detection_class_exactly_when_flagged(digits, digits_model, detector) -> None:
    combined = DetectorAwareClassifier(digits_model, detector)
    assert isinstance(combined, Classifier)
    assert combined.num_classes == 11 and combined.detected_class == 10
    assert combined.capabilities.output is OutputKind.LOGITS and not combined.capabilities.gradients
    x = digits[0][:200].clone()
    x[::2, 0, 0, 0] = 1.0  # isolated bright corners on every other image
    x[::2, 0, 7, 7] = 1.0
    pred = combined.predict(x).argmax(dim=1)
    flagged = detector.flag(x)
    assert bool(flagged.any()) and not bool(flagged.all())
    assert torch.equal(pred == 10, flagged)
    model_pred = digits_model.predict(x).argmax(dim=1)
    assert torch.equal(pred[~flagged], model_pred[~flagged])


def test_targeted_sparse_rs_on_the_combined_classifier_evades_the_detector(
    correct_digits, digits_model, detector
) -> None:
    x, y = correct_digits[0][:60], correct_digits[1][:60]
    runner_up = digits_model.predict(x).topk(2, dim=1).indices[:, 1]
    combined = DetectorAwareClassifier(digits_model, detector)
    adaptive = SparseRS(pixels=3, steps=300, seed=0).run(combined, x, y, target=runner_up)
    ok = adaptive.success
    assert float(ok.float().mean()) >= 0.5
    assert not bool(detector.flag(adaptive.x_adv[ok]).any())
    assert torch.equal(digits_model.predict(adaptive.x_adv[ok]).argmax(dim=1), runner_up[ok])
    assert bool(combined.evades(adaptive.x_adv[ok], y[ok]).all())
    # The same attack on the bare model leaves a footprint the detector sees.
    plain = SparseRS(pixels=3, steps=300, seed=0).run(digits_model, x, y, target=runner_up)
    assert float(detector.flag(plain.x_adv[plain.success]).float().mean()) >= 0.3


def test_evades_rejects_detected_and_correct_predictions(digits, digits_model, detector) -> None:
    combined = DetectorAwareClassifier(digits_model, detector, threshold=-1.0)  # flags everything
    x, y = digits[0][:10], digits[1][:10]
    assert not bool(combined.evades(x, y).any())
    never = DetectorAwareClassifier(digits_model, detector, threshold=float("inf"))
    assert torch.isfinite(never.predict(x)).all()
    wrong = (y + 1) % 10
    assert torch.equal(never.evades(x, wrong), digits_model.predict(x).argmax(dim=1) != wrong)


def test_bad_gain_raises(digits_model, detector) -> None:
    with pytest.raises(ConfigError):
        DetectorAwareClassifier(digits_model, detector, gain=0.0)


def test_untargeted_sparse_rs_never_counts_the_detected_class_as_success(
    correct_digits, digits_model, detector
) -> None:
    x, y = correct_digits[0][:60], correct_digits[1][:60]
    combined = DetectorAwareClassifier(digits_model, detector)
    result = SparseRS(pixels=3, steps=300, seed=0).run(combined, x, y)
    assert float(result.success.float().mean()) >= 0.3
    assert not bool((result.pred_after[result.success] == combined.detected_class).any())
    assert torch.equal(result.success, combined.evades(result.x_adv, y))


def test_targeting_the_detected_class_is_refused(correct_digits, digits_model, detector) -> None:
    x, y = correct_digits[0][:4], correct_digits[1][:4]
    combined = DetectorAwareClassifier(digits_model, detector)
    with pytest.raises(ConfigError, match="reject class"):
        SparseRS(pixels=1, steps=10).run(combined, x, y, target=combined.detected_class)
