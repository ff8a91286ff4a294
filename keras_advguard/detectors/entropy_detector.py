"""Adversarial-input detector: entropy of guided feature responses (Amirian et al.)."""

import json
import numbers
import os

import numpy as np

from keras_advguard import _fingerprint, _memo, _validation
from keras_advguard.detectors._base import (
    Detector,
    check_calibrated,
    check_fpr,
    fpr_from_fit_arguments,
    iterate_inputs,
    threshold_from_scores,
)

DIRECTIONS = ("higher", "lower")
DEFAULT_FPRS = (0.01, 0.05, 0.1)
_FORMAT = "keras_advguard.EntropyDetector"
_FORMAT_VERSION = 1


def _check_fpr(name, value):
    return check_fpr(value, name)


def _fpr_list(fpr):
    if isinstance(fpr, numbers.Real | np.number) and not isinstance(fpr, bool):
        return [_check_fpr("fpr", fpr)]
    if isinstance(fpr, str | bytes) or not hasattr(fpr, "__iter__"):
        raise TypeError(
            "Argument `fpr` must be a false positive rate in (0, 1) or a list of "
            f"them. Received: fpr={fpr!r} of type {type(fpr).__name__}"
        )
    values = [_check_fpr(f"fpr[{i}]", f) for i, f in enumerate(fpr)]
    if not values:
        raise ValueError("Argument `fpr` must not be an empty list. Received: fpr=[]")
    return values


def _weights_fingerprint(model):
    """SHA-256 of a model's weights (`keras_advguard._fingerprint.weights_fingerprint`)."""
    return _fingerprint.weights_fingerprint(model)


class EntropyDetector(Detector):
    """Flags adversarial inputs by the entropy of their guided feature response.

    Amirian et al. observe that a CNN "looks at" a broader region of an
    adversarial image than of a clean one. The detector measures it:

    1. the feature response `R(x)` by guided backpropagation of the last
       convolutional layer's activations (`feature_response`);
    2. its gray map: `|R|`, channels averaged, min-max scaled per image to
       `levels` integer levels (`response_to_gray`, METHODS.md's
       **(choice)**);
    3. the local spatial entropy of each `patch x patch` window, averaged
       over the image (`entropy_score`);
    4. a threshold on that score, calibrated on **clean** validation inputs
       only (`fit`) for a target false positive rate
       (`metrics.threshold_at_fpr`).

    Which side is adversarial: `direction="higher"` (default) flags scores
    above the threshold, the paper's finding (broader responses, higher
    entropy), which our own runs confirm on MNIST and the digits (FGSM, PGD,
    DeepFool... raise the mean score; see `docs/entropy.md` and the test
    `test_fgsm_raises_the_score_on_digits`). `direction="lower"` flips it.
    `score` is oriented so that higher always means "more adversarial" (the
    convention of `keras_advguard.metrics`): it is the mean entropy, or its
    negative with `direction="lower"`; `mean_entropy` gives the raw value.

    The `Detector` contract: `calibrate(x_clean_validation, fpr)` sets one
    threshold (`threshold_`, `fpr_`, `n_calibration_`); `fit` calibrates
    several at once (`thresholds_`, the paper's 1%, 5% and 10%) and picks
    the operating one; `predict`, `clone`, and `score_tensor` (kind
    `"bpda"`: the exact score, with the gradient of a soft-histogram
    entropy; `differentiable_score` is its former name).

    Saving: `save(path)` writes one archive file (parameters, thresholds,
    the tapped layer's path, a SHA-256 of the model's weights and, with
    `include_model=True`, the model), no pickle.
    `EntropyDetector.load(path, model)` refuses a model whose weights differ
    from those the thresholds were calibrated on. Files written by earlier
    versions (one JSON file) still load, with a `DeprecationWarning`.

    Args:
        model: a built Functional or Sequential `keras.Model` classifier
            (nested models inside are entered). It is not modified.
        layer: the layer whose activations are propagated back (see
            `feature_response`). Defaults to `None`: the last convolutional
            layer, after its ReLU.
        patch: side of the entropy window, >= 1. Defaults to `3` (the
            paper's: the size of the first convolution's filters).
        fpr: the operating false positive rate of `predict` after `fit`, in
            `(0, 1)`. Defaults to `0.05`.
        batch_size: inputs per batch (when a method's `batch_size` is
            `None`). Defaults to `128`.
        levels: number of gray levels, >= 2. Defaults to `256`.
        direction: `"higher"` or `"lower"`: which entropies are adversarial.
            Defaults to `"higher"`.
        verbose: `0` silent, `1` a progress bar over batches (when a
            method's `verbose` is `None`). Defaults to `0`.

    Attributes:
        thresholds_: dict `{fpr: threshold}` calibrated by `fit` (or the one
            of `calibrate`), on the oriented `score`; an input is flagged iff
            `score > threshold`.
        threshold_: the threshold at the operating false positive rate.
        fpr_: that rate.
        layer_path_: the path of the tapped layer (resolved by `fit`).
        n_calibration_: number of clean inputs the thresholds came from.

    Example:

        >>> import keras, numpy as np
        >>> keras.utils.set_random_seed(0)
        >>> model = keras.Sequential([
        ...     keras.Input((8, 8, 1)),
        ...     keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        ...     keras.layers.Flatten(),
        ...     keras.layers.Dense(3, activation="softmax"),
        ... ])
        >>> x_val = np.random.default_rng(0).uniform(size=(40, 8, 8, 1)).astype("float32")
        >>> detector = EntropyDetector(model).fit(x_val)
        >>> sorted(detector.thresholds_)
        [0.01, 0.05, 0.1]
        >>> float(np.mean(detector.predict(x_val))) <= 0.05
        True
        >>> detector.calibrate(x_val, fpr=0.1).fpr_
        0.1

    Reference:
        H. Amirian, A. Hosseini Mehr, F. Marquez, S. Pirk. "Trace and Detect
        Adversarial Attacks on CNNs Using Feature Response Maps", ANNPR 2018.
    """

    supervised = False
    score_tensor_kind = "bpda"
    needs_fit = False

    def __init__(
        self,
        model,
        layer=None,
        patch=3,
        fpr=0.05,
        batch_size=128,
        *,
        levels=256,
        direction="higher",
        verbose=0,
    ):
        self.model = model
        self.layer = layer
        self.patch = patch
        self.fpr = fpr
        self.batch_size = batch_size
        self.levels = levels
        self.direction = direction
        self.verbose = verbose

    # ------------------------------------------------------------------
    # Parameters and the guided model
    # ------------------------------------------------------------------

    def _check_params(self):
        import keras

        _validation.check_type("model", self.model, keras.Model, "a keras.Model")
        _validation.check_positive_int("patch", self.patch)
        _check_fpr("fpr", self.fpr)
        _validation.check_positive_int("batch_size", self.batch_size)
        _validation.check_number("levels", self.levels, min_value=2, integer=True)
        _validation.check_choice("direction", self.direction, DIRECTIONS)
        _validation.check_choice("verbose", self.verbose, (0, 1, 2))

    def _guided(self):
        """The guided model, built once per (model, layer)."""
        from keras_advguard.detectors.feature_response import _GuidedBackprop

        def build():
            self._check_params()
            return _GuidedBackprop(self.model, self.layer)

        return _memo.memo(self, "guided", build, (self.model, self.layer))

    def _compiled_score(self):
        import tensorflow as tf

        from keras_advguard.detectors.local_spatial_entropy import entropy_score

        guided = self._guided()
        patch, levels = self.patch, self.levels

        def score(x):
            return entropy_score(guided(x), patch, levels)

        return _memo.memo(
            self,
            "score_fn",
            lambda: tf.function(score, reduce_retracing=True),
            (guided, patch, levels),
        )

    def _batches(self, x, batch_size=None, verbose=None):
        guided = self._guided()
        input_shape = guided.guided_model.inputs[0].shape
        if len(input_shape) != 4:
            raise ValueError(
                "EntropyDetector needs a model of images (N, H, W, C). Received: "
                f"a model with input shape {tuple(input_shape)}"
            )
        yield from iterate_inputs(
            x,
            input_shape,
            batch_size=self.batch_size if batch_size is None else batch_size,
            verbose=self.verbose if verbose is None else verbose,
        )

    def _sign(self):
        return 1.0 if self.direction == "higher" else -1.0

    # ------------------------------------------------------------------
    # Scores
    # ------------------------------------------------------------------

    def mean_entropy(self, x, *, batch_size=None, verbose=None):
        """Mean local spatial entropy (bits) of each input's feature response.

        Args:
            x: images `(N, H, W, C)` of the model's input shape, or a
                `tf.data.Dataset` of them (or of `(images, labels)` pairs).
            batch_size: inputs per batch. Defaults to `None` (the
                constructor's).
            verbose: `0` silent, `1` a progress bar. Defaults to `None` (the
                constructor's).

        Returns:
            A float64 numpy array `(N,)`.

        Raises:
            ValueError: `x` not of the model's input shape, non-finite
                inputs, or a model without a convolutional layer (and no
                `layer`).
        """
        self._check_params()
        fn = self._compiled_score()
        out = [np.asarray(fn(xb)) for xb in self._batches(x, batch_size, verbose)]
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0,), np.float64)

    def score(self, x, *, batch_size=None, verbose=None):
        """The detector score of each input: higher means more adversarial.

        The mean entropy (`direction="higher"`) or its negative
        (`direction="lower"`), so that `keras_advguard.metrics` functions
        (positive = adversarial, flag iff `score > threshold`) apply as they
        are.

        Args:
            x: images `(N, H, W, C)` or a `tf.data.Dataset` of them (or of
                `(images, labels)` pairs).
            batch_size: inputs per batch. Defaults to `None` (the
                constructor's).
            verbose: `0` silent, `1` a progress bar. Defaults to `None` (the
                constructor's).

        Returns:
            A float64 numpy array `(N,)`.
        """
        return self._sign() * self.mean_entropy(x, batch_size=batch_size, verbose=verbose)

    def feature_response(self, x):
        """Guided feature responses of `x`, float32 `(N, H, W, C)`."""
        self._check_params()
        guided = self._guided()
        out = [np.asarray(guided.compiled()(xb)) for xb in self._batches(x)]
        return np.concatenate(out)

    def gray_maps(self, x):
        """Gray-level maps of the responses of `x` (`response_to_gray`), float32 `(N, H, W)`."""
        from keras_advguard.detectors.local_spatial_entropy import response_to_gray

        self._check_params()
        guided = self._guided()
        out = [
            np.asarray(response_to_gray(guided.compiled()(xb), self.levels))
            for xb in self._batches(x)
        ]
        return np.concatenate(out)

    def entropy_maps(self, x):
        """Local spatial entropy maps of the responses of `x`, float64 `(N, H, W)`."""
        from keras_advguard.detectors.local_spatial_entropy import (
            local_spatial_entropy,
            response_to_gray,
        )

        self._check_params()
        guided = self._guided()
        out = []
        for xb in self._batches(x):
            gray = response_to_gray(guided.compiled()(xb), self.levels)
            out.append(np.asarray(local_spatial_entropy(gray, self.patch)))
        return np.concatenate(out)

    def score_tensor(self, x, *, surrogate_bandwidth=1.0):
        """The oriented score of a batch tensor, with a usable gradient: float32 `(B,)`.

        `score_tensor_kind = "bpda"`: the values are `score(x)`'s (in
        float32), the gradient that of `differentiable_score` (see there).
        """
        import tensorflow as tf

        return tf.cast(self.differentiable_score(x, surrogate_bandwidth), tf.float32)

    def differentiable_score(self, x, surrogate_bandwidth=1.0):
        """The oriented score of a batch tensor, with a usable gradient.

        For adaptive white-box attacks (METHODS.md section 7): the value is
        exactly `score(x)`; the gradient is that of a differentiable stand-in
        (BPDA): identity through the rounding to gray levels and the
        soft-histogram entropy with a Gaussian kernel of width
        `surrogate_bandwidth` gray levels in place of the level counts
        (`entropy_score(..., surrogate_bandwidth=...)`). The feature response
        itself is differentiated exactly (second-order gradients of the
        network through the guided ReLUs).

        Args:
            x: a batch tensor `(B, H, W, C)`.
            surrogate_bandwidth: kernel width in gray levels, > 0.
                Defaults to `1.0`.

        Returns:
            A float64 `tf.Tensor` `(B,)`.
        """
        from keras_advguard.detectors.local_spatial_entropy import entropy_score

        self._check_params()
        response = self._guided()(x)
        value = entropy_score(
            response, self.patch, self.levels, surrogate_bandwidth=surrogate_bandwidth
        )
        return self._sign() * value

    # ------------------------------------------------------------------
    # Calibration and decisions
    # ------------------------------------------------------------------

    def fit(self, x_clean_validation, y=None, *, fpr=None, batch_size=None, verbose=None):
        """Calibrate the thresholds on clean inputs only.

        For each target false positive rate `f`, the threshold is
        `metrics.threshold_at_fpr(score(x_clean_validation), f)`: at most a
        fraction `f` of these clean scores lie above it. Use clean
        **validation** images, never the test images the detector will be
        evaluated on (METHODS.md section 7).

        Args:
            x_clean_validation: clean images `(N, H, W, C)` (or a
                `tf.data.Dataset` of them).
            y: ignored labels (the contract's `fit(x, y)`); a rate or a list
                of rates here is taken as `fpr` (the former second
                positional argument). Defaults to `None`.
            fpr: a false positive rate in `(0, 1)` or a list of them.
                Defaults to `None`: 1%, 5% and 10% (the paper's). The
                operating `fpr` of the constructor is always added.
            batch_size: inputs per batch. Defaults to `None` (the
                constructor's).
            verbose: `0` silent, `1` a progress bar. Defaults to `None` (the
                constructor's).

        Returns:
            `self`, with `thresholds_`, `threshold_` (at the constructor's
            `fpr`), `fpr_` and `n_calibration_` set.

        Raises:
            ValueError: an empty set, a rate outside `(0, 1)`, images not of
                the model's input shape, a model without a convolutional
                layer (and no `layer`).
            TypeError: a rate that is not a number.
        """
        self._check_params()
        fpr = fpr_from_fit_arguments(y, fpr)
        targets = list(DEFAULT_FPRS) if fpr is None else _fpr_list(fpr)
        targets = sorted(set(targets) | {float(self.fpr)})
        scores = self.score(x_clean_validation, batch_size=batch_size, verbose=verbose)
        self.thresholds_ = {f: threshold_from_scores(scores, f) for f in targets}
        self.threshold_ = self.thresholds_[float(self.fpr)]
        self.fpr_ = float(self.fpr)
        self.layer_path_ = self._guided().layer_path
        self.n_calibration_ = int(scores.size)
        return self

    def calibrate(self, x_clean_validation, fpr=0.05, *, batch_size=None, verbose=None):
        """Set the one decision threshold at `fpr` from clean validation inputs.

        The `Detector` contract's calibration (`fit` calibrates several rates
        at once): `threshold_ = metrics.threshold_at_fpr(score(x), fpr)`.

        Args:
            x_clean_validation: clean images (numpy or `tf.data.Dataset`).
            fpr: target false positive rate in `(0, 1)`. Defaults to `0.05`.
            batch_size: inputs per batch. Defaults to `None` (the
                constructor's).
            verbose: `0` silent, `1` a progress bar. Defaults to `None` (the
                constructor's).

        Returns:
            `self`, with `threshold_`, `fpr_`, `n_calibration_` and
            `thresholds_ = {fpr: threshold_}` set.
        """
        self._check_params()
        fpr = check_fpr(fpr)
        scores = self.score(x_clean_validation, batch_size=batch_size, verbose=verbose)
        self._set_threshold(scores, fpr)
        self.thresholds_ = {fpr: self.threshold_}
        self.layer_path_ = self._guided().layer_path
        return self

    def _threshold(self, fpr):
        check_calibrated(self)
        if fpr is None:
            return self.threshold_
        fpr = _check_fpr("fpr", fpr)
        if fpr not in self.thresholds_:
            calibrated = ", ".join(repr(f) for f in self.thresholds_)
            raise ValueError(
                f"No threshold calibrated for fpr={fpr!r}. Calibrated: {calibrated}. "
                "Pass it to `fit(..., fpr=[...])`."
            )
        return self.thresholds_[fpr]

    def predict(self, x, fpr=None, *, batch_size=None, verbose=None):
        """Flag adversarial inputs: `score(x) > threshold`.

        Args:
            x: images `(N, H, W, C)` or a `tf.data.Dataset` of them.
            fpr: which calibrated threshold to use. Defaults to `None`:
                `threshold_` (at `fpr_`).
            batch_size: inputs per batch. Defaults to `None` (the
                constructor's).
            verbose: `0` silent, `1` a progress bar. Defaults to `None` (the
                constructor's).

        Returns:
            A bool numpy array `(N,)`, `True` = adversarial.

        Raises:
            NotFittedError: neither `fit` nor `calibrate` was called.
            ValueError: `fpr` not among the calibrated rates.
        """
        threshold = self._threshold(fpr)
        return self.score(x, batch_size=batch_size, verbose=verbose) > threshold

    # ------------------------------------------------------------------
    # Saving
    # ------------------------------------------------------------------

    def get_config(self):
        """The constructor arguments other than `model`, as JSON types."""
        layer = self.layer
        if layer is not None and not isinstance(layer, str):
            layer = getattr(self, "layer_path_", None)
            if layer is None:
                raise ValueError(
                    "Only a layer name or path can be saved; fit the detector "
                    f"first so the layer is resolved. Received: layer={self.layer!r}"
                )
        return {
            "layer": layer,
            "patch": int(self.patch),
            "fpr": float(self.fpr),
            "batch_size": int(self.batch_size),
            "levels": int(self.levels),
            "direction": self.direction,
            "verbose": int(self.verbose),
        }

    def _get_config(self):
        return self.get_config()

    def _get_state(self):
        if getattr(self, "thresholds_", None) is None:
            return {}, {}
        return {
            "layer_path": self.layer_path_,
            "thresholds": [[f, t] for f, t in sorted(self.thresholds_.items())],
        }, {}

    def _set_state(self, scalars, arrays):
        if "thresholds" in scalars:
            self.thresholds_ = {float(f): float(t) for f, t in scalars["thresholds"]}
            self.layer_path_ = scalars["layer_path"]

    @classmethod
    def _load_legacy(cls, path, model=None, *, check_weights=True):
        """Read the single JSON file of keras_advguard <= 0.1 (deprecated)."""
        with open(os.fspath(path), encoding="utf-8") as f:
            try:
                document = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not a JSON file: {e}") from e
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise ValueError(
                f"{path} is not a saved EntropyDetector (its 'format' is "
                f"{document.get('format') if isinstance(document, dict) else None!r})."
            )
        if document.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{path} has format_version={document.get('format_version')!r}; this "
                f"version of keras_advguard reads {_FORMAT_VERSION}."
            )
        if model is None:
            raise ValueError(
                f"{path} is a legacy EntropyDetector file, saved without its model. Pass `model=`."
            )
        if check_weights:
            expected = document["model"]["weights_sha256"]
            found = _weights_fingerprint(model)
            if found != expected:
                raise ValueError(
                    f"The model's weights (SHA-256 {found}) are not those the "
                    f"detector in {path!r} was fitted on (SHA-256 {expected}, model "
                    f"'{document['model']['name']}'). Pass the same model, or "
                    "`check_weights=False` to use the thresholds anyway."
                )
        config = dict(document["config"])
        config["layer"] = document["fitted"]["layer_path"]
        detector = cls(model, **config)
        fitted = document["fitted"]
        detector.thresholds_ = {float(f): float(t) for f, t in fitted["thresholds"]}
        detector.threshold_ = detector.thresholds_[float(detector.fpr)]
        detector.fpr_ = float(detector.fpr)
        detector.layer_path_ = fitted["layer_path"]
        detector.n_calibration_ = int(fitted["n_calibration"])
        return detector

    def clone(self):
        """A new detector with the same parameters, no thresholds (nothing else is fitted)."""
        return type(self)(
            self.model,
            self.layer,
            self.patch,
            self.fpr,
            self.batch_size,
            levels=self.levels,
            direction=self.direction,
            verbose=self.verbose,
        )

    def __repr__(self):
        return (
            f"{type(self).__name__}(model={self.model.name!r}, layer={self.layer!r}, "
            f"patch={self.patch}, direction={self.direction!r})"
        )
