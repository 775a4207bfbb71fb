"""Leakage: what a classifier's answers give away. Model extraction by queries,
transfer attacks from the stolen copy, and membership inference.

A layer of its own: it uses data, models, attacks, metrics and defenses; nothing
below it imports it.
"""
