"""Worst-case robustness of a model under an attack suite.

:func:`evaluate` predicts the images, then, budget by budget, runs the suite's
attacks one after another, each only on the images still unbroken at that budget.
An image counts as robust only if every attack of the budget failed, so the robust
accuracy is the worst case over the suite (robust images over *all* images, the
AutoAttack convention). It also flags signs that the attacks may be too weak for
this model (gradient masking).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from pixelguard.attacks.base import Attack, AttackResult, ProgressCallback
from pixelguard.data.base import Dataset
from pixelguard.evaluate.attack_run import _check_arguments, _predict
from pixelguard.evaluate.merge import merge_results
from pixelguard.evaluate.suite import Suite, parse_budget_label
from pixelguard.metrics.classification import per_class_report
from pixelguard.models.base import Classifier, OutputKind

logger = logging.getLogger(__name__)

EVALUATION_SCHEMA = "evaluation-1.0"
"""Version of :meth:`Evaluation.to_dict`'s layout."""

CHUNK_SIZE = 100
"""Images per :meth:`Attack.run` call."""


@dataclass(frozen=True)
class Flag:
    """A warning sign in the results, e.g. of gradient masking."""

    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class AttackStats:
    """One attack at one budget: how it did on the images it was given.

    Attributes:
        budget: the budget label.
        attack: the attack's name.
        params: the attack's configuration.
        white_box: whether the attack used gradients.
        n_attacked: images it attacked (those still robust when its turn came).
        n_fooled: images it fooled.
        median_queries: median queries spent on a fooled image (None: none fooled).
        seconds: its wall time.
        beats_white_box: images it fooled that a white-box attack of the same
            budget had failed on.
    """

    budget: str
    attack: str
    params: dict[str, Any]
    white_box: bool
    n_attacked: int
    n_fooled: int
    median_queries: float | None
    seconds: float
    beats_white_box: int = 0

    @property
    def success_rate(self) -> float:
        """Share of the attacked images fooled (0.0 when none was attacked)."""
        return self.n_fooled / self.n_attacked if self.n_attacked else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "attack": self.attack,
            "params": self.params,
            "white_box": self.white_box,
            "n_attacked": self.n_attacked,
            "n_fooled": self.n_fooled,
            "success_rate": round(self.success_rate, 6),
            "median_queries": self.median_queries,
            "seconds": round(self.seconds, 4),
            "beats_white_box": self.beats_white_box,
        }


@dataclass(frozen=True)
class BudgetOutcome:
    """What the suite did to every image at one budget.

    Attributes:
        label: the budget label.
        robust: the image is correctly classified and no attack broke it.
        broken_by: the attack that broke each image (None: robust or misclassified).
        pred: the worst-case prediction: the breaking attack's, else the clean one.
        queries: queries spent on each image over the budget's attacks.
        l0_pixels, l2, linf: distance of each breaking adversarial (0 where unbroken).
        x_adv: the worst-case image: the breaking adversarial, else the original.
        confidence: the model's probability of ``pred`` on ``x_adv``.

    Shape:
        x_adv: (N, C, H, W) float32 in [0, 1]; every other tensor: (N,), N = the
        images evaluated.
    """

    label: str
    robust: torch.Tensor
    broken_by: list[str | None]
    pred: torch.Tensor
    queries: torch.Tensor
    l0_pixels: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    x_adv: torch.Tensor
    confidence: torch.Tensor

    @property
    def robust_accuracy(self) -> float:
        """Robust images over all images (0.0 for none)."""
        return float(self.robust.float().mean()) if self.robust.numel() else 0.0

    def images(self) -> list[dict[str, Any]]:
        """One plain record per image, in dataset order."""
        return [
            {
                "index": i,
                "robust": bool(self.robust[i]),
                "broken_by": self.broken_by[i],
                "pred": int(self.pred[i]),
                "confidence": round(float(self.confidence[i]), 6),
                "queries": int(self.queries[i]),
                "pixels_changed": int(self.l0_pixels[i]),
                "l2": round(float(self.l2[i]), 6),
                "linf": round(float(self.linf[i]), 6),
            }
            for i in range(len(self.broken_by))
        ]


@dataclass(frozen=True)
class Evaluation:
    """The worst-case robustness of one model under one suite.

    Shape:
        x: (N, C, H, W) float32, the images evaluated; y, clean_pred: (N,) int64;
        clean_confidence: (N,) float32, the probability of ``clean_pred``.
    """

    suite: str
    x: torch.Tensor
    y: torch.Tensor
    clean_pred: torch.Tensor
    clean_confidence: torch.Tensor
    num_classes: int
    class_names: list[str] | None
    output: str
    budgets: list[BudgetOutcome]
    attacks: list[AttackStats]
    flags: list[Flag]
    wall_time: float
    per_class: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return int(self.y.numel())

    @property
    def clean_accuracy(self) -> float:
        """Share of the images classified correctly without attack."""
        return float((self.clean_pred == self.y).float().mean()) if self.n_images else 0.0

    def robust_accuracy(self) -> dict[str, float]:
        """Robust accuracy per budget label, in suite order."""
        return {b.label: b.robust_accuracy for b in self.budgets}

    def to_dict(self) -> dict[str, Any]:
        """The evaluation as plain, JSON-serialisable data (schema ``evaluation-1.0``)."""
        return {
            "schema_version": EVALUATION_SCHEMA,
            "suite": self.suite,
            "n_images": self.n_images,
            "images": [
                {
                    "index": i,
                    "label": int(self.y[i]),
                    "clean_pred": int(self.clean_pred[i]),
                    "clean_confidence": round(float(self.clean_confidence[i]), 6),
                }
                for i in range(self.n_images)
            ],
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "output": self.output,
            "clean_accuracy": round(self.clean_accuracy, 6),
            "robust_accuracy": {k: round(v, 6) for k, v in self.robust_accuracy().items()},
            "attacks": [a.to_dict() for a in self.attacks],
            "flags": [f.to_dict() for f in self.flags],
            "per_class": self.per_class,
            "wall_time": round(self.wall_time, 4),
            "budgets": [
                {
                    "budget": b.label,
                    "robust_accuracy": round(b.robust_accuracy, 6),
                    "images": b.images(),
                }
                for b in self.budgets
            ],
        }


def evaluate(
    model: Classifier,
    dataset: Dataset,
    suite: Suite,
    *,
    limit: int | None = None,
    progress: ProgressCallback | None = None,
) -> Evaluation:
    """Run ``suite`` on the first ``limit`` images of ``dataset``; report the worst case.

    Args:
        model: the classifier to evaluate.
        dataset: the images and labels.
        suite: the attacks per budget, in the order they run.
        limit: evaluate only the first ``limit`` images (None: all).
        progress: called as ``progress(attack_runs_finished, attack_runs_total)``,
            one step per suite entry.

    Returns:
        The :class:`Evaluation`.

    Raises:
        ShapeError: the images do not fit the model.
        RangeError: labels the model cannot output.
        ConfigError: a bad limit or budget label.
        CapabilityError: the model lacks what an attack of the suite needs.
    """
    _check_arguments(model, dataset, None, limit, CHUNK_SIZE)
    for entry in suite.entries:
        entry.attack.check_model(model)
        parse_budget_label(entry.budget_label)
    start = time.perf_counter()
    x, y = dataset.x[:limit], dataset.y[:limit]
    clean_pred, clean_confidence = _predict(model, x)
    logger.info("clean accuracy %.4f on %d images", float((clean_pred == y).float().mean()), len(y))
    budgets: list[BudgetOutcome] = []
    stats: list[AttackStats] = []
    finished = 0
    for label in suite.budgets():
        outcome, budget_stats = _run_budget(
            model, x, y, clean_pred, clean_confidence, label, suite.attacks_at(label)
        )
        budgets.append(outcome)
        stats += budget_stats
        finished += len(budget_stats)
        if progress is not None:
            progress(finished, len(suite.entries))
        logger.info("%s: robust accuracy %.4f", label, outcome.robust_accuracy)
    output = OutputKind(model.capabilities.output).value
    robust = {b.label: b.robust_accuracy for b in budgets}
    per_class = {"clean": per_class_report(y, clean_pred, model.num_classes)}
    for outcome in budgets:
        per_class[outcome.label] = per_class_report(y, outcome.pred, model.num_classes)
    return Evaluation(
        suite=suite.name,
        x=x,
        y=y,
        clean_pred=clean_pred,
        clean_confidence=clean_confidence,
        num_classes=model.num_classes,
        class_names=dataset.class_names,
        output=output,
        budgets=budgets,
        attacks=stats,
        flags=detect_flags(stats, robust, output),
        wall_time=time.perf_counter() - start,
        per_class=per_class,
    )


def _attack_in_chunks(
    model: Classifier, attack: Attack, x: torch.Tensor, y: torch.Tensor
) -> AttackResult:
    """One attack over a batch, :data:`CHUNK_SIZE` images per call, merged."""
    if not len(y):
        return attack.run(model, x, y)
    chunks = torch.arange(len(y)).split(CHUNK_SIZE)
    return merge_results([attack.run(model, x[c], y[c]) for c in chunks])


def _run_budget(
    model: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    clean_pred: torch.Tensor,
    clean_confidence: torch.Tensor,
    label: str,
    attacks: list[Attack],
) -> tuple[BudgetOutcome, list[AttackStats]]:
    """Run one budget's attacks in order, each on the images still robust."""
    n = len(y)
    robust = (clean_pred == y).clone()
    broken_by: list[str | None] = [None] * n
    pred = clean_pred.clone()
    confidence = clean_confidence.clone()
    x_adv = x.clone()
    queries = torch.zeros(n, dtype=torch.int64)
    l0 = torch.zeros(n, dtype=torch.int64)
    dist_l2 = torch.zeros(n)
    dist_linf = torch.zeros(n)
    failed_white_box = torch.zeros(n, dtype=torch.bool)
    stats = []
    for attack in attacks:
        todo = robust.nonzero().flatten()
        result = _attack_in_chunks(model, attack, x[todo], y[todo])
        fooled = todo[result.success.cpu()]
        queries[todo] += result.queries.cpu()
        robust[fooled] = False
        pred[todo] = result.pred_after.cpu()
        confidence[todo] = result.conf_after.cpu().float()
        x_adv[fooled] = result.x_adv.cpu()[result.success.cpu()]
        l0[todo] = result.l0_pixels.cpu()
        dist_l2[todo] = result.l2.cpu().float()
        dist_linf[todo] = result.linf.cpu().float()
        for i in fooled.tolist():
            broken_by[i] = attack.name
        succeeded = result.success.cpu()
        beats = 0 if attack.needs_gradients else int(failed_white_box[fooled].sum())
        if attack.needs_gradients:
            failed_white_box[todo[~succeeded]] = True
        chosen = result.queries.cpu()[succeeded].tolist()
        stats.append(
            AttackStats(
                budget=label,
                attack=attack.name,
                params=attack.to_dict(),
                white_box=attack.needs_gradients,
                n_attacked=len(todo),
                n_fooled=len(fooled),
                median_queries=float(statistics.median(chosen)) if chosen else None,
                seconds=result.wall_time,
                beats_white_box=beats,
            )
        )
    outcome = BudgetOutcome(
        label, robust, broken_by, pred, queries, l0, dist_l2, dist_linf, x_adv, confidence
    )
    return outcome, stats


def detect_flags(
    attacks: list[AttackStats], robust_accuracy: dict[str, float], output: str
) -> list[Flag]:
    """Signs that the suite's attacks may underestimate the model's weakness.

    Args:
        attacks: the per-attack statistics.
        robust_accuracy: robust accuracy per budget label.
        output: what the model returns (an :class:`OutputKind` value).

    Returns:
        ``black-box-beats-white-box``: a black-box attack fooled images a white-box
        attack of the same budget failed on; ``not-monotone``: a larger budget of one
        kind left more images robust than a smaller one; ``probability-outputs``:
        a white-box attack ran on a model that returns probabilities, whose
        gradients can vanish.
    """
    flags = []
    for stat in attacks:
        if stat.beats_white_box > 0:
            flags.append(
                Flag(
                    "black-box-beats-white-box",
                    f"at {stat.budget}, black-box {stat.attack} fooled {stat.beats_white_box} "
                    "image(s) the white-box attack could not: its gradients may be masked",
                )
            )
    families: dict[str, list[tuple[float, str]]] = {}
    for label in robust_accuracy:
        kind, value = parse_budget_label(label)
        families.setdefault(kind, []).append((value, label))
    for members in families.values():
        ordered = [label for _, label in sorted(members)]
        for smaller, larger in zip(ordered, ordered[1:]):
            if robust_accuracy[larger] > robust_accuracy[smaller]:
                flags.append(
                    Flag(
                        "not-monotone",
                        f"robust accuracy at {larger} ({robust_accuracy[larger]:.1%}) is higher "
                        f"than at {smaller} ({robust_accuracy[smaller]:.1%}): a larger budget "
                        "should never help the model, so the attacks are falling short",
                    )
                )
    if output == OutputKind.PROBABILITIES.value and any(stat.white_box for stat in attacks):
        flags.append(
            Flag(
                "probability-outputs",
                "the model returns probabilities, not logits: gradient attacks on softmax "
                "outputs can be weak; give the model's logits if you can",
            )
        )
    return flags
