"""keras_advguard: guard Keras 3 classifiers against adversarial examples.

Tap a trained classifier's internal layers (`DetectorModel`), sanitize its
hidden activations, detect adversarial inputs from them, attack it and
evaluate every defence honestly.
"""

import os as _os
import sys as _sys

if _os.path.basename(_sys.argv[0] if _sys.argv else "") == "advguard":
    # Run as the `advguard` command: TensorFlow's C++ start-up notices (no
    # GPU found, oneDNN) are printed to file descriptor 2 before any log
    # level applies. Silence that descriptor while TensorFlow loads; Python
    # errors still propagate. Library users keep TensorFlow's messages.
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _saved_fd = _os.dup(2)
    _null_fd = _os.open(_os.devnull, _os.O_WRONLY)
    try:
        _os.dup2(_null_fd, 2)
        import tensorflow  # noqa: F401
    finally:
        _os.dup2(_saved_fd, 2)
        _os.close(_saved_fd)
        _os.close(_null_fd)

from keras_advguard import attacks as attacks
from keras_advguard import datasets as datasets
from keras_advguard import detectors as detectors
from keras_advguard import evaluation as evaluation
from keras_advguard import layers as layers
from keras_advguard import metrics as metrics
from keras_advguard import models as models
from keras_advguard import plots as plots
from keras_advguard import training as training
from keras_advguard.activation_store import ActivationStore as ActivationStore
from keras_advguard.attacks._common import as_logits_fn as as_logits_fn
from keras_advguard.detector_model import DetectorModel as DetectorModel
from keras_advguard.detector_model import rebuild_model as rebuild_model
from keras_advguard.detector_model import resolve_layers as resolve_layers
from keras_advguard.detectors import (
    ClassConditionalInputDetector as ClassConditionalInputDetector,
)
from keras_advguard.detectors import ClassMedoids as ClassMedoids
from keras_advguard.detectors import EntropyDetector as EntropyDetector
from keras_advguard.detectors import FeatureSqueezingDetector as FeatureSqueezingDetector
from keras_advguard.detectors import InputCNNDetector as InputCNNDetector
from keras_advguard.detectors import KNNDetector as KNNDetector
from keras_advguard.detectors import MaxSoftmaxDetector as MaxSoftmaxDetector
from keras_advguard.detectors import MedoidLSTMDetector as MedoidLSTMDetector
from keras_advguard.detectors import load_detector as load_detector
from keras_advguard.evaluation import EvaluationReport as EvaluationReport
from keras_advguard.evaluation import evaluate as evaluate
from keras_advguard.layers import BitDepthSqueezer as BitDepthSqueezer
from keras_advguard.layers import MaskSanitizer as MaskSanitizer
from keras_advguard.layers import MedianSanitizer as MedianSanitizer
from keras_advguard.layers import MedianSmoothingSqueezer as MedianSmoothingSqueezer
from keras_advguard.layers import MedoidDistance as MedoidDistance
from keras_advguard.layers import NLMeansSanitizer as NLMeansSanitizer
from keras_advguard.layers import NLMeansSqueezer as NLMeansSqueezer
from keras_advguard.sanitize import sanitize as sanitize
from keras_advguard.sanitize import sanitizer_name as sanitizer_name
from keras_advguard.saving import load_model as load_model
from keras_advguard.saving import save_model as save_model
from keras_advguard.training import AdversarialModel as AdversarialModel
from keras_advguard.version import __version__ as __version__

__all__ = [
    "ActivationStore",
    "AdversarialModel",
    "BitDepthSqueezer",
    "ClassMedoids",
    "DetectorModel",
    "EntropyDetector",
    "EvaluationReport",
    "FeatureSqueezingDetector",
    "KNNDetector",
    "MedianSmoothingSqueezer",
    "MedoidLSTMDetector",
    "load_detector",
    "MaxSoftmaxDetector",
    "InputCNNDetector",
    "ClassConditionalInputDetector",
    "NLMeansSqueezer",
    "MaskSanitizer",
    "MedianSanitizer",
    "MedoidDistance",
    "NLMeansSanitizer",
    "__version__",
    "as_logits_fn",
    "attacks",
    "datasets",
    "detectors",
    "evaluate",
    "evaluation",
    "layers",
    "metrics",
    "models",
    "plots",
    "rebuild_model",
    "resolve_layers",
    "load_model",
    "sanitize",
    "save_model",
    "sanitizer_name",
    "training",
]
