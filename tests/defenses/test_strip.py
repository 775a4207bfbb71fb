"""STRIP: triggered inputs keep their prediction when blended with clean images."""

from __future__ import annotations

import pytest
import torch

from pixelguard.data.base import Dataset
from pixelguard.defenses.detect import StripDetector, create_detector
from pixelguard.defenses.detection_metrics import roc_auc
from pixelguard.errors import ConfigError, NotFittedError
from pixelguard.models.callable import CallableClassifier
from pixelguard.poisoning.triggers import parse_trigger
from pixelguard.workflows.detection import evaluate_trigger_detector


@pytest.fixture(scope="module")
def held_out(digits) -> Dataset:
    x, y = digits
    return Dataset(x[1200:], y[1200:], None, "digits-held-out")


def _triggered(held_out: Dataset, trigger: str, target: int) -> torch.Tensor:
    return parse_trigger(trigger, (1, 8, 8)).apply(held_out.x[held_out.y != target])


def test_strip_separates_triggered_from_clean_inputs(backdoored_digits, held_out) -> None:
    model, trigger, target = backdoored_digits
    detector = StripDetector(model, samples=16, seed=0).fit(held_out.x[:300])
    clean = detector.score(held_out.x[300:])
    triggered = detector.score(_triggered(held_out, trigger, target)[300:])
    assert roc_auc(clean, triggered) > 0.85
    again = StripDetector(model, samples=16, seed=0).fit(held_out.x[:300])
    assert torch.equal(again.score(held_out.x[300:]), clean)
    # An image's score does not depend on the batch it is scored in.
    assert torch.allclose(detector.score(held_out.x[310:313]), clean[10:13], atol=1e-5)


def test_strip_threshold_meets_its_fpr_on_held_out_clean_images(
    backdoored_digits, held_out
) -> None:
    model, trigger, target = backdoored_digits
    evaluation = evaluate_trigger_detector(
        model,
        held_out,
        create_detector("strip", model, samples=16),
        parse_trigger(trigger, (1, 8, 8)),
        target=target,
        fprs=(0.05, 0.1),
        seed=1,
    )
    assert evaluation.n_test >= 290 and evaluation.n_adversarial > 0.8 * evaluation.n_attacked
    for point in evaluation.points:
        measured = point.metrics.fpr
        assert measured <= point.target_fpr + 0.05
        assert point.metrics.recall > 0.5
    assert evaluation.auroc is not None and evaluation.auroc > 0.8
    assert evaluation.to_dict()["attack"]["params"]["trigger"] == trigger


def test_strip_works_on_a_labels_only_model(backdoored_digits, held_out) -> None:
    model, trigger, target = backdoored_digits

    def labels(x):
        return torch.nn.functional.one_hot(model.predict(torch.from_numpy(x)).argmax(dim=1), 10)

    labels_only = CallableClassifier(lambda x: labels(x).numpy(), (1, 8, 8), output="labels")
    detector = StripDetector(labels_only, samples=16).fit(held_out.x[:300])
    triggered = _triggered(held_out, trigger, target)[300:]
    auroc = roc_auc(detector.score(held_out.x[300:]), detector.score(triggered))
    assert auroc > 0.85


def test_strip_settings_and_order_are_checked(backdoored_digits, held_out) -> None:
    model = backdoored_digits[0]
    with pytest.raises(ConfigError, match="samples"):
        StripDetector(model, samples=0)
    with pytest.raises(ConfigError, match="blend"):
        StripDetector(model, blend="max")
    with pytest.raises(NotFittedError):
        StripDetector(model).score(held_out.x[:2])


def test_the_adaptive_attacker_pushes_triggered_inputs_past_strip(backdoored_digits, held_out):
    from pixelguard.attacks import create_attack
    from pixelguard.defenses.detector_aware import DetectorAwareClassifier

    model, trigger, target = backdoored_digits
    detector = create_detector("strip", model, samples=16)
    attack = create_attack("sparse-rs", pixels=3, budget=300, seed=0)
    evaluation = evaluate_trigger_detector(
        model,
        held_out,
        detector,
        parse_trigger(trigger, (1, 8, 8)),
        target=target,
        fprs=(0.05,),
        seed=1,
        attack=attack,
    )
    point = evaluation.points[0]
    adaptive = point.adaptive
    assert adaptive is not None and adaptive.n_fooled == evaluation.n_adversarial
    assert adaptive.detection_rate is not None and adaptive.detection_rate < point.metrics.recall
    assert evaluation.to_dict()["attack"]["adaptive"]["name"] == "sparse-rs"
    # What the attacker found really is sent to the target and not flagged at that threshold.
    stamped = parse_trigger(trigger, (1, 8, 8)).apply(held_out.x[held_out.y != target][:40])
    combined = DetectorAwareClassifier(model, detector, threshold=detector.threshold_for_fpr(0.05))
    labels = held_out.y[held_out.y != target][:40]
    result = attack.run(combined, stamped, labels, target=target)
    reached = combined.predict(result.x_adv[result.success]).argmax(dim=1)
    assert result.success.any() and bool((reached == target).all())
    assert (
        int(result.l0_pixels[result.success].max())
        <= 3 + parse_trigger(trigger, (1, 8, 8)).n_pixels
    )
