"""Detectors of adversarial inputs and the statistics they are fitted on."""

from keras_advguard.detectors.class_medoids import ClassMedoids
from keras_advguard.detectors.entropy_detector import EntropyDetector
from keras_advguard.detectors.feature_response import feature_response
from keras_advguard.detectors.feature_squeezing_detector import FeatureSqueezingDetector
from keras_advguard.detectors.knn_detector import KNNDetector
from keras_advguard.detectors.local_spatial_entropy import (
    entropy_score,
    local_spatial_entropy,
    response_to_gray,
)
from keras_advguard.detectors.medoid_lstm_detector import MedoidLSTMDetector

__all__ = [
    "ClassMedoids",
    "EntropyDetector",
    "FeatureSqueezingDetector",
    "KNNDetector",
    "MedoidLSTMDetector",
    "entropy_score",
    "feature_response",
    "local_spatial_entropy",
    "response_to_gray",
]
