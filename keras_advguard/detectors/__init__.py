"""Detectors of adversarial inputs and the statistics they are fitted on.

Every detector implements the `Detector` contract (`_base.py`): `score`,
`score_tensor`, `calibrate`, `predict`, `clone`, `save`/`load`;
`load_detector(path)` loads any of them.
"""

from keras_advguard.detectors._base import Detector, load_detector
from keras_advguard.detectors.class_conditional_input_detector import ClassConditionalInputDetector
from keras_advguard.detectors.class_medoids import ClassMedoids
from keras_advguard.detectors.entropy_detector import EntropyDetector
from keras_advguard.detectors.feature_response import feature_response
from keras_advguard.detectors.feature_squeezing_detector import FeatureSqueezingDetector
from keras_advguard.detectors.input_cnn_detector import InputCNNDetector
from keras_advguard.detectors.knn_detector import KNNDetector
from keras_advguard.detectors.local_spatial_entropy import (
    entropy_score,
    local_spatial_entropy,
    response_to_gray,
)
from keras_advguard.detectors.max_softmax_detector import MaxSoftmaxDetector
from keras_advguard.detectors.medoid_lstm_detector import MedoidLSTMDetector
from keras_advguard.detectors.union_detector import UnionDetector

__all__ = [
    "ClassConditionalInputDetector",
    "ClassMedoids",
    "Detector",
    "EntropyDetector",
    "FeatureSqueezingDetector",
    "InputCNNDetector",
    "KNNDetector",
    "MaxSoftmaxDetector",
    "MedoidLSTMDetector",
    "UnionDetector",
    "entropy_score",
    "feature_response",
    "load_detector",
    "local_spatial_entropy",
    "response_to_gray",
]
