"""From ``--attack``, ``--pixels``, ``--step``, ``--param`` ... to a configured attack.

Reads the registered attacks' fields; torch is imported only when an attack is built
or described, not when a command's help is shown.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from pixelguard.errors import ConfigError
from pixelguard.parsing import parse_key_values

if TYPE_CHECKING:
    from pixelguard.attacks.base import Attack

DEFAULT_ATTACK = "sparse-bayes"
AUTO_PIXELS_ATTACK = "min-pixels"


DEFAULT_PIXELS = 1
"""Pixels a pixel attack may change when ``--pixels`` is not given: the one-pixel question."""


def resolve_pixels(attack_name: str, pixels: str | None) -> tuple[str, int | None]:
    """The attack and pixel budget for ``--attack`` and ``--pixels`` (a number or ``auto``).

    Without ``--pixels``, an attack with a ``pixels`` setting changes
    :data:`DEFAULT_PIXELS`. ``--pixels auto`` selects the fewest-pixels search (its
    ``max_pixels`` is set with ``--param max_pixels=N``); it cannot be combined with
    another ``--attack``.
    """
    if pixels is None:
        return attack_name, DEFAULT_PIXELS if "pixels" in attack_fields(attack_name) else None
    if pixels.strip().lower() == "auto":
        if attack_name not in (DEFAULT_ATTACK, AUTO_PIXELS_ATTACK):
            raise ConfigError(
                f"--pixels auto runs the {AUTO_PIXELS_ATTACK} search; it cannot be combined "
                f"with --attack {attack_name}"
            )
        return AUTO_PIXELS_ATTACK, None
    try:
        return attack_name, int(pixels)
    except ValueError:
        raise ConfigError(f"--pixels must be a whole number or 'auto', got {pixels!r}") from None


_STEP_FIELDS = ("eta", "step_size")
_ITERATION_FIELDS = ("steps", "generations")


def named_attack_options(
    name: str, *, step: str | None, iterations: int | None, eps: str | None
) -> dict[str, Any]:
    """``--step``, ``--iterations`` and ``--eps`` as fields of the attack ``name``.

    ``--step`` is the step size whatever the attack calls it (``eta`` for
    gradient-descent, ``step_size`` for pgd); ``--iterations`` its ``steps`` (pixel-de:
    ``generations``). Unset options are None.

    Raises:
        ConfigError: an unknown attack, a value that is no number, or an option the
            attack has no field for.
    """
    fields = attack_fields(name)
    chosen: dict[str, Any] = {}
    for flag_name, value, candidates in (
        ("--step", step, _STEP_FIELDS),
        ("--iterations", iterations, _ITERATION_FIELDS),
        ("--eps", eps, ("eps",)),
    ):
        if value is None:
            continue
        field = next((f for f in candidates if f in fields), None)
        if field is None:
            raise ConfigError(f"{name} has no {flag_name[2:]} setting; {flag_name} does not apply")
        chosen[field] = _number(value, flag_name) if isinstance(value, str) else value
    return chosen


def _number(text: str, flag_name: str) -> float:
    from pixelguard.models.base import parse_number

    try:
        return parse_number(text)
    except ValueError:
        raise ConfigError(
            f"{flag_name} must be a number or a fraction such as 8/255, got {text!r}"
        ) from None


def attack_fields(name: str) -> set[str]:
    """The configuration fields of the registered attack ``name``."""
    from pixelguard.attacks.base import attacks

    factory = attacks.get(name)
    return {f.name for f in dataclasses.fields(factory)} if isinstance(factory, type) else set()


def build_attack(name: str, options: dict[str, Any], params: list[str]) -> Attack:
    """Create the attack ``name`` from the options the user set.

    Args:
        name: a registered attack name.
        options: dedicated options by field name (None: not set).
        params: ``key=value`` texts for any other field of the attack.

    Raises:
        ConfigError: an unknown attack, an option the attack does not have, a
            malformed ``key=value``, or an invalid value.
    """
    fields = attack_fields(name)
    chosen = {key: value for key, value in options.items() if value is not None}
    chosen.update(parse_key_values(params, "--param"))
    unknown = sorted(set(chosen) - fields)
    if unknown:
        raise ConfigError(
            f"{name} has no option {', '.join(unknown)}; its options: {', '.join(sorted(fields))}"
        )
    from pixelguard.attacks.base import create_attack

    return create_attack(name, **chosen)


def attack_summary_line(name: str) -> str:
    """The first line of an attack's docstring, with reST literals as `code`."""
    from pixelguard.attacks.base import attacks

    doc = (attacks.get(name).__doc__ or "").strip()
    return doc.splitlines()[0].replace("``", "`") if doc else ""


def attack_settings_lines(name: str) -> list[str]:
    """One line per setting of attack ``name``: its default and its declared constraint,
    in the words the error for a bad value uses (``steps = 10000  (must be at least 1)``).

    Raises:
        ConfigError: an unknown attack.
    """
    from pixelguard.attacks.base import attacks
    from pixelguard.config import constraints_of

    factory = attacks.get(name)
    if not isinstance(factory, type):
        return []
    constraints = constraints_of(factory)
    fields = [f for f in dataclasses.fields(factory) if f.init]
    width = max((len(f.name) for f in fields), default=0)
    lines = []
    for f in fields:
        rule = constraints.get(f.name)
        note = ""
        if rule is not None:
            note = f"  (must {rule.rule}{' when set' if rule.optional else ''})"
        default = "-" if f.default is dataclasses.MISSING else repr(f.default)
        lines.append(f"{f.name:<{width}} = {default}{note}")
    return lines


def single_pixel_search_text(attack: Attack, shape: tuple[int, int, int]) -> str | None:
    """Which one-pixel search ``attack`` runs on images of ``shape`` (C, H, W), and why.

    The exact corner scan costs ``2**C * H * W`` queries per image
    (:func:`~pixelguard.attacks.corner_search.corner_search_cost`: 128 on 8x8 digits,
    401,408 at 3x224x224). sparse-bayes and sparse-rs at one pixel run it when their
    budget (``budget``, else ``steps``) covers that, else their sparse search; min-pixels starts with it
    when it costs at most a quarter of its budget. E.g. ``"k=1: exact corner scan (128
    queries at 1x8x8)"``. None for other attacks and for those two above one pixel.
    """
    from pixelguard.attacks.corner_search import corner_search_cost

    cost = corner_search_cost(shape)
    at = f"{cost:,} queries at {'x'.join(str(v) for v in shape)}"
    if hasattr(attack, "exact_single_pixel") and getattr(attack, "pixels", None) == 1:
        if not getattr(attack, "exact_single_pixel", True):
            return f"k=1: sparse random search (exact_single_pixel=False; the exact scan is {at})"
        budget = attack.budget
        allowed = int(budget if budget is not None else getattr(attack, "steps", 0))
        if allowed >= cost:
            return f"k=1: exact corner scan ({at})"
        return (
            f"k=1: sparse random search (the exact corner scan needs {at}, "
            f"over the budget of {allowed:,})"
        )
    if attack.name == "min-pixels":
        total = attack.budget or 0
        if cost <= total // 4:
            return f"1 pixel first: exact corner scan ({at}, within a quarter of the budget)"
        return (
            f"1 pixel first: sparse random search (the exact corner scan needs {at}, "
            f"over a quarter of the budget of {total:,})"
        )
    return None
