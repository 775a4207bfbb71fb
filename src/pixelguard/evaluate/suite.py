"""Attack suites: the attacks to run, in order, at each perturbation budget.

A budget is a label such as ``"pixels=3"`` (at most 3 pixels changed) or
``"linf=0.1"`` (every value moved by at most 0.1). Within a budget the attacks run
one after another, each on the images the earlier ones left unbroken. A
:class:`Gate` is a floor on the accuracy at one budget (or without attack), for CI.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pixelguard.attacks.base import Attack, ThreatModel, create_attack
from pixelguard.errors import ConfigError
from pixelguard.models.base import parse_number

SuiteKind = Literal["pixel", "dense", "full"]
SUITE_KINDS: tuple[str, ...] = ("pixel", "dense", "full")
PIXELS_BUDGET = "pixels"
LINF_BUDGET = "linf"
CLEAN = "clean"
"""The :class:`Gate` budget of the accuracy without attack."""
BUDGET_ALIASES = {"eps": LINF_BUDGET}
"""Other names of a budget kind that a :class:`Gate` accepts (``--eps`` sets linf budgets)."""
L2_BUDGET = "l2"
BUDGET_NORMS = {PIXELS_BUDGET: "l0", LINF_BUDGET: "linf", L2_BUDGET: "l2"}
"""The :class:`~pixelguard.attacks.base.ThreatModel` kind each budget kind bounds."""


def budget_threat(label: str) -> ThreatModel:
    """The threat model a budget label allows: ``"pixels=3"`` -> L0 of 3 pixels,
    ``"linf=0.1"`` -> the Linf ball of radius 0.1, ``"l2=0.5"`` -> the L2 ball.

    Raises:
        ConfigError: the label is not ``kind=number`` or names an unknown kind.
    """
    kind, value = parse_budget_label(label)
    norm = BUDGET_NORMS.get(BUDGET_ALIASES.get(kind, kind))
    if norm is None:
        raise ConfigError(
            f"budget {label!r}: unknown budget kind {kind!r}; use one of "
            f"{', '.join(f'{k}=N' for k in BUDGET_NORMS)}"
        )
    if value < 0:
        raise ConfigError(f"budget {label!r}: a budget must be at least 0")
    return ThreatModel(norm, value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SuiteEntry:
    """One attack at one budget.

    Attributes:
        budget_label: the budget, e.g. ``"pixels=3"`` or ``"linf=0.1"``.
        attack: the configured attack, held to that budget.
    """

    budget_label: str
    attack: Attack

    def __post_init__(self) -> None:
        allowed = budget_threat(self.budget_label)
        declared = self.attack.threat_model
        if not declared.within(allowed):
            raise ConfigError(
                f"suite entry {self.budget_label}: attack {self.attack.name} may change "
                f"images by {declared}, more than the budget allows ({allowed}); "
                "configure the attack within the budget"
            )

    @property
    def threat(self) -> ThreatModel:
        """What the budget label allows (see :func:`budget_threat`)."""
        return budget_threat(self.budget_label)


@dataclass(frozen=True)
class Suite:
    """Named attacks at their budgets, in the order they run."""

    name: str
    entries: list[SuiteEntry]

    def budgets(self) -> list[str]:
        """The budget labels, each once, in the order they first appear."""
        return list(dict.fromkeys(entry.budget_label for entry in self.entries))

    def attacks_at(self, budget_label: str) -> list[Attack]:
        """The attacks of one budget, in the order they run."""
        return [entry.attack for entry in self.entries if entry.budget_label == budget_label]


def budget_label(kind: str, value: float) -> str:
    """``("pixels", 3)`` -> ``"pixels=3"``; ``("linf", 0.1)`` -> ``"linf=0.1"``."""
    return f"{kind}={value:g}"


def parse_budget_label(label: str) -> tuple[str, float]:
    """``"pixels=3"`` -> ``("pixels", 3.0)``.

    Raises:
        ConfigError: the label is not ``kind=number``.
    """
    kind, sep, value = label.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not kind or number is None:
        raise ConfigError(f"a budget label must be kind=number, e.g. pixels=3, got {label!r}")
    return kind, number


def group_budgets(labels: Iterable[str]) -> dict[str, list[str]]:
    """The budget labels grouped by kind, each kind's in increasing budget order.

    ``["pixels=3", "linf=0.1", "pixels=1"]`` -> ``{"pixels": ["pixels=1", "pixels=3"],
    "linf": ["linf=0.1"]}``, kinds in the order they first appear.

    Raises:
        ConfigError: a label is not ``kind=number``.
    """
    families: dict[str, list[tuple[float, str]]] = {}
    for label in labels:
        kind, value = parse_budget_label(label)
        families.setdefault(kind, []).append((value, label))
    return {kind: [label for _, label in sorted(members)] for kind, members in families.items()}


@dataclass(frozen=True)
class Gate:
    """A floor on the accuracy at one budget: robust accuracy there must reach ``minimum``.

    Attributes:
        budget: a budget label as the reports name it (``"pixels=1"``, ``"linf=0.1"``),
            or :data:`CLEAN` for the accuracy without attack.
        minimum: the least accuracy that passes, in [0, 1].
    """

    budget: str
    minimum: float

    @classmethod
    def parse(cls, text: str) -> Gate:
        """``"pixels=1:0.5"``, ``"linf=8/255:0.3"`` (or ``eps=``) or ``"clean:0.9"`` as a gate.

        Raises:
            ConfigError: not ``BUDGET:MIN`` with MIN a number in [0, 1].
        """
        budget, sep, minimum = text.strip().rpartition(":")
        kind, _, value = budget.partition("=")
        try:
            floor = parse_number(minimum)
            label = (
                CLEAN
                if budget == CLEAN
                else budget_label(BUDGET_ALIASES.get(kind, kind), parse_number(value))
            )
        except ValueError:
            floor, label = -1.0, ""
        if not sep or not kind or not label or not 0.0 <= floor <= 1.0:
            raise ConfigError(
                "--fail-under must be BUDGET:MIN with MIN in [0, 1], e.g. pixels=1:0.5, "
                f"linf=8/255:0.3 or clean:0.9, got {text!r}"
            )
        return cls(label, floor)


def check_gates(gates: Iterable[Gate], budgets: Sequence[str]) -> None:
    """Raise :class:`ConfigError` for a gate at a budget that is not among ``budgets``."""
    for gate in gates:
        if gate.budget != CLEAN and gate.budget not in budgets:
            raise ConfigError(
                f"--fail-under {gate.budget}: the suite runs no such budget; it runs "
                f"{', '.join(budgets)} (and {CLEAN})"
            )


@dataclass(frozen=True)
class GateResult:
    """A :class:`Gate` and the accuracy it met.

    Attributes:
        gate: the gate.
        accuracy: the accuracy at the gate's budget.
    """

    gate: Gate
    accuracy: float

    @property
    def passed(self) -> bool:
        return self.accuracy >= self.gate.minimum

    def text(self) -> str:
        """``"FAIL pixels=1: robust accuracy 42.0% < 50.0%"`` (``PASS ... >=`` when it passed)."""
        what = "clean" if self.gate.budget == CLEAN else "robust"
        verdict, sign = ("PASS", ">=") if self.passed else ("FAIL", "<")
        return (
            f"{verdict} {self.gate.budget}: {what} accuracy {self.accuracy:.1%} {sign} "
            f"{self.gate.minimum:.1%}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.gate.budget,
            "minimum": self.gate.minimum,
            "accuracy": round(self.accuracy, 6),
            "passed": self.passed,
        }


def build_suite(
    kind: str,
    *,
    pixels: Sequence[int] = (1, 3, 10),
    eps: Sequence[float] = (0.1, 0.2, 0.3),
    budget: int | None = None,
    gradients: bool,
    seed: int = 0,
) -> Suite:
    """The standard suite of one kind.

    * ``pixel``: per pixel budget k, sparse-pgd (only with gradients), then
      sparse-rs (which scans every single-pixel corner exactly when k = 1).
    * ``dense``: per eps, Linf PGD; it needs gradients.
    * ``full``: the pixel suite, then the dense one.

    Args:
        kind: ``"pixel"``, ``"dense"`` or ``"full"``.
        pixels: the pixel budgets k.
        eps: the Linf budgets, in [0, 1] pixel units.
        budget: most model queries per image and attack (None: each attack's own limit).
        gradients: whether the model offers gradients (white-box attacks run only then).
        seed: the seed of every attack.

    Returns:
        The :class:`Suite`, budgets in increasing order within each family.

    Raises:
        ConfigError: an unknown kind, bad budgets, or a dense attack asked of a model
            without gradients.
    """
    if kind not in SUITE_KINDS:
        raise ConfigError(f"suite must be one of {', '.join(SUITE_KINDS)}, got {kind!r}")
    if kind in ("dense", "full") and not gradients:
        raise ConfigError(
            f"the {kind} suite runs Linf PGD, which needs gradients, but the model offers none; "
            "use --suite pixel for a black-box model"
        )
    entries: list[SuiteEntry] = []
    if kind in ("pixel", "full"):
        entries += _pixel_entries(pixels, budget, gradients, seed)
    if kind in ("dense", "full"):
        entries += _dense_entries(eps, budget, seed)
    return Suite(name=kind, entries=entries)


def _pixel_entries(
    pixels: Sequence[int], budget: int | None, gradients: bool, seed: int
) -> list[SuiteEntry]:
    if not pixels:
        raise ConfigError("the pixel suite needs at least one pixel budget")
    entries = []
    for k in sorted(set(pixels)):
        label = budget_label(PIXELS_BUDGET, k)
        if gradients:
            entries.append(
                SuiteEntry(label, create_attack("sparse-pgd", pixels=k, budget=budget, seed=seed))
            )
        entries.append(
            SuiteEntry(label, create_attack("sparse-rs", pixels=k, budget=budget, seed=seed))
        )
    return entries


def _dense_entries(eps: Sequence[float], budget: int | None, seed: int) -> list[SuiteEntry]:
    if not eps:
        raise ConfigError("the dense suite needs at least one eps")
    return [
        SuiteEntry(
            budget_label(LINF_BUDGET, e),
            create_attack("pgd", norm="linf", eps=e, budget=budget, seed=seed),
        )
        for e in sorted(set(eps))
    ]
