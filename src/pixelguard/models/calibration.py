"""How many images per model call: measured once per model and machine, then cached.

A 224-pixel CNN on a laptop CPU runs fastest at a handful of images per call and
several times slower at 128; a tiny 8x8 CNN is fastest at hundreds. So
``batch_size="auto"`` (:func:`~pixelguard.models.loader.load_model`, ``--batch-size
auto``) times a few forward calls at growing batch sizes (1, 2, 4, ...) and keeps the
fastest (:func:`measure_batch_sizes`). The sweep stops once throughput has clearly
fallen past its peak, a call takes too long, or its time budget (a few seconds) is
spent. The result is cached on disk (:func:`calibrate`), keyed by the model's
weights, input shape, device, thread count and library versions, so later loads
reuse it.

Batch sizes are also bounded by a memory budget (``max_memory``, bytes of input and
activations one call may hold): the largest allowed is ``max_memory //
bytes_per_image`` (:func:`estimate_bytes_per_image`). On CUDA the per-image bytes are
the peak ``torch.cuda.max_memory_allocated`` of one image; elsewhere the peak of the
tensors alive at once while torch runs one image (tracked op by op), or for ONNX
files, the same peak worked out from the graph's inferred shapes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelguard.defaults import DEFAULT_MAX_MEMORY
from pixelguard.errors import ConfigError, PixelguardError
from pixelguard.models.base import Classifier

logger = logging.getLogger(__name__)

CACHE_ENV = "PIXELGUARD_CACHE"
"""Environment variable naming pixelguard's cache folder (default ``~/.cache/pixelguard``)."""
CACHE_FILE = "calibration.json"
"""The file in the cache folder that holds measured batch sizes."""
CACHE_VERSION = 1
"""Bumped when what a cached entry means changes; older entries are then measured again."""
CACHE_ENTRIES = 256
"""Most models remembered; the oldest entries are dropped beyond it."""

MAX_BATCH = 4096
"""Largest batch size the sweep tries."""
TIME_BUDGET = 3.0
"""Seconds a sweep may take (the memory estimate and warm-up call not included)."""
FALL = 0.8
"""The sweep stops once a size runs below this fraction of the best throughput so far."""
TIE = 0.02
"""Sizes within this fraction of the best throughput tie; the largest of them is chosen."""
CHEAP_CALL = 0.005
"""Seconds below which one call's timing is too noisy to stop the sweep on its own."""
MIN_REPS, MAX_REPS, MIN_SECONDS = 3, 10, 0.005
"""Timed calls per size: at least ``MIN_REPS`` and ``MIN_SECONDS`` in all, at most ``MAX_REPS``."""


def cache_dir() -> Path:
    """pixelguard's cache folder: ``$PIXELGUARD_CACHE`` or ``~/.cache/pixelguard``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "pixelguard"


# --- sizes in bytes -----------------------------------------------------------------
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory(text: str | int, what: str = "max_memory") -> int:
    """A memory size as bytes: ``512M``, ``2G``, ``1.5GiB``, ``64KB`` or plain bytes.

    Units are powers of 1024 (``1K`` = 1024 bytes), case-insensitive, with or without
    ``B``/``iB``.

    Raises:
        ConfigError: not a positive size; ``what`` names the option.
    """
    if isinstance(text, bool):
        raise ConfigError(f"{what} must be a size such as 512M or 2G, got {text!r}")
    if isinstance(text, int):
        value = float(text)
    else:
        match = re.fullmatch(
            r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE
        )
        if match is None:
            raise ConfigError(
                f"{what} must be a size such as 512M, 2G, 1.5GiB or a number of bytes, got {text!r}"
            )
        value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1:
        raise ConfigError(f"{what} must be at least one byte, got {text!r}")
    return int(value)


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``: a byte count in the largest binary unit below it."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        size = _UNITS[unit[0].lower()]
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


# --- the result ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Calibration:
    """What a batch-size sweep measured, and the size it chose.

    Attributes:
        batch_size: the size chosen: the fastest within ``max_batch`` (ties within
            :data:`TIE` go to the larger size).
        throughput: images per second at each size measured, smallest size first.
        bytes_per_image: input and activation bytes one image needs per call.
        max_batch: the largest size the sweep was allowed (memory budget and cap).
        stopped: why the sweep ended: ``"fell"`` (past the peak), ``"slow"`` (a call
            took too long), ``"time"`` (time budget spent) or ``"cap"`` (reached
            ``max_batch``).
        seconds: wall time the measurement took (that of the original one when cached).
        threads: torch's CPU thread count during the sweep.
        device: where the model ran.
        cached: True when read from the cache rather than measured now.
    """

    batch_size: int
    throughput: dict[int, float]
    bytes_per_image: int
    max_batch: int
    stopped: str
    seconds: float
    threads: int
    device: str
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``throughput`` keys become strings)."""
        data = dataclasses.asdict(self)
        data["throughput"] = {str(k): round(v, 3) for k, v in self.throughput.items()}
        data.pop("cached")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """The inverse of :meth:`to_dict`, marked as cached."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"throughput", "cached"}
        throughput = {int(k): float(v) for k, v in data["throughput"].items()}
        return cls(**{k: data[k] for k in fields}, throughput=throughput, cached=True)

    def within(self, max_batch: int) -> Calibration:
        """This measurement with the choice limited to sizes up to ``max_batch``."""
        kept = {n: v for n, v in self.throughput.items() if n <= max_batch}
        if not kept:  # pragma: no cover - size 1 is always measured
            kept = {1: 0.0}
        return dataclasses.replace(self, batch_size=choose_batch_size(kept), throughput=kept)

    def describe(self) -> str:
        """One line: the choice and the images/s per size."""
        rates = ", ".join(f"{n}: {v:,.0f}" for n, v in self.throughput.items())
        source = "cached" if self.cached else f"measured in {self.seconds:.2f} s"
        return (
            f"batch size {self.batch_size} ({source} on {self.device}, {self.threads} "
            f"thread(s); images/s by batch size: {rates}; at most {self.max_batch} by "
            f"{format_bytes(self.bytes_per_image)} per image)"
        )


def choose_batch_size(throughput: dict[int, float]) -> int:
    """The fastest size in ``throughput``; sizes within :data:`TIE` of it go to the largest."""
    best = max(throughput.values())
    return max(n for n, v in throughput.items() if v >= best * (1 - TIE))


# --- running the model --------------------------------------------------------------
def _classifier_device(classifier: object) -> torch.device:
    """The torch device ``classifier`` runs on (its ``device`` attribute), else the CPU."""
    device = getattr(classifier, "device", None)
    if isinstance(device, (str, torch.device)):
        with contextlib.suppress(RuntimeError):
            return torch.device(device)
    return torch.device("cpu")


def _runner(classifier: Classifier) -> Callable[[torch.Tensor], object]:
    """One model call on a whole batch (no chunking), finished before it returns."""
    forward = getattr(classifier, "_forward", None)
    device = _classifier_device(classifier)

    def run(x: torch.Tensor) -> object:
        with torch.no_grad():
            if callable(forward):
                out = forward(x)
            else:
                with _batch_size(classifier, x.shape[0]):
                    out = classifier.predict(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return run


@contextlib.contextmanager
def _batch_size(classifier: object, n: int) -> Iterator[None]:
    """Set ``classifier.batch_size`` to ``n`` for a while, where it has one."""
    if not hasattr(classifier, "batch_size"):
        yield
        return
    previous = classifier.batch_size
    try:
        classifier.batch_size = n  # type: ignore[attr-defined]
        yield
    finally:
        classifier.batch_size = previous  # type: ignore[attr-defined]


def _images(classifier: Classifier, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` random canonical images of the model's input shape, on its device."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *classifier.input_shape), generator=gen)
    device = _classifier_device(classifier)
    return x.to(device) if device.type != "cpu" else x


# --- memory -------------------------------------------------------------------------
class _OverBudget(Exception):
    """Raised inside a forward pass once its tensors pass the measuring ceiling."""


class _LiveBytes:
    """Tracks the bytes of tensors that torch ops create and that are still alive."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.aborted = False

    def record(self, inputs: object, outputs: object) -> None:
        from torch.utils._pytree import tree_flatten

        shared = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten(inputs)[0]
            if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(outputs)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or ptr in shared or ptr in self.live:
                continue  # a view, an in-place result or an empty tensor
            self.live[ptr] = size
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(t, self._free, ptr)
        if self.peak > self.ceiling:
            self.aborted = True
            raise _OverBudget

    def _free(self, ptr: int) -> None:
        self.current -= self.live.pop(ptr, 0)


def _tracking_mode(tracker: _LiveBytes) -> Any:
    """A dispatch mode that shows every torch op's outputs to ``tracker``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Track(TorchDispatchMode):
        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            return False  # nothing is compiled here; wrapping would import torch._dynamo (1-2 s)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            tracker.record((args, kwargs), out)
            return out

    return Track()


def _available_memory() -> int | None:
    """Bytes of memory available to new allocations on Linux, else None."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _ceiling(max_memory: int) -> int:
    """How far a measuring forward pass may go before it is stopped: enough to say how
    much an image over the budget needs, not so far that it exhausts the machine."""
    ceiling = max(4 * max_memory, max_memory + (1 << 30))
    available = _available_memory()
    return min(ceiling, max(max_memory, available // 2)) if available else ceiling


def _over_budget(shape: tuple[int, ...], needed: str, max_memory: int) -> ConfigError:
    image = "x".join(str(v) for v in shape)
    return ConfigError(
        f"one {image} image needs {needed} of input and activations per model call, over "
        f"the memory budget of {format_bytes(max_memory)} (--max-memory, max_memory=); "
        "raise it or resize the images"
    )


def estimate_bytes_per_image(classifier: Classifier, max_memory: int = DEFAULT_MAX_MEMORY) -> int:
    """Bytes of input and activations one image needs in one call of ``classifier``.

    The canonical image itself plus, on CUDA, the peak memory torch allocates for one
    image (``torch.cuda.max_memory_allocated``); for ONNX files the peak of the
    tensors alive at once in the graph (its inferred shapes: needs the ``onnx``
    package, and onnxruntime's symbolic shape inference where sizes are computed at
    run time);
    otherwise the peak bytes of tensors alive at once while torch runs one image, op
    by op. Work done outside torch (numpy functions, TensorFlow, scikit-learn) is not
    seen: only the conversion of the input is counted for such models.

    Runs the model once on one image (this is also a warm-up call).

    Raises:
        ConfigError: one image needs more than ``max_memory``.
        ModelError: the model fails on the image.
    """
    shape = tuple(classifier.input_shape)
    image_bytes = 4 * math.prod(shape)
    if image_bytes > max_memory:
        raise _over_budget(shape, format_bytes(image_bytes), max_memory)
    device = _classifier_device(classifier)
    run = _runner(classifier)
    x = _images(classifier, 1)
    graph_bytes = _onnx_bytes_per_image(classifier)
    if graph_bytes is not None:
        run(x)
        needed = image_bytes + graph_bytes
    elif device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            run(x)
        except torch.cuda.OutOfMemoryError:
            raise _over_budget(shape, "more than the GPU's free memory", max_memory) from None
        needed = image_bytes + torch.cuda.max_memory_allocated(device) - base
    else:
        tracker = _LiveBytes(_ceiling(max_memory))
        try:
            with _tracking_mode(tracker):
                run(x)
        except (_OverBudget, PixelguardError, RuntimeError):
            if not tracker.aborted:
                raise
            more = f"more than {format_bytes(tracker.ceiling)}"
            raise _over_budget(shape, more, max_memory) from None
        needed = image_bytes + tracker.peak
    if needed > max_memory:
        raise _over_budget(shape, format_bytes(needed), max_memory)
    return int(needed)


def _onnx_bytes_per_image(classifier: object) -> int | None:
    """Peak bytes of the tensors alive at once in an ONNX graph for one image, or None
    when ``classifier`` is no ONNX model or its shapes cannot be inferred."""
    path = getattr(classifier, "path", None)
    if not (isinstance(path, Path) and path.suffix.lower() == ".onnx" and path.is_file()):
        return None
    try:
        import onnx
        from onnx import helper, shape_inference

        model = onnx.load(str(path))
        graph = shape_inference.infer_shapes(model).graph
    except Exception as exc:  # onnx is optional and raises its own errors
        logger.debug("cannot infer the shapes of %s: %s", path, exc)
        return None
    if _open_dims(graph):  # sizes computed at run time (padding "same" by Shape ops)
        try:  # onnxruntime's symbolic inference resolves them (slower: seconds)
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            graph = SymbolicShapeInference.infer_shapes(model, auto_merge=True).graph
        except Exception as exc:  # optional, and it raises its own errors
            logger.debug("cannot resolve the open shapes of %s: %s", path, exc)
    weights = {init.name for init in graph.initializer}
    outputs = {value.name for value in graph.output}
    sizes: dict[str, int] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        if value.name in weights:
            continue
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
        except (KeyError, TypeError, ValueError):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim]
        sizes[value.name] = itemsize * math.prod(dims[1:])  # per image: without the batch
    last_use = dict.fromkeys(sizes, -1)
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name in last_use:
                last_use[name] = i
    live = sum(sizes.get(value.name, 0) for value in graph.input)
    peak = live
    for i, node in enumerate(graph.node):
        live += sum(sizes.get(name, 0) for name in node.output)
        peak = max(peak, live)
        done = {*node.input, *node.output}
        live -= sum(
            sizes[name]
            for name in done
            if name in sizes and last_use[name] <= i and name not in outputs
        )
    return peak


def _open_dims(graph: Any) -> int:
    """How many tensors of ``graph`` have a size other than the batch left open."""
    return sum(
        any(not d.HasField("dim_value") for d in list(v.type.tensor_type.shape.dim)[1:])
        for v in graph.value_info
    )


def memory_cap(
    classifier: Classifier, max_memory: int, bytes_per_image: int | None = None
) -> tuple[int, int]:
    """``(largest batch size within max_memory, bytes per image)`` for ``classifier``.

    Raises:
        ConfigError: one image needs more than ``max_memory``.
    """
    if bytes_per_image is None:
        bytes_per_image = estimate_bytes_per_image(classifier, max_memory)
    elif bytes_per_image > max_memory:
        shape = tuple(classifier.input_shape)
        raise _over_budget(shape, format_bytes(bytes_per_image), max_memory)
    return max(1, max_memory // max(1, bytes_per_image)), bytes_per_image


# --- the sweep ----------------------------------------------------------------------
def _sizes(cap: int) -> list[int]:
    """1, 2, 4, ... up to ``cap``, and ``cap`` itself when it is no power of two."""
    sizes = [1 << i for i in range(cap.bit_length()) if 1 << i <= cap]
    return sizes if sizes[-1] == cap else [*sizes, cap]


def measure_batch_sizes(
    classifier: Classifier,
    *,
    max_batch: int = MAX_BATCH,
    max_memory: int = DEFAULT_MAX_MEMORY,
    time_budget: float = TIME_BUDGET,
    bytes_per_image: int | None = None,
    seed: int = 0,
) -> Calibration:
    """Time ``classifier`` at batch sizes 1, 2, 4, ... and return the fastest.

    After one warm-up call (which also measures the bytes one image needs, unless
    ``bytes_per_image`` is given) each size is timed over a few calls on random
    canonical images, and its throughput is the size over its median call (its
    fastest when a call is so slow that fewer than three are made). The sweep
    stops at ``max_batch`` or at the memory budget's cap (``max_memory //
    bytes_per_image``), once a size runs below :data:`FALL` of the best throughput
    or two doublings bring no gain (for calls under :data:`CHEAP_CALL`, two such
    sizes in a row, or three doublings), once one call takes a quarter of
    ``time_budget``, or before the next size would overrun ``time_budget`` seconds.

    Args:
        classifier: the model; an adapter's own forward pass is timed, unchunked.
        max_batch: largest size to try.
        max_memory: bytes of input and activations one call may hold.
        time_budget: seconds the timed calls may take in all (roughly).
        bytes_per_image: known bytes per image (from a cache); skips measuring it.
        seed: seed of the random images.

    Returns:
        The :class:`Calibration`: throughput per size and the size chosen.

    Raises:
        ConfigError: one image needs more than ``max_memory``, or a bad argument.
        ModelError: the model fails on the images.
    """
    if max_batch < 1 or time_budget <= 0:
        raise ConfigError(
            f"max_batch must be >= 1 and time_budget > 0, got {max_batch} and {time_budget}"
        )
    start = time.perf_counter()
    run = _runner(classifier)
    if bytes_per_image is None:
        bytes_per_image = estimate_bytes_per_image(classifier, max_memory)  # runs one image
    else:
        run(_images(classifier, 1, seed))  # warm-up
    cap, _ = memory_cap(classifier, max_memory, bytes_per_image)
    cap = min(cap, max_batch)
    throughput: dict[int, float] = {}
    best_n, best, falls = 1, 0.0, 0
    stopped = "cap"
    sweep_start = time.perf_counter()
    per_size = time_budget / 8
    sizes = _sizes(cap)
    for index, n in enumerate(sizes):
        x = _images(classifier, n, seed)
        times: list[float] = []
        while True:
            t0 = time.perf_counter()
            run(x)
            took = time.perf_counter() - t0
            times.append(took)
            reps, spent = len(times), sum(times)
            if reps >= MAX_REPS or (reps >= MIN_REPS and spent >= MIN_SECONDS):
                break
            if spent + took > per_size and reps >= (1 if took > per_size else 2):
                break
        # the median call: the first call at a new size may pay one-time costs, and on a
        # busy machine a lucky call is no guide; with fewer than 3 calls, the fastest
        typical = statistics.median(times) if len(times) >= MIN_REPS else min(times)
        throughput[n] = n / max(typical, 1e-9)
        if throughput[n] > best:
            best_n, best = n, throughput[n]
        if index == len(sizes) - 1:
            break
        # past the peak: one clear fall, or two doublings without gain; calls cheaper
        # than CHEAP_CALL are too noisy to judge by one size, so they need two of each
        falls = falls + 1 if throughput[n] < FALL * best else 0
        doublings = 2 if typical >= CHEAP_CALL else 3
        if falls >= (1 if typical >= CHEAP_CALL else 2) or n >= (1 << doublings) * best_n:
            stopped = "fell"
            break
        if typical > time_budget / 4:
            stopped = "slow"
            break
        next_cost = 2 * typical * (sizes[index + 1] / n)  # two calls at the next size
        if time.perf_counter() - sweep_start + next_cost > time_budget:
            stopped = "time"
            break
    return Calibration(
        batch_size=choose_batch_size(throughput),
        throughput=throughput,
        bytes_per_image=bytes_per_image,
        max_batch=cap,
        stopped=stopped,
        seconds=time.perf_counter() - start,
        threads=torch.get_num_threads(),
        device=_device_name(classifier),
    )


# --- identity and cache -------------------------------------------------------------
def _device_name(classifier: object) -> str:
    """Where the model runs, for the cache key: ``cpu``, or ``cuda:0 (<GPU name>)``."""
    providers = getattr(classifier, "providers", None)
    if providers:
        return "onnxruntime " + "+".join(providers)
    device = _classifier_device(classifier)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def _machine() -> str:
    """The CPU (model name and usable cores): a cache in a shared home is per machine kind."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} x{cores}"


def _hash_tensors(digest: Any, tensors: dict[str, Any]) -> None:
    """Add names, dtypes, shapes and bytes of ``tensors`` (torch or numpy) to ``digest``."""
    for name, value in tensors.items():
        digest.update(
            f"{name}:{getattr(value, 'dtype', '')}:{getattr(value, 'shape', '')}".encode()
        )
        try:
            if isinstance(value, torch.Tensor):
                flat = value.detach().cpu().contiguous().reshape(-1)
                digest.update(flat.view(torch.uint8).numpy().tobytes())
            else:
                digest.update(np.ascontiguousarray(value).tobytes())
        except (RuntimeError, TypeError, ValueError):  # quantized or packed weights
            digest.update(repr(value).encode())


def model_fingerprint(classifier: object) -> str | None:
    """A digest of the model's identity (weights and structure, or its file's bytes),
    or None when it has none that lasts beyond this process (a Python function)."""
    digest = hashlib.sha256(type(classifier).__qualname__.encode())
    module = getattr(classifier, "module", None)
    path = getattr(classifier, "path", None)
    if isinstance(module, torch.nn.Module):
        digest.update(str(module).encode())
        code = getattr(module, "code", None)
        if isinstance(code, str):
            digest.update(code.encode())
        _hash_tensors(digest, dict(module.state_dict(keep_vars=False)))
    elif isinstance(path, Path) and path.is_file():
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    elif hasattr(getattr(classifier, "model", None), "get_weights"):
        model = classifier.model  # type: ignore[attr-defined]
        digest.update(type(model).__qualname__.encode())
        with contextlib.suppress(Exception):  # a subclassed model may not serialise
            digest.update(model.to_json().encode())
        weights = model.get_weights()
        _hash_tensors(digest, {str(i): np.asarray(w) for i, w in enumerate(weights)})
    else:
        return None
    return digest.hexdigest()


def cache_key(classifier: Classifier) -> str | None:
    """The cache key of ``classifier`` on this machine now, or None (not cacheable)."""
    fingerprint = model_fingerprint(classifier)
    if fingerprint is None:
        return None
    versions = {"torch": str(torch.__version__)}
    for name in ("onnxruntime", "keras"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "?"))
    parts = {
        "version": CACHE_VERSION,
        "model": fingerprint,
        "input_shape": list(classifier.input_shape),
        "spec": repr(getattr(classifier, "spec", None)),
        "device": _device_name(classifier),
        "threads": torch.get_num_threads(),
        "onnx_threads": getattr(classifier, "threads", None),
        "machine": _machine(),
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.info("ignoring the unreadable calibration cache %s: %s", path, exc)
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def _write_cache(path: Path, key: str, calibration: Calibration) -> None:
    """Add ``calibration`` under ``key``, keeping the newest :data:`CACHE_ENTRIES`."""
    entries = _read_cache(path)
    entries.pop(key, None)
    entries[key] = {**calibration.to_dict(), "saved": time.time()}
    kept = dict(list(entries.items())[-CACHE_ENTRIES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=".calibration-", suffix=".tmp", delete=False
        ) as handle:
            json.dump({"version": CACHE_VERSION, "entries": kept}, handle, indent=1)
        os.replace(handle.name, path)
    except OSError as exc:
        logger.info("cannot write the calibration cache %s: %s", path, exc)


def _cached(path: Path, key: str) -> Calibration | None:
    entry = _read_cache(path).get(key)
    if not isinstance(entry, dict):
        return None
    try:
        return Calibration.from_dict(entry)
    except (KeyError, TypeError, ValueError):
        return None


def calibrate(
    classifier: Classifier,
    *,
    max_memory: int = DEFAULT_MAX_MEMORY,
    max_batch: int = MAX_BATCH,
    time_budget: float = TIME_BUDGET,
    cache: bool | str | Path = True,
) -> Calibration:
    """The fastest batch size of ``classifier`` within ``max_memory``: cached, or measured.

    A cached measurement of the same model (weights, input shape, input spec) on the
    same device, thread count, machine kind and library versions is reused: its choice
    is limited to the sizes within this call's caps, and it is measured again only
    when it stopped at a smaller cap than this call allows.

    Args:
        classifier: the model (an adapter; see :func:`measure_batch_sizes`).
        max_memory: bytes of input and activations one call may hold.
        max_batch: largest size to try.
        time_budget: seconds the sweep may take.
        cache: True for ``<cache folder>/calibration.json`` (see :func:`cache_dir`),
            a file path for another, False for none.

    Raises:
        ConfigError: one image needs more than ``max_memory``.
        ModelError: the model fails on the images.
    """
    path: Path | None
    if cache is True:
        path = cache_dir() / CACHE_FILE
    elif cache is False:
        path = None
    else:
        path = Path(cache).expanduser()
    key = cache_key(classifier) if path is not None else None
    found = _cached(path, key) if path is not None and key is not None else None
    bytes_per_image = None
    if found is not None:
        cap, bytes_per_image = memory_cap(classifier, max_memory, found.bytes_per_image)
        cap = min(cap, max_batch)
        if found.stopped != "cap" or cap <= found.max_batch:
            result = found.within(cap)
            logger.info("%s", result.describe())
            return result
    result = measure_batch_sizes(
        classifier,
        max_batch=max_batch,
        max_memory=max_memory,
        time_budget=time_budget,
        bytes_per_image=bytes_per_image,
    )
    logger.info("%s", result.describe())
    if path is not None and key is not None:
        _write_cache(path, key, result)
    return result
