"""The attack contract: a frozen configuration with one entry point, and one result type.

An attack is configuration only; the model arrives at :meth:`Attack.run`. The base
class does everything attacks share: validation, the capability check, seeding, query
accounting through :class:`~pixelguard.models.queries.QueryCounter`, a fresh forward
pass that decides success, and the distances. Subclasses implement :meth:`Attack._run`.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from pixelguard.checks import check_images, check_labels
from pixelguard.config import Check, at_least, check_constraints
from pixelguard.errors import CapabilityError, ConfigError, ShapeError
from pixelguard.metrics.distances import l0_features, l0_pixels, l2, linf
from pixelguard.models.base import Classifier, OutputKind, probabilities
from pixelguard.models.queries import QueryCounter
from pixelguard.registry import Registry

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(images_finished, images_total)`` while an attack runs."""

ThreatKind = Literal["l0", "linf", "l2"]
"""Norms a threat model bounds: changed pixel positions, largest change, Euclidean."""

THREAT_KINDS: tuple[str, ...] = ("l0", "linf", "l2")

DISTANCE_TOLERANCE = 1e-6
"""Absolute slack allowed on Linf and L2 bounds, for float error."""

SIZE_TOLERANCE = 1e-5
"""Relative slack on every bound's size: budget labels print sizes with 6 significant
digits (``linf=0.0313725`` for 8/255), so a bound read back from one may be that much short."""


@dataclass(frozen=True)
class ThreatModel:
    """How far an attack may move an image: at most ``size`` in the ``kind`` norm.

    ``kind="l0"`` counts changed pixel positions (any channel), ``"linf"`` the largest
    change of any value, ``"l2"`` the Euclidean norm over all C*H*W values, all in
    [0, 1] pixel units. ``kind=None`` (with ``size=None``) is unbounded: anything in
    the [0, 1] box.

    Example:
        >>> ThreatModel("l0", 3).within(ThreatModel("l0", 10))
        True
        >>> str(ThreatModel("linf", 0.3))
        'linf <= 0.3'
    """

    kind: ThreatKind | None = None
    size: float | None = None

    def __post_init__(self) -> None:
        if self.kind is None and self.size is None:
            return
        if self.kind not in THREAT_KINDS:
            raise ConfigError(
                f"a threat model's kind must be one of {', '.join(THREAT_KINDS)} or None, "
                f"got {self.kind!r}"
            )
        if (
            isinstance(self.size, bool)
            or not isinstance(self.size, (int, float))
            or not math.isfinite(self.size)
            or self.size < 0
        ):
            raise ConfigError(f"a {self.kind} threat model needs a size >= 0, got {self.size!r}")

    @property
    def bounded(self) -> bool:
        return self.kind is not None

    def __str__(self) -> str:
        if self.kind is None or self.size is None:
            return "unbounded"
        if self.kind == "l0":
            return f"l0 <= {self.size:g} pixels"
        return f"{self.kind} <= {self.size:g}"

    @property
    def spec(self) -> str:
        """The form users type (``harden --against``): ``pixels:3``, ``linf:0.1``, ``l2:1.5``."""
        if self.kind is None or self.size is None:
            return "unbounded"
        return f"{'pixels' if self.kind == 'l0' else self.kind}:{self.size:g}"

    def within(self, other: ThreatModel) -> bool:
        """Whether every perturbation this threat model allows, ``other`` allows too.

        Kinds are not converted into one another: an L0 bound lies within no Linf or
        L2 bound (and the other way round), an unbounded one only within unbounded.
        """
        if other.kind is None:
            return True
        if self.kind != other.kind or self.size is None or other.size is None:
            return False
        return self.size <= other.size * (1 + SIZE_TOLERANCE)

    def admits(self, l0_pixels: torch.Tensor, l2: torch.Tensor, linf: torch.Tensor) -> torch.Tensor:
        """Which perturbations, given by their distances, lie within this threat model.

        L0 is compared exactly (up to :data:`SIZE_TOLERANCE` of the bound, so
        ``pixels=3`` means 3); Linf and L2 with :data:`DISTANCE_TOLERANCE` of absolute
        and :data:`SIZE_TOLERANCE` of relative slack.

        Shape:
            l0_pixels, l2, linf: (N,) -> (N,) bool.
        """
        if self.kind is None or self.size is None:
            return torch.ones(l0_pixels.shape, dtype=torch.bool, device=l0_pixels.device)
        limit = float(self.size) * (1 + SIZE_TOLERANCE)
        if self.kind == "l0":
            return l0_pixels <= limit
        distance = linf if self.kind == "linf" else l2
        return distance.double() <= limit + DISTANCE_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "size": self.size}


UNBOUNDED = ThreatModel()
"""The threat model of an attack bounded only by the [0, 1] box."""


def parse_threat(spec: str) -> ThreatModel:
    """``"pixels:3"``, ``"linf:0.1"`` or ``"l2:0.5"`` as a bounded :class:`ThreatModel`.

    ``pixels:K`` is the L0 threat model of K pixels (``ThreatModel("l0", K)``).

    Raises:
        ConfigError: another form, a pixel count that is not a positive integer,
            or a radius that is not positive (at most 1 for linf).

    Example:
        >>> parse_threat("pixels:3")
        ThreatModel(kind='l0', size=3.0)
    """
    kind, sep, value = spec.strip().partition(":")
    kind = kind.strip().lower()
    try:
        size = float(value)
    except ValueError:
        size = math.nan
    if not sep or kind not in ("pixels", "linf", "l2") or not math.isfinite(size):
        raise ConfigError(
            "a threat model is pixels:K, linf:EPS or l2:EPS (e.g. pixels:3 or linf:0.1), "
            f"got {spec!r}"
        )
    if kind == "pixels" and (size < 1 or not size.is_integer()):
        raise ConfigError(f"pixels:K needs a whole number of pixels K >= 1, got {spec!r}")
    if kind != "pixels" and not (size > 0 and (kind == "l2" or size <= 1)):
        raise ConfigError(f"{kind}:EPS needs a radius EPS > 0 (at most 1 for linf), got {spec!r}")
    return ThreatModel("l0" if kind == "pixels" else kind, size)  # type: ignore[arg-type]


def threat_model_from(params: Mapping[str, Any]) -> ThreatModel:
    """The threat model an attack's settings declare, from its fields by name.

    ``pixels`` (k changed pixels) -> L0 of k; ``norm`` and ``eps`` -> that norm's ball
    of radius eps; ``max_pixels`` -> L0 of max_pixels (None: unbounded); nothing of
    these -> unbounded.

    Example:
        >>> threat_model_from({"norm": "l2", "eps": 0.5})
        ThreatModel(kind='l2', size=0.5)
    """
    if params.get("pixels") is not None:
        return ThreatModel("l0", params["pixels"])
    if params.get("eps") is not None and params.get("norm") in ("linf", "l2"):
        return ThreatModel(params["norm"], params["eps"])
    if params.get("max_pixels") is not None:
        return ThreatModel("l0", params["max_pixels"])
    return UNBOUNDED


def fools(
    pred: torch.Tensor,
    label: torch.Tensor,
    target: torch.Tensor | None,
    reject_class: int | None = None,
) -> torch.Tensor:
    """Whether each prediction fools the model: the target (targeted), or a class
    that is neither the true label nor the model's reject class (untargeted).

    Shape:
        pred, label, target: (M,) -> (M,) bool.
    """
    if target is not None:
        return pred == target
    fooled = pred != label
    return fooled if reject_class is None else fooled & (pred != reject_class)


@dataclass
class AttackState:
    """The working state of one attack run, handed to :meth:`Attack._run`.

    ``model`` counts and limits queries: pass ``index`` (the image each row belongs
    to) with every call. Attacks write adversarial images into ``x_adv`` (a copy of
    ``x``); ``unfooled`` holds the images the clean query did not already fool;
    ``reject_class`` is the model's (see :func:`fools`); ``clean_scores`` the model's
    answer to that clean query (None where the attack spent none).

    Shape:
        x, x_adv: (N, C, H, W); y, target: (N,); unfooled: (A,) image indices;
        clean_scores: (N, K).
    """

    model: QueryCounter
    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    generator: torch.Generator
    x_adv: torch.Tensor
    unfooled: torch.Tensor
    progress: ProgressCallback | None = None
    reject_class: int | None = None
    clean_scores: torch.Tensor | None = None

    @property
    def n_images(self) -> int:
        return int(self.x.shape[0])

    def remaining(self, images: torch.Tensor) -> torch.Tensor:
        """Queries each of ``images`` may still spend, on the images' device: (A,)."""
        return self.model.remaining()[images.cpu()].to(self.x.device)

    def target_of(self, images: torch.Tensor) -> torch.Tensor | None:
        """The target classes of ``images``, or None for an untargeted run."""
        return None if self.target is None else self.target[images]

    def report(self, finished: int) -> None:
        """Tell the progress callback how many images are finished."""
        if self.progress is not None:
            self.progress(finished, self.n_images)


@dataclass(frozen=True)
class AttackResult:
    """Everything an attack run produced, per image, plus how it was configured.

    Shape:
        x_adv: (N, C, H, W) float32 in [0, 1]; the original image where the attack failed.
        every other tensor: (N,).
    """

    x_adv: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    success: torch.Tensor
    queries: torch.Tensor
    l0_pixels: torch.Tensor
    l0_features: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    pred_before: torch.Tensor
    pred_after: torch.Tensor
    conf_before: torch.Tensor
    conf_after: torch.Tensor
    attack: str
    params: dict[str, Any]
    seed: int
    budget: int | None
    wall_time: float

    @property
    def n_images(self) -> int:
        return int(self.y.shape[0])

    def cpu(self) -> AttackResult:
        """This result with every tensor on the CPU (itself when they already are)."""
        tensors = {
            f.name: value.cpu()
            for f in dataclasses.fields(self)
            if isinstance(value := getattr(self, f.name), torch.Tensor)
            and value.device.type != "cpu"
        }
        return dataclasses.replace(self, **tensors) if tensors else self

    @property
    def success_rate(self) -> float:
        """Fraction of images fooled (0.0 for an empty batch)."""
        return float(self.success.float().mean()) if self.n_images else 0.0

    def per_image(self) -> list[dict[str, Any]]:
        """One plain record per image."""
        rows = []
        for i in range(self.n_images):
            row: dict[str, Any] = {
                "label": int(self.y[i]),
                "pred_before": int(self.pred_before[i]),
                "pred_after": int(self.pred_after[i]),
                "success": bool(self.success[i]),
                "queries": int(self.queries[i]),
                "pixels_changed": int(self.l0_pixels[i]),
                "features_changed": int(self.l0_features[i]),
                "l2": round(float(self.l2[i]), 6),
                "linf": round(float(self.linf[i]), 6),
                "confidence_before": round(float(self.conf_before[i]), 6),
                "confidence_after": round(float(self.conf_after[i]), 6),
            }
            if self.target is not None:
                row["target"] = int(self.target[i])
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable summary and per-image records (no image data)."""
        return {
            "attack": self.attack,
            "params": self.params,
            "seed": self.seed,
            "budget": self.budget,
            "targeted": self.target is not None,
            "n_images": self.n_images,
            "success_rate": self.success_rate,
            "wall_time": round(self.wall_time, 4),
            "images": self.per_image(),
        }


attacks: Registry[Attack] = Registry("attack")


def register_attack(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Class decorator: register an attack under ``name`` and set its ``name``."""

    def decorate(cls: type[Attack]) -> type[Attack]:
        cls.name = name
        attacks.register(name)(cls)
        return cls

    return decorate


def unregister_attack(name: str) -> None:
    """Forget the attack registered as ``name`` (a no-op for an unknown name).

    For tests and plugins that register an attack for a while, e.g. a toy attack
    that the contract test must pick up and later code must not see.
    """
    attacks._items.pop(name, None)


def create_attack(name: str, **params: Any) -> Attack:
    """Build a registered attack by name, e.g. ``create_attack("pixel-de", pixels=3)``."""
    return attacks.create(name, **params)


def list_attacks() -> list[str]:
    """Names of all registered attacks."""
    return attacks.names()


@dataclass(frozen=True, kw_only=True)
class Attack(ABC):
    """Base configuration shared by every attack.

    Args:
        seed: seed for the attack's own random generator (None draws one and records it).
        budget: hard limit on model queries per image (None: the attack's own limit).
    """

    name: ClassVar[str] = "attack"
    needs_scores: ClassVar[bool] = True
    needs_gradients: ClassVar[bool] = False
    supports_targeted: ClassVar[bool] = True
    supports_untargeted: ClassVar[bool] = True

    seed: int | None = 0
    budget: int | None = None

    _constraints: ClassVar[Mapping[str, Check]] = {"budget": at_least(1, optional=True)}
    """What each setting must be, checked on construction (see :mod:`pixelguard.config`);
    a subclass declares its own fields' constraints the same way."""

    def __post_init__(self) -> None:
        check_constraints(self.name, self)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (field names are the constructor's)."""
        return dataclasses.asdict(self)

    @property
    def threat_model(self) -> ThreatModel:
        """How far this configuration may move an image (see :func:`threat_model_from`).

        Derived from the fields ``pixels``, ``norm``/``eps`` and ``max_pixels``; an
        attack whose bound lies elsewhere overrides this property. Every success the
        attack reports must lie within it; suites refuse an attack whose threat model
        exceeds its budget label.
        """
        return threat_model_from({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def _scans_without_clean_query(self, shape: tuple[int, ...]) -> bool:
        """Whether this attack, on images of ``shape``, skips the clean query.

        An exhaustive scan learns nothing from the clean prediction that its own
        candidates do not tell, so it may skip it and stay within its exact cost; an
        already misclassified image then costs it one slice of candidates.
        """
        return False

    def check_model(self, model: Classifier) -> None:
        """Raise :class:`CapabilityError` if ``model`` lacks what this attack needs."""
        caps = model.capabilities
        if self.needs_scores and not caps.scores:
            raise CapabilityError(
                f"{self.name} needs class scores but the model returns labels only; "
                "use a label-only attack"
            )
        if self.needs_gradients and not caps.gradients:
            raise CapabilityError(
                f"{self.name} needs gradients but the model offers none; use a black-box "
                f"attack instead ({', '.join(n for n in list_attacks() if not attacks.get(n).needs_gradients)})"
            )

    def run(
        self,
        model: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | int | None = None,
        progress: ProgressCallback | None = None,
    ) -> AttackResult:
        """Attack a batch and verify every claimed success with a fresh forward pass.

        Args:
            model: the classifier to fool.
            x: clean images.
            y: their true labels.
            target: a target class per image, one class for all, or None (untargeted).
            progress: optional callback ``(finished, total)``.

        Shape:
            x: (N, C, H, W) float32 in [0, 1]; y, target: (N,) int.

        Returns:
            An :class:`AttackResult`; ``success`` means the model, queried afresh,
            predicts a label other than ``y`` and other than its reject class (or
            equal to ``target``).

        Raises:
            ShapeError, RangeError: bad images, labels or targets.
            CapabilityError: the model lacks scores or gradients this attack needs.
            ConfigError: a target is the model's reject class.
        """
        check_images(x)
        if tuple(x.shape[1:]) != tuple(model.input_shape):
            raise ShapeError(
                f"images have shape {tuple(x.shape[1:])} but the model expects {tuple(model.input_shape)}"
            )
        n = x.shape[0]
        y = check_labels(y, n, model.num_classes).to(x.device)
        target_t = self._resolve_target(target, y, model.num_classes)
        if target_t is None and not self.supports_untargeted:
            raise ConfigError(
                f"{self.name} is a targeted attack: pass target= (one class for all images "
                "or one per image)"
            )
        if target_t is not None and not self.supports_targeted:
            raise ConfigError(f"{self.name}: only untargeted attacks are supported")
        reject_class = model.capabilities.reject_class
        if (
            target_t is not None
            and reject_class is not None
            and bool((target_t == reject_class).any())
        ):
            raise ConfigError(
                f"class {reject_class} is the model's reject class (input rejected); "
                "it cannot be an attack target"
            )
        self.check_model(model)
        seed = self.seed if self.seed is not None else secrets.randbits(31)
        counter = QueryCounter(model, n, self.budget)
        start = time.perf_counter()
        state = AttackState(
            model=counter,
            x=x,
            y=y,
            target=target_t,
            generator=torch.Generator().manual_seed(seed),
            x_adv=x.clone(),
            unfooled=torch.zeros(0, dtype=torch.int64, device=x.device),
            progress=progress,
            reject_class=reject_class,
        )
        if n and self._scans_without_clean_query(tuple(x.shape[1:])):
            state.unfooled = torch.arange(n, device=x.device)
        elif n:
            state.clean_scores = counter.predict(x)
            fooled = fools(state.clean_scores.argmax(dim=1), y, target_t, reject_class)
            state.unfooled = (~fooled).nonzero().flatten()
        if state.unfooled.numel():  # nothing to search when the clean query fooled all
            self._run(state)
        state.report(n)
        wall_time = time.perf_counter() - start
        return self._verify(model, x, state.x_adv, y, target_t, counter, seed, wall_time)

    @staticmethod
    def _resolve_target(
        target: torch.Tensor | int | None, y: torch.Tensor, num_classes: int
    ) -> torch.Tensor | None:
        if target is None:
            return None
        if isinstance(target, int):
            target_t = torch.full_like(y, target)
        else:
            target_t = check_labels(torch.as_tensor(target), y.shape[0], num_classes, name="target")
        target_t = target_t.to(y.device)
        if y.numel() and (int(target_t.min()) < 0 or int(target_t.max()) >= num_classes):
            raise ConfigError(f"target classes must lie in 0..{num_classes - 1}")
        same = (target_t == y).nonzero().flatten()
        if same.numel():
            raise ConfigError(
                f"target equals the true label for {same.numel()} image(s) "
                f"(first: index {int(same[0])}); drop them or choose another target"
            )
        return target_t

    def _verify(
        self,
        model: Classifier,
        x: torch.Tensor,
        x_adv: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        counter: QueryCounter,
        seed: int,
        wall_time: float,
    ) -> AttackResult:
        check_images(x_adv, name="x_adv")
        output = OutputKind(model.capabilities.output)
        with torch.no_grad():
            probs_before = probabilities(model.predict(x), output)
            probs_after = probabilities(model.predict(x_adv), output)
        conf_before, pred_before = probs_before.max(dim=1)
        pred_after = probs_after.argmax(dim=1)
        success = fools(pred_after, y, target, model.capabilities.reject_class)
        # A failed image comes back unchanged: "changed" never silently means "adversarial".
        keep = success.view(-1, 1, 1, 1)
        x_adv = torch.where(keep, x_adv, x)
        pred_after = torch.where(success, pred_after, pred_before)
        probs_after = torch.where(success.view(-1, 1), probs_after, probs_before)
        conf_after = probs_after.gather(1, pred_after.view(-1, 1)).flatten()
        return AttackResult(
            x_adv=x_adv,
            y=y,
            target=target,
            success=success,
            queries=counter.per_image.clone(),
            l0_pixels=l0_pixels(x, x_adv),
            l0_features=l0_features(x, x_adv),
            l2=l2(x, x_adv),
            linf=linf(x, x_adv),
            pred_before=pred_before,
            pred_after=pred_after,
            conf_before=conf_before,
            conf_after=conf_after,
            attack=self.name,
            params=self.to_dict(),
            seed=seed,
            budget=self.budget,
            wall_time=wall_time,
        )

    @abstractmethod
    def _run(self, state: AttackState) -> None:
        """Search adversarial images for ``state.unfooled``, writing them into ``state.x_adv``.

        Images the search does not fool may be left as they are: the base class
        restores every image a fresh forward pass does not find adversarial.
        """
