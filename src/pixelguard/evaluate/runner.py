"""Worst-case robustness of a model under an attack suite.

:func:`evaluate` predicts the images and cuts them into fixed shards of
:data:`SHARD_SIZE` images in dataset order. In each shard it runs, budget by budget,
the suite's attacks one after another, each only on the images still unbroken at that
budget. An image counts as robust only if every attack of the budget failed, so the
robust accuracy is the worst case over the suite (robust images over *all* images,
the AutoAttack convention). It also flags signs that the attacks may be too weak for
this model (gradient masking).

Shards are independent: they run here or as Ray tasks, each finished one can be
checkpointed, and a resumed run evaluates only the missing ones. The merged
:class:`Evaluation` is the same whichever way the shards ran.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pixelguard.data.base import Dataset
from pixelguard.defaults import SHARD_SIZE as SHARD_SIZE
from pixelguard.errors import ConfigError
from pixelguard.evaluate.attack_run import _check_arguments, _check_resume, _predict
from pixelguard.evaluate.backends import ShardTask, check_backend, run_shards
from pixelguard.evaluate.checkpoint import Checkpoint, open_checkpoint, run_identity
from pixelguard.evaluate.shard import (
    NOT_BROKEN,
    PER_IMAGE_FIELDS,
    ShardOutcome,
    run_order,
    shard_bounds,
)
from pixelguard.evaluate.suite import (
    CLEAN,
    Gate,
    GateResult,
    Suite,
    SuiteEntry,
    check_gates,
    group_budgets,
    parse_budget_label,
)
from pixelguard.metrics.classification import per_class_report
from pixelguard.metrics.intervals import binomial_interval
from pixelguard.models.base import Classifier, OutputKind

logger = logging.getLogger(__name__)

EVALUATION_SCHEMA = "evaluation-1.1"
"""Version of :meth:`Evaluation.to_dict`'s layout (1.1 adds the model and data, the
confidence intervals and the headline to 1.0; readers of 1.1 read 1.0 too)."""

CONFIDENCE_LEVEL = 0.95
"""Coverage of the accuracy intervals (two-sided Clopper-Pearson)."""

EvaluationProgress = Callable[[int, int, dict[str, float]], None]
"""Called as ``progress(images_done, images_total, robust_accuracy)`` as the run goes:
after each shard, and while a shard of the local backend runs (``images_done`` then
counts that shard's share of attacks done, short of its last image).
``robust_accuracy`` is per budget label over the finished shards (empty before any)."""


def accuracy_interval(accuracy: float, n: int) -> tuple[float, float]:
    """The :data:`CONFIDENCE_LEVEL` Clopper-Pearson interval of an accuracy over ``n`` images.

    Exact (conservative) for the binomial: ``accuracy * n`` images correct of ``n``;
    ``(0, 1)`` for no images.

    Example:
        >>> [round(v, 4) for v in accuracy_interval(0.0, 100)]
        [0.0, 0.0362]
    """
    if n < 1:
        return 0.0, 1.0
    return binomial_interval(round(accuracy * n), n, CONFIDENCE_LEVEL)


@dataclass(frozen=True)
class BudgetHeadline:
    """Where one kind of budget breaks the model.

    Attributes:
        kind: the budget kind (``"pixels"``, ``"linf"``).
        budget: the smallest budget of this kind at which robust accuracy falls below
            half of the clean accuracy; where it never does, the worst budget.
        robust_accuracy: the robust accuracy at ``budget``.
        below_half: whether it falls below half of clean at ``budget``.
    """

    kind: str
    budget: str
    robust_accuracy: float
    below_half: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "budget": self.budget,
            "robust_accuracy": round(self.robust_accuracy, 6),
            "below_half": self.below_half,
        }


def headline(clean_accuracy: float, robust_accuracy: Mapping[str, float]) -> list[BudgetHeadline]:
    """Per kind of budget, the smallest budget where robust accuracy falls below half of clean.

    Raises:
        ConfigError: a budget label is not ``kind=number``.
    """
    result = []
    for kind, labels in group_budgets(robust_accuracy).items():
        below = [label for label in labels if robust_accuracy[label] < clean_accuracy / 2]
        budget = below[0] if below else min(labels, key=lambda label: robust_accuracy[label])
        result.append(BudgetHeadline(kind, budget, robust_accuracy[budget], bool(below)))
    return result


def headline_text(clean_accuracy: float, robust_accuracy: Mapping[str, float]) -> str:
    """:func:`headline` in words, e.g. ``"Robust accuracy falls below half of clean
    (99.0%) at pixels=3: 40.1%"``; where it never does, the worst budget tried."""
    parts = headline(clean_accuracy, robust_accuracy)
    if not parts:
        return f"Clean accuracy {clean_accuracy:.1%}; no budget was tried"
    half = f"half of clean ({clean_accuracy:.1%})"
    below = [part for part in parts if part.below_half]
    held = [part for part in parts if not part.below_half]
    worst = " and ".join(f"{part.robust_accuracy:.1%} at {part.budget}" for part in held)
    if not below:
        return f"Robust accuracy holds at or above {half} at every budget tried; worst {worst}"
    text = f"Robust accuracy falls below {half} at " + " and at ".join(
        f"{part.budget}: {part.robust_accuracy:.1%}" for part in below
    )
    if held:
        kinds = " and ".join(part.kind for part in held)
        text += f"; it holds at or above half at every {kinds} budget tried, worst {worst}"
    return text


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
        out_of_budget: "successes" it reported outside the budget, counted as failures.
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
    out_of_budget: int = 0

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
            **({"out_of_budget": self.out_of_budget} if self.out_of_budget else {}),
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
    defense: dict[str, Any] | None = None
    model_info: dict[str, Any] | None = None
    data_info: dict[str, Any] | None = None

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

    def check(self, gates: Iterable[Gate]) -> list[GateResult]:
        """Each gate with the accuracy it met (see :func:`~pixelguard.evaluate.suite.check_gates`).

        Raises:
            ConfigError: a gate at a budget this evaluation did not run.
        """
        accuracy = {CLEAN: self.clean_accuracy, **self.robust_accuracy()}
        chosen = list(gates)
        check_gates(chosen, list(self.robust_accuracy()))
        return [GateResult(gate, accuracy[gate.budget]) for gate in chosen]

    def summary(self) -> dict[str, Any]:
        """The headline numbers as plain data: what was evaluated, clean and robust
        accuracy with their :data:`CONFIDENCE_LEVEL` intervals, the headline, the flags."""
        clean, robust = self.clean_accuracy, self.robust_accuracy()

        def interval(accuracy: float) -> list[float]:
            return [round(bound, 6) for bound in accuracy_interval(accuracy, self.n_images)]

        return {
            "suite": self.suite,
            "model": self.model_info,
            "data": self.data_info,
            **({"defense": self.defense} if self.defense is not None else {}),
            "n_images": self.n_images,
            "confidence_level": CONFIDENCE_LEVEL,
            "clean_accuracy": round(clean, 6),
            "clean_accuracy_ci": interval(clean),
            "robust_accuracy": {k: round(v, 6) for k, v in robust.items()},
            "robust_accuracy_ci": {k: interval(v) for k, v in robust.items()},
            "headline": {
                "text": headline_text(clean, robust),
                "budgets": [part.to_dict() for part in headline(clean, robust)],
            },
            "flags": [f.to_dict() for f in self.flags],
            "wall_time": round(self.wall_time, 4),
        }

    def to_dict(self) -> dict[str, Any]:
        """The evaluation as plain, JSON-serialisable data (schema ``evaluation-1.1``):
        :meth:`summary`, then the per-image, per-attack and per-class details."""
        return {
            "schema_version": EVALUATION_SCHEMA,
            **self.summary(),
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
            "attacks": [a.to_dict() for a in self.attacks],
            "per_class": self.per_class,
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
    shard_size: int = SHARD_SIZE,
    progress: EvaluationProgress | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    backend: str = "local",
    ray_address: str | None = None,
    defense: dict[str, Any] | None = None,
    model_info: dict[str, Any] | None = None,
    data_info: dict[str, Any] | None = None,
) -> Evaluation:
    """Run ``suite`` on the first ``limit`` images of ``dataset``; report the worst case.

    Args:
        model: the classifier to evaluate.
        dataset: the images and labels.
        suite: the attacks per budget, in the order they run; an attack with a seed
            of None gets one seed drawn once per run (kept in the checkpoint).
        limit: evaluate only the first ``limit`` images (None: all); for a random
            sample, pass ``dataset.sample(limit, seed)`` instead, as ``pixelguard
            evaluate --limit`` does.
        shard_size: images per shard; results depend on it, so it is part of the
            checkpoint's identity.
        progress: called as ``progress(images_done, images_total, robust_accuracy)``
            once at the start, after each finished shard, and as a local shard's
            attacks progress (see :data:`EvaluationProgress`).
        checkpoint_dir: save every finished shard here (None: no checkpoint).
        resume: keep the finished shards of the same run in ``checkpoint_dir`` and
            evaluate only the others; without ``resume`` a checkpoint starts afresh.
        backend: ``"local"`` (shards one after another in this process) or ``"ray"``
            (shards as Ray tasks; needs the ``ray`` package).
        ray_address: the Ray cluster to attach to (None: the running one, else a
            new local one).
        defense: the description of the defense ``model`` sits behind (see
            :func:`pixelguard.defenses.spec.parse_defense`), kept in the report and
            in the checkpoint's identity.
        model_info: how the model was given (its spec, options), kept in the report.
        data_info: how the data was given (spec, split, the limit and seed of a
            random sample...), kept in the report and in the checkpoint's identity.

    Returns:
        The :class:`Evaluation`, identical for a given seed whatever the backend and
        whether resumed (up to each process's floating-point thread settings).

    Raises:
        ShapeError: the images do not fit the model.
        RangeError: labels the model cannot output.
        ConfigError: a bad limit, shard size, budget label or backend, an empty
            suite, ``resume`` without a ``checkpoint_dir``, a checkpoint of a
            different run, or no Ray cluster at ``ray_address``.
        CapabilityError: the model lacks what an attack of the suite needs.
        DataError: a damaged checkpoint.
        MissingDependencyError: the Ray backend without Ray installed.
    """
    check_backend(backend, ray_address)
    _check_arguments(model, dataset, None, limit)
    if shard_size < 1:
        raise ConfigError(f"shard_size must be at least 1 image, got {shard_size}")
    _check_resume(resume, checkpoint_dir)
    if not suite.entries:
        raise ConfigError(f"the suite {suite.name!r} has no attacks")
    for entry in suite.entries:
        entry.attack.check_model(model)
        parse_budget_label(entry.budget_label)
    start = time.perf_counter()
    x, y = dataset.x[:limit], dataset.y[:limit]
    clean_pred, clean_confidence = _predict(model, x)
    logger.info("clean accuracy %.4f on %d images", float((clean_pred == y).float().mean()), len(y))

    settings = {
        "suite": _suite_config(suite),
        "limit": limit,
        "shard_size": shard_size,
        "defense": defense,
        "data": data_info,
    }
    identity = run_identity(model, dataset, settings)
    store = Checkpoint(checkpoint_dir, kind="evaluation") if checkpoint_dir is not None else None
    seed, stored = open_checkpoint(store, identity, clean_pred, clean_confidence, None, resume)
    seeded = _seeded(suite, seed)
    bounds = shard_bounds(len(y), shard_size)
    shards = _FinishedShards(
        {number: ShardOutcome.from_arrays(arrays) for number, arrays in stored.items()},
        len(y),
        [b - a for a, b in bounds],
        seeded.budgets(),
        store,
        progress,
    )
    tasks = [
        ShardTask(
            number,
            x[a:b].clone(),
            y[a:b].clone(),
            clean_pred[a:b].clone(),
            clean_confidence[a:b].clone(),
        )
        for number, (a, b) in enumerate(bounds)
        if number not in shards.outcomes
    ]
    shards.report()
    run_shards(
        tasks,
        model,
        seeded,
        shards.add,
        backend=backend,
        ray_address=ray_address,
        progress=shards.running if progress is not None else None,
    )

    budgets, stats = _merge([shards.outcomes[number] for number in range(len(bounds))], seeded)
    for outcome in budgets:
        logger.info("%s: robust accuracy %.4f", outcome.label, outcome.robust_accuracy)
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
        defense=defense,
        model_info=model_info,
        data_info=data_info,
    )


@dataclass
class _FinishedShards:
    """The shards finished so far: checkpoints each new one and reports progress.

    Attributes:
        outcomes: the finished shards by number.
        n_images: the images of the whole run.
        sizes: the images of each shard, by number.
        labels: the budget labels, in suite order.
        store: the checkpoint (None: none).
        progress: the run's progress callback (None: none).
    """

    outcomes: dict[int, ShardOutcome]
    n_images: int
    sizes: list[int]
    labels: list[str]
    store: Checkpoint | None
    progress: EvaluationProgress | None
    _done: int = 0
    _shown: int = -1
    _robust: dict[str, float] = field(default_factory=dict)

    def add(self, number: int, outcome: ShardOutcome) -> None:
        """Keep (and checkpoint) shard ``number``, then report progress."""
        if self.store is not None:
            self.store.save_chunk(number, outcome.to_arrays())
        self.outcomes[number] = outcome
        logger.info("shard %d finished (%d/%d)", number, len(self.outcomes), len(self.sizes))
        self.report()

    def report(self) -> None:
        """Images done and robust accuracy per budget over them, to the progress callback."""
        self._done = sum(o.n_images for o in self.outcomes.values())
        if self._done:
            robust = torch.stack([o.robust.sum(dim=1) for o in self.outcomes.values()]).sum(0)
            self._robust = {
                label: int(r) / self._done for label, r in zip(self.labels, robust, strict=True)
            }
        self._show(self._done)

    def running(self, number: int, share: float) -> None:
        """Report the images done while shard ``number`` runs, ``share`` of its attacks done.

        The running shard counts short of its last image, which only :meth:`add` reports.
        """
        size = self.sizes[number]
        images = self._done + min(int(share * size), size - 1)
        if images > self._shown:
            self._show(images)

    def _show(self, images: int) -> None:
        self._shown = images
        if self.progress is not None:
            self.progress(images, self.n_images, self._robust)


def _suite_config(suite: Suite) -> dict[str, Any]:
    """The suite as plain data, for the checkpoint's identity: its name and budgets
    first, so a resume refused for a changed suite names the change briefly."""
    return {
        "name": suite.name,
        "budgets": suite.budgets(),
        "entries": [
            {
                "budget_label": entry.budget_label,
                "attack": entry.attack.name,
                "params": entry.attack.to_dict(),
            }
            for entry in suite.entries
        ],
    }


def _seeded(suite: Suite, seed: int) -> Suite:
    """``suite`` with ``seed`` given to every attack that has none, so every shard agrees."""
    entries = [
        SuiteEntry(e.budget_label, dataclasses.replace(e.attack, seed=seed))
        if e.attack.seed is None
        else e
        for e in suite.entries
    ]
    return Suite(suite.name, entries)


def _merge(
    outcomes: Sequence[ShardOutcome], suite: Suite
) -> tuple[list[BudgetOutcome], list[AttackStats]]:
    """The per-budget outcomes and per-attack statistics of the shards, in dataset order."""
    order = run_order(suite)
    names = [attack.name for _, attack in order]
    merged = {
        name: torch.cat([getattr(o, name) for o in outcomes], dim=1) for name in PER_IMAGE_FIELDS
    }
    codes = merged.pop("broken_by")
    budgets = [
        BudgetOutcome(
            label=label,
            broken_by=[None if code == NOT_BROKEN else names[code] for code in codes[row].tolist()],
            **{name: tensor[row] for name, tensor in merged.items()},
        )
        for row, label in enumerate(suite.budgets())
    ]
    fooled_queries: list[list[int]] = [[] for _ in order]
    for outcome in outcomes:
        parts = outcome.fooled_queries.split(outcome.n_fooled.tolist())
        for column, part in enumerate(parts):
            fooled_queries[column] += part.tolist()
    stats = [
        AttackStats(
            budget=label,
            attack=attack.name,
            params=attack.to_dict(),
            white_box=attack.needs_gradients,
            n_attacked=sum(int(o.n_attacked[column]) for o in outcomes),
            n_fooled=len(fooled_queries[column]),
            median_queries=(
                float(statistics.median(fooled_queries[column])) if fooled_queries[column] else None
            ),
            seconds=sum(float(o.seconds[column]) for o in outcomes),
            beats_white_box=sum(int(o.beats_white_box[column]) for o in outcomes),
            out_of_budget=sum(int(o.out_of_budget[column]) for o in outcomes),
        )
        for column, (label, attack) in enumerate(order)
    ]
    return budgets, stats


def detect_flags(
    attacks: list[AttackStats], robust_accuracy: dict[str, float], output: str
) -> list[Flag]:
    """Signs that the suite's attacks may underestimate the model's weakness.

    Args:
        attacks: the per-attack statistics.
        robust_accuracy: robust accuracy per budget label.
        output: what the model returns (an :class:`OutputKind` value).

    Returns:
        ``out-of-budget``: an attack reported successes outside its budget (they
        count as failures: the attack does not keep to its threat model);
        ``black-box-beats-white-box``: a black-box attack fooled images a white-box
        attack of the same budget failed on; ``not-monotone``: a larger budget of one
        kind left more images robust than a smaller one; ``probability-outputs``:
        a white-box attack ran on a model that returns probabilities, whose
        gradients can vanish.
    """
    flags = [
        Flag(
            "out-of-budget",
            f"at {stat.budget}, {stat.attack} reported {stat.out_of_budget} success(es) "
            "outside the budget; they count as robust, but the attack does not keep to "
            "its threat model",
        )
        for stat in attacks
        if stat.out_of_budget > 0
    ]
    for stat in attacks:
        if stat.beats_white_box > 0:
            flags.append(
                Flag(
                    "black-box-beats-white-box",
                    f"at {stat.budget}, black-box {stat.attack} fooled {stat.beats_white_box} "
                    "image(s) the white-box attack could not: its gradients may be masked",
                )
            )
    for ordered in group_budgets(robust_accuracy).values():
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
