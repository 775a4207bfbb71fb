"""Loaders into the canonical tensor (float32, [0, 1], NCHW) plus integer labels."""
