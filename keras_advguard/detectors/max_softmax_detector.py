"""Baseline detector: one minus the classifier's top softmax probability (Hendrycks & Gimpel)."""

import numpy as np

from keras_advguard import _fingerprint, _memo, _validation
from keras_advguard.detectors._base import Detector, iterate_inputs


class MaxSoftmaxDetector(Detector):
    """Flag inputs the classifier is unsure of: score = 1 - max softmax probability.

    The simplest baseline every detector should beat (Hendrycks & Gimpel):
    with `p = softmax(z(x))` the classifier's class probabilities (computed
    in float32 from its logits `z`, the pre-softmax output found by
    `as_logits_fn`), the score is

        s(x) = 1 - max_c p_c(x)        in [0, 1 - 1/C]

    Higher means less confident, i.e. more adversarial. Nothing is fitted;
    `calibrate` sets the threshold from clean validation inputs.
    `score_tensor` is exact (the same values, the true gradient).

    Args:
        model: the classifier, a built Functional or Sequential
            `keras.Model` (or a `DetectorModel`).

    Attributes:
        threshold_: the decision threshold, set by `calibrate`.
        fpr_: the target false positive rate of `threshold_`.
        n_calibration_: the number of clean inputs it came from.

    Example:

        >>> import keras, numpy as np
        >>> keras.utils.set_random_seed(0)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.random.default_rng(0).random((20, 4)).astype("float32")
        >>> detector = MaxSoftmaxDetector(model).calibrate(x, fpr=0.1)
        >>> p = keras.ops.convert_to_numpy(keras.ops.softmax(model(x)))
        >>> bool(np.allclose(detector.score(x), 1 - p.max(axis=1), atol=1e-6))
        True
        >>> float(detector.predict(x).mean()) <= 0.1
        True

    Reference:
        D. Hendrycks, K. Gimpel. "A Baseline for Detecting Misclassified and
        Out-of-Distribution Examples in Neural Networks", ICLR 2017.
    """

    supervised = False
    score_tensor_kind = "exact"
    needs_fit = False

    def __init__(self, model):
        import keras

        model = _fingerprint.unwrap_model(model)
        _validation.check_type("model", model, keras.Model, "a keras.Model")
        self.model = model

    def _logits(self):
        from keras_advguard.attacks._common import as_logits_fn

        return _memo.memo(self, "logits", lambda: as_logits_fn(self.model), (self.model,))

    def score_tensor(self, x):
        """`score` of a batch tensor `(B, ...)`, differentiable: float32 `(B,)`."""
        from keras import ops

        probabilities = ops.softmax(self._logits()(ops.cast(x, "float32")), axis=-1)
        return 1.0 - ops.max(probabilities, axis=-1)

    def score(self, x, *, batch_size=128, verbose=0):
        """`1 - max softmax` of each input.

        Args:
            x: inputs `(N, ...)` of the model's input shape (numpy), or a
                `tf.data.Dataset` of inputs or `(inputs, labels)` pairs.
            batch_size: inputs per batch. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A float64 numpy array `(N,)` in `[0, 1)`.

        Raises:
            ValueError: inputs of another shape than the model's, or
                non-finite inputs.
        """
        input_shape = self.model.inputs[0].shape
        batch_fn = _memo.batch_function(
            self, "score_fn", self.score_tensor, input_shape, (self.model,)
        )
        parts = [
            np.asarray(batch_fn(xb), dtype=np.float64)
            for xb in iterate_inputs(x, input_shape, batch_size=batch_size, verbose=verbose)
        ]
        return np.concatenate(parts) if parts else np.zeros((0,), np.float64)

    def tap_request(self):
        """No layer: the score needs the logits only (for a shared activation pass)."""
        return {"layers": [], "pooling": None}

    def features_from_taps(self, collected):
        """The scores of one batch of a shared pass: `1 - max softmax(logits)`."""
        logits = np.asarray(collected["logits"], dtype=np.float64)
        if len(logits) == 0:
            return np.zeros((0,), np.float64)
        logits = logits - logits.max(axis=-1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
        return 1.0 - probabilities.max(axis=-1)

    def fit(self, x=None, y=None, *, batch_size=128, verbose=0):
        """Nothing to learn (`needs_fit = False`); returns `self` (the contract's `fit`)."""
        return self

    def _get_config(self):
        return {}

    def __repr__(self):
        return f"{type(self).__name__}(model={self.model.name!r})"
