"""Feature squeezing detectors: output layer (Xu et al.) and internal layers (Jonas & Evans)."""

import json
import os

import numpy as np

from keras_advguard import _plots_squeeze, _validation, metrics
from keras_advguard._files import write_atomic, write_json

SCORES = ("output", "internal")
_FORMAT_VERSION = 1


class FeatureSqueezingDetector:
    """Flag inputs whose prediction or activations move when the input is squeezed.

    The input `x` and its squeezed versions `sq_k(x)` (one per squeezer, e.g.
    `BitDepthSqueezer`, `MedianSmoothingSqueezer`, `NLMeansSqueezer`) go
    through the same classifier, and the score measures how far apart the
    two runs end up:

    - `score="output"` (Xu et al.): the L1 distance of the softmax outputs,
      the largest over the squeezers,

          s(x) = max_k || softmax(z(x)) - softmax(z(sq_k(x))) ||_1     in [0, 2]

      with `z` the classifier's logits (its pre-softmax output, found by
      `DetectorModel`; the softmax is recomputed in float32).
    - `score="internal"` (Jonas & Evans): the cosine distance `1 - cos` of
      the flattened outputs of every activation layer, averaged over the `n`
      layers,

          s_k(x) = (1 / n) sum_l d_cos(g_l(x), g_l(sq_k(x)))           in [0, 2]

      With one squeezer this is Jonas & Evans' score exactly. With several,
      **the largest over the squeezers**, `s(x) = max_k s_k(x)`, the way Xu
      et al. combine squeezers (Jonas & Evans use one squeezer at a time).
      The activation layers are `is_activation_layer` by default (every
      layer whose output went through a non-linearity other than the final
      softmax: `Conv2D(activation="relu")`, `ReLU`, `Activation("relu")`,
      ...; see `keras_advguard._plots_squeeze.is_activation_layer`), or
      whatever `layers=` selects (names, paths, classes, predicates and
      presets, as for `DetectorModel`). They are tapped with
      `DetectorModel(model, layers=..., pooling="flatten")`; `tap_names`
      lists them. Zero activation vectors follow `cosine_distance`'s
      conventions.

    A higher score means "more adversarial". `fit` calibrates the threshold
    on clean validation inputs only (`metrics.threshold_at_fpr`: at most a
    fraction `fpr` of them score above it), and `predict` flags `score >
    threshold_`. `score` needs no fitting.

    The squeezers are applied to the classifier's input, so they must match
    its input range (the squeezers' `value_range`, `[0, 1]` by default).
    Scores are computed batch by batch in one `tf.function`; the
    activations never leave it. Memory: about `batch_size * (K + 1)` times
    the tapped activations of one input (K squeezers), e.g. 100 MB for
    `mnist_cnn` at batch 128; lower `batch_size` for large networks.

    Args:
        model: the classifier, a built Functional or Sequential
            `keras.Model` with one input and one output (a `DetectorModel`'s
            base model is used).
        squeezers: a non-empty list of Keras layers mapping a batch of inputs
            to squeezed inputs of the same shape.
        score: `"output"` or `"internal"`. Defaults to `"output"`. Stored as
            the attribute `score_type` (the name `score` is the method).
        layers: for `score="internal"`, `DetectorModel` selectors of the
            activation layers. Defaults to `None` (`is_activation_layer`).
            Must be `None` for `score="output"`.

    Attributes:
        threshold_: the decision threshold, set by `fit`.
        fpr_: the target false positive rate `fit` was called with.
        n_calibration_: the number of clean inputs the threshold came from.

    Raises:
        TypeError: `model` is not a Keras model, or a squeezer is not a
            Keras layer.
        ValueError: an empty `squeezers` list, an unknown `score`, `layers`
            given with `score="output"`, no activation layer selected for
            `score="internal"`, or a selector that matches no layer.

    Example:

        >>> import keras, numpy as np
        >>> from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer
        >>> model = keras.Sequential([
        ...     keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
        ...     keras.layers.Dense(3, activation="softmax")])
        >>> detector = FeatureSqueezingDetector(model, [BitDepthSqueezer(1)])
        >>> x = np.random.default_rng(0).random((50, 4)).astype("float32")
        >>> detector = detector.fit(x, fpr=0.1)
        >>> float(np.mean(detector.predict(x))) <= 0.1
        True

    Reference:
        W. Xu, D. Evans and Y. Qi, "Feature Squeezing: Detecting
        Adversarial Examples in Deep Neural Networks", NDSS 2018;
        M. A. Jonas and D. Evans, "Enhancing Adversarial Example Defenses
        Using Internal Layers", IEEE S&P 2018 poster.
    """

    def __init__(self, model, squeezers, score="output", layers=None):
        import keras

        from keras_advguard.detector_model import DetectorModel

        if isinstance(model, DetectorModel):
            model = model.base_model
        _validation.check_type("model", model, keras.Model, "a keras.Model")
        if isinstance(squeezers, keras.layers.Layer):
            squeezers = [squeezers]
        _validation.check_type("squeezers", squeezers, (list, tuple), "a list of Keras layers")
        if not squeezers:
            raise ValueError(
                "Argument `squeezers` must hold at least one squeezer layer. "
                f"Received: squeezers={squeezers!r}"
            )
        for i, squeezer in enumerate(squeezers):
            _validation.check_type(f"squeezers[{i}]", squeezer, keras.layers.Layer, "a Keras layer")
        _validation.check_choice("score", score, SCORES)
        if score == "output" and layers is not None:
            raise ValueError(
                "Argument `layers` selects the activation layers of "
                "score='internal'; it must be None for score='output'. "
                f"Received: layers={layers!r}"
            )
        self.model = model
        self.squeezers = list(squeezers)
        self.score_type = score
        self.layers = layers
        if score == "internal":
            selectors = _plots_squeeze.is_activation_layer if layers is None else layers
            self._taps = DetectorModel(model, layers=selectors, pooling="flatten")
            if not self._taps.tap_names:
                raise ValueError(
                    "score='internal' needs at least one activation layer. "
                    f"Received: layers={layers!r}"
                )
        else:
            self._taps = DetectorModel(model)
        self._batch_fn = None

    @property
    def tap_names(self):
        """The activation layers compared (`[]` for the output score)."""
        return list(self._taps.tap_names)

    # ------------------------------------------------------------------
    # Scores

    def _distance(self, reference, squeezed):
        from keras import ops

        if self.score_type == "output":
            p = ops.softmax(ops.cast(reference["logits"], "float32"), axis=-1)
            q = ops.softmax(ops.cast(squeezed["logits"], "float32"), axis=-1)
            return ops.sum(ops.abs(p - q), axis=-1)
        per_layer = [
            _plots_squeeze.cosine_distance(
                reference["activations"][name], squeezed["activations"][name]
            )
            for name in self._taps.tap_names
        ]
        return ops.mean(ops.stack(per_layer, axis=1), axis=1)

    def squeezer_scores_tensor(self, x, *, wrap_squeezer=None):
        """The per-squeezer scores of one batch, as a differentiable tensor.

        For adaptive attacks: the score inside a loss
        (`attacks.pgd_with_loss`). Wrap the non-differentiable squeezers
        with BPDA through `wrap_squeezer`, e.g.
        `lambda s: attacks.bpda(s) if isinstance(s, BitDepthSqueezer) else s`.

        Args:
            x: a batch of inputs (tensor or array) `(B, ...)`.
            wrap_squeezer: optional `squeezer -> callable` applied to each
                squeezer before use. Defaults to `None`.

        Returns:
            A float32 tensor `(B, K)`, column `k` the score with squeezer `k`.
        """
        from keras import ops

        x = ops.cast(x, "float32")
        reference = self._taps(x, training=False)
        columns = []
        for squeezer in self.squeezers:
            fn = squeezer if wrap_squeezer is None else wrap_squeezer(squeezer)
            squeezed = self._taps(fn(x), training=False)
            columns.append(self._distance(reference, squeezed))
        return ops.stack(columns, axis=1)

    def score_tensor(self, x, *, wrap_squeezer=None):
        """`score` of one batch as a differentiable tensor `(B,)`.

        The largest of `squeezer_scores_tensor` over the squeezers; see it
        for the arguments.
        """
        from keras import ops

        return ops.max(self.squeezer_scores_tensor(x, wrap_squeezer=wrap_squeezer), axis=1)

    def squeezer_scores(self, x, *, batch_size=128, verbose=0):
        """The score with each squeezer separately.

        Args:
            x: inputs `(N, ...)` (numpy array).
            batch_size: samples per batch. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A float64 array `(N, K)`: column `k` is the score the detector
            would have with `squeezers[k]` alone; `score(x)` is its row
            maximum.

        Raises:
            ValueError: `x` empty or not at least 2-D.
            TypeError: `x` not numeric.
        """
        import tensorflow as tf

        from keras_advguard import _progress

        x = _validation.check_array("x", x, min_ndim=2, dtype_kind="fiu").astype("float32")
        _validation.check_positive_int("batch_size", batch_size)
        if self._batch_fn is None or self._batch_fn[0] != x.shape[1:]:
            # One trace for every batch size (the last batch is smaller).
            spec = tf.TensorSpec((None,) + x.shape[1:], "float32")
            fn = tf.function(self.squeezer_scores_tensor, input_signature=[spec])
            self._batch_fn = (x.shape[1:], fn)
        batch_fn = self._batch_fn[1]
        parts = []
        bar = _progress.progress_bar(-(-len(x) // batch_size), verbose=verbose)
        for step, start in enumerate(range(0, len(x), batch_size), start=1):
            parts.append(batch_fn(x[start : start + batch_size]).numpy())
            bar.update(step)
        return np.concatenate(parts, axis=0).astype(np.float64)

    def score(self, x, *, batch_size=128, verbose=0):
        """Detection score of each input (higher = more adversarial).

        Args:
            x: inputs `(N, ...)` (numpy array).
            batch_size: samples per batch. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A float64 array `(N,)` in `[0, 2]`.
        """
        return self.squeezer_scores(x, batch_size=batch_size, verbose=verbose).max(axis=1)

    # ------------------------------------------------------------------
    # Threshold

    def fit(self, x_clean_validation, fpr=0.05, *, batch_size=128, verbose=0):
        """Calibrate the threshold on clean validation inputs.

        `threshold_ = metrics.threshold_at_fpr(score(x_clean_validation),
        fpr)`: the smallest threshold that at most a fraction `fpr` of these
        clean inputs score above. Use inputs disjoint from any test set.

        Args:
            x_clean_validation: clean inputs `(N, ...)`.
            fpr: target false positive rate in `[0, 1]`. Defaults to `0.05`.
            batch_size: samples per batch. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            `self`.

        Raises:
            ValueError: empty inputs or `fpr` outside `[0, 1]`.
            TypeError: non-numeric inputs or `fpr`.
        """
        _validation.check_number("fpr", fpr, min_value=0.0, max_value=1.0)
        scores = self.score(x_clean_validation, batch_size=batch_size, verbose=verbose)
        self.threshold_ = float(metrics.threshold_at_fpr(scores, fpr))
        self.fpr_ = float(fpr)
        self.n_calibration_ = int(len(scores))
        return self

    def predict(self, x, *, batch_size=128, verbose=0):
        """Flag adversarial inputs: `1` where `score(x) > threshold_`, else `0`.

        Args:
            x: inputs `(N, ...)`.
            batch_size: samples per batch. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            An int64 array `(N,)` (1 = adversarial).

        Raises:
            NotFittedError: if `fit` has not been called.
        """
        _validation.check_is_fitted(self, "threshold_")
        scores = self.score(x, batch_size=batch_size, verbose=verbose)
        return (scores > self.threshold_).astype(np.int64)

    # ------------------------------------------------------------------
    # Saving

    def get_config(self):
        """The constructor arguments, JSON-serializable (model excluded).

        The squeezers are `keras.saving.serialize_keras_object` dicts; the
        layers are the resolved tap paths (so a predicate is saved as the
        layers it chose), `None` for the output score.
        """
        import keras

        return {
            "squeezers": [keras.saving.serialize_keras_object(s) for s in self.squeezers],
            "score": self.score_type,
            "layers": self.tap_names if self.score_type == "internal" else None,
        }

    def save(self, path, *, include_model=True):
        """Save the detector as JSON, and the classifier beside it as `.keras`.

        Writes `path` (JSON: the config, the fitted threshold if any, and the
        model's file name) and, with `include_model=True`, the classifier to
        the same name with the extension `.keras` (`detector.json` ->
        `detector.keras`). No pickle: the squeezers are Keras configs and the
        model a `.keras` archive, both loaded in Keras' safe mode.

        Args:
            path: the JSON file to write, ending in `.json`.
            include_model: whether to save the classifier too. Without it,
                `load` needs the model passed in. Defaults to `True`.

        Returns:
            The path of the model file written, or `None`.

        Raises:
            ValueError: if `path` does not end in `.json`.
        """
        path = os.fspath(path)
        if not path.endswith(".json"):
            raise ValueError(f"Argument `path` must end in '.json'. Received: path={path!r}")
        model_path = None
        if include_model:
            model_path = path[: -len(".json")] + ".keras"
            write_atomic(model_path, self.model.save, ".keras")
        fitted = None
        if getattr(self, "threshold_", None) is not None:
            fitted = {
                "threshold_": self.threshold_,
                "fpr_": self.fpr_,
                "n_calibration_": self.n_calibration_,
            }
        document = {
            "class_name": type(self).__name__,
            "format_version": _FORMAT_VERSION,
            "config": self.get_config(),
            "model_file": None if model_path is None else os.path.basename(model_path),
            "fitted": fitted,
        }
        write_json(path, document)
        return model_path

    @classmethod
    def load(cls, path, model=None):
        """Load a detector written by `save`.

        Args:
            path: the JSON file.
            model: the classifier to use. Defaults to `None`: the `.keras`
                file named in the JSON, next to it, loaded with
                `keras.models.load_model` (safe mode).

        Returns:
            A `FeatureSqueezingDetector`, fitted if it was when saved.

        Raises:
            ValueError: if the file is not a saved `FeatureSqueezingDetector`,
                or no model is given and none was saved.
        """
        import keras

        # Register the library's squeezer layers before deserializing them.
        import keras_advguard.layers  # noqa: F401
        from keras_advguard.layers import (  # noqa: F401
            bit_depth_squeezer,
            median_smoothing_squeezer,
            nl_means_squeezer,
        )

        path = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
        found = document.get("class_name") if isinstance(document, dict) else None
        if found != cls.__name__:
            raise ValueError(
                f"The file {path!r} does not hold a saved {cls.__name__}. "
                f"Received: class_name={found!r}"
            )
        if document.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"Unsupported {cls.__name__} file format. Expected format_version="
                f"{_FORMAT_VERSION}. Received: format_version={document.get('format_version')!r}"
            )
        if model is None:
            if not document.get("model_file"):
                raise ValueError(
                    f"The file {path!r} was saved without its model "
                    "(include_model=False). Pass `model=`."
                )
            model_path = os.path.join(
                os.path.dirname(os.path.abspath(path)), document["model_file"]
            )
            model = keras.models.load_model(model_path, safe_mode=True)
        config = document["config"]
        squeezers = [
            keras.saving.deserialize_keras_object(s, safe_mode=True) for s in config["squeezers"]
        ]
        detector = cls(model, squeezers, score=config["score"], layers=config["layers"])
        if document.get("fitted"):
            for key, value in document["fitted"].items():
                setattr(detector, key, value)
        return detector

    def __repr__(self):
        names = ", ".join(s.name for s in self.squeezers)
        return (
            f"{type(self).__name__}(model={self.model.name!r}, squeezers=[{names}], "
            f"score={self.score_type!r}, layers={len(self.tap_names)})"
        )
