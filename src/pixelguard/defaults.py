"""Default settings shared by the library and the command line, importing nothing.

The command's option declarations need these defaults to build ``pixelguard --help``;
keeping them here (and not in the modules that use torch) keeps ``--help`` fast.
"""

from __future__ import annotations

DEFAULT_BATCH_SIZE = 128
"""Images per model call of adapters built directly and of ``load_model`` unless asked
for ``batch_size="auto"`` (the command line's default), which measures the fastest size
per model and machine. On CPUs, small CNNs run fastest per image at about 128
(measured: 1,467 MNIST images/s at 128 against 901 at 1,024 on one thread); a 224-pixel
CNN at a handful (EfficientNet-Lite0 on two threads: 82 images/s at 4, 16 at 64)."""

DEFAULT_MAX_MEMORY = 1 << 30
"""Bytes one model call may hold in inputs and activations, and an attack in candidate
images at once, unless the user gives another budget (``--max-memory``)."""

SHARD_SIZE = 100
"""Images per shard: per :meth:`Attack.run` call, per checkpoint file, per Ray task."""
