"""Defenses: preprocessing wrappers, detectors and certification by randomized ablation.

A preprocessor wraps a Classifier and is itself one, with straight-through (BPDA)
gradients by default so that white-box attacks on it are adaptive; random ones are
attacked through :class:`ExpectationOverTransformation`. A detector is fitted on clean
images and scores inputs; :class:`DetectorAwareClassifier` turns model plus detector
into one classifier for adaptive attacks; :class:`DisguisedQueries` is the adaptive
attacker of a stateful detector (a fresh random disguise on every query). :func:`harden` trains a network
adversarially. :class:`RandomizedAblation` certifies a pixel radius per image.
"""

from pixelguard.defenses.ablation import (
    AblationBase,
    ablate,
    ablation_masks,
    encode_ablated,
    load_ablation_base,
    train_ablation_classifier,
)
from pixelguard.defenses.certify import (
    RandomizedAblation,
    ablation_delta,
    certified_accuracy,
    certified_radius,
    clopper_pearson_lower,
)
from pixelguard.defenses.detect import (
    Detector,
    FeatureSqueezingDetector,
    IsolatedPixelDetector,
    NotFittedError,
    StripDetector,
    create_detector,
    list_detectors,
)
from pixelguard.defenses.detection_metrics import (
    DetectionMetrics,
    binomial_interval,
    conformal_threshold,
    detection_metrics,
    empirical_threshold,
    roc_auc,
    tpr_at_fpr,
)
from pixelguard.defenses.detector_aware import DetectorAwareClassifier
from pixelguard.defenses.eot import ExpectationOverTransformation
from pixelguard.defenses.filters import (
    jpeg_compress,
    local_median,
    median_deviation,
    parse_squeezer,
    reduce_bit_depth,
    remove_outliers,
)
from pixelguard.defenses.harden import HardenedModel, harden, training_attack
from pixelguard.defenses.preprocess import (
    BitDepthReduction,
    JpegCompression,
    MedianFilter,
    OutlierPixelRemoval,
    Preprocessor,
    RandomNoise,
    create_preprocessor,
    list_preprocessors,
    register_preprocessor,
)
from pixelguard.defenses.query_disguise import DisguisedQueries
from pixelguard.defenses.spec import parse_defense

__all__ = [
    "AblationBase",
    "BitDepthReduction",
    "DetectionMetrics",
    "Detector",
    "DetectorAwareClassifier",
    "DisguisedQueries",
    "ExpectationOverTransformation",
    "FeatureSqueezingDetector",
    "HardenedModel",
    "IsolatedPixelDetector",
    "StripDetector",
    "JpegCompression",
    "MedianFilter",
    "NotFittedError",
    "OutlierPixelRemoval",
    "Preprocessor",
    "RandomNoise",
    "RandomizedAblation",
    "ablate",
    "ablation_delta",
    "ablation_masks",
    "certified_accuracy",
    "certified_radius",
    "binomial_interval",
    "clopper_pearson_lower",
    "conformal_threshold",
    "create_detector",
    "create_preprocessor",
    "detection_metrics",
    "empirical_threshold",
    "encode_ablated",
    "harden",
    "jpeg_compress",
    "list_detectors",
    "list_preprocessors",
    "load_ablation_base",
    "local_median",
    "median_deviation",
    "parse_defense",
    "parse_squeezer",
    "training_attack",
    "reduce_bit_depth",
    "register_preprocessor",
    "remove_outliers",
    "roc_auc",
    "tpr_at_fpr",
    "train_ablation_classifier",
]
