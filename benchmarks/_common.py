"""Shared helpers for the side-by-side benchmarks.

Everything a benchmark needs besides the attacks themselves: a description of the
machine, seeded training and caching of the benchmark models, a module wrapper that
counts the images the peers push through ``forward``, and the model's forward
throughput, from which the "overhead ratio" (wall time over pure model time) follows.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger("benchmarks")

MODELS_DIR = Path("bench-out/models")
"""Where trained benchmark models are cached (the whole ``bench-out/`` is git-ignored)."""

THROUGHPUT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 400, 512, 1024)
"""Batch sizes at which forward throughput is measured; others are interpolated.

They cover what the attacks send: ART 128-image chunks and single checks,
torchattacks whole populations (about 400), pixelguard chunks of up to 1024."""


PEER_STACK = (
    "pixelguard",
    "torch",
    "numpy",
    "adversarial-robustness-toolbox",
    "torchattacks",
    "foolbox",
    "matplotlib",
)
"""The packages whose versions a benchmark against the peers records."""


@dataclass(frozen=True)
class RunStart:
    """What every benchmark records of its own start: threads, time and command line."""

    threads: int
    started: datetime.datetime
    command: str


def begin_run(
    script: str, argv: Sequence[str] | None, threads: int | None, *, verbose: bool = False
) -> RunStart:
    """Log to stderr (ART's chatter quieted), fix torch's threads and note the start."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    logging.getLogger("art").setLevel(logging.WARNING)
    return RunStart(
        threads=set_threads(threads),
        started=datetime.datetime.now(datetime.timezone.utc),
        command=shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)]),
    )


def set_threads(threads: int | None) -> int:
    """Fix torch's intra-op thread count (default: all cores) and return it."""
    n = threads if threads is not None else (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return torch.get_num_threads()


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        return None
    return None


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, memory, Python/torch versions and torch's thread count."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def source_revision(repo: Path) -> dict[str, Any]:
    """The git commit of ``repo`` and the files under ``src/`` that differ from it."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.rstrip()

    status = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_src_files": [line[3:] for line in status.splitlines()] if status else [],
    }


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


@dataclass
class CallStats:
    """What went through a :class:`CountingModule` between two resets."""

    images: int = 0
    calls: int = 0
    seconds: float = 0.0
    batch_sizes: Counter[int] = field(default_factory=Counter)

    def add(self, other: CallStats) -> None:
        """Accumulate ``other`` into this record."""
        self.images += other.images
        self.calls += other.calls
        self.seconds += other.seconds
        self.batch_sizes.update(other.batch_sizes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "calls": self.calls,
            "forward_seconds": round(self.seconds, 4),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


class CountingModule(nn.Module):
    """Wraps a module and counts the images (rows) and calls that go through ``forward``.

    The peer libraries neither state nor return query counts; wrapping the model they
    are given counts them exactly, whatever they do internally (chunking, callbacks,
    extra checks). The time spent inside the wrapped module is accumulated too.

    Args:
        module: the model to wrap; its parameters stay registered (peers read the
            device from them).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.stats = CallStats()

    def reset(self) -> CallStats:
        """Start counting afresh; return what was counted since the last reset."""
        stats, self.stats = self.stats, CallStats()
        return stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.module(x)
        self.stats.seconds += time.perf_counter() - start
        self.stats.images += int(x.shape[0])
        self.stats.calls += 1
        self.stats.batch_sizes[int(x.shape[0])] += 1
        return out


def forward_throughput(
    module: nn.Module,
    input_shape: Sequence[int],
    batch_size: int,
    *,
    repeats: int = 7,
    warmup: int = 2,
    min_seconds: float = 0.05,
    seed: int = 0,
) -> float:
    """Images per second of ``module`` at ``batch_size``: median of ``repeats`` timed runs.

    Each timed run repeats the forward pass until it lasts ``min_seconds`` so that tiny
    batches are not dominated by timer resolution. Runs under ``torch.no_grad`` with
    the current torch thread count.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((batch_size, *input_shape), generator=gen)
    module.eval()
    with torch.no_grad():
        for _ in range(warmup):
            module(x)
        start = time.perf_counter()
        module(x)
        once = max(time.perf_counter() - start, 1e-6)
        inner = max(1, int(min_seconds / once))
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(inner):
                module(x)
            rates.append(batch_size * inner / (time.perf_counter() - start))
    return statistics.median(rates)


@dataclass
class ThroughputTable:
    """Forward throughput measured at a few batch sizes, interpolated in between."""

    images_per_second: dict[int, float]

    @classmethod
    def measure(
        cls,
        module: nn.Module,
        input_shape: Sequence[int],
        batch_sizes: Sequence[int] = THROUGHPUT_BATCH_SIZES,
    ) -> ThroughputTable:
        """Measure :func:`forward_throughput` at every batch size in ``batch_sizes``."""
        table = {b: forward_throughput(module, input_shape, b) for b in sorted(batch_sizes)}
        return cls(table)

    def seconds_for_batch(self, batch_size: int) -> float:
        """Pure model seconds for one forward call of ``batch_size`` images.

        Linear interpolation of the per-call time between measured sizes; beyond the
        largest measured size, the per-image time at that size.
        """
        sizes = sorted(self.images_per_second)
        per_call = [b / self.images_per_second[b] for b in sizes]
        if batch_size >= sizes[-1]:
            return batch_size * per_call[-1] / sizes[-1]
        return float(np.interp(batch_size, sizes, per_call))

    def model_seconds(self, batch_sizes: Counter[int]) -> float:
        """Pure model time for a run whose calls had these batch sizes (size -> calls)."""
        return sum(calls * self.seconds_for_batch(b) for b, calls in batch_sizes.items())

    def to_dict(self) -> dict[str, float]:
        return {str(b): round(v, 1) for b, v in sorted(self.images_per_second.items())}


def fingerprint(*arrays: np.ndarray | torch.Tensor, extra: dict[str, Any] | None = None) -> str:
    """Short SHA-256 of array contents plus a JSON-able description (for cache keys)."""
    h = hashlib.sha256()
    for a in arrays:
        arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()[:16]


def write_results(out: Path, results: dict[str, Any], table: str) -> None:
    """Write ``results.json`` and ``results.md`` (the ``table``) into ``out``; print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(table if table.endswith("\n") else table + "\n")
    print(table)
