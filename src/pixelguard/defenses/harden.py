"""Adversarial training: retrain a network on its own adversarial examples.

Every step replaces a share of each batch with adversarial versions of its images,
found by a short white-box attack on the current network within the threat model:
projected gradient descent for ``linf:EPS`` and ``l2:EPS`` (Madry et al.), sparse
PGD for ``pixels:K`` (as in sparse adversarial training, Zhong et al.). The attack
runs with the network in eval mode, the update in train mode. With ``trades_beta``
the loss is TRADES's: cross-entropy on the clean images plus ``beta`` times the KL
divergence from the clean to the adversarial prediction, whose maximiser is then
also the attack's objective.

Training is seeded and resumable: after every epoch the network, the optimiser and
every random state are saved (plain tensors and numbers, read back with
``torch.load(weights_only=True)``), so a resumed run ends exactly where an
uninterrupted one would.

References:
    Madry, Makelov, Schmidt, Tsipras, Vladu. "Towards deep learning models resistant
    to adversarial attacks." ICLR 2018. arXiv:1706.06083.
    Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan. "Theoretically principled trade-off
    between robustness and accuracy." ICML 2019. arXiv:1901.08573 (TRADES).
    Zhong, Liu, Chen, Zhao, Zhang. "Towards efficient training and evaluation of
    robust models against l0 bounded adversarial perturbations." ICML 2024.
    arXiv:2405.05075.
"""

from __future__ import annotations

import copy
import logging
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from pixelguard.attacks._gradient import GradientAttack, ObjectiveFunction
from pixelguard.attacks.base import ThreatModel, parse_threat
from pixelguard.attacks.pgd import PGD
from pixelguard.attacks.sparse_pgd import SparsePGD
from pixelguard.data.base import Dataset
from pixelguard.errors import ConfigError
from pixelguard.files import atomic_write
from pixelguard.models.training import TrainProgress

logger = logging.getLogger(__name__)

STATE_FORMAT = "pixelguard-harden-state"
STATE_VERSION = 1


def training_attack(threat: ThreatModel, steps: int) -> GradientAttack:
    """The white-box attack adversarial training runs in ``threat``.

    ``steps`` gradient steps of sparse PGD (pixels) or of PGD with step size
    ``2.5 * eps / steps`` (linf, l2).

    Raises:
        ConfigError: an unbounded threat model.
    """
    if threat.kind is None or threat.size is None:
        raise ConfigError("adversarial training needs a bounded threat model, e.g. pixels:3")
    if threat.kind == "l0":
        return SparsePGD(pixels=int(threat.size), steps=steps, restarts=1)
    return PGD(norm=threat.kind, eps=threat.size, steps=steps)


@dataclass(frozen=True)
class HardenedModel:
    """An adversarially trained network and how its training went.

    Attributes:
        module: the network, in eval mode, on the CPU.
        history: one record per epoch: ``epoch``, ``loss`` (mean training loss),
            ``clean_accuracy`` and ``adversarial_accuracy`` (on the clean and the
            adversarial training examples as they were trained on; no clean
            accuracy when every example is adversarial), ``seconds``.
        params: the training configuration, as plain data.
    """

    module: nn.Module
    history: list[dict[str, float | None]]
    params: dict[str, Any]

    @property
    def seconds(self) -> float:
        """Training time over all epochs (resumed ones included)."""
        return sum(cast(float, record["seconds"]) for record in self.history)


def harden(
    model: nn.Module,
    dataset: Dataset,
    against: str | ThreatModel,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    adversarial_fraction: float = 0.5,
    trades_beta: float | None = None,
    attack_steps: int = 10,
    seed: int = 0,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: TrainProgress | None = None,
) -> HardenedModel:
    """Adversarially train a copy of ``model`` on ``dataset`` (``model`` is left as it is).

    Args:
        model: a network taking canonical batches and returning logits.
        dataset: the training images.
        against: the threat model, ``"pixels:K"``, ``"linf:EPS"`` or ``"l2:EPS"``.
        epochs: passes over the images.
        lr: Adam learning rate.
        batch_size: images per step.
        adversarial_fraction: share of each batch replaced by (plain loss) or
            paired with (TRADES) adversarial examples, in (0, 1].
        trades_beta: weight of TRADES's KL term; None trains on cross-entropy alone.
        attack_steps: gradient steps of the training attack.
        seed: seeds shuffling, the attack's random starts and any randomness of
            the network (dropout); the caller's random state is left as it was.
        checkpoint_path: where to save the training state after every epoch.
        resume: continue from the state in ``checkpoint_path`` when there is one.
        device: where to train; default CPU. The module is returned on the CPU.
        progress: called after every epoch as ``progress(epoch, epochs, loss)``.

    Returns:
        The :class:`HardenedModel`.

    Shape:
        dataset.x: (N, C, H, W) float32 in [0, 1]; dataset.y: (N,) int64.

    Raises:
        ConfigError: a bad threat model or hyper-parameter, ``resume`` without a
            ``checkpoint_path``, or a saved state of another configuration.
    """
    threat = parse_threat(against) if isinstance(against, str) else against
    _check_hyperparameters(epochs, lr, batch_size, adversarial_fraction, trades_beta, attack_steps)
    if resume and checkpoint_path is None:
        raise ConfigError("resume needs a checkpoint_path to resume from")
    params: dict[str, Any] = {
        "against": threat.spec,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "adversarial_fraction": adversarial_fraction,
        "trades_beta": trades_beta,
        "attack_steps": attack_steps,
        "seed": seed,
    }
    dev = torch.device(device) if device is not None else torch.device("cpu")
    module = copy.deepcopy(model).to(dev)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    attack = training_attack(threat, attack_steps)
    history: list[dict[str, float | None]] = []
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
            history = _load_state(Path(checkpoint_path), params, module, optimizer, generator)
            logger.info("resuming adversarial training after epoch %d", len(history))
        for epoch in range(len(history), epochs):
            record = _train_epoch(module, optimizer, dataset, attack, params, generator, dev, epoch)
            history.append(record)
            logger.debug("harden epoch %d/%d: %s", epoch + 1, epochs, record)
            if checkpoint_path is not None:
                _save_state(Path(checkpoint_path), params, module, optimizer, generator, history)
            if progress is not None:
                progress(epoch + 1, epochs, cast(float, record["loss"]))
    module.eval()
    logger.info(
        "hardened against %s for %d epochs: accuracy %.4f on the last epoch's adversarial examples",
        threat.spec,
        epochs,
        history[-1]["adversarial_accuracy"],
    )
    return HardenedModel(module.cpu(), history, params)


def _check_hyperparameters(
    epochs: int,
    lr: float,
    batch_size: int,
    adversarial_fraction: float,
    trades_beta: float | None,
    attack_steps: int,
) -> None:
    if epochs < 1 or batch_size < 1 or attack_steps < 1:
        raise ConfigError(
            "epochs, batch_size and attack_steps must be at least 1, "
            f"got {epochs}, {batch_size}, {attack_steps}"
        )
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    if not 0.0 < adversarial_fraction <= 1.0:
        raise ConfigError(f"adversarial_fraction must lie in (0, 1], got {adversarial_fraction}")
    if trades_beta is not None and not trades_beta > 0:
        raise ConfigError(f"trades_beta must be positive, got {trades_beta}")


def trades_objective(clean_logits: torch.Tensor) -> ObjectiveFunction:
    """TRADES's inner objective: ``KL(p(x) || p(x'))`` per image, from the clean logits.

    Shape:
        clean_logits: (M, K) -> objective(logits (M, K), label, target) -> (M,).
    """
    clean_probs = F.softmax(clean_logits.detach(), dim=1)

    def value(
        logits: torch.Tensor, label: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits, dim=1), clean_probs, reduction="none").sum(dim=1)

    return value


def _train_epoch(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: Dataset,
    attack: GradientAttack,
    params: dict[str, Any],
    generator: torch.Generator,
    device: torch.device,
    epoch: int,
) -> dict[str, float | None]:
    """One pass over ``dataset``; returns the epoch's history record."""
    start = time.perf_counter()
    beta: float | None = params["trades_beta"]
    n = len(dataset)
    total_loss = clean_correct = adv_correct = adv_seen = 0.0
    for batch in torch.split(torch.randperm(n, generator=generator), params["batch_size"]):
        x, y = dataset.x[batch].to(device), dataset.y[batch].to(device)
        n_adv = max(1, round(params["adversarial_fraction"] * batch.numel()))
        module.eval()
        objective = None
        if beta is not None:
            with torch.no_grad():
                objective = trades_objective(module(x[:n_adv]))
        x_adv = attack.maximize_loss(
            module, x[:n_adv], y[:n_adv], generator=generator, objective_fn=objective
        )
        module.train()
        if beta is None:
            logits = module(torch.cat([x_adv, x[n_adv:]]))
            loss = F.cross_entropy(logits, y)
            adv_logits, clean_logits, clean_y = logits[:n_adv], logits[n_adv:], y[n_adv:]
        else:
            clean_logits, adv_logits, clean_y = module(x), module(x_adv), y
            kl = F.kl_div(
                F.log_softmax(adv_logits, dim=1),
                F.softmax(clean_logits[:n_adv], dim=1),
                reduction="batchmean",
            )
            loss = F.cross_entropy(clean_logits, y) + beta * kl
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        total_loss += float(loss.detach()) * batch.numel()
        clean_correct += float((clean_logits.argmax(dim=1) == clean_y).sum())
        adv_correct += float((adv_logits.argmax(dim=1) == y[:n_adv]).sum())
        adv_seen += n_adv
    clean_seen = n if beta is not None else n - adv_seen
    return {
        "epoch": epoch + 1,
        "loss": total_loss / n,
        "clean_accuracy": clean_correct / clean_seen if clean_seen else None,
        "adversarial_accuracy": adv_correct / adv_seen,
        "seconds": time.perf_counter() - start,
    }


def _save_state(
    path: Path,
    params: dict[str, Any],
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    history: list[dict[str, float | None]],
) -> None:
    """Write the training state atomically (see :func:`~pixelguard.files.atomic_write`)."""
    payload = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "params": params,
        "history": history,
        "model": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))


def _load_state(
    path: Path,
    params: dict[str, Any],
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> list[dict[str, float | None]]:
    """Restore a saved training state in place; returns its history.

    Raises:
        ConfigError: not a hardening state, or one of another configuration (the
            number of epochs may differ: a finished run can be extended).
    """
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ConfigError(f"{path} is not a hardening state: {str(exc).splitlines()[0]}") from exc
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ConfigError(f"{path} is not a hardening state")
    if payload.get("version") != STATE_VERSION:
        raise ConfigError(
            f"{path} is hardening state version {payload.get('version')}; expected {STATE_VERSION}"
        )
    saved = {k: v for k, v in payload["params"].items() if k != "epochs"}
    wanted = {k: v for k, v in params.items() if k != "epochs"}
    if len(payload["history"]) > params["epochs"]:
        raise ConfigError(
            f"{path} already holds {len(payload['history'])} epochs, more than the {params['epochs']} asked for"
        )
    if saved != wanted:
        changed = sorted(k for k in wanted if saved.get(k) != wanted[k])
        raise ConfigError(
            f"{path} was saved by a run with other settings ({', '.join(changed)}); "
            "rerun with the same settings or without resume"
        )
    try:
        module.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise ConfigError(
            f"{path} holds weights of another network: {str(exc).splitlines()[0]}"
        ) from exc
    optimizer.load_state_dict(payload["optimizer"])
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    return list(payload["history"])
