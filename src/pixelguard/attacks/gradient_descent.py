"""The plain targeted gradient descent attack: ``x <- clip(x - eta * grad J(x, target))``.

What a newcomer writes first: descend the loss of the target class on the input,
with a raw (not normalised) gradient and no budget other than the [0, 1] box, for a
number of steps. Each image stops when the model predicts the target; the result's
``success_rate`` is how often the target was reached. Its raw gradient vanishes on
confident models (the loss saturates), which is why PGD normalises its steps.

References:
    Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow, Fergus. "Intriguing
    properties of neural networks." ICLR 2014. arXiv:1312.6199 (targeted input
    optimisation; here without its L2 penalty).
"""

from __future__ import annotations

from dataclasses import dataclass

from pixelguard.attacks._gradient import GradientAttack, Schedule
from pixelguard.attacks.base import register_attack
from pixelguard.config import at_least, positive


@register_attack("gradient-descent")
@dataclass(frozen=True, kw_only=True)
class GradientDescent(GradientAttack):
    """Targeted descent on ``J(x, target)`` with step ``eta``, clipped to [0, 1].

    Args:
        eta: the learning rate multiplying the raw gradient; how large it should be
            depends on the model's gradient scale (too large overshoots the target).
        steps: most descent steps per image.
        loss: ``J``: ``"ce"`` (cross-entropy of the target, the textbook choice) or
            ``"margin"`` (how far the target's logit lies below the best other one).
        seed: seed of the attack's random generator (the descent draws no random numbers).
        budget: hard limit on queries per image, the clean query included; the
            descent spends at most ``steps + 1``.

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y, target: (N,).

    Raises:
        ConfigError: from :meth:`run` when no target is given.

    Example:
        >>> GradientDescent(eta=0.5, steps=100).eta
        0.5
    """

    supports_untargeted = False

    eta: float = 0.1
    steps: int = 100

    _constraints = {"eta": positive(), "steps": at_least(1)}

    def _schedule(self) -> Schedule:
        return Schedule(steps=self.steps, step_size=self.eta, restarts=1, random_start=False)
