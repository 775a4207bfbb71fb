"""The package version, in a module that imports nothing so that any layer can use it.

Keep it equal to ``version`` in pyproject.toml (tests/test_imports.py checks that).
"""

__version__ = "0.1.0"
