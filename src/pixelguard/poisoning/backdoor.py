"""Backdoor poisoning with a pixel trigger, and what a backdoor does to a model.

:func:`poison_dataset` stamps a :class:`~pixelguard.poisoning.triggers.Trigger` on
a seeded share of a training set and relabels those images (BadNets: Gu,
Dolan-Gavitt, Garg 2017), or, clean-label (Turner, Tsipras, Madry 2019), stamps
only images of the target class, first pushed away from their own class by PGD
against a clean model, and keeps every label. The result records which images were
poisoned, so every later step (training, screening, detection) can be scored
against the truth; :meth:`PoisonedData.save` writes it as one ``.npz`` that every
command reads as ordinary data (``x`` and ``y``), and :func:`read_poison_info`
reads the mask and the trigger back.

:func:`backdoor_metrics` measures a trained model: clean accuracy and the attack
success rate (ASR), the share of test images the trigger sends where the attacker
wants (all-to-one and clean-label: images not of the target class classified as
the target; all-to-all: images of class y classified as y + 1 mod K).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelguard.attacks.pgd import PGD
from pixelguard.data.base import Dataset
from pixelguard.errors import CapabilityError, ConfigError, DataError
from pixelguard.files import write_npz
from pixelguard.metrics.intervals import binomial_interval
from pixelguard.models.base import Classifier
from pixelguard.poisoning.triggers import Trigger, parse_trigger

MODES = ("all-to-one", "all-to-all", "clean-label")
"""How poisoned images are chosen and labelled."""

POISON_SCHEMA = "poison-1.0"
"""Version of the metadata a poisoned ``.npz`` carries."""

MASK_KEY = "poison_mask"
CLEAN_LABELS_KEY = "clean_labels"
META_KEY = "poison_meta"

CLEAN_LABEL_EPS = 16 / 255
"""Default L-infinity radius of the clean-label PGD perturbation (Turner et al.'s
largest CIFAR-10 setting; digits, with their hard edges, may need more)."""

CLEAN_LABEL_STEPS = 20


@dataclass(frozen=True)
class PoisonedData:
    """A training set with a backdoor planted, and the truth about it.

    Attributes:
        dataset: the poisoned images and the labels a trainer sees.
        mask: which images were poisoned.
        clean_labels: every image's label before poisoning.
        trigger: the trigger stamped on the poisoned images.
        target: the class the backdoor sends triggered images to (None for
            all-to-all).
        mode: one of :data:`MODES`.
        rate: the share of the images poisoned (``mask.sum() / N``).
        seed: seed of the choice of images (and of the clean-label PGD start).
        eps: the clean-label perturbation radius (None for the other modes).

    Shape:
        mask: (N,) bool; clean_labels: (N,) int64.
    """

    dataset: Dataset
    mask: torch.Tensor
    clean_labels: torch.Tensor
    trigger: Trigger
    target: int | None
    mode: str
    rate: float
    seed: int
    eps: float | None = None

    @property
    def n_poisoned(self) -> int:
        """How many images carry the trigger."""
        return int(self.mask.sum())

    def metadata(self) -> dict[str, Any]:
        """What was done, as plain data (also stored in the ``.npz``)."""
        return {
            "schema_version": POISON_SCHEMA,
            "source": self.dataset.source,
            "trigger": self.trigger.spec,
            "image_shape": list(self.dataset.image_shape),
            "target": self.target,
            "mode": self.mode,
            "rate": self.rate,
            "n_images": len(self.dataset),
            "n_poisoned": self.n_poisoned,
            "seed": self.seed,
            "eps": self.eps,
            "class_names": self.dataset.class_names,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``x``, ``y``, the poison mask, the clean labels and the metadata atomically.

        Any data loader reads the file as ordinary images and labels (``x``, ``y``);
        :func:`read_poison_info` reads the rest.
        """
        return write_npz(
            path,
            {
                "x": self.dataset.x.numpy(),
                "y": self.dataset.y.numpy(),
                MASK_KEY: self.mask.numpy(),
                CLEAN_LABELS_KEY: self.clean_labels.numpy(),
                META_KEY: np.array(json.dumps(self.metadata())),
            },
        )


@dataclass(frozen=True)
class PoisonInfo:
    """The truth a poisoned ``.npz`` carries: which images, which trigger, which target.

    Shape:
        mask: (N,) bool; clean_labels: (N,) int64.
    """

    mask: torch.Tensor
    clean_labels: torch.Tensor
    metadata: dict[str, Any]

    @property
    def trigger(self) -> Trigger:
        """The trigger, parsed again for the recorded image shape."""
        shape = tuple(self.metadata["image_shape"])
        return parse_trigger(self.metadata["trigger"], (shape[0], shape[1], shape[2]))

    @property
    def target(self) -> int | None:
        return self.metadata["target"]

    @property
    def mode(self) -> str:
        return str(self.metadata["mode"])


def read_poison_info(path: str | Path) -> PoisonInfo | None:
    """The poison mask and metadata of an ``.npz`` written by :meth:`PoisonedData.save`.

    Returns:
        None for any other file (an ordinary ``.npz``, a folder, a name).

    Raises:
        DataError: a file that has a poison mask but no readable metadata.
    """
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() == ".npz"):
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if MASK_KEY not in archive.files:
                return None
            mask = torch.from_numpy(np.asarray(archive[MASK_KEY], dtype=bool))
            clean = torch.from_numpy(np.asarray(archive[CLEAN_LABELS_KEY], dtype=np.int64))
            metadata = json.loads(str(archive[META_KEY]))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: has a poison mask but no readable poison metadata ({exc})"
        ) from exc
    return PoisonInfo(mask, clean, metadata)


def poison_dataset(
    dataset: Dataset,
    trigger: Trigger | str,
    *,
    rate: float,
    target: int | None = None,
    mode: str = "all-to-one",
    seed: int = 0,
    model: Classifier | None = None,
    eps: float = CLEAN_LABEL_EPS,
    steps: int = CLEAN_LABEL_STEPS,
) -> PoisonedData:
    """Plant a backdoor in ``round(rate * N)`` seeded images of ``dataset``.

    - ``all-to-one``: images not of ``target`` get the trigger and label ``target``.
    - ``all-to-all``: any image gets the trigger; label ``y`` becomes ``y + 1 mod K``.
    - ``clean-label``: images of ``target`` are pushed away from it by PGD (L-infinity
      ``eps``, ``steps`` steps) against ``model``, a classifier trained on clean
      data, then get the trigger; labels stay as they are, so the poisoned images
      look correctly labelled and the model must lean on the trigger to fit them.

    Args:
        dataset: the clean training set.
        trigger: a trigger, or its spec (parsed for the dataset's image shape).
        rate: share of all images to poison, in (0, 1).
        target: the backdoor's class (required except for all-to-all).
        mode: one of :data:`MODES`.
        seed: seed of the choice of images and of the PGD start.
        model: the clean model for clean-label (needs gradients).
        eps: the clean-label perturbation radius, in [0, 1].
        steps: the clean-label PGD steps.

    Returns:
        The poisoned data; only the trigger's pixels differ from the clean images
        (clean-label: and the PGD perturbation, within ``eps``, on the same images).

    Raises:
        ConfigError: a rate outside (0, 1), a target out of range or missing, an
            unknown mode, too few eligible images, or a trigger that does not fit.
        CapabilityError: clean-label without a model with gradients.
    """
    if isinstance(trigger, str):
        trigger = parse_trigger(trigger, dataset.image_shape)
    elif trigger.image_shape != dataset.image_shape:
        raise ConfigError(
            f"trigger {trigger.spec!r} is for images of shape {trigger.image_shape}, "
            f"the data's are {dataset.image_shape}"
        )
    chosen = choose_poisoned(dataset, rate=rate, target=target, mode=mode, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    n, y, k = len(dataset), dataset.y, dataset.num_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[chosen] = True
    x = dataset.x.clone()
    labels = y.clone()
    used_eps = None
    if mode == "clean-label":
        if not 0.0 <= eps <= 1.0:
            raise ConfigError(f"eps must lie in [0, 1], got {eps}")
        x[chosen] = _away_from_class(model, x[chosen], y[chosen], eps, steps, generator)
        used_eps = eps
    x[chosen] = trigger.apply(x[chosen])
    if mode == "all-to-one":
        labels[chosen] = int(target)  # type: ignore[arg-type]
    elif mode == "all-to-all":
        labels[chosen] = (y[chosen] + 1) % k
    poisoned = Dataset(x, labels, dataset.class_names, dataset.source, dataset.index)
    return PoisonedData(
        poisoned, mask, y.clone(), trigger, target, mode, chosen.numel() / n, seed, used_eps
    )


def choose_poisoned(
    dataset: Dataset, *, rate: float, target: int | None, mode: str = "all-to-one", seed: int = 0
) -> torch.Tensor:
    """The ``round(rate * N)`` images :func:`poison_dataset` poisons, drawn with ``seed``.

    Checks the settings, so a caller can refuse bad ones before expensive work.

    Shape:
        -> (M,) int64, ascending.

    Raises:
        ConfigError: a rate outside (0, 1), a target out of range or missing, an
            unknown mode, or too few eligible images.
    """
    if mode not in MODES:
        raise ConfigError(f"poisoning mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 < rate < 1.0:
        raise ConfigError(f"poisoning rate must lie strictly between 0 and 1, got {rate!r}")
    k = dataset.num_classes
    if mode == "all-to-all":
        if target is not None:
            raise ConfigError("all-to-all poisoning sends class y to y + 1; it takes no target")
    elif target is None:
        raise ConfigError(f"{mode} poisoning needs a target class")
    elif isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < k:
        raise ConfigError(f"target class must be in [0, {k - 1}] for this data, got {target!r}")
    n = len(dataset)
    n_poison = round(rate * n)
    if n_poison < 1:
        raise ConfigError(f"a rate of {rate:g} poisons no image of {n}; raise --rate")
    of_target = dataset.y == torch.tensor(-1 if target is None else target)
    if mode == "all-to-one":
        eligible = (~of_target).nonzero().flatten()
    elif mode == "clean-label":
        eligible = of_target.nonzero().flatten()
    else:
        eligible = torch.arange(n)
    if eligible.numel() < n_poison:
        what = "of the target class" if mode == "clean-label" else "not of the target class"
        raise ConfigError(
            f"a rate of {rate:g} needs {n_poison} images {what}; the data has {eligible.numel()}"
        )
    generator = torch.Generator().manual_seed(seed)
    return eligible[torch.randperm(eligible.numel(), generator=generator)[:n_poison]].sort().values


def _away_from_class(
    model: Classifier | None,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """PGD's last iterate maximising the clean model's loss on the true labels."""
    if model is None or not model.capabilities.gradients:
        raise CapabilityError(
            "clean-label poisoning perturbs images with PGD: it needs a clean model with "
            "gradients (a torch or Keras model)"
        )
    pgd = PGD(eps=eps, steps=steps)
    logits = model.logits  # type: ignore[attr-defined]
    parts = [
        pgd.maximize_loss(logits, xb, yb, generator=generator)
        for xb, yb in zip(torch.split(x, 256), torch.split(y, 256), strict=True)
    ]
    return torch.cat(parts).clamp(0.0, 1.0)


@dataclass(frozen=True)
class BackdoorMetrics:
    """What a backdoor does to a model on clean test images.

    Attributes:
        clean_accuracy: top-1 accuracy on the clean test images.
        attack_success_rate: share of the triggered images sent where the attacker
            wants (see the module docstring).
        n_clean: clean test images.
        n_triggered: test images the ASR is measured on (all-to-one: those not of
            the target class).
        n_hit: triggered images sent to the attacker's class.
    """

    clean_accuracy: float
    attack_success_rate: float
    n_clean: int
    n_triggered: int
    n_hit: int
    n_correct: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean_accuracy": round(self.clean_accuracy, 6),
            "clean_accuracy_ci": _interval(self.n_correct, self.n_clean),
            "attack_success_rate": round(self.attack_success_rate, 6),
            "attack_success_rate_ci": _interval(self.n_hit, self.n_triggered),
            "n_clean": self.n_clean,
            "n_triggered": self.n_triggered,
        }


def backdoor_metrics(
    model: Classifier,
    test: Dataset,
    trigger: Trigger,
    *,
    target: int | None,
    mode: str = "all-to-one",
) -> BackdoorMetrics:
    """Clean accuracy and attack success rate of ``model`` on clean test images.

    Raises:
        ConfigError: a mode other than :data:`MODES`, or a missing target.
        ShapeError: test images of another shape than the trigger's.
    """
    if mode not in MODES:
        raise ConfigError(f"poisoning mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "all-to-all" and target is None:
        raise ConfigError(f"{mode} attack success needs the target class")
    y = test.y
    clean_pred = model.predict(test.x).argmax(dim=1).cpu()
    if mode == "all-to-all":
        keep = torch.ones_like(y, dtype=torch.bool)
        wanted = (y + 1) % model.num_classes
    else:
        keep = y != torch.tensor(target)
        wanted = torch.full_like(y, int(target))  # type: ignore[arg-type]
    triggered = trigger.apply(test.x[keep])
    hit = model.predict(triggered).argmax(dim=1).cpu() == wanted[keep]
    n_correct = int((clean_pred == y).sum())
    n_hit, n_triggered = int(hit.sum()), int(keep.sum())
    return BackdoorMetrics(
        clean_accuracy=n_correct / max(len(test), 1),
        attack_success_rate=n_hit / n_triggered if n_triggered else 0.0,
        n_clean=len(test),
        n_triggered=n_triggered,
        n_hit=n_hit,
        n_correct=n_correct,
    )


def _interval(successes: int, trials: int) -> list[float] | None:
    if trials == 0:
        return None
    return [round(bound, 6) for bound in binomial_interval(successes, trials)]
