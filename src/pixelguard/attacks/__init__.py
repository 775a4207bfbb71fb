"""Attacks: configuration objects with one entry point, ``run(model, x, y, *, target=None)``.

Importing this package registers every attack under its kebab-case name.
"""

from pixelguard.attacks.base import (
    Attack,
    AttackResult,
    ProgressCallback,
    attacks,
    create_attack,
    list_attacks,
    register_attack,
)
from pixelguard.attacks.corner_search import CornerSearch
from pixelguard.attacks.fgsm import FGSM
from pixelguard.attacks.gradient_descent import GradientDescent
from pixelguard.attacks.label_only import LabelOnly
from pixelguard.attacks.min_pixels import MinPixels
from pixelguard.attacks.pgd import PGD
from pixelguard.attacks.pixel_de import PixelDE
from pixelguard.attacks.sparse_bayes import SparseBayes
from pixelguard.attacks.sparse_pgd import SparsePGD
from pixelguard.attacks.sparse_rs import SparseRS

attacks.alias("de", "pixel-de")
attacks.alias("rs", "sparse-rs")

__all__ = [
    "Attack",
    "AttackResult",
    "CornerSearch",
    "FGSM",
    "GradientDescent",
    "LabelOnly",
    "MinPixels",
    "PGD",
    "PixelDE",
    "ProgressCallback",
    "create_attack",
    "list_attacks",
    "SparseBayes",
    "SparsePGD",
    "SparseRS",
    "register_attack",
]
