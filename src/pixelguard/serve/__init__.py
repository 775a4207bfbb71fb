"""The guarded inference server (``pixelguard serve``): a pixelguard Classifier behind API
keys, size checks, per-key limits, a stateful query-attack detector, an audit log and
Prometheus metrics. Needs the ``serve`` extra (fastapi, uvicorn, prometheus-client).

Importing this package imports none of them; :func:`create_app` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixelguard.serve.keys import KeyStore, hash_key

if TYPE_CHECKING:
    from pixelguard.serve.app import create_app

__all__ = ["KeyStore", "create_app", "hash_key"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from pixelguard.errors import require

        for module in ("fastapi", "prometheus_client"):
            require(module, "serve", "pixelguard serve")
        from pixelguard.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
