"""The ``pixelguard`` command line (see :mod:`pixelguard.cli.app`)."""
