"""Poisoning: pixel-trigger backdoors in training data, screening a training set for
them, and measuring what a backdoor does (attack success rate, clean accuracy).

A layer of its own: it uses data, models, metrics and defenses; nothing below it
imports it.
"""
