"""``python -m pixelguard.cli``: the same as the ``pixelguard`` command."""

from pixelguard.cli.app import main

main()
