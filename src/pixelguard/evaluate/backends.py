"""Where the shards of an evaluation run: in this process, or as Ray tasks.

Both backends run the same :func:`~pixelguard.evaluate.shard.evaluate_shard` on the
same shards and hand each outcome to a callback as soon as it is finished, so the
runner checkpoints and reports progress the same way whichever runs them. Ray is an
optional dependency, imported only when the Ray backend is chosen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from pixelguard.errors import ConfigError, require
from pixelguard.evaluate.shard import ShardOutcome, evaluate_shard
from pixelguard.evaluate.suite import Suite
from pixelguard.models.base import Classifier

logger = logging.getLogger(__name__)

Backend = Literal["local", "ray"]
BACKENDS: tuple[str, ...] = ("local", "ray")

ShardDone = Callable[[int, ShardOutcome], None]
"""Called as ``done(shard_number, outcome)`` as each shard finishes, in any order."""


@dataclass(frozen=True)
class ShardTask:
    """The images of one shard and the model's clean predictions on them.

    Shape:
        x: (n, C, H, W) float32 in [0, 1]; y, clean_pred, clean_confidence: (n,).
    """

    number: int
    x: torch.Tensor
    y: torch.Tensor
    clean_pred: torch.Tensor
    clean_confidence: torch.Tensor

    def run(self, model: Classifier, suite: Suite) -> ShardOutcome:
        """Evaluate this shard under ``suite``."""
        return evaluate_shard(model, suite, self.x, self.y, self.clean_pred, self.clean_confidence)


def check_backend(backend: str, ray_address: str | None) -> None:
    """Raise :class:`ConfigError` for an unknown backend or a Ray address without Ray."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if ray_address is not None and backend != "ray":
        raise ConfigError(
            f"a Ray address ({ray_address}) needs the ray backend, but the backend is {backend}"
        )


def run_shards(
    tasks: Sequence[ShardTask],
    model: Classifier,
    suite: Suite,
    done: ShardDone,
    *,
    backend: str = "local",
    ray_address: str | None = None,
) -> None:
    """Evaluate every shard of ``tasks`` and pass each outcome to ``done`` as it finishes.

    Args:
        tasks: the shards to evaluate.
        model: the classifier.
        suite: the attacks per budget, every attack seeded.
        done: called in this process with each finished shard.
        backend: ``"local"`` (one after another, here) or ``"ray"`` (Ray tasks).
        ray_address: the Ray cluster to attach to (None: the running one, else a new
            local one); see ``ray.init(address=...)``.

    Raises:
        ConfigError: an unknown backend.
        MissingDependencyError: the Ray backend without Ray installed.
    """
    check_backend(backend, ray_address)
    if backend == "ray":
        _run_on_ray(tasks, model, suite, done, ray_address)
        return
    for task in tasks:
        done(task.number, task.run(model, suite))


def _run_in_worker(task: ShardTask, model: Classifier, suite: Suite) -> ShardOutcome:
    """The Ray task: one shard on one thread (Ray runs one task per core)."""
    torch.set_num_threads(1)
    return task.run(model, suite)


def _run_on_ray(
    tasks: Sequence[ShardTask],
    model: Classifier,
    suite: Suite,
    done: ShardDone,
    address: str | None,
) -> None:
    """Submit every shard as a Ray task; collect the outcomes as they finish."""
    ray: Any = require("ray", "ray", "the Ray backend")
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, logging_level=logging.WARNING)
    logger.info("running %d shard(s) on Ray: %s", len(tasks), ray.cluster_resources())
    try:
        remote = ray.remote(num_cpus=1)(_run_in_worker)
        model_ref, suite_ref = ray.put(model), ray.put(suite)
        pending = {remote.remote(task, model_ref, suite_ref): task.number for task in tasks}
        try:
            while pending:
                finished, _ = ray.wait(list(pending), num_returns=1)
                for ref in finished:
                    done(pending.pop(ref), ray.get(ref))
        finally:
            for ref in pending:
                ray.cancel(ref)
    finally:
        if started:
            ray.shutdown()
