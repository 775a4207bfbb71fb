"""Run one function on several threads at once, as a server's workers would."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_on_threads(work: Callable[[int], T], n: int, timeout: float = 30) -> list[T]:
    """``work(0)`` ... ``work(n - 1)``, each on its own thread, started together; their
    results in order. Fails if any raised or did not finish within ``timeout`` s."""
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            results[t] = work(t)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=timeout)
    assert errors == [] and not any(th.is_alive() for th in threads), errors
    return [results[t] for t in range(n)]
