"""Detectors written from the Detector contract only, shared by the engine's tests."""

import numpy as np
import tensorflow as tf

from keras_advguard import metrics


class SoftmaxScore:
    """Statistical detector written from the contract only: 1 - max p (or max p, inverted)."""

    supervised = False
    score_tensor_kind = "exact"

    def __init__(self, model, inverted=False):
        self.model, self.inverted, self.calibrated_on, self.fitted_on = model, inverted, [], []

    def fit(self, x, y=None, *, batch_size=128, verbose=0):
        self.fitted_on.append(np.asarray(x))
        return self

    def score_tensor(self, x):
        top = tf.reduce_max(self.model(x), axis=-1)
        return top if self.inverted else 1.0 - top

    def score(self, x, *, batch_size=128, verbose=0):
        top = self.model.predict(x, verbose=0).max(axis=1).astype(np.float64)
        return top if self.inverted else 1.0 - top

    def calibrate(self, x, fpr=0.05, *, batch_size=128, verbose=0):
        self.calibrated_on.append(np.asarray(x))
        self.threshold_ = metrics.threshold_at_fpr(self.score(x), fpr)
        return self
