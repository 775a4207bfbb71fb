"""Parsing ``key=value`` settings, the one way every command and spec reads them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pixelguard.errors import ConfigError


def parse_value(text: str) -> Any:
    """A setting's value: a JSON number, boolean or null (``3``, ``0.5``, ``true``), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_key_values(items: Iterable[str], flag: str) -> dict[str, Any]:
    """``key=value`` texts as a dict; keys with ``-`` become ``_``, values by :func:`parse_value`.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    chosen: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"{flag} must be key=value, got {item!r}")
        chosen[key] = parse_value(value.strip())
    return chosen
