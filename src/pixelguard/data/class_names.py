"""Class names: reading a names file, and turning a class number or name into an index.

Models trained on ImageNet carry no class names; a text file with one name per line
(line ``i`` names class ``i``) gives them. With 1,000 classes a wrong name cannot be
answered with the whole list, so :func:`resolve_class` names the nearest few instead
(``"granny"`` -> ``Granny Smith``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from pixelguard.errors import ConfigError

_NUMBER = re.compile(r"[+-]?[0-9]+")

NEAREST = 5
"""How many of the nearest class names an error for an unknown name offers."""


def read_class_names(path: str | Path, *, what: str = "class names file") -> list[str]:
    """The class names in a text file, one per line: line ``i`` (from 0) names class ``i``.

    Surrounding whitespace is stripped and blank lines at the end are ignored; a blank
    line before the last name would shift every later index, so it is refused.

    Raises:
        ConfigError: an unreadable file, no names, a blank line between names, or a
            name given twice.
    """
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{what}: cannot read {path}: {reason}") from None
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ConfigError(f"{what} {path} names no class (one name per line expected)")
    blank = next((i for i, name in enumerate(names) if not name), None)
    if blank is not None:
        raise ConfigError(
            f"{what} {path}: line {blank + 1} is blank; line i names class i - 1, so every "
            "line up to the last name needs a name"
        )
    check_distinct(names, f"{what} {path}")
    return names


def check_distinct(names: Sequence[str], what: str = "class names") -> None:
    """ConfigError naming the first name that ``names`` holds twice (with both lines)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(
                f"{what} names {name!r} twice (classes {seen[name]} and {i}); names must be "
                "distinct"
            )
        seen[name] = i


def check_class_count(names: Sequence[str], num_classes: int, what: str = "class names") -> None:
    """ConfigError unless there is exactly one name per class of the model."""
    if len(names) != num_classes:
        raise ConfigError(
            f"{what} gives {len(names):,} names but the model has {num_classes:,} classes; "
            "give one name per class, in the model's class order"
        )


def nearest_class_names(text: str, names: Sequence[str], n: int = NEAREST) -> list[str]:
    """The names in ``names`` nearest to ``text``, best first, at most ``n``.

    Case is ignored. Names that contain ``text`` come first (those starting with it
    before the others, shorter before longer), then close spellings by
    :func:`difflib.get_close_matches`.

    Example:
        >>> nearest_class_names("granny", ["Granny Smith", "grand piano", "banana"])
        ['Granny Smith', 'grand piano']
    """
    wanted = " ".join(text.lower().split())
    if not wanted or n <= 0:
        return []
    lowered = [name.lower() for name in names]
    containing = sorted(
        (i for i, name in enumerate(lowered) if wanted in name),
        key=lambda i: (not lowered[i].startswith(wanted), len(lowered[i]), i),
    )
    by_lowered: dict[str, list[int]] = {}
    for i, name in enumerate(lowered):
        by_lowered.setdefault(name, []).append(i)
    close = difflib.get_close_matches(wanted, list(by_lowered), n=n, cutoff=0.6)
    order = containing + [i for name in close for i in by_lowered[name]]
    chosen: list[str] = []
    for i in order:
        if names[i] not in chosen:
            chosen.append(names[i])
    return chosen[:n]


def resolve_class(
    value: str | int,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    *,
    what: str = "target",
) -> int:
    """The class index for a class number or a class name.

    A number must lie in ``0 .. num_classes - 1`` (``len(class_names)`` when
    ``num_classes`` is None; unchecked above when neither is known). A name must be
    one of ``class_names``; when it is not, a name that differs only in case is taken
    if exactly one does, else the error offers the nearest names
    (:func:`nearest_class_names`), never the whole list.

    Args:
        value: a class number (int, or text such as ``"948"``) or a class name.
        class_names: names in class order, when known.
        num_classes: the model's number of classes, when known.
        what: how messages name the value, e.g. ``"--target"``.

    Raises:
        ConfigError: a number out of range, or a name not among ``class_names``.

    Example:
        >>> resolve_class("Granny Smith", ["apple", "Granny Smith"])
        1
    """
    count = num_classes
    if count is None and class_names is not None:
        count = len(class_names)
    span = f"0-{count - 1:,}" if count is not None else "0 or more"
    number = _as_number(value)
    if number is not None:
        if number < 0 or (count is not None and number >= count):
            raise ConfigError(f"{what} class {number} is out of range: class numbers are {span}")
        return number
    text = str(value).strip()
    if class_names is None:
        raise ConfigError(
            f"{what} must be a class number or name, got {text!r}, and no class names are "
            f"known: give a class number ({span}) or the names (--class-names FILE, one per line)"
        )
    names = list(class_names)
    if text in names:
        return names.index(text)
    folded = [i for i, name in enumerate(names) if name.casefold() == text.casefold()]
    if len(folded) == 1:
        return folded[0]
    nearest = nearest_class_names(text, names)
    hint = (
        "nearest names: " + ", ".join(f"{names.index(name)} {name!r}" for name in nearest)
        if nearest
        else f"no class name is close (of {len(names):,})"
    )
    if num_classes is not None and len(names) < num_classes:
        shown = ", ".join(repr(name) for name in names[:5]) + (", ..." if len(names) > 5 else "")
        hint = (
            f"the data names {len(names):,} class(es) ({shown}) but the model has "
            f"{num_classes:,}: give the model's names with --class-names FILE, one per line"
        )
    raise ConfigError(
        f"{what} must be a class number or name, got {text!r}; {hint}; class numbers are {span}"
    )


def _as_number(value: str | int) -> int | None:
    """``value`` as an int when it is one (``"-3"`` included), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if _NUMBER.fullmatch(text) else None
