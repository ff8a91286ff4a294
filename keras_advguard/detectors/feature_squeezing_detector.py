"""Feature squeezing detectors: output layer (Xu et al.) and internal layers (Jonas & Evans)."""

import os

import numpy as np

from keras_advguard import _activations, _fingerprint, _memo, _validation
from keras_advguard.detectors._base import (
    Detector,
    fpr_from_fit_arguments,
    iterate_inputs,
    read_legacy_document,
)

SCORES = ("output", "internal")
_FORMAT_VERSION = 1


class FeatureSqueezingDetector(Detector):
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
      ...; see `keras_advguard._activations.is_activation_layer`), or
      whatever `layers=` selects (names, paths, classes, predicates and
      presets, as for `DetectorModel`). They are tapped with
      `DetectorModel(model, layers=..., pooling="flatten")`; `tap_names`
      lists them. Zero activation vectors follow `cosine_distance`'s
      conventions.

    A higher score means "more adversarial". `calibrate` (or its former
    name `fit`) sets the threshold on clean validation inputs only
    (`metrics.threshold_at_fpr`: at most a fraction `fpr` of them score
    above it), and `predict` flags `score > threshold_`. `score` needs no
    fitting. The `Detector` contract: `score` and `predict` take numpy or
    `tf.data` input, `clone`, and `save`/`load` (one archive file, refusing
    a classifier with other weights). `score_tensor` is of kind `"bpda"`:
    the exact score, with every squeezer differentiated as the identity
    (BPDA, Athalye et al.), as adaptive attacks on feature squeezing do;
    `score_tensor(x, wrap_squeezer=None)` keeps the squeezers' own
    gradients.

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
        threshold_: the decision threshold, set by `calibrate`.
        fpr_: the target false positive rate `calibrate` was called with.
        n_calibration_: the number of clean inputs the threshold came from.

    Raises:
        TypeError: `model` is not a Keras model, or a squeezer is not a
            Keras layer.
        ValueError: an empty `squeezers` list, an unknown `score`, `layers`
            given with `score="output"`, no activation layer selected for
            `score="internal"`, a selector that matches no layer, or a
            squeezer with weights (or that creates some when built, e.g.
            `keras.layers.Dense`): squeezers must be stateless.

    Example:

        >>> import keras, numpy as np
        >>> from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer
        >>> model = keras.Sequential([
        ...     keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
        ...     keras.layers.Dense(3, activation="softmax")])
        >>> detector = FeatureSqueezingDetector(model, [BitDepthSqueezer(1)])
        >>> x = np.random.default_rng(0).random((50, 4)).astype("float32")
        >>> detector = detector.calibrate(x, fpr=0.1)
        >>> float(np.mean(detector.predict(x))) <= 0.1
        True

    Reference:
        W. Xu, D. Evans and Y. Qi, "Feature Squeezing: Detecting
        Adversarial Examples in Deep Neural Networks", NDSS 2018;
        M. A. Jonas and D. Evans, "Enhancing Adversarial Example Defenses
        Using Internal Layers", IEEE S&P 2018 poster.
    """

    supervised = False
    score_tensor_kind = "bpda"
    needs_fit = False

    def __init__(self, model, squeezers, score="output", layers=None):
        import keras

        from keras_advguard.detector_model import DetectorModel
        from keras_advguard.layers import _stateless

        model = _fingerprint.unwrap_model(model)
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
            # Re-created from its config on load: a layer with weights would
            # come back with fresh random ones.
            _stateless.check_stateless(f"squeezers[{i}]", squeezer, model.inputs[0].shape)
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
            selectors = _activations.is_activation_layer if layers is None else layers
            self._taps = DetectorModel(model, layers=selectors, pooling="flatten")
            if not self._taps.tap_names:
                raise ValueError(
                    "score='internal' needs at least one activation layer. "
                    f"Received: layers={layers!r}"
                )
        else:
            self._taps = DetectorModel(model)

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
            _activations.cosine_distance(
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

    def score_tensor(self, x, *, wrap_squeezer="bpda"):
        """`score` of one batch as a differentiable tensor: float32 `(B,)`.

        The largest of `squeezer_scores_tensor` over the squeezers.

        Args:
            x: a batch of inputs (tensor or array) `(B, ...)`.
            wrap_squeezer: `"bpda"` (every squeezer passes the gradient as
                the identity: `attacks.bpda`), `None` (the squeezers' own
                gradients, zero through a quantisation), or a callable
                `squeezer -> callable`. Defaults to `"bpda"`.

        Returns:
            A float32 tensor `(B,)`; its values are `score(x)`'s.
        """
        from keras import ops

        if isinstance(wrap_squeezer, str):
            _validation.check_choice("wrap_squeezer", wrap_squeezer, ("bpda",))
            from keras_advguard.attacks.bpda import bpda

            wrap_squeezer = bpda
        return ops.max(self.squeezer_scores_tensor(x, wrap_squeezer=wrap_squeezer), axis=1)

    def squeezer_scores(self, x, *, batch_size=128, verbose=0):
        """The score with each squeezer separately.

        Args:
            x: inputs `(N, ...)` of the model's input shape (numpy), or a
                `tf.data.Dataset` of inputs or `(inputs, labels)` pairs.
            batch_size: samples per batch. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A float64 array `(N, K)`: column `k` is the score the detector
            would have with `squeezers[k]` alone; `score(x)` is its row
            maximum.

        Raises:
            ValueError: inputs of another shape than the model's, or
                non-finite inputs.
            TypeError: `x` not numeric.
        """
        input_shape = tuple(self.model.inputs[0].shape)
        batch_fn = _memo.batch_function(
            self, "scores_fn", self.squeezer_scores_tensor, input_shape, (self.model,)
        )
        parts = [
            batch_fn(xb).numpy()
            for xb in iterate_inputs(x, input_shape, batch_size=batch_size, verbose=verbose)
        ]
        if not parts:
            return np.zeros((0, len(self.squeezers)), np.float64)
        return np.concatenate(parts, axis=0).astype(np.float64)

    def score(self, x, *, batch_size=128, verbose=0):
        """Detection score of each input (higher = more adversarial).

        Args:
            x: inputs `(N, ...)` (numpy), or a `tf.data.Dataset` of inputs
                or `(inputs, labels)` pairs.
            batch_size: samples per batch. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A float64 array `(N,)` in `[0, 2]`.
        """
        return self.squeezer_scores(x, batch_size=batch_size, verbose=verbose).max(axis=1)

    # ------------------------------------------------------------------
    # Threshold

    def fit(self, x_clean_validation, y=None, *, fpr=None, batch_size=128, verbose=0):
        """Former name of `calibrate` (kept working): set the threshold on clean inputs.

        Nothing else is learned (`needs_fit = False`).

        Args:
            x_clean_validation: clean inputs (numpy or `tf.data.Dataset`).
            y: ignored labels (the contract's `fit(x, y)`); a number here is
                taken as `fpr` (the former second positional argument).
                Defaults to `None`.
            fpr: target false positive rate in `(0, 1)`. Defaults to `None`
                (`0.05`).
            batch_size: samples per batch. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            `self`.
        """
        fpr = fpr_from_fit_arguments(y, fpr)
        return self.calibrate(
            x_clean_validation,
            0.05 if fpr is None else fpr,
            batch_size=batch_size,
            verbose=verbose,
        )

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

    def _get_config(self):
        return self.get_config()

    @classmethod
    def _from_saved(cls, model, config, folder=None):
        import keras

        # Register the library's squeezer layers before deserializing them.
        import keras_advguard.layers  # noqa: F401

        if model is None:
            raise ValueError(
                "A FeatureSqueezingDetector needs its classifier: pass `model=`. "
                "Received: model=None"
            )
        squeezers = [
            keras.saving.deserialize_keras_object(s, safe_mode=True) for s in config["squeezers"]
        ]
        return cls(model, squeezers, score=config["score"], layers=config["layers"])

    @classmethod
    def _load_legacy(cls, path, model=None, *, check_weights=True):
        """Read the JSON (+ `.keras`) files of keras_advguard <= 0.1 (deprecated)."""
        import keras

        document = read_legacy_document(path, cls.__name__, _FORMAT_VERSION)
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
        detector = cls._from_saved(model, document["config"])
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
