"""Detectors of adversarial inputs and the statistics they are fitted on."""

from keras_advguard.detectors.class_medoids import ClassMedoids

__all__ = [
    "ClassMedoids",
]
