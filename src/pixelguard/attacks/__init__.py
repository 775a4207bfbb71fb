"""Attacks: configuration objects with one entry point, ``run(model, x, y, *, target=None)``."""
