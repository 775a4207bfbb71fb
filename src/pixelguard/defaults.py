"""Default settings shared by the library and the command line, importing nothing.

The command's option declarations need these defaults to build ``pixelguard --help``;
keeping them here (and not in the modules that use torch) keeps ``--help`` fast.
"""

from __future__ import annotations

DEFAULT_BATCH_SIZE = 128
"""Images per model call. On CPUs, small CNNs run fastest per image at about 128
(measured: 1,467 MNIST images/s at 128 against 901 at 1,024 on one thread)."""

SHARD_SIZE = 100
"""Images per shard: per :meth:`Attack.run` call, per checkpoint file, per Ray task."""
