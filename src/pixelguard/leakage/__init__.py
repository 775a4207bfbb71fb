"""Leakage: what a classifier's answers give away. Model extraction by queries,
transfer attacks from the stolen copy, and membership inference.

A layer of its own: it uses data, models, attacks, metrics and defenses; nothing
below it imports it.
"""

from pixelguard.leakage.extraction import (
    CurvePoint,
    ExtractionResult,
    Holdout,
    JacobianAugmentation,
    KnockoffNets,
    create_extraction,
    make_holdout,
)
from pixelguard.leakage.loss_threshold import LossThresholdAttack
from pixelguard.leakage.membership import (
    MembershipResult,
    OperatingPoint,
    check_membership_inputs,
    roc_curve,
)
from pixelguard.leakage.shadow import ShadowModelAttack
from pixelguard.leakage.transfer import (
    TransferResult,
    WarmStartComparison,
    transfer_attack,
    warm_start_sparse_rs,
)

__all__ = [
    "CurvePoint",
    "ExtractionResult",
    "Holdout",
    "JacobianAugmentation",
    "KnockoffNets",
    "LossThresholdAttack",
    "MembershipResult",
    "OperatingPoint",
    "ShadowModelAttack",
    "TransferResult",
    "WarmStartComparison",
    "check_membership_inputs",
    "create_extraction",
    "make_holdout",
    "roc_curve",
    "transfer_attack",
    "warm_start_sparse_rs",
]
