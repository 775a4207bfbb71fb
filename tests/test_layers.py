"""The layers of docs/architecture.md: a package imports only from the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "pixelguard"

LAYERS = [
    {"errors", "checks", "config", "registry", "parsing", "files", "defaults", "_version"},
    {"data"},
    {"models"},
    {"metrics"},
    {"attacks"},
    {"testing", "defenses"},
    {"evaluate"},
    {"poisoning"},
    {"leakage"},
    {"report"},
    {"workflows"},
    {"serve"},
    {"cli"},
]
"""Bottom first. Modules of the bottom layer may import one another."""

LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _imported_packages(path: Path) -> set[str]:
    """The top-level pixelguard packages or modules a file imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules = (
            [node.module]
            if isinstance(node, ast.ImportFrom) and node.module
            else [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        names |= {m.split(".")[1] for m in modules if m.startswith("pixelguard.")}
    return names


FILES = sorted(p for p in SOURCE.rglob("*.py") if p.parent != SOURCE or p.name != "__init__.py")


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_imports_point_down(path: Path) -> None:
    package = path.relative_to(SOURCE).parts[0].removesuffix(".py")
    assert package in LEVEL, f"{package} is in no layer of this test (and of the map)"
    level = LEVEL[package]
    upward = {
        name
        for name in _imported_packages(path) - {package}
        if LEVEL[name] > level or (LEVEL[name] == level and level > 0)
    }
    assert not upward, f"{path.relative_to(SOURCE)} imports {sorted(upward)} from above"
