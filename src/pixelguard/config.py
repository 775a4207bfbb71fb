"""Declared constraints on configuration settings, checked one way everywhere.

An attack (a frozen dataclass) or a preprocessor declares what each of its settings
must be in a class-level ``_constraints`` mapping, next to its fields::

    _constraints = {"steps": at_least(1), "p_init": between(0, 1, low_open=True)}

:func:`check_constraints` checks them all (a class's own and those it inherits, see
:func:`constraints_of`) and raises :class:`~pixelguard.errors.ConfigError` with one
message form, ``"<owner>: <setting> must <rule>, got <value>"``, e.g.
``"sparse-rs: steps must be at least 1, got 0"``. :attr:`Check.rule` is the same
phrase, so help text can show a setting's constraint as the error would state it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pixelguard.errors import ConfigError


@dataclass(frozen=True)
class Check:
    """One setting's constraint: a test and the rule it enforces, in words.

    Attributes:
        rule: what the value must do, as it follows "must": ``"be at least 1"``.
        test: true for a valid value.
        optional: None is allowed (it means "use the default").
    """

    rule: str
    test: Callable[[Any], bool]
    optional: bool = False

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` satisfies the constraint."""
        return (value is None and self.optional) or (value is not None and self.test(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def at_least(minimum: int, *, optional: bool = False) -> Check:
    """An integer of at least ``minimum``."""
    return Check(f"be at least {minimum}", lambda v: _is_int(v) and v >= minimum, optional)


def positive(*, optional: bool = False) -> Check:
    """A finite number greater than 0."""
    return Check(
        "be a positive number",
        lambda v: _is_real(v) and math.isfinite(v) and v > 0,
        optional,
    )


def between(
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> Check:
    """A number in the interval from ``low`` to ``high``, each end closed unless open."""

    def test(v: Any) -> bool:
        if not _is_real(v) or math.isnan(v):
            return False
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return above and below

    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return Check(f"lie in {interval}", test, optional)


def int_between(low: int, high: int, *, optional: bool = False) -> Check:
    """An integer in ``low..high``, both included."""
    return Check(f"lie in {low}..{high}", lambda v: _is_int(v) and low <= v <= high, optional)


def one_of(*choices: object, optional: bool = False) -> Check:
    """One of ``choices`` (compared with ``==``)."""
    names = [repr(c) for c in choices]
    words = " or ".join(names) if len(names) <= 2 else "one of " + ", ".join(names)
    return Check(f"be {words}", lambda v: v in choices, optional)


def config_error(owner: str, setting: str, rule: str, value: Any) -> ConfigError:
    """The one message form for a setting that breaks its rule."""
    return ConfigError(f"{owner}: {setting} must {rule}, got {value!r}")


def constraints_of(cls: type) -> dict[str, Check]:
    """Every constraint ``cls`` declares or inherits, a subclass's winning, base first."""
    merged: dict[str, Check] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("_constraints", {}))
    return merged


def check_constraints(owner: str, config: object) -> None:
    """Check every declared constraint of ``config``'s class against its attributes.

    Args:
        owner: the registered name, for the message (``"sparse-rs"``).
        config: the attack or preprocessor, its settings set as attributes.

    Raises:
        ConfigError: the first setting that breaks its constraint.
    """
    for setting, check in constraints_of(type(config)).items():
        value = getattr(config, setting)
        if not check.accepts(value):
            raise config_error(owner, setting, check.rule, value)
