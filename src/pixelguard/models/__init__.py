"""Model adapters to the one Classifier protocol, and query accounting.

Importing this package does not import onnxruntime: :class:`OnnxClassifier` imports
it when an ONNX model is built.
"""

from pixelguard.models.base import (
    Capabilities,
    Classifier,
    Differentiable,
    InputSpec,
    OutputKind,
)
from pixelguard.models.calibration import Calibration, calibrate, measure_batch_sizes
from pixelguard.models.callable import CallableClassifier
from pixelguard.models.keras import KerasClassifier
from pixelguard.models.loader import load_model
from pixelguard.models.onnx import OnnxClassifier
from pixelguard.models.queries import QueryCounter
from pixelguard.models.resize import ResizeInput
from pixelguard.models.saved_model import SavedModelClassifier
from pixelguard.models.sklearn import SklearnClassifier
from pixelguard.models.torch import TorchClassifier
from pixelguard.models.training import train_classifier
from pixelguard.models.zoo import build_model, list_archs, load_checkpoint, save_checkpoint

__all__ = [
    "Calibration",
    "CallableClassifier",
    "Capabilities",
    "Classifier",
    "Differentiable",
    "InputSpec",
    "KerasClassifier",
    "OnnxClassifier",
    "OutputKind",
    "QueryCounter",
    "ResizeInput",
    "SavedModelClassifier",
    "SklearnClassifier",
    "TorchClassifier",
    "build_model",
    "calibrate",
    "list_archs",
    "load_checkpoint",
    "load_model",
    "measure_batch_sizes",
    "save_checkpoint",
    "train_classifier",
]
