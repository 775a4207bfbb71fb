"""Where the shards of an evaluation run: in this process, or as Ray tasks.

Both backends run the same :func:`~pixelguard.evaluate.shard.evaluate_shard` on the
same shards and hand each outcome to a callback as soon as it is finished, so the
runner checkpoints and reports progress the same way whichever runs them; the local
backend also reports progress within a shard. Ray is an optional dependency, imported
only when the Ray backend is chosen.
"""

from __future__ import annotations

import importlib
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pixelguard.errors import ConfigError, MissingDependencyError
from pixelguard.evaluate.shard import ShardOutcome, ShardProgress, evaluate_shard
from pixelguard.evaluate.suite import Suite
from pixelguard.models.base import Classifier

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("local", "ray")

RAY_INSTALL = "pip install ray (or, in a clone of pixelguard, pip install -e '.[ray]')"
"""How to install Ray, for the message when it is missing."""
RAY_START = "start one with `ray start --head`, or drop --ray-address to start a local one"
"""What to do when no Ray cluster answers."""
RAY_CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a ``host:port`` Ray address to accept a connection."""

ShardDone = Callable[[int, ShardOutcome], None]
"""Called as ``done(shard_number, outcome)`` as each shard finishes, in any order."""
ShardsProgress = Callable[[int, float], None]
"""Called as ``progress(shard_number, share)`` while a shard runs (local backend only)."""


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

    def run(
        self, model: Classifier, suite: Suite, progress: ShardProgress | None = None
    ) -> ShardOutcome:
        """Evaluate this shard under ``suite``, telling ``progress`` the share done."""
        return evaluate_shard(
            model, suite, self.x, self.y, self.clean_pred, self.clean_confidence, progress
        )


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
    progress: ShardsProgress | None = None,
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
        progress: told each running shard's share done (local backend; Ray tasks
            report only through ``done``).

    Raises:
        ConfigError: an unknown backend, or no Ray cluster at ``ray_address``.
        MissingDependencyError: the Ray backend without Ray installed.
    """
    check_backend(backend, ray_address)
    if backend == "ray":
        _run_on_ray(tasks, model, suite, done, ray_address)
        return
    for task in tasks:
        share = None if progress is None else _for_shard(progress, task.number)
        done(task.number, task.run(model, suite, share))


def _for_shard(progress: ShardsProgress, number: int) -> ShardProgress:
    """``progress`` as the callback of shard ``number``."""

    def update(share: float) -> None:
        progress(number, share)

    return update


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
    try:
        ray: Any = importlib.import_module("ray")
    except ImportError as exc:
        raise MissingDependencyError(
            f"the Ray backend needs the optional package 'ray': {RAY_INSTALL}"
        ) from exc
    started = not ray.is_initialized()
    if started:
        _connect(ray, address)
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


def _connect(ray: Any, address: str | None) -> None:
    """``ray.init(address)``, failing fast, in one line, where no cluster answers.

    A ``host:port`` (or ``ray://host:port``) address must accept a connection within
    :data:`RAY_CONNECT_TIMEOUT` first: Ray itself retries a dead address for minutes.

    Raises:
        ConfigError: nothing answers at ``address``, or Ray finds no cluster for it.
    """
    host, sep, port = (address or "").removeprefix("ray://").rpartition(":")
    if sep and port.isdigit():
        try:
            with socket.create_connection((host.strip("[]"), int(port)), RAY_CONNECT_TIMEOUT):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(
                f"no Ray cluster answers at --ray-address {address} ({reason}): {RAY_START}"
            ) from None
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as exc:
        where = f"--ray-address {address}" if address else "RAY_ADDRESS"
        raise ConfigError(f"no running Ray cluster found for {where}: {RAY_START}") from exc
