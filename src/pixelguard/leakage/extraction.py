"""Model extraction by queries: train a surrogate on a victim's answers, within a budget.

Two strategies share one machinery (query accounting, checkpoints, training, the curve):

- :class:`KnockoffNets` (Orekondy, Schiele, Fritz, CVPR 2019): query the victim on
  natural images of another distribution (or a disjoint split), train a surrogate on
  its answers; queried in rounds, the surrogate fine-tuned after each round.
- :class:`JacobianAugmentation` (Papernot et al., AsiaCCS 2017): start from a small seed
  set and grow it each round along the surrogate's gradients,
  ``x' = clip(x + lambda * sign(d logit_victim_label / dx))``.

Every victim query goes through one :class:`~pixelguard.models.queries.QueryCounter`
with a single budget slot (each query row is charged to slot 0), so the budget is
the counter's hard limit. Answers are checkpointed to an ``.npz``; a resumed run
answers the queries it already paid for from the checkpoint and never sends them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pixelguard.checks import check_images
from pixelguard.config import Check, at_least, between, check_constraints, one_of, positive
from pixelguard.errors import ConfigError, ShapeError
from pixelguard.files import write_npz
from pixelguard.models.base import Classifier, OutputKind, probabilities
from pixelguard.models.queries import QueryCounter
from pixelguard.models.torch import TorchClassifier
from pixelguard.models.zoo import build_model, save_zoo_checkpoint

logger = logging.getLogger(__name__)

ExtractionProgress = Callable[[int, int], None]
"""Called as ``progress(queries_spent, budget)`` after every batch of victim queries."""

CHECKPOINT_FORMAT = "pixelguard-extraction"
CHECKPOINT_VERSION = 1


# --- the held-out measurement --------------------------------------------------------------


@dataclass(frozen=True)
class Holdout:
    """Held-out images with the victim's predictions on them, to measure a surrogate.

    Attributes:
        x: the images (never used for extraction).
        victim_pred: the victim's top-1 class per image.
        y: the true labels, or None (then no accuracy is reported).
        queries: victim queries spent to get ``victim_pred`` (outside the extraction
            budget: this is the evaluator's measurement, not the attacker's).
    """

    x: torch.Tensor
    victim_pred: torch.Tensor
    y: torch.Tensor | None = None
    queries: int = 0


def make_holdout(
    victim: Classifier, x: torch.Tensor, y: torch.Tensor | None = None, *, batch: int = 1024
) -> Holdout:
    """Ask ``victim`` once about every held-out image (counted, one query each).

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y: (N,) int64 or None.
    """
    check_images(x, name="held-out images")
    _check_shape(x, victim, "held-out images")
    counter = QueryCounter(victim, x.shape[0])
    preds = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            rows = torch.arange(start, min(start + batch, x.shape[0]))
            preds.append(counter.predict(x[rows], index=rows).argmax(dim=1).cpu())
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.int64)
    return Holdout(x=x, victim_pred=pred, y=y, queries=counter.total)


@dataclass(frozen=True)
class CurvePoint:
    """The surrogate after one round: queries spent, agreement and accuracy held out."""

    queries: int
    agreement: float | None
    accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        """As plain data."""
        return asdict(self)


def measure(
    module: nn.Module, holdout: Holdout | None, batch: int = 1024
) -> tuple[float | None, float | None]:
    """Top-1 agreement with the victim and accuracy on ``holdout`` (None without one)."""
    if holdout is None or holdout.x.shape[0] == 0:
        return None, None
    pred = predict_labels(module, holdout.x, batch)
    agreement = float((pred == holdout.victim_pred).float().mean())
    accuracy = None if holdout.y is None else float((pred == holdout.y).float().mean())
    return agreement, accuracy


def predict_labels(module: nn.Module, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """The module's top-1 class per image (eval mode, no gradients)."""
    module.eval()
    with torch.no_grad():
        out = [module(chunk).argmax(dim=1) for chunk in torch.split(x, batch)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


# --- the result ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractionResult:
    """A stolen surrogate with what it was trained on and how it got there.

    Attributes:
        surrogate: the trained network (eval mode, CPU), giving logits.
        arch: its zoo architecture.
        input_shape: ``(C, H, W)``.
        num_classes: the victim's number of classes.
        method: ``"knockoff"`` or ``"jacobian"``.
        params: the method's configuration.
        x_queried: every image the victim was asked about, in order.
        answers: the victim's answer to each, as probabilities (one-hot rows for a
            label-only victim).
        output: what the victim returned (logits, probabilities or labels).
        curve: one point per round.
        queries: victim queries behind the surrogate (resumed ones included).
        replayed: queries answered from the checkpoint instead of the victim.
        seconds: wall time of this run.
    """

    surrogate: nn.Module
    arch: str
    input_shape: tuple[int, int, int]
    num_classes: int
    method: str
    params: dict[str, Any]
    x_queried: torch.Tensor
    answers: torch.Tensor
    output: OutputKind
    curve: list[CurvePoint]
    queries: int
    replayed: int
    seconds: float

    @property
    def queries_this_run(self) -> int:
        """Queries sent to the victim by this run (the budget minus the replayed)."""
        return self.queries - self.replayed

    def classifier(self, batch_size: int = 1024) -> TorchClassifier:
        """The surrogate as a :class:`TorchClassifier` returning logits."""
        return TorchClassifier(
            self.surrogate, self.input_shape, output="logits", batch_size=batch_size
        )

    def save(self, path: str | Path, class_names: list[str] | None = None) -> Path:
        """Write the surrogate as a pixelguard checkpoint (``pixelguard attack --model PATH``).

        The caller wraps this in :func:`~pixelguard.files.replaced_atomically` for an
        atomic write, or passes the final path.
        """
        last = self.curve[-1] if self.curve else None
        return save_zoo_checkpoint(
            path,
            self.surrogate,
            arch=self.arch,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            class_names=class_names,
            metrics={
                "stolen_by": self.method,
                "queries": self.queries,
                "agreement": None if last is None else last.agreement,
                "accuracy": None if last is None else last.accuracy,
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything but the tensors, as plain data."""
        return {
            "method": self.method,
            "params": self.params,
            "arch": self.arch,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "victim_output": self.output.value,
            "soft_labels": self.output is not OutputKind.LABELS,
            "queries": self.queries,
            "queries_this_run": self.queries_this_run,
            "replayed_from_checkpoint": self.replayed,
            "curve": [p.to_dict() for p in self.curve],
            "seconds": self.seconds,
        }


# --- query accounting with a checkpoint ----------------------------------------------------


class _Oracle:
    """The victim behind one total budget, its answers checkpointed and replayed.

    Rows already in the checkpoint are answered from it (they must be the very images
    this run asks about again); new rows are charged to the single slot of a
    :class:`QueryCounter` whose budget is what the checkpoint left.
    """

    def __init__(
        self,
        victim: Classifier,
        budget: int,
        *,
        checkpoint: Path | None,
        fingerprint: str,
        query_batch: int,
        checkpoint_every: int,
        progress: ExtractionProgress | None,
    ) -> None:
        self.output = OutputKind(victim.capabilities.output)
        self.budget = budget
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint
        self.query_batch = query_batch
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.stored_x, self.stored_p = self._load()
        self.replayed = 0
        self.counter = QueryCounter(victim, 1, budget - self.stored_x.shape[0])
        self.asked_x: list[torch.Tensor] = []
        self.asked_p: list[torch.Tensor] = []
        self._unsaved = 0

    @property
    def spent(self) -> int:
        """Queries behind the answers so far: replayed plus new."""
        return self.replayed + self.counter.total

    @property
    def left(self) -> int:
        """Queries this extraction may still ask (replayed ones count as spent)."""
        return self.budget - self.spent

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        empty = torch.zeros(0), torch.zeros(0)
        if self.checkpoint is None or not self.checkpoint.exists():
            return empty
        try:
            with np.load(self.checkpoint, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                x, p = torch.from_numpy(data["x"].copy()), torch.from_numpy(data["p"].copy())
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the extraction checkpoint {self.checkpoint}: {exc}"
            ) from exc
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"the checkpoint {self.checkpoint} belongs to another extraction (another "
                "method, settings or query data); delete it or use the same settings"
            )
        if x.shape[0] > self.budget:
            raise ConfigError(
                f"the checkpoint {self.checkpoint} holds more queries than the budget"
            )
        logger.info("resuming: %d paid queries in %s", x.shape[0], self.checkpoint)
        return x, p

    def ask(self, x: torch.Tensor, *, trust_stored: bool = False) -> torch.Tensor:
        """The victim's answers to ``x`` as probabilities, from the checkpoint where it has them.

        With ``trust_stored``, rows answered from the checkpoint stand for the images the
        checkpoint holds (for images computed from the surrogate, which float rounding may
        change by a hair between runs); otherwise they must be exactly the images asked.

        Raises:
            QueryBudgetExceeded: more new rows than the budget has left.
            ConfigError: the checkpoint's images differ from the ones asked again.
        """
        out: list[torch.Tensor] = []
        offset = self.replayed
        n_replay = min(x.shape[0], self.stored_x.shape[0] - offset)
        if n_replay > 0:
            stored = self.stored_x[offset : offset + n_replay]
            if not trust_stored and not torch.equal(stored, x[:n_replay]):
                raise ConfigError(
                    f"the checkpoint {self.checkpoint} holds other images than this run asks "
                    "about; delete it or use the same settings and seed"
                )
            out.append(self.stored_p[offset : offset + n_replay])
            self.replayed += n_replay
            self.asked_x.append(stored)
            self.asked_p.append(out[-1])
        fresh = x[max(n_replay, 0) :]
        for chunk in torch.split(fresh, self.query_batch):
            with torch.no_grad():
                scores = self.counter.predict(
                    chunk, index=torch.zeros(chunk.shape[0], dtype=torch.int64)
                )
            answer = probabilities(scores.detach().float().cpu(), self.output)
            out.append(answer)
            self.asked_x.append(chunk)
            self.asked_p.append(answer)
            self._unsaved += chunk.shape[0]
            if self._unsaved >= self.checkpoint_every:
                self.save()
            if self.progress is not None:
                self.progress(self.spent, self.budget)
        return torch.cat(out) if out else torch.zeros(0)

    def all_answers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image asked so far and its answer."""
        if not self.asked_x:
            return torch.zeros(0), torch.zeros(0)
        return torch.cat(self.asked_x), torch.cat(self.asked_p)

    def save(self) -> None:
        """Write every paid answer (the checkpoint's and the new ones) atomically."""
        self._unsaved = 0
        if self.checkpoint is None:
            return
        x, p = self.all_answers()
        if x.shape[0] == 0 and self.stored_x.shape[0] == 0:
            return
        if self.stored_x.shape[0] > x.shape[0]:  # the checkpoint holds rows not replayed yet
            x = torch.cat([x, self.stored_x[x.shape[0] :]])
            p = torch.cat([p, self.stored_p[p.shape[0] :]])
        meta = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "fingerprint": self.fingerprint,
        }
        write_npz(
            self.checkpoint, {"x": x.numpy(), "p": p.numpy(), "meta": np.array(json.dumps(meta))}
        )


def fingerprint(*parts: Any) -> str:
    """A short hash of plain data and tensors, identifying one extraction."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            digest.update(part.detach().cpu().contiguous().numpy().tobytes())
            digest.update(str(tuple(part.shape)).encode())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


# --- shared configuration and training -----------------------------------------------------


def _check_shape(x: torch.Tensor, victim: Classifier, what: str) -> None:
    if tuple(x.shape[1:]) != tuple(victim.input_shape):
        raise ShapeError(
            f"{what} have shape {tuple(x.shape[1:])} but the model expects {tuple(victim.input_shape)}"
        )


def build_surrogate(
    arch: str, input_shape: tuple[int, int, int], num_classes: int, seed: int
) -> nn.Module:
    """A fresh zoo network for images of ``input_shape``, checked with one forward pass.

    Raises:
        ConfigError: an unknown architecture.
        ShapeError: the architecture does not fit images of this shape.
    """
    c, h, w = input_shape
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        module = build_model(arch, c, num_classes, (h, w))
    try:
        with torch.no_grad():
            out = module.eval()(torch.zeros(1, c, h, w))
    except RuntimeError as exc:
        raise ShapeError(
            f"the {arch} surrogate does not fit images of shape {input_shape}: {_first_line(exc)}"
        ) from None
    if tuple(out.shape) != (1, num_classes):
        raise ShapeError(
            f"the {arch} surrogate gives {tuple(out.shape[1:])} outputs, not {num_classes}"
        )
    return module


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def fit_surrogate(
    module: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """Train ``module`` on soft targets (cross-entropy to probability rows) with Adam.

    One-hot targets (a label-only victim) make this the usual hard-label cross-entropy.
    Returns the mean loss of the last epoch.
    """
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    mean_loss = float("nan")
    for _ in range(epochs):
        module.train()
        perm = torch.randperm(x.shape[0], generator=generator)
        total = 0.0
        for batch in torch.split(perm, batch_size):
            loss = F.cross_entropy(module(x[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimizer.step()
            total += float(loss.detach()) * batch.numel()
        mean_loss = total / max(x.shape[0], 1)
    module.eval()
    return mean_loss


def round_epochs(n: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """Epochs for a round on ``n`` answers: ``epochs``, or more to make ``min_steps`` steps.

    Example:
        >>> round_epochs(1000, 128, 5, 400), round_epochs(20000, 128, 5, 400)
        (50, 5)
    """
    per_epoch = -(-n // batch_size)
    return max(epochs, -(-min_steps // max(per_epoch, 1)))


def soften(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """Probability rows at a distillation temperature: ``softmax(log p / T)``.

    ``log p`` equals the logits up to a constant per row, so this is the victim's
    softmax at temperature ``T``; T = 1 returns ``p`` itself.
    """
    if temperature == 1.0:
        return p
    return torch.softmax(p.clamp_min(1e-30).log() / temperature, dim=1)


def budget_schedule(budget: int, rounds: tuple[int, ...] | None) -> list[int]:
    """Cumulative query counts after each round, ending at ``budget``.

    Default: a geometric schedule, the budget halved four times (``budget/16, ..., budget``).
    Given rounds above the budget are dropped; the budget is always the last point.
    """
    if rounds is None:
        points = [max(1, math.ceil(budget / 2**i)) for i in (4, 3, 2, 1)]
    else:
        points = [int(r) for r in rounds if 0 < int(r) < budget]
    return sorted(set(points) - {budget}) + [budget]


@dataclass(frozen=True, kw_only=True)
class _ExtractionConfig(ABC):
    """Settings both strategies share (see the subclasses for their meaning)."""

    name: ClassVar[str] = "extraction"

    budget: int = 20_000
    rounds: tuple[int, ...] | None = None
    arch: str = "small-cnn"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    query_batch: int = 1024
    checkpoint_every: int = 4096
    min_steps: int = 0
    temperature: float = 1.0
    seed: int = 0

    _constraints: ClassVar[dict[str, Check]] = {
        "budget": at_least(1),
        "temperature": positive(),
        "min_steps": at_least(0),
        "epochs": at_least(1),
        "lr": positive(),
        "batch_size": at_least(1),
        "query_batch": at_least(1),
        "checkpoint_every": at_least(1),
    }

    def __post_init__(self) -> None:
        if self.rounds is not None:
            object.__setattr__(self, "rounds", tuple(int(r) for r in self.rounds))
            if any(r < 1 for r in self.rounds):
                raise ConfigError(
                    f"{self.name}: rounds must be positive query counts, got {self.rounds}"
                )
        check_constraints(self.name, self)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data."""
        data = asdict(self)
        data["rounds"] = None if self.rounds is None else list(self.rounds)
        return data

    def run(
        self,
        victim: Classifier,
        query_pool: torch.Tensor,
        *,
        holdout: Holdout | None = None,
        checkpoint: str | Path | None = None,
        progress: ExtractionProgress | None = None,
    ) -> ExtractionResult:
        """Steal ``victim`` by querying it about images drawn from ``query_pool``.

        Args:
            victim: any classifier (scores or labels only), local or remote.
            query_pool: the attacker's images (another distribution or a disjoint split).
            holdout: held-out images to measure agreement and accuracy after each round.
            checkpoint: an ``.npz`` for the paid answers; an existing one is resumed.
            progress: called as ``progress(queries_spent, budget)``.

        Shape:
            query_pool: (N, C, H, W) float32 in [0, 1], (C, H, W) the victim's input shape.

        Raises:
            ShapeError: pool images of another shape, or an architecture that does not fit.
            ConfigError: a checkpoint of another extraction.
            QueryBudgetExceeded: never in normal operation; the counter's hard limit.
        """
        check_images(query_pool, name="query data")
        _check_shape(query_pool, victim, "query images")
        if query_pool.shape[0] == 0:
            raise ConfigError("no query images")
        shape = tuple(int(v) for v in query_pool.shape[1:])
        num_classes = int(victim.num_classes)
        module = build_surrogate(self.arch, shape, num_classes, self.seed)  # type: ignore[arg-type]
        start = time.perf_counter()
        oracle = _Oracle(
            victim,
            self.budget,
            checkpoint=None if checkpoint is None else Path(checkpoint),
            fingerprint=fingerprint(self.name, self.to_dict(), query_pool, shape, num_classes),
            query_batch=self.query_batch,
            checkpoint_every=self.checkpoint_every,
            progress=progress,
        )
        generator = torch.Generator().manual_seed(self.seed)
        curve: list[CurvePoint] = []
        try:
            self._extract(oracle, module, query_pool, holdout, generator, curve)
        finally:
            oracle.save()
        x, p = oracle.all_answers()
        return ExtractionResult(
            surrogate=module,
            arch=self.arch,
            input_shape=shape,  # type: ignore[arg-type]
            num_classes=num_classes,
            method=self.name,
            params=self.to_dict(),
            x_queried=x,
            answers=p,
            output=oracle.output,
            curve=curve,
            queries=oracle.spent,
            replayed=oracle.replayed,
            seconds=time.perf_counter() - start,
        )

    def _train_round(
        self,
        oracle: _Oracle,
        module: nn.Module,
        holdout: Holdout | None,
        generator: torch.Generator,
        curve: list[CurvePoint],
    ) -> None:
        oracle.save()
        x, p = oracle.all_answers()
        targets = p if oracle.output is OutputKind.LABELS else soften(p, self.temperature)
        loss = fit_surrogate(
            module,
            x,
            targets,
            epochs=round_epochs(x.shape[0], self.batch_size, self.epochs, self.min_steps),
            lr=self.lr,
            batch_size=self.batch_size,
            generator=generator,
        )
        agreement, accuracy = measure(module, holdout)
        curve.append(CurvePoint(oracle.spent, agreement, accuracy))
        logger.info(
            "%s: %d queries, loss %.4f, agreement %s",
            self.name,
            oracle.spent,
            loss,
            "-" if agreement is None else f"{agreement:.4f}",
        )

    @abstractmethod
    def _extract(
        self,
        oracle: _Oracle,
        module: nn.Module,
        pool: torch.Tensor,
        holdout: Holdout | None,
        generator: torch.Generator,
        curve: list[CurvePoint],
    ) -> None:
        """Ask ``oracle`` within the budget, training ``module`` and extending ``curve``."""


@dataclass(frozen=True, kw_only=True)
class KnockoffNets(_ExtractionConfig):
    """Knockoff Nets: query the victim on the attacker's natural images, train on its answers.

    Rounds spend the budget on a schedule (``rounds``, cumulative); after each round the
    surrogate is fine-tuned on every answer so far, for ``epochs`` passes. It learns
    from the victim's probabilities (soft labels) when the victim returns scores, from
    one-hot labels when it returns labels only.

    Args:
        budget: total victim queries (a hard limit).
        rounds: cumulative query counts after which the surrogate is trained and
            measured; default ``budget/16, budget/8, budget/4, budget/2, budget``.
        arch: the surrogate's zoo architecture.
        epochs: passes over the answers so far, each round.
        min_steps: at least this many optimisation steps per round (more epochs when
            there are few answers: a small query set needs more passes).
        lr: Adam learning rate.
        batch_size: images per training step.
        query_batch: images per victim call.
        checkpoint_every: new answers between checkpoint writes (and after every round).
        temperature: distillation temperature T for a victim with scores: the surrogate
            learns ``softmax(log p / T)`` of the victim's probabilities ``p`` (1: ``p``
            itself); a label-only victim's one-hot answers are used as they are.
        sampling: ``"random"`` (the paper's baseline: pool images drawn without
            replacement) or ``"uncertain"`` (after the first, random, round: half of
            each round the pool images the surrogate is least sure of, by its top-2
            margin; half random).
        seed: seeds initialisation, sampling and training.

    Example:
        >>> KnockoffNets(budget=1000).rounds is None
        True
    """

    name: ClassVar[str] = "knockoff"
    sampling: str = "random"

    _constraints: ClassVar[dict[str, Check]] = {"sampling": one_of("random", "uncertain")}

    def _extract(
        self,
        oracle: _Oracle,
        module: nn.Module,
        pool: torch.Tensor,
        holdout: Holdout | None,
        generator: torch.Generator,
        curve: list[CurvePoint],
    ) -> None:
        n = pool.shape[0]
        order = torch.randperm(n, generator=generator)
        unused = torch.ones(n, dtype=torch.bool)
        asked = 0
        for target in budget_schedule(self.budget, self.rounds):
            want = min(target - asked, int(unused.sum()))
            if want <= 0:
                break
            pick = self._select(
                module, pool, order, unused, want, first=asked == 0, generator=generator
            )
            unused[pick] = False
            oracle.ask(pool[pick])
            asked += want
            self._train_round(oracle, module, holdout, generator, curve)
        if asked < self.budget:
            logger.warning(
                "knockoff: the query pool holds only %d images; spent %d of %d queries",
                n,
                asked,
                self.budget,
            )

    def _select(
        self,
        module: nn.Module,
        pool: torch.Tensor,
        order: torch.Tensor,
        unused: torch.Tensor,
        want: int,
        *,
        first: bool,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Pool indices to ask about next (a fixed random order, or the least sure first)."""
        candidates = order[unused[order]]
        if self.sampling == "random" or first:
            return candidates[:want]
        n_sure = want // 2
        with torch.no_grad():
            margins = []
            for chunk in torch.split(pool[candidates], 2048):
                top2 = F.softmax(module(chunk), dim=1).topk(2, dim=1).values
                margins.append(top2[:, 0] - top2[:, 1])
        margin = torch.cat(margins)
        unsure = candidates[margin.argsort()[:n_sure]]
        rest = candidates[~torch.isin(candidates, unsure)]
        return torch.cat([unsure, rest[: want - n_sure]])


@dataclass(frozen=True, kw_only=True)
class JacobianAugmentation(_ExtractionConfig):
    """Jacobian-based dataset augmentation: grow the queries along the surrogate's gradients.

    The first round asks about ``seed_size`` pool images; each later round adds, for
    every image asked so far, ``clip(x + lambda * sign(grad_x logit_c(x)))`` where ``c``
    is the victim's label for ``x`` (the step's sign flips every ``tau`` rounds), as
    many as the budget allows (a random subset when it allows fewer), until the budget
    is spent. ``rounds`` is not used: the set grows by doubling.

    Args:
        budget: total victim queries (a hard limit).
        seed_size: pool images in the first round (Papernot et al.: 150 for MNIST).
        lam: the step size lambda (0.1 in the paper).
        tau: flip the step's sign every ``tau`` rounds (0: never).
        arch, epochs, lr, batch_size, query_batch, checkpoint_every, temperature, seed: as for
            :class:`KnockoffNets`.
    """

    name: ClassVar[str] = "jacobian"
    seed_size: int = 150
    lam: float = 0.1
    tau: int = 0

    _constraints: ClassVar[dict[str, Check]] = {
        "seed_size": at_least(1),
        "lam": between(0, 1, low_open=True),
        "tau": at_least(0),
    }

    def _extract(
        self,
        oracle: _Oracle,
        module: nn.Module,
        pool: torch.Tensor,
        holdout: Holdout | None,
        generator: torch.Generator,
        curve: list[CurvePoint],
    ) -> None:
        first = torch.randperm(pool.shape[0], generator=generator)[
            : min(self.seed_size, self.budget)
        ]
        oracle.ask(pool[first])
        self._train_round(oracle, module, holdout, generator, curve)
        round_no = 1
        while oracle.left > 0:
            x, p = oracle.all_answers()
            flip = bool(self.tau) and (round_no // max(self.tau, 1)) % 2 == 1
            sign = -1.0 if flip else 1.0
            take = min(x.shape[0], oracle.left)
            rows = (
                torch.randperm(x.shape[0], generator=generator)[:take]
                if take < x.shape[0]
                else torch.arange(take)
            )
            new = self._augment(module, x[rows], p[rows].argmax(dim=1), sign * self.lam)
            oracle.ask(new, trust_stored=True)
            self._train_round(oracle, module, holdout, generator, curve)
            round_no += 1

    @staticmethod
    def _augment(
        module: nn.Module, x: torch.Tensor, label: torch.Tensor, step: float
    ) -> torch.Tensor:
        """``clip(x + step * sign(d logit_label / dx))``, in chunks."""
        out = []
        module.eval()
        for xb, yb in zip(torch.split(x, 1024), torch.split(label, 1024), strict=True):
            xb = xb.clone().requires_grad_(True)
            logit = module(xb).gather(1, yb.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(logit, xb)
            out.append((xb.detach() + step * grad.sign()).clamp(0.0, 1.0))
        return torch.cat(out)


METHODS: dict[str, type[_ExtractionConfig]] = {
    "knockoff": KnockoffNets,
    "jacobian": JacobianAugmentation,
}
"""The extraction strategies by name."""


def create_extraction(method: str, **settings: Any) -> KnockoffNets | JacobianAugmentation:
    """The extraction strategy ``method`` with ``settings`` (unknown names: ConfigError)."""
    if method not in METHODS:
        raise ConfigError(f"unknown extraction method {method!r}; choose {' or '.join(METHODS)}")
    cls = METHODS[method]
    known = {f for f in cls.__dataclass_fields__ if not f.startswith("_")}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"{method} has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(known))}"
        )
    return cls(**settings)  # type: ignore[return-value]


__all__ = [
    "CurvePoint",
    "ExtractionResult",
    "Holdout",
    "JacobianAugmentation",
    "KnockoffNets",
    "budget_schedule",
    "create_extraction",
    "make_holdout",
    "measure",
]
