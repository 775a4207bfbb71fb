"""Projected gradient descent (PGD) under an Linf or L2 budget.

Repeated gradient steps (sign for Linf, unit norm for L2), each followed by the
projection onto the ``eps`` ball and the clip to [0, 1], from a random point of the
ball, with optional restarts from fresh random points for the images not yet fooled.

References:
    Madry, Makelov, Schmidt, Tsipras, Vladu. "Towards deep learning models resistant
    to adversarial attacks." ICLR 2018. arXiv:1706.06083.
    Kurakin, Goodfellow, Bengio. "Adversarial examples in the physical world."
    ICLR 2017 workshop. arXiv:1607.02533 (the basic iterative method: no random start).
"""

from __future__ import annotations

from dataclasses import dataclass

from pixelguard.attacks._gradient import NormBoundedAttack, Schedule
from pixelguard.attacks.base import register_attack
from pixelguard.config import at_least, positive


@register_attack("pgd")
@dataclass(frozen=True, kw_only=True)
class PGD(NormBoundedAttack):
    """Iterated, projected gradient steps within an Linf or L2 ball of radius ``eps``.

    Args:
        norm: ``"linf"`` or ``"l2"``.
        eps: the budget, in [0, 1] pixel units (L2: over all C*H*W values).
        step_size: size of each step (Linf: per value; L2: of the whole step);
            None takes ``2.5 * eps / steps``, Madry et al.'s rule.
        steps: gradient steps per run.
        random_start: start the first run at a uniform point of the ball instead of
            the clean image (later restarts always start at random points).
        restarts: runs per image; each restart works only on images not yet fooled.
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (logit margin).
        seed: seed of the attack's random generator.
        budget: hard limit on queries per image, the clean query included; a run
            spends at most ``steps + 1`` (one per gradient, one final check).

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y, target: (N,).

    Example:
        >>> PGD(norm="l2", eps=0.5, steps=20).step_size is None
        True
    """

    step_size: float | None = None
    steps: int = 40
    random_start: bool = True
    restarts: int = 1

    _constraints = {
        "step_size": positive(optional=True),
        "steps": at_least(1),
        "restarts": at_least(1),
    }

    def _schedule(self) -> Schedule:
        step_size = self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps
        return Schedule(self.steps, step_size, self.restarts, self.random_start)
