"""The white-box gradient-attack template: init -> step -> project -> clip.

Every gradient attack in pixelguard is the same loop over a perturbation
``delta`` of the still-robust images, differing only in small hooks:

* :meth:`GradientAttack._loss`: the per-image objective the attack *maximises*
  (cross-entropy or logit margin, flipped for targeted attacks);
* :meth:`GradientAttack._normalize_grad`: how the raw gradient becomes a step
  direction (sign for Linf, unit L2 norm for L2, unchanged for plain descent);
* :meth:`GradientAttack._project`: back onto the threat model (Linf or L2 ball,
  at most ``k`` changed pixels, or nothing);
* :meth:`GradientAttack._random_start`: a random point of the threat model to
  start from, used by random starts and by every restart after the first;
* :meth:`GradientAttack._schedule`: steps, step size, restarts, random start.

Each step costs one query per image (a forward and backward pass through
:meth:`~pixelguard.models.queries.QueryCounter.logits`) and also tells whether the
current point already fools the model, so images leave the loop at their first
success; the last iterate is checked with one more query. Restarts run only on
the images no earlier restart fooled, so more restarts never lower the success
rate. Random numbers are drawn on the CPU from the attack's generator and moved to
the images' device.

References:
    Madry, Makelov, Schmidt, Tsipras, Vladu. "Towards deep learning models resistant
    to adversarial attacks." ICLR 2018. arXiv:1706.06083.
    Rauber, Zimmermann, Bethge, Brendel. "Foolbox Native: fast adversarial attacks to
    benchmark the robustness of machine learning models in PyTorch, TensorFlow, and
    JAX." JOSS 2020 (the ``BaseGradientDescent`` hooks this template follows).
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import torch
from torch.nn import functional as F

from pixelguard.attacks._population import best_other, is_adversarial
from pixelguard.attacks.base import Attack, AttackState
from pixelguard.config import one_of, positive
from pixelguard.errors import CapabilityError
from pixelguard.models.queries import QueryCounter

GradientLoss = Literal["ce", "margin"]
"""Objectives a gradient attack can follow: cross-entropy or the logit margin."""

Norm = Literal["linf", "l2"]
"""Norms that bound a dense perturbation."""

ObjectiveFunction = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""``objective(logits, label, target) -> (M,)``: larger is closer to fooling the model."""

_MAX_ELEMENTS_PER_GRADIENT = 1 << 22
"""Most input values differentiated in one forward/backward pass (16 MiB of float32)."""


class Schedule(NamedTuple):
    """How long and how far a gradient attack walks.

    Attributes:
        steps: gradient steps per restart.
        step_size: multiplier of the normalised gradient in each step.
        restarts: runs per image; every run after the first starts at a random point.
        random_start: whether the first run starts at a random point too.
    """

    steps: int
    step_size: float
    restarts: int
    random_start: bool


def objective(kind: GradientLoss, reject_class: int | None = None) -> ObjectiveFunction:
    """The per-image objective an attack maximises, from logits.

    ``"ce"``: the cross-entropy of the true class (untargeted) or minus that of the
    target (targeted). ``"margin"``: ``max_{j != y} z_j - z_y`` (untargeted) or
    ``z_t - max_{j != t} z_j`` (targeted), positive exactly when the model is fooled;
    it does not saturate on confident models the way cross-entropy does (Carlini and
    Wagner, arXiv:1608.04644). Log-probabilities work in place of logits.

    With a reject class ``r`` (untargeted only), the margin's ``max`` skips ``r`` and
    the cross-entropy is that of the answers that do not fool the model,
    ``-log(p_y + p_r)``, so neither objective rewards a rejected input.

    Shape:
        logits: (M, K); label, target: (M,) -> (M,).
    """

    def value(
        logits: torch.Tensor, label: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        cls = label if target is None else target
        if kind == "ce":
            if target is not None:
                return -F.cross_entropy(logits, cls, reduction="none")
            if reject_class is None:
                return F.cross_entropy(logits, cls, reduction="none")
            logp = F.log_softmax(logits, dim=1)
            own_logp = logp.gather(1, cls.view(-1, 1)).squeeze(1)
            return -torch.logaddexp(own_logp, logp[:, reject_class])
        own = logits.gather(1, cls.view(-1, 1)).squeeze(1)
        if target is not None:
            return own - best_other(logits, cls)
        return best_other(logits, cls, reject_class) - own

    return value


def loss_gradient(
    model: QueryCounter,
    x: torch.Tensor,
    index: torch.Tensor,
    label: torch.Tensor,
    target: torch.Tensor | None,
    objective_fn: ObjectiveFunction,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at ``x`` and the gradient of each row's objective, one query per row.

    Rows are differentiated in memory-bounded groups; the adapter chunks each group
    further to its batch size.

    Args:
        model: the query-counting model; row ``i`` is charged to image ``index[i]``.
        x: the points to differentiate at.
        index: which original image each row belongs to.
        label: each row's true label.
        target: each row's target class, or None (untargeted).
        objective_fn: the objective to differentiate, see :func:`objective`.

    Shape:
        x: (M, C, H, W); index, label, target: (M,) -> logits (M, K) detached,
        gradient (M, C, H, W).

    Raises:
        CapabilityError: the model's logits do not depend differentiably on its input.
    """
    group = max(1, _MAX_ELEMENTS_PER_GRADIENT // max(1, x[0].numel()))
    logits_parts, grad_parts = [], []
    for lo in range(0, x.shape[0], group):
        part = x[lo : lo + group].detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.logits(part, index=index[lo : lo + group].cpu())
            if not logits.requires_grad:
                raise CapabilityError(
                    "the model's logits do not depend differentiably on its input; "
                    "use a black-box attack"
                )
            tgt = None if target is None else target[lo : lo + group]
            value = objective_fn(logits, label[lo : lo + group], tgt)
            (grad,) = torch.autograd.grad(value.sum(), part)
        logits_parts.append(logits.detach())
        grad_parts.append(grad)
    return torch.cat(logits_parts), torch.cat(grad_parts)


@dataclass(frozen=True, kw_only=True)
class GradientAttack(Attack):
    """Template of the white-box gradient attacks; subclasses fill in the hooks.

    Args:
        loss: the objective to follow, ``"ce"`` (cross-entropy) or ``"margin"``
            (logit margin); see :func:`objective`.
        seed: seed of the attack's random generator (random starts, restarts).
        budget: hard limit on queries per image, the clean query included; one
            forward/backward pass is one query.

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y, target: (N,).
    """

    needs_gradients: ClassVar[bool] = True

    loss: GradientLoss = "ce"

    _constraints = {"loss": one_of("ce", "margin")}

    @abstractmethod
    def _schedule(self) -> Schedule:
        """Steps, step size, restarts and random start of this configuration."""

    def _loss(
        self,
        logits: torch.Tensor,
        label: torch.Tensor,
        target: torch.Tensor | None,
        reject_class: int | None = None,
    ) -> torch.Tensor:
        """Per-image objective to maximise; default: :func:`objective` of ``loss``.

        Shape:
            logits: (M, K); label, target: (M,) -> (M,).
        """
        return objective(self.loss, reject_class)(logits, label, target)

    def _normalize_grad(self, grad: torch.Tensor) -> torch.Tensor:
        """Step direction from the raw gradient; default: the gradient itself.

        Shape:
            grad: (M, C, H, W) -> (M, C, H, W).
        """
        return grad

    def _project(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Bring ``delta`` back into the threat model around ``x``; default: unbounded.

        Clipping ``x + delta`` to [0, 1] follows; projections must stay valid under it.

        Shape:
            delta, x: (M, C, H, W) -> (M, C, H, W).
        """
        return delta

    def _random_start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A random perturbation inside the threat model; default: none (zeros).

        Shape:
            x: (M, C, H, W) -> (M, C, H, W) on x's device.
        """
        return torch.zeros_like(x)

    def _start(
        self, clean: torch.Tensor, generator: torch.Generator, random_start: bool
    ) -> torch.Tensor:
        """The first iterate: ``clean``, or a random point of the threat model around it.

        Shape:
            clean: (M, C, H, W) -> (M, C, H, W) in [0, 1].
        """
        if not random_start:
            return clean.clone()
        return (clean + self._project(self._random_start(clean, generator), clean)).clamp(0.0, 1.0)

    def _step(
        self, clean: torch.Tensor, current: torch.Tensor, grad: torch.Tensor, step_size: float
    ) -> torch.Tensor:
        """One step along the normalised gradient, projected and clipped.

        Shape:
            clean, current, grad: (M, C, H, W) -> (M, C, H, W) in [0, 1].
        """
        delta = current - clean + step_size * self._normalize_grad(grad)
        return (clean + self._project(delta, clean)).clamp(0.0, 1.0)

    def maximize_loss(
        self,
        logits_fn: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
        objective_fn: ObjectiveFunction | None = None,
    ) -> torch.Tensor:
        """The inner maximisation of adversarial training: the last iterate of one run.

        Unlike :meth:`run`, nothing is counted, verified or stopped early: every image
        takes all ``steps`` steps from a random point of the threat model, and the
        final points are returned whether they fool the model or not (Madry et al.).

        Args:
            logits_fn: differentiable logits of a batch, e.g. a module in eval mode.
            x: clean images.
            y: their labels.
            generator: the random start's randomness.
            objective_fn: what to maximise instead of the attack's untargeted loss
                (e.g. TRADES's KL divergence to the clean prediction).

        Shape:
            x: (M, C, H, W) float32 in [0, 1]; y: (M,) -> (M, C, H, W), detached.
        """
        schedule = self._schedule()
        loss_fn = objective_fn if objective_fn is not None else self._loss
        current = self._start(x, generator, random_start=True)
        for _ in range(schedule.steps):
            point = current.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(loss_fn(logits_fn(point), y, None).sum(), point)
            current = self._step(x, current, grad, schedule.step_size)
        return current.detach()

    def _run(self, state: AttackState) -> None:
        schedule = self._schedule()
        active = state.unfooled
        for restart in range(schedule.restarts):
            if active.numel() == 0:
                break
            random_start = schedule.random_start or restart > 0
            active = active[~self._descend(state, active, schedule, random_start)]

    def _descend(
        self, state: AttackState, images: torch.Tensor, schedule: Schedule, random_start: bool
    ) -> torch.Tensor:
        """One run of the loop on ``images``; write successes into ``state.x_adv``.

        Each image takes a gradient step while it can pay for it and for the final
        check, and leaves at its first success.

        Shape:
            images: (A,) image indices -> (A,) bool, fooled.
        """
        model, x, y, x_adv = state.model, state.x, state.y, state.x_adv
        fooled = torch.zeros(images.numel(), dtype=torch.bool, device=x.device)
        slot = torch.arange(images.numel(), device=x.device)
        clean = x[images]
        current = self._start(clean, state.generator, random_start)
        loss_fn = functools.partial(self._loss, reject_class=state.reject_class)
        for step in range(schedule.steps + 1):
            rows = images[slot]
            affordable = state.remaining(rows)
            go = (
                affordable >= 2
                if step < schedule.steps
                else torch.zeros_like(affordable, dtype=torch.bool)
            )
            check = ~go & (affordable >= 1)
            if bool(check.any()):
                scores = model.predict(current[check], index=rows[check].cpu())
                won = is_adversarial(
                    scores, y[rows[check]], state.target_of(rows[check]), state.reject_class
                )
                self._record(x_adv, fooled, rows[check][won], slot[check][won], current[check][won])
            if not bool(go.any()):
                break
            rows, slot, clean, current = rows[go], slot[go], clean[go], current[go]
            tgt = state.target_of(rows)
            logits, grad = loss_gradient(model, current, rows, y[rows], tgt, loss_fn)
            won = is_adversarial(logits, y[rows], tgt, state.reject_class)
            self._record(x_adv, fooled, rows[won], slot[won], current[won])
            slot, clean, current, grad = slot[~won], clean[~won], current[~won], grad[~won]
            current = self._step(clean, current, grad, schedule.step_size)
            state.report(state.n_images - images.numel() + int(fooled.sum()))
        return fooled

    @staticmethod
    def _record(
        x_adv: torch.Tensor,
        fooled: torch.Tensor,
        rows: torch.Tensor,
        slot: torch.Tensor,
        images: torch.Tensor,
    ) -> None:
        x_adv[rows] = images
        fooled[slot] = True


def _per_image_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each image, shaped to broadcast: (M, C, H, W) -> (M, 1, 1, 1)."""
    norms: torch.Tensor = t.flatten(1).norm(p=2, dim=1)
    return norms.view(-1, 1, 1, 1)


@dataclass(frozen=True, kw_only=True)
class NormBoundedAttack(GradientAttack):
    """Gradient attacks bounded by an Linf or L2 ball of radius ``eps``.

    Linf steps follow the gradient's sign and clamp each entry to ``[-eps, eps]``;
    L2 steps follow the unit-norm gradient and rescale ``delta`` to norm ``eps``.
    Random starts are uniform in the ball (for L2: a uniform direction and radius
    ``eps * u ** (1 / d)``).

    Args:
        norm: ``"linf"`` or ``"l2"``.
        eps: radius of the ball, in [0, 1] pixel units (L2 over all C*H*W values).
    """

    norm: Norm = "linf"
    eps: float = 8 / 255

    _constraints = {"norm": one_of("linf", "l2"), "eps": positive()}

    def _normalize_grad(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / _per_image_norm(grad).clamp_min(1e-12)

    def _project(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        factor = (self.eps / _per_image_norm(delta).clamp_min(1e-12)).clamp_max(1.0)
        return delta * factor

    def _random_start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=generator)
            return ((2 * u - 1) * self.eps).to(x.device)
        direction = torch.randn(x.shape, generator=generator)
        direction = direction / _per_image_norm(direction).clamp_min(1e-12)
        radius = torch.rand((x.shape[0], 1, 1, 1), generator=generator) ** (1.0 / x[0].numel())
        return (direction * radius * self.eps).to(x.device)
