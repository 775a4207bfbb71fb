"""Transfer attacks from a stolen surrogate, verified on the victim.

- :func:`transfer_attack`: run a white-box attack (pgd, sparse-pgd, ...) on the
  surrogate, submit its adversarial images to the victim once each, and count as a
  success only what the victim, queried afresh, misclassifies.
- :func:`warm_start_sparse_rs`: sparse-rs on the victim, once from scratch and once
  starting from the surrogate's adversarial pixels, on the same images with the same
  budget, every victim query counted, so the saving in victim queries is measured.

Every number here comes from the victim's answers; the surrogate only proposes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch

from pixelguard.attacks._population import margin_loss, pixel_corner_index, sample_new_corners
from pixelguard.attacks.base import Attack, AttackResult, AttackState, fools
from pixelguard.attacks.sparse_rs import SparseRS, sparse_random_search
from pixelguard.checks import check_images, check_labels
from pixelguard.errors import ShapeError
from pixelguard.metrics.distances import l0_pixels, linf
from pixelguard.models.base import Classifier, OutputKind
from pixelguard.models.queries import QueryCounter


def _victim_labels(counter: QueryCounter, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The victim's top-1 class for ``x`` (row ``i`` charged to image ``rows[i]``)."""
    if rows.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    with torch.no_grad():
        return counter.predict(x, index=rows).argmax(dim=1).cpu()


def _check_inputs(
    victim: Classifier, surrogate: Classifier, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    check_images(x)
    for model, what in ((victim, "victim"), (surrogate, "surrogate")):
        if tuple(x.shape[1:]) != tuple(model.input_shape):
            raise ShapeError(
                f"images have shape {tuple(x.shape[1:])} but the {what} expects "
                f"{tuple(model.input_shape)}"
            )
    return check_labels(y, x.shape[0], victim.num_classes)


@dataclass(frozen=True)
class TransferResult:
    """A white-box attack on the surrogate, submitted to the victim.

    Attributes:
        attack: the attack's name; ``params`` its configuration.
        x_adv: the surrogate's adversarial images (clean where it failed).
        victim_correct: the victim classifies the clean image correctly.
        surrogate_success: the attack fooled the surrogate (verified by the attack).
        transfer_success: the victim, queried afresh, misclassifies ``x_adv`` (only
            for images it classified correctly when clean).
        victim_queries: victim queries spent per image (the clean one, plus one to
            submit a surrogate success).
        l0_pixels, linf: the perturbation of ``x_adv``.
        surrogate: the surrogate attack's own result.
    """

    attack: str
    params: dict[str, Any]
    x_adv: torch.Tensor
    victim_correct: torch.Tensor
    surrogate_success: torch.Tensor
    transfer_success: torch.Tensor
    victim_queries: torch.Tensor
    l0_pixels: torch.Tensor
    linf: torch.Tensor
    surrogate: AttackResult
    wall_time: float

    @property
    def transfer_rate(self) -> float | None:
        """Share of the victim's correctly classified images its transfer fooled."""
        n = int(self.victim_correct.sum())
        return None if n == 0 else int(self.transfer_success.sum()) / n

    @property
    def surrogate_rate(self) -> float | None:
        """Share of those images on which the attack fooled the surrogate."""
        n = int(self.victim_correct.sum())
        return None if n == 0 else int((self.surrogate_success & self.victim_correct).sum()) / n

    def to_dict(self) -> dict[str, Any]:
        """Plain data: rates, counts and the attack; no tensors."""
        success = self.transfer_success
        return {
            "attack": self.attack,
            "params": self.params,
            "source": "transfer: white-box on the surrogate, verified on the victim",
            "n_images": int(self.victim_correct.numel()),
            "n_victim_correct": int(self.victim_correct.sum()),
            "surrogate_success_rate": self.surrogate_rate,
            "transfer_success_rate": self.transfer_rate,
            "n_transferred": int(success.sum()),
            "victim_queries": int(self.victim_queries.sum()),
            "median_l0_pixels": _median(self.l0_pixels[success]),
            "median_linf": _median(self.linf[success]),
            "wall_time": self.wall_time,
        }


def _median(values: torch.Tensor) -> float | None:
    return None if values.numel() == 0 else float(values.float().median())


def transfer_attack(
    attack: Attack,
    surrogate: Classifier,
    victim: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
) -> TransferResult:
    """Attack ``surrogate`` white-box, submit to ``victim``, count what transfers.

    The victim is asked once about each clean image (to know which it gets right) and
    once about each adversarial image the surrogate attack produced; nothing else.

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y: (N,) int64 true labels.
    """
    y = _check_inputs(victim, surrogate, x, y)
    start = time.perf_counter()
    n = x.shape[0]
    counter = QueryCounter(victim, n)
    rows = torch.arange(n)
    correct = _victim_labels(counter, x, rows) == y.cpu()
    result = attack.run(surrogate, x, y)
    submit = (result.success.cpu() & correct).nonzero().flatten()
    transferred = torch.zeros(n, dtype=torch.bool)
    pred = _victim_labels(counter, result.x_adv[submit], submit)
    transferred[submit] = pred != y.cpu()[submit]
    return TransferResult(
        attack=attack.name,
        params=attack.to_dict(),
        x_adv=result.x_adv,
        victim_correct=correct,
        surrogate_success=result.success.cpu(),
        transfer_success=transferred,
        victim_queries=counter.per_image.clone(),
        l0_pixels=l0_pixels(x, result.x_adv).cpu(),
        linf=linf(x, result.x_adv).cpu(),
        surrogate=result,
        wall_time=time.perf_counter() - start,
    )


# --- sparse-rs from the surrogate's adversarial pixels ----------------------------------------


@dataclass(frozen=True, kw_only=True)
class _WarmSparseRS(SparseRS):
    """Sparse-RS whose search starts from given images' changed pixels (not registered).

    For each image, the ``pixels`` positions that ``start_images`` changes most (random
    unchanged ones fill up when it changes fewer) with their values rounded to the
    nearest colour-cube corner (another corner where that is the pixel's own colour).
    """

    start_images: torch.Tensor | None = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.pop("start_images")
        return data

    def _run(self, state: AttackState) -> None:
        if self.start_images is None or self._scans_without_clean_query(tuple(state.x.shape[1:])):
            super()._run(state)
            return
        images = state.unfooled
        sparse_random_search(
            state,
            images,
            pixels=self.pixels,
            steps=self.steps,
            p_init=self.p_init,
            loss_fn=margin_loss(OutputKind(state.model.capabilities.output), state.reject_class),
            start=start_pixels(
                state.x[images],
                self.start_images[images].to(state.x.device),
                self.pixels,
                state.generator,
            ),
            report_progress=True,
            min_batch=self.min_batch,
        )


def start_pixels(
    x: torch.Tensor, x_start: torch.Tensor, pixels: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse-RS's start (positions, corner indices) from the pixels ``x_start`` changes.

    The ``pixels`` most changed positions, each at the corner nearest its value in
    ``x_start``; positions ``x_start`` leaves unchanged (random ones filling up) and
    corners that are the pixel's own colour get a random other corner.

    Shape:
        x, x_start: (A, C, H, W) -> two (A, k) int64 tensors, k = min(pixels, H * W).
    """
    a, c, h, w = x.shape
    k = min(pixels, h * w)
    change = (x_start - x).abs().sum(dim=1).flatten(1)
    jitter = torch.rand(change.shape, generator=generator).to(x.device) * 1e-6
    pos = (change + jitter).topk(k, dim=1).indices
    target = x_start.reshape(a, c, h * w).gather(2, pos.view(a, 1, k).expand(a, c, k))
    bits = 2 ** torch.arange(c, device=x.device).view(1, c, 1)
    rounded = (target.round().long() * bits).sum(dim=1)
    own = pixel_corner_index(x).gather(1, pos)
    other = sample_new_corners(generator, own, c).to(x.device)
    changed = change.gather(1, pos) > 0
    col = torch.where(changed & (rounded != own), rounded, other)
    return pos, col


@dataclass(frozen=True)
class WarmStartComparison:
    """Sparse-RS on the victim from scratch vs from the surrogate's adversarial images.

    Per image: ``cold_queries``/``warm_queries`` victim queries spent (the warm run
    counts the one query that submits the surrogate's adversarial image), and
    ``cold_success``/``warm_success`` verified on the victim. Images the victim
    misclassifies when clean are left out.
    """

    pixels: int
    budget: int
    cold_success: torch.Tensor
    warm_success: torch.Tensor
    cold_queries: torch.Tensor
    warm_queries: torch.Tensor
    transferred: torch.Tensor
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain data: success rates, queries spent, and the saving."""
        both = self.cold_success & self.warm_success
        n = int(self.cold_success.numel())
        cold_total, warm_total = int(self.cold_queries.sum()), int(self.warm_queries.sum())
        return {
            "attack": "sparse-rs",
            "params": self.params,
            "source": "victim queries; the warm start comes from the surrogate (transfer)",
            "n_images": n,
            "pixels": self.pixels,
            "budget": self.budget,
            "cold_success_rate": None if n == 0 else float(self.cold_success.float().mean()),
            "warm_success_rate": None if n == 0 else float(self.warm_success.float().mean()),
            "transferred_at_first_query": int(self.transferred.sum()),
            "cold_queries_total": cold_total,
            "warm_queries_total": warm_total,
            "queries_saved": cold_total - warm_total,
            "queries_saved_fraction": None if cold_total == 0 else 1 - warm_total / cold_total,
            "n_both_succeeded": int(both.sum()),
            "cold_mean_queries_when_both_succeed": _mean(self.cold_queries[both]),
            "warm_mean_queries_when_both_succeed": _mean(self.warm_queries[both]),
            "cold_median_queries_when_both_succeed": _median(self.cold_queries[both]),
            "warm_median_queries_when_both_succeed": _median(self.warm_queries[both]),
        }


def _mean(values: torch.Tensor) -> float | None:
    return None if values.numel() == 0 else float(values.float().mean())


def warm_start_sparse_rs(
    attack: SparseRS,
    victim: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    x_start: torch.Tensor,
) -> WarmStartComparison:
    """Measure the victim queries sparse-rs saves when it starts from ``x_start``.

    Runs on the images the victim classifies correctly (one counted query each, not
    charged to either side). Cold: ``attack`` as configured. Warm: first submit
    ``x_start`` (one query; a success ends there), then, for the images it did not
    fool, the same attack, its search starting from the pixels ``x_start`` changes,
    with the budget less that query. Every success is verified by the attack's fresh
    forward pass on the victim.

    Args:
        attack: the sparse-rs configuration; its ``budget`` (or else ``steps + 1``) is
            the per-image limit of both runs.
        victim: the model to fool.
        x, y: clean images and true labels.
        x_start: the surrogate's adversarial images (clean where it failed).

    Shape:
        x, x_start: (N, C, H, W) float32 in [0, 1]; y: (N,) int64.
    """
    check_images(x)
    check_images(x_start, name="x_start")
    if x_start.shape != x.shape:
        raise ShapeError(f"x_start has shape {tuple(x_start.shape)}, x {tuple(x.shape)}")
    if tuple(x.shape[1:]) != tuple(victim.input_shape):
        raise ShapeError(
            f"images have shape {tuple(x.shape[1:])} but the victim expects {tuple(victim.input_shape)}"
        )
    y = check_labels(y, x.shape[0], victim.num_classes)
    budget = attack.budget if attack.budget is not None else attack.steps + 1
    probe = QueryCounter(victim, x.shape[0])
    keep = _victim_labels(probe, x, torch.arange(x.shape[0])) == y.cpu()
    x, y, x_start = x[keep], y[keep], x_start[keep]
    n = x.shape[0]
    cold = dataclasses.replace(attack, budget=budget).run(victim, x, y)
    first = QueryCounter(victim, n)
    submitted = (x_start != x).flatten(1).any(dim=1).cpu()
    transferred = torch.zeros(n, dtype=torch.bool)
    sub = submitted.nonzero().flatten()
    transferred[sub] = fools(
        _victim_labels(first, x_start[sub], sub),
        y.cpu()[sub],
        None,
        victim.capabilities.reject_class,
    )
    warm_success = transferred.clone()
    warm_queries = first.per_image.clone()
    rest = (~transferred).nonzero().flatten()
    if rest.numel():
        left = budget - int(warm_queries[rest].max())
        fields = {f.name: getattr(attack, f.name) for f in dataclasses.fields(attack)}
        fields["budget"] = left
        warm = _WarmSparseRS(**fields, start_images=x_start[rest]).run(victim, x[rest], y[rest])
        warm_success[rest] = warm.success.cpu()
        warm_queries[rest] += warm.queries.cpu()
    return WarmStartComparison(
        pixels=attack.pixels,
        budget=budget,
        cold_success=cold.success.cpu(),
        warm_success=warm_success,
        cold_queries=cold.queries.cpu(),
        warm_queries=warm_queries,
        transferred=transferred,
        params={**attack.to_dict(), "budget": budget},
    )
