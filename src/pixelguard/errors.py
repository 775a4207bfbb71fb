"""Typed errors. Every user-facing failure is a :class:`PixelguardError`.

The command line prints ``error: <message>`` on one line and exits with code 2 for
any of these; the library raises them with messages that name the offending value.
"""

from __future__ import annotations


class PixelguardError(Exception):
    """Base class for every error pixelguard raises on bad input or configuration."""


class ShapeError(PixelguardError, ValueError):
    """An array or tensor has the wrong number of dimensions or the wrong sizes."""


class RangeError(PixelguardError, ValueError):
    """Values lie outside their valid range (pixels outside [0, 1], NaN, labels >= K)."""


class DataError(PixelguardError):
    """A data file or folder cannot be read, or its contents are inconsistent."""


class ModelError(PixelguardError):
    """A model cannot be loaded, or it returned something that is not class scores."""


class QueryRejected(ModelError):
    """The endpoint refused to answer a query (HTTP 403), e.g. a stateful defense that
    flagged it as part of a query attack."""


class CapabilityError(PixelguardError):
    """An attack needs something the model does not offer (gradients, scores)."""


class QueryBudgetExceeded(PixelguardError):
    """A query would take an image past its hard per-image query budget."""


class UnsafeLoadError(PixelguardError):
    """Loading this file would run arbitrary code (pickle) and the user did not opt in."""


class MissingDependencyError(PixelguardError):
    """An optional package is needed for this feature and is not installed."""


class ConfigError(PixelguardError, ValueError):
    """An attack, model or command option has an invalid value."""


class NotFittedError(PixelguardError):
    """A detector was asked for a threshold before :meth:`Detector.fit`."""


class ReportError(PixelguardError):
    """A report folder or file is missing, unreadable, or of a layout this version cannot read."""


def require(module: str, extra: str, feature: str) -> object:
    """Import an optional dependency or raise :class:`MissingDependencyError`.

    Args:
        module: importable module name, e.g. ``"onnxruntime"``.
        extra: the pip extra that installs it, e.g. ``"onnx"``.
        feature: what needs it, for the message.

    Returns:
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_dependency(module, extra, feature) from exc


def missing_dependency(package: str, extra: str, feature: str) -> MissingDependencyError:
    """The error for a missing optional ``package``, naming the pip extra that installs it."""
    return MissingDependencyError(
        f"{feature} needs the optional package '{package}': pip install -e '.[{extra}]' in a "
        f"clone of pixelguard (pip install 'pixelguard[{extra}]' where it came from a package index)"
    )


def first_line(exc: BaseException) -> str:
    """The line of an exception's message that says what went wrong: its first line, or
    its last for an error raised inside a TorchScript module (whose message starts with
    the interpreter's traceback); the exception type's name when there is no message."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1].strip().rstrip(":") if "TorchScript" in lines[0] else lines[0]
