"""Model plus detector as one classifier, so attacks can target the defended system.

A deployed detector turns the model into a system with one more answer: "rejected".
:class:`DetectorAwareClassifier` makes that answer an extra class, ``K``, whose logit
rises with the detector's score and overtakes the model's top class exactly when the
detector flags the input. An attack on it succeeds only by reaching a wrong class
*and* staying below the detector's threshold, which is the adaptive evaluation of a
detector (Carlini and Wagner 2017).

The classifier declares class ``K`` as its reject class
(:attr:`~pixelguard.models.base.Capabilities.reject_class`), so attacks never count
"rejected" as fooled: an untargeted attack succeeds exactly when
:meth:`DetectorAwareClassifier.evades`, and its loss pushes towards the best class
that is neither ``y`` nor "detected". Targeting class ``K`` is refused.

References:
    Carlini, Wagner. "Adversarial examples are not easily detected: bypassing ten
    detection methods." AISec 2017. arXiv:1705.07263.
"""

from __future__ import annotations

import torch

from pixelguard.attacks.base import fools
from pixelguard.checks import check_images
from pixelguard.defenses.detect import Detector
from pixelguard.errors import ConfigError
from pixelguard.models.base import (
    Capabilities,
    Classifier,
    ClassifierWrapper,
    OutputKind,
    log_probabilities,
)

_MARGIN_LIMIT = 1e4
"""Bound on ``score - threshold`` so an infinite threshold still gives finite logits."""


class DetectorAwareClassifier(ClassifierWrapper):
    """A ``(K + 1)``-class classifier: the model's K classes and "detected" (class ``K``).

    The first K logits are the model's log-probabilities; the detection logit is
    ``max_j log p_j + gain * (score(x) - threshold)``. So the argmax is class ``K``
    exactly when ``score(x) > threshold`` (the detector flags ``x``), and otherwise
    the model's prediction; black-box attacks see a graded detection margin to push
    down. Gradients are not offered: attack it with black-box attacks.

    Args:
        model: the protected classifier (scores of any output kind).
        detector: a fitted detector.
        threshold: the detector's threshold; default: ``detector.threshold``.
        gain: how steeply the detection logit follows the score (score units
            per unit of log-probability margin), > 0.

    Shape:
        predict: x (N, C, H, W) float32 in [0, 1] -> (N, K + 1) float32 logits.

    Raises:
        ConfigError: ``gain`` not positive.
        NotFittedError: no threshold given and the detector is not fitted.
    """

    def __init__(
        self,
        model: Classifier,
        detector: Detector,
        threshold: float | None = None,
        *,
        gain: float = 10.0,
    ) -> None:
        if not gain > 0:
            raise ConfigError(f"gain must be positive, got {gain}")
        super().__init__(model)
        self.detector = detector
        self.threshold = float(detector.threshold if threshold is None else threshold)
        self.gain = gain

    @property
    def num_classes(self) -> int:
        return self.model.num_classes + 1

    @property
    def detected_class(self) -> int:
        """The index of the extra class "detected" (= the model's K)."""
        return self.model.num_classes

    @property
    def capabilities(self) -> Capabilities:
        """Logits, no gradients, deterministic when the model is; class K rejects."""
        return Capabilities(
            output=OutputKind.LOGITS,
            gradients=False,
            deterministic=self.model.capabilities.deterministic,
            reject_class=self.detected_class,
        )

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The model's log-probabilities and the detection logit, side by side."""
        check_images(x)
        with torch.no_grad():
            logp = log_probabilities(self.model.predict(x), self.model.capabilities.output)
            margin = (self.detector.score(x).to(logp) - self.threshold).clamp(
                -_MARGIN_LIMIT, _MARGIN_LIMIT
            )
            detected = logp.amax(dim=1) + self.gain * margin
        return torch.cat([logp, detected.unsqueeze(1)], dim=1)

    def evades(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Which images fool the model without being detected: prediction not ``y``, not flagged.

        Shape:
            x: (N, C, H, W); y: (N,) -> (N,) bool.
        """
        pred = self.predict(x).argmax(dim=1)
        return fools(pred, y.to(pred.device), None, self.detected_class)
