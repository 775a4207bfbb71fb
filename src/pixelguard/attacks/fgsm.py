"""The fast gradient sign method (FGSM) and its L2 form, the fast gradient method.

One step of size ``eps`` along the gradient's sign (Linf) or its unit-norm direction
(L2), from the clean image, then clipped to [0, 1]. Cheap (one gradient per image)
and the weakest gradient attack: use it as a smoke test, and :class:`~pixelguard.
attacks.pgd.PGD` for an evaluation.

References:
    Goodfellow, Shlens, Szegedy. "Explaining and harnessing adversarial examples."
    ICLR 2015. arXiv:1412.6572.
    Miyato, Maeda, Koyama, Ishii. "Distributional smoothing with virtual adversarial
    training." ICLR 2016. arXiv:1507.00677 (the L2 fast gradient method).
"""

from __future__ import annotations

from dataclasses import dataclass

from pixelguard.attacks._gradient import NormBoundedAttack, Schedule
from pixelguard.attacks.base import register_attack


@register_attack("fgsm")
@dataclass(frozen=True, kw_only=True)
class FGSM(NormBoundedAttack):
    """One gradient step of size ``eps`` under an Linf or L2 bound.

    Args:
        norm: ``"linf"`` (the sign of the gradient: FGSM) or ``"l2"`` (the unit
            gradient: the fast gradient method).
        eps: the budget, in [0, 1] pixel units (L2: over all C*H*W values).
        loss: ``"ce"`` (cross-entropy, the paper's) or ``"margin"`` (logit margin).
        seed: seed of the attack's random generator (FGSM draws no random numbers).
        budget: hard limit on queries per image; FGSM spends at most 3 (the clean
            query, the gradient, the check of the result).

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y, target: (N,).

    Example:
        >>> FGSM(eps=0.1).to_dict()["eps"]
        0.1
    """

    def _schedule(self) -> Schedule:
        return Schedule(steps=1, step_size=self.eps, restarts=1, random_start=False)
