"""Several detectors of one classifier as one: an input is flagged when any of them flags it."""

import os

import numpy as np

from keras_advguard import _fingerprint
from keras_advguard._validation import NotFittedError
from keras_advguard.detectors._base import (
    Detector,
    check_fpr,
    load_detector,
    threshold_from_scores,
)

_MEMBER = "component_{}.advguard"


class UnionDetector(Detector):
    """Flag an input when any of several detectors of the same classifier flags it.

    A detector trained against its attacker and the confidence of an
    adversarially trained classifier fail on different images; a user
    deploys both and rejects what either rejects. This detector puts that
    rule on the Detector contract, so it is calibrated to one false positive
    rate, saved as one file and attacked as one: an adaptive attacker must
    evade every component at once, through `score_tensor`.

    Each component's score is put on a common scale by two statistics of
    its clean scores, fitted by `fit(x_clean)`: the median `m_i` and the
    anchor `q_i = threshold_from_scores(clean scores, anchor_fpr)` (the
    threshold `calibrate(x_clean, anchor_fpr)` would give that component).
    The union's score is the largest normalized component score:

        s(x) = max_i (s_i(x) - m_i) / (q_i - m_i)

    so `s(x) > 1` iff some component flags `x` at its own threshold for
    `anchor_fpr` on the fitting inputs, and every component's clean median
    sits at 0. `calibrate(x_clean_validation, fpr)` then sets one threshold
    on `s`, i.e. the OR rule with each component at the same tail quantile
    of its clean scores, at the union's false positive rate `fpr` (a union
    of components each at `fpr` would have up to `k * fpr`).

    `score_tensor` is the same maximum of the components' `score_tensor`s:
    `"exact"` when they all are (the maximum is differentiable almost
    everywhere; its gradient is that of the component on top), else
    `"bpda"` or `"surrogate"` as the least exact component.

    The components are used as given: fit (train) them first. `fit` learns
    only the normalization, and `clone()` shares the components (the same
    objects) with a copy of it.

    Args:
        detectors: a list of at least two detectors (objects on the
            Detector contract) guarding the same classifier (the same model,
            or models with the same weights).
        anchor_fpr: the clean tail rate the components are normalized at, in
            `(0, 1)`. Defaults to `0.05`.

    Attributes:
        detectors: the components, in the order given.
        model: the classifier they guard (the first component's).
        centers_: `(k,)` float64, the components' clean medians `m_i`.
        scales_: `(k,)` float64, `q_i - m_i` (positive).
        threshold_, fpr_, n_calibration_: set by `calibrate`.

    Example:

        >>> import keras, numpy as np
        >>> from keras_advguard.detectors import KNNDetector, MaxSoftmaxDetector
        >>> keras.utils.set_random_seed(0)
        >>> model = keras.Sequential(
        ...     [keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="h"),
        ...      keras.layers.Dense(3)])
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.random((200, 4)).astype("float32"), rng.integers(0, 3, 200)
        >>> knn = KNNDetector(model, "h", n_neighbors=5).fit(x[:100], y[:100])
        >>> union = UnionDetector([MaxSoftmaxDetector(model), knn]).fit(x[100:150])
        >>> union = union.calibrate(x[150:], fpr=0.1)
        >>> union.score(x[:3]).shape
        (3,)
        >>> float(union.predict(x[150:]).mean()) <= 0.1
        True
    """

    supervised = False
    needs_fit = True

    def __init__(self, detectors, *, anchor_fpr=0.05):
        if isinstance(detectors, Detector) or not isinstance(detectors, list | tuple):
            raise TypeError(
                "Argument `detectors` must be a list of at least two detectors. "
                f"Received: detectors of type {type(detectors).__name__}"
            )
        detectors = list(detectors)
        if len(detectors) < 2:
            raise ValueError(
                "Argument `detectors` must hold at least two detectors (one detector "
                f"needs no union). Received: {len(detectors)}"
            )
        for i, detector in enumerate(detectors):
            if not isinstance(detector, Detector):
                raise TypeError(
                    f"Each entry of `detectors` must be a keras_advguard detector. "
                    f"Received: detectors[{i}] of type {type(detector).__name__}"
                )
            if detector._guarded_model() is None:
                raise ValueError(
                    f"Each detector of a union must guard a classifier (`model`). "
                    f"Received: detectors[{i}] = {type(detector).__name__} without one"
                )
        self.model = _fingerprint.unwrap_model(detectors[0]._guarded_model())
        reference = None
        for i, detector in enumerate(detectors[1:], start=1):
            other = _fingerprint.unwrap_model(detector._guarded_model())
            if other is self.model:
                continue
            reference = reference or _fingerprint.weights_fingerprint(self.model)
            if _fingerprint.weights_fingerprint(other) != reference:
                raise ValueError(
                    "All detectors of a union must guard the same classifier. "
                    f"Received: detectors[{i}] ({type(detector).__name__}) guards "
                    f"{other.name!r}, whose weights differ from those of "
                    f"detectors[0]'s {self.model.name!r}"
                )
        self.detectors = detectors
        self.anchor_fpr = check_fpr(anchor_fpr, "anchor_fpr")
        # The least exact component decides: a surrogate anywhere makes the
        # maximum a surrogate; else a BPDA component makes it BPDA.
        kinds = {d.score_tensor_kind for d in detectors}
        self.score_tensor_kind = next((k for k in ("surrogate", "bpda") if k in kinds), "exact")

    # --- fitting the normalization --------------------------------------

    def fit(self, x_clean, y=None, *, batch_size=128, verbose=0):
        """Fit each component's clean median and anchor on clean inputs.

        Use clean inputs the components were not trained on (a trained
        detector scores its own training images lower than new ones). Labels
        are ignored (the contract's `fit(x, y)`); the components are not
        refitted.

        Args:
            x_clean: clean inputs, numpy or a `tf.data.Dataset`.
            y: ignored. Defaults to `None`.
            batch_size: inputs per batch. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar per component.

        Returns:
            `self`, with `centers_` and `scales_` set and no threshold.

        Raises:
            ValueError: no inputs, non-finite inputs, or a component whose
                clean scores do not rise from their median to the anchor
                (a constant score cannot be put on the common scale).
        """
        del y
        centers, scales = [], []
        for i, detector in enumerate(self.detectors):
            scores = detector.score(x_clean, batch_size=batch_size, verbose=verbose)
            anchor = threshold_from_scores(scores, self.anchor_fpr, name="x_clean")
            center = float(np.median(scores))
            if not anchor > center:
                raise ValueError(
                    f"The clean scores of detectors[{i}] ({type(detector).__name__}) "
                    f"do not rise from their median ({center:.6g}) to their "
                    f"(1 - anchor_fpr) quantile ({anchor:.6g}): the component cannot "
                    "be put on the common scale. Fit it first, use more clean inputs "
                    f"or another `anchor_fpr`. Received: anchor_fpr={self.anchor_fpr}"
                )
            centers.append(center)
            scales.append(anchor - center)
        self.centers_ = np.asarray(centers, np.float64)
        self.scales_ = np.asarray(scales, np.float64)
        self._clear_threshold()
        return self

    def _check_fitted(self):
        if getattr(self, "centers_", None) is None:
            raise NotFittedError(
                "This UnionDetector instance is not fitted yet. Call "
                "`fit(x_clean)` (clean inputs) before scoring."
            )

    def _normalized(self, raw):
        """Raw component scores `(N, k)` on the common scale: `(raw - m) / (q - m)`."""
        self._check_fitted()
        raw = np.asarray(raw, np.float64).reshape(-1, len(self.detectors))
        return (raw - self.centers_) / self.scales_

    # --- scores ---------------------------------------------------------

    def component_scores(self, x, *, batch_size=128, verbose=0):
        """Each component's normalized score `(s_i(x) - m_i) / (q_i - m_i)`: `(N, k)` float64.

        The union's score is their maximum over the last axis; the argmax
        says which component decided.
        """
        self._check_fitted()
        columns = [
            np.asarray(d.score(x, batch_size=batch_size, verbose=verbose), np.float64)
            for d in self.detectors
        ]
        return self._normalized(np.stack(columns, axis=1))

    def score(self, x, *, batch_size=128, verbose=0):
        """The union's scores `max_i (s_i(x) - m_i) / (q_i - m_i)`: float64 `(N,)`.

        Raises:
            NotFittedError: `fit` was not called.
            ValueError: inputs of another shape than the model's, or
                non-finite inputs.
        """
        normalized = self.component_scores(x, batch_size=batch_size, verbose=verbose)
        return normalized.max(axis=1)

    def score_tensor(self, x):
        """The same maximum of the components' `score_tensor`s: float32 `(B,)`."""
        from keras import ops

        self._check_fitted()
        columns = [
            (ops.cast(d.score_tensor(x), "float32") - float(m)) / float(s)
            for d, m, s in zip(self.detectors, self.centers_, self.scales_, strict=True)
        ]
        return ops.max(ops.stack(columns, axis=1), axis=1)

    # --- scoring from a shared activation pass ---------------------------

    def tap_request(self):
        """The union of the components' taps, when they all score from one pass.

        `None` when a component needs passes of its own, or when components
        with layers ask for different poolings (the shared pass pools once
        per detector).
        """
        requests = [d.tap_request() for d in self.detectors]
        if any(r is None for r in requests):
            return None
        poolings = {r.get("pooling") for r in requests if r.get("layers")}
        if len(poolings) > 1:
            return None
        layers = []
        for request in requests:
            layers.extend(p for p in request.get("layers") or [] if p not in layers)
        return {"layers": layers, "pooling": poolings.pop() if poolings else None}

    def features_from_taps(self, collected):
        """The components' raw scores `(B, k)` from one batch of a shared pass."""
        columns = [
            np.asarray(d.score_features(d.features_from_taps(collected)), np.float64).reshape(-1)
            for d in self.detectors
        ]
        return np.stack(columns, axis=1)

    def score_features(self, features):
        """The union's scores from `features_from_taps` outputs: the normalized maximum."""
        return self._normalized(features).max(axis=1)

    # --- state ----------------------------------------------------------

    def _get_config(self):
        return {
            "anchor_fpr": self.anchor_fpr,
            "components": [type(d).__name__ for d in self.detectors],
        }

    def _get_state(self):
        if getattr(self, "centers_", None) is None:
            return {}, {}
        return {}, {"centers": self.centers_, "scales": self.scales_}

    def _set_state(self, scalars, arrays):
        if "centers" in arrays:
            self.centers_ = np.asarray(arrays["centers"], np.float64)
            self.scales_ = np.asarray(arrays["scales"], np.float64)

    def _write_members(self, folder):
        for i, detector in enumerate(self.detectors):
            detector.save(os.path.join(folder, _MEMBER.format(i)), include_model=False)

    @classmethod
    def _from_saved(cls, model, config, folder=None):
        names = config.pop("components", None)
        if not isinstance(names, list) or folder is None:
            raise ValueError("The union's saved configuration does not list its components.")
        detectors = []
        for i, name in enumerate(names):
            member = os.path.join(folder, _MEMBER.format(i))
            if not os.path.exists(member):
                raise ValueError(f"The union's archive lacks its component {i} ({name}).")
            detectors.append(load_detector(member, model))
        return cls(detectors, **config)

    def clone(self):
        """The same components (shared, not copied) and normalization, no threshold."""
        clone = type(self)(self.detectors, anchor_fpr=self.anchor_fpr)
        scalars, arrays = self._get_state()
        clone._set_state(scalars, {k: np.array(v, copy=True) for k, v in arrays.items()})
        return clone

    def __repr__(self):
        names = ", ".join(type(d).__name__ for d in self.detectors)
        return f"{type(self).__name__}([{names}], anchor_fpr={self.anchor_fpr})"
