"""Poisoning: pixel-trigger backdoors in training data, screening a training set for
them, and measuring what a backdoor does (attack success rate, clean accuracy).

A layer of its own: it uses data, models, metrics and defenses; nothing below it
imports it.
"""

from pixelguard.poisoning.activation_clustering import ActivationClustering
from pixelguard.poisoning.backdoor import (
    BackdoorMetrics,
    PoisonedData,
    PoisonInfo,
    backdoor_metrics,
    choose_poisoned,
    poison_dataset,
    read_poison_info,
)
from pixelguard.poisoning.features import penultimate_features
from pixelguard.poisoning.screening import (
    ClassScan,
    ScanResult,
    ScreeningMetrics,
    screening_metrics,
)
from pixelguard.poisoning.spectral import SpectralSignatures
from pixelguard.poisoning.triggers import Trigger, parse_trigger

__all__ = [
    "ActivationClustering",
    "BackdoorMetrics",
    "ClassScan",
    "PoisonInfo",
    "PoisonedData",
    "ScanResult",
    "ScreeningMetrics",
    "SpectralSignatures",
    "Trigger",
    "backdoor_metrics",
    "choose_poisoned",
    "parse_trigger",
    "penultimate_features",
    "poison_dataset",
    "read_poison_info",
    "screening_metrics",
]
