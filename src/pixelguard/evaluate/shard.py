"""One shard of a suite evaluation: every budget's attacks on a fixed slice of the images.

A shard's outcome depends only on its images and the suite, so shards can run in any
order, in any process, and be checkpointed one by one; :mod:`pixelguard.evaluate.runner`
merges them into an :class:`~pixelguard.evaluate.runner.Evaluation`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pixelguard.attacks.base import Attack, ProgressCallback, ThreatModel
from pixelguard.errors import DataError
from pixelguard.evaluate.suite import Suite, budget_threat
from pixelguard.models.base import Classifier, model_device

NOT_BROKEN = -1
"""``ShardOutcome.broken_by`` of an image no attack broke."""

PER_IMAGE_FIELDS = (
    "robust",
    "broken_by",
    "pred",
    "confidence",
    "queries",
    "l0_pixels",
    "l2",
    "linf",
    "x_adv",
)
"""The :class:`ShardOutcome` fields with one entry per budget and image."""

ShardProgress = Callable[[float], None]
"""Called as ``progress(share)`` while a shard runs: the share of its attacks done, in
[0, 1], counting the running attack's finished images (see :data:`ProgressCallback`)."""


def run_order(suite: Suite) -> list[tuple[str, Attack]]:
    """The suite's attacks as they run: budget by budget, each budget's in order."""
    return [(label, attack) for label in suite.budgets() for attack in suite.attacks_at(label)]


def shard_bounds(n_images: int, shard_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each shard: ``shard_size`` images in dataset order, the last fewer."""
    return [(start, min(start + shard_size, n_images)) for start in range(0, n_images, shard_size)]


@dataclass(frozen=True)
class ShardOutcome:
    """What a suite did to the images of one shard, as plain tensors.

    Budgets follow ``suite.budgets()``; attacks follow :func:`run_order`.

    Attributes:
        robust: correctly classified and unbroken by every attack of the budget.
        broken_by: the :func:`run_order` number of the attack that broke each image,
            :data:`NOT_BROKEN` where none did.
        pred, confidence: the worst-case prediction and its probability.
        queries: queries spent on each image over the budget's attacks.
        l0_pixels, l2, linf: distances of each breaking adversarial (0 where unbroken).
        x_adv: the breaking adversarial, else the original image.
        n_attacked, n_fooled: images each attack was given and fooled.
        fooled_queries: the queries of each fooled image, attack after attack.
        seconds: each attack's wall time.
        beats_white_box: images each black-box attack fooled that a white-box attack
            of its budget had failed on.
        out_of_budget: "successes" of each attack that lay outside its budget (more
            pixels changed, or a larger Linf/L2 distance, than the label allows); they
            count as failures, so those images stay robust.

    Shape:
        n images, B budgets, A attacks: robust, broken_by, pred, confidence, queries,
        l0_pixels, l2, linf: (B, n); x_adv: (B, n, C, H, W); n_attacked, n_fooled,
        seconds, beats_white_box, out_of_budget: (A,); fooled_queries: (n_fooled.sum(),).
    """

    robust: torch.Tensor
    broken_by: torch.Tensor
    pred: torch.Tensor
    confidence: torch.Tensor
    queries: torch.Tensor
    l0_pixels: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    x_adv: torch.Tensor
    n_attacked: torch.Tensor
    n_fooled: torch.Tensor
    fooled_queries: torch.Tensor
    seconds: torch.Tensor
    beats_white_box: torch.Tensor
    out_of_budget: torch.Tensor

    @property
    def n_images(self) -> int:
        return int(self.robust.shape[1])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The tensors as numpy arrays by field name, for a checkpoint."""
        return {f.name: getattr(self, f.name).detach().numpy() for f in dataclasses.fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ShardOutcome:
        """Rebuild an outcome from :meth:`to_arrays`.

        Raises:
            DataError: the arrays are not those of a shard outcome.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        if "out_of_budget" not in arrays and "n_fooled" in arrays:
            # Checkpoints written before the budget check: no success was refused then.
            arrays = {**arrays, "out_of_budget": np.zeros_like(arrays["n_fooled"])}
        if set(arrays) != names:
            raise DataError(f"a shard checkpoint holds {sorted(arrays)}, expected {sorted(names)}")
        return cls(**{name: torch.from_numpy(value) for name, value in arrays.items()})


def evaluate_shard(
    model: Classifier,
    suite: Suite,
    x: torch.Tensor,
    y: torch.Tensor,
    clean_pred: torch.Tensor,
    clean_confidence: torch.Tensor,
    progress: ShardProgress | None = None,
) -> ShardOutcome:
    """Run every budget of ``suite`` on one shard; an image is robust only if every attack failed.

    Args:
        model: the classifier.
        suite: the attacks per budget; each should have a seed, so reruns agree.
        x: the shard's images.
        y: their labels.
        clean_pred: the model's clean predictions.
        clean_confidence: their probabilities.
        progress: told the share of the shard done as its attacks progress; it
            only watches, so the outcome is the same with or without it.

    Shape:
        x: (n, C, H, W) float32 in [0, 1]; y, clean_pred, clean_confidence: (n,).
    """
    share = _AttackShare(progress, len(run_order(suite)))
    budgets: list[dict[str, torch.Tensor]] = []
    attacks: list[dict[str, torch.Tensor]] = []
    for label in suite.budgets():
        budget, stats = _run_budget(
            model,
            x,
            y,
            clean_pred,
            clean_confidence,
            suite.attacks_at(label),
            budget_threat(label),
            len(attacks),
            share,
        )
        budgets.append(budget)
        attacks += stats
    per_image = {name: torch.stack([b[name] for b in budgets]) for name in budgets[0]}
    per_attack = {name: torch.cat([a[name] for a in attacks]) for name in attacks[0]}
    return ShardOutcome(**per_image, **per_attack)


@dataclass(frozen=True)
class _AttackShare:
    """Turns the progress of attack ``number`` (of ``n_attacks``) into the shard's share done."""

    progress: ShardProgress | None
    n_attacks: int

    def of(self, number: int) -> ProgressCallback | None:
        """The progress callback for attack ``number`` (None without a shard callback)."""
        if self.progress is None:
            return None
        report = self.progress

        def update(done: int, total: int) -> None:
            report((number + done / max(total, 1)) / self.n_attacks)

        return update

    def finished(self, number: int) -> None:
        """Attack ``number`` is done (or had no image to attack)."""
        if self.progress is not None:
            self.progress((number + 1) / self.n_attacks)


def _run_budget(
    model: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    clean_pred: torch.Tensor,
    clean_confidence: torch.Tensor,
    attacks: list[Attack],
    allowed: ThreatModel,
    first_number: int,
    share: _AttackShare,
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """One budget's attacks in order, each on the images still robust.

    A success counts only if its adversarial lies within ``allowed``, the budget's
    threat model; one outside it counts as a failure (the image stays robust, its
    worst case the clean one) and is counted in ``out_of_budget``.

    Returns:
        The per-image tensors of the budget and, per attack, its statistics.
    """
    n = len(y)
    robust = (clean_pred == y).clone()
    budget = {
        "robust": robust,
        "broken_by": torch.full((n,), NOT_BROKEN, dtype=torch.int64),
        "pred": clean_pred.clone(),
        "confidence": clean_confidence.clone().float(),
        "queries": torch.zeros(n, dtype=torch.int64),
        "l0_pixels": torch.zeros(n, dtype=torch.int64),
        "l2": torch.zeros(n),
        "linf": torch.zeros(n),
        "x_adv": x.clone(),
    }
    failed_white_box = torch.zeros(n, dtype=torch.bool)
    stats = []
    for number, attack in enumerate(attacks, start=first_number):
        todo = robust.nonzero().flatten()
        if not len(todo):  # an empty run would only cost an empty forward pass
            stats.append(_attack_stats(0, torch.zeros(0, dtype=torch.int64), 0.0, 0, 0))
            share.finished(number)
            continue
        device = model_device(model)  # the attack's tensors live where the model runs
        result = attack.run(
            model, x[todo].to(device), y[todo].to(device), progress=share.of(number)
        ).cpu()
        share.finished(number)
        l0_pixels, l2, linf = result.l0_pixels.cpu(), result.l2.cpu(), result.linf.cpu()
        claimed = result.success.cpu()
        succeeded = claimed & allowed.admits(l0_pixels, l2, linf)
        outside = claimed & ~succeeded
        fooled = todo[succeeded]
        robust[fooled] = False
        budget["broken_by"][fooled] = number
        budget["queries"][todo] += result.queries.cpu()
        # An out-of-budget "success" reads as a failure: the clean prediction, no distance.
        keep = ~outside
        budget["pred"][todo] = torch.where(keep, result.pred_after.cpu(), result.pred_before.cpu())
        budget["confidence"][todo] = torch.where(
            keep, result.conf_after.cpu(), result.conf_before.cpu()
        ).float()
        budget["l0_pixels"][todo] = torch.where(keep, l0_pixels, 0)
        budget["l2"][todo] = torch.where(keep, l2, 0.0).float()
        budget["linf"][todo] = torch.where(keep, linf, 0.0).float()
        budget["x_adv"][fooled] = result.x_adv.cpu()[succeeded]
        beats = 0 if attack.needs_gradients else int(failed_white_box[fooled].sum())
        if attack.needs_gradients:
            failed_white_box[todo[~succeeded]] = True
        fooled_queries = result.queries.cpu()[succeeded]
        stats.append(
            _attack_stats(len(todo), fooled_queries, result.wall_time, beats, int(outside.sum()))
        )
    return budget, stats


def _attack_stats(
    n_attacked: int,
    fooled_queries: torch.Tensor,
    seconds: float,
    beats_white_box: int,
    out_of_budget: int,
) -> dict[str, torch.Tensor]:
    """One attack's statistics on a shard, as :class:`ShardOutcome` concatenates them."""
    return {
        "n_attacked": torch.tensor([n_attacked]),
        "n_fooled": torch.tensor([len(fooled_queries)]),
        "fooled_queries": fooled_queries,
        "seconds": torch.tensor([seconds], dtype=torch.float64),
        "beats_white_box": torch.tensor([beats_white_box]),
        "out_of_budget": torch.tensor([out_of_budget]),
    }
