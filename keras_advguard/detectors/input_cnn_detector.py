"""A small binary CNN on the input image: the baseline detector peer libraries ship."""

import keras
import numpy as np
from keras import ops

from keras_advguard import _validation
from keras_advguard.detectors import _keras_detector

_FIT_DEFAULTS = {"epochs": 10, "batch_size": 64}


def image_classifier_input(model, owner):
    """`(classifier or None, input shape (H, W, C), weights fingerprint or None)` of `model`.

    `model` is the guarded classifier (a built `keras.Model` with one image
    input) or an input shape `(H, W, C)`; `owner` names the detector class
    in error messages.
    """
    classifier, fingerprint = None, None
    if isinstance(model, keras.Model):
        classifier = model
        try:
            input_shape = tuple(model.inputs[0].shape[1:])
        except (AttributeError, IndexError, TypeError, ValueError) as e:
            raise ValueError(
                f"Argument `model` must be a built classifier with one input. "
                f"Received: model={model.name!r} without a defined input"
            ) from e
        fingerprint = _keras_detector.fingerprint(model)
    elif isinstance(model, (tuple, list)):
        input_shape = tuple(model)
    else:
        raise TypeError(
            "Argument `model` must be the classifier (a keras.Model) or an input "
            f"shape (H, W, C). Received: model of type {type(model).__name__}"
        )
    if len(input_shape) != 3 or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in input_shape
    ):
        raise ValueError(
            f"{owner} needs images: an input shape (H, W, C) of positive "
            f"integers. Received: input shape {input_shape}"
        )
    return classifier, input_shape, fingerprint


def check_cnn_arguments(filters, kernel_size, dense_units):
    """Check the small CNN's arguments; return `filters` as a tuple."""
    if isinstance(filters, (int, np.integer)):
        filters = (filters,)
    _validation.check_type("filters", filters, (tuple, list), "a tuple of integers")
    if not filters:
        raise ValueError("Argument `filters` must name at least one block. Received: ()")
    for i, f in enumerate(filters):
        _validation.check_positive_int(f"filters[{i}]", f)
    _validation.check_positive_int("kernel_size", kernel_size)
    _validation.check_positive_int("dense_units", dense_units)
    return tuple(filters)


def cnn_layers(filters, kernel_size, dense_units):
    """`(blocks, flatten, hidden)`: conv + max-pool blocks, then a ReLU dense layer."""
    blocks = []
    for i, f in enumerate(filters):
        conv = keras.layers.Conv2D(
            f, kernel_size, padding="same", activation="relu", name=f"conv{i + 1}"
        )
        blocks.append(conv)
        blocks.append(keras.layers.MaxPooling2D(2, padding="same", name=f"pool{i + 1}"))
    flatten = keras.layers.Flatten(name="flatten")
    hidden = keras.layers.Dense(dense_units, activation="relu", name="hidden")
    return blocks, flatten, hidden


def build_cnn(detector, input_shape):
    """Build `detector.blocks`, `.flatten`, `.hidden` and `.head` for `input_shape`."""
    shape = tuple(input_shape)
    for layer in detector.blocks:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    detector.flatten.build(shape)
    shape = detector.flatten.compute_output_shape(shape)
    detector.hidden.build(shape)
    detector.head.build((None, detector.dense_units))
    detector.built = True


def cnn_features(detector, inputs, training=None):
    """The hidden features of a batch: the blocks, flatten and the dense layer."""
    x = inputs
    for layer in detector.blocks:
        x = layer(x, training=training)
    return detector.hidden(detector.flatten(x), training=training)


@keras.saving.register_keras_serializable(package="keras_advguard")
class InputCNNDetector(_keras_detector.KerasDetector, keras.Model):
    """A small CNN trained to tell adversarial inputs from clean ones.

    The simple baseline every layer-based detector should be compared with:
    it sees only the input image, never the classifier's insides. The network
    is `len(filters)` blocks of `Conv2D(f, kernel_size, "same", relu) ->
    MaxPooling2D(2)`, then `Flatten -> Dense(dense_units, relu) -> Dense(1,
    sigmoid)` (the head in float32, also under mixed precision).

    A `keras.Model` trained with the ordinary `compile`/`fit` on inputs
    labelled `1 = adversarial`; `compile()` without arguments uses Adam,
    binary cross-entropy and an `AUC` metric, and `fit` defaults to
    `epochs=10`, `batch_size=64` (compiling itself when needed). It also
    implements the detector contract (`supervised = True`): `score(x)`
    float `(N,)` in `[0, 1]`, `score_tensor(x)` the same differentiable
    score (`score_tensor_kind = "exact"`), `calibrate`, `predict` (bool
    after `calibrate`; Keras's scores, with a `FutureWarning`, before),
    `clone()` (fresh weights), `save`/`load` (a `.keras` file or the
    detectors' archive, atomic).

    The classifier it guards is not part of the network; only its weights
    fingerprint is kept, so `load(path, model=other)` refuses a classifier
    with other weights.

    Args:
        model: the classifier it guards (a built `keras.Model`; its input
            shape is used), or an input shape `(H, W, C)` (no classifier).
        filters: output channels of the convolution blocks. Defaults to
            `(32, 64)`.
        kernel_size: side of the convolution kernels. Defaults to `3`.
        dense_units: width of the hidden dense layer. Defaults to `128`.
        weights_sha256: the guarded classifier's weights fingerprint. Set
            from `model`; given explicitly only when a config is restored.
            Defaults to `None`.
        **kwargs: `keras.Model` keyword arguments such as `name`.

    Call arguments:
        inputs: a batch of images `(B, H, W, C)`.
        training: Keras's training flag. Defaults to `None`.

    Returns:
        Scores `(B,)` in `[0, 1]`, higher = more likely adversarial.

    Raises:
        TypeError: `model` is neither a Keras model nor a shape.
        ValueError: an input shape that is not `(H, W, C)`, empty `filters`,
            or a non-positive size.

    Example:

        >>> import keras, numpy as np
        >>> from keras_advguard.detectors import InputCNNDetector
        >>> rng = np.random.default_rng(0)
        >>> clean = rng.random((32, 8, 8, 1), dtype=np.float32) * 0.5
        >>> noisy = clean + 0.5
        >>> detector = InputCNNDetector((8, 8, 1), filters=(4,), dense_units=8)
        >>> history = detector.fit(np.concatenate([clean, noisy]),
        ...                        np.r_[np.zeros(32), np.ones(32)], epochs=2, verbose=0)
        >>> detector.score(noisy).shape
        (32,)
        >>> detector.calibrate(clean, fpr=0.1).predict(noisy).dtype
        dtype('bool')
    """

    def __init__(
        self,
        model,
        filters=(32, 64),
        kernel_size=3,
        dense_units=128,
        weights_sha256=None,
        **kwargs,
    ):
        # === Checks ===
        classifier, input_shape, fingerprint = image_classifier_input(model, type(self).__name__)
        weights_sha256 = fingerprint or weights_sha256
        filters = check_cnn_arguments(filters, kernel_size, dense_units)
        if weights_sha256 is not None:
            _validation.check_type("weights_sha256", weights_sha256, str)
        super().__init__(**kwargs)

        # === Layers ===
        self.input_shape_ = tuple(int(d) for d in input_shape)
        self.filters = tuple(int(f) for f in filters)
        self.kernel_size = int(kernel_size)
        self.dense_units = int(dense_units)
        self.weights_sha256 = weights_sha256
        object.__setattr__(self, "_classifier", classifier)  # not a sublayer
        self.blocks, self.flatten, self.hidden = cnn_layers(
            self.filters, self.kernel_size, self.dense_units
        )
        self.head = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="score")

        # === Build now (all shapes are known) ===
        self.build((None,) + self.input_shape_)

    def build(self, input_shape):
        build_cnn(self, input_shape)

    def call(self, inputs, training=None):
        return ops.squeeze(self.head(cnn_features(self, inputs, training)), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    # ------------------------------------------------------------------
    # The detector contract

    @property
    def model(self):
        """The guarded classifier (`None` when built from a shape or loaded without one)."""
        return self._classifier

    def score(self, x, *, batch_size=128, verbose=0):
        """Adversarial scores in `[0, 1]`: float64 `(N,)`, higher = more adversarial.

        Args:
            x: numpy images `(N, H, W, C)` or a `tf.data.Dataset` of images or
                `(images, labels)` pairs (labels ignored). Shape and finite
                values are checked on every batch.
            batch_size: batch size. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A float64 array `(N,)`.
        """
        from keras_advguard.detectors._base import iterate_inputs

        scores = []
        for xb in iterate_inputs(x, self._input_shape(), batch_size=batch_size, verbose=verbose):
            if self.distribute_strategy.num_replicas_in_sync == 1:
                out = self.predict_on_batch(xb)
            else:  # Keras's predict_on_batch runs the whole batch on every replica
                out = keras.Model.predict(self, xb, batch_size=len(xb), verbose=0)
            scores.append(np.asarray(out, dtype=np.float64).reshape(-1))
        return np.concatenate(scores) if scores else np.zeros(0)

    def score_tensor(self, x):
        """The score of a batch as a differentiable float32 tensor `(B,)` (exact)."""
        return ops.cast(self(x, training=False), "float32")

    def _fingerprint_of_fit(self):
        return self.weights_sha256

    def _input_shape(self):
        return (None,) + self.input_shape_

    def _guarded_model(self):
        return self._classifier

    def _clone_fresh(self):
        config = self.get_config()
        config.pop("name", None)
        clone = type(self)(**config)
        object.__setattr__(clone, "_classifier", self._classifier)
        return clone

    def _rebind(self, model):
        """This detector guarding `model` (same weights as the fitted classifier)."""
        object.__setattr__(self, "_classifier", model)
        return self

    # ------------------------------------------------------------------
    # Defaults for compile / fit

    def fit(self, x=None, y=None, batch_size=None, epochs=_FIT_DEFAULTS["epochs"], **kwargs):
        """Train on images labelled `1 = adversarial`, `0 = clean`.

        `keras.Model.fit` with defaults `epochs=10` and, for arrays,
        `batch_size=64`; compiles with `compile()`'s defaults when needed.
        Every other `keras.Model.fit` argument works as usual.

        Args:
            x: images (clean and adversarial), or a dataset of
                `(images, is_adversarial)` pairs. Must be finite.
            y: `(N,)` labels in `[0, 1]` (bool or numbers).
            batch_size: Defaults to `64` for arrays, `None` for datasets.
            epochs: Defaults to `10`.
            **kwargs: passed to `keras.Model.fit`.

        Returns:
            The `History`.

        Raises:
            ValueError: NaN or infinite inputs (also in `validation_data`),
                labels outside `[0, 1]`, `x` and `y` of different lengths.
        """
        return self._checked_fit(x, y, batch_size, epochs, _FIT_DEFAULTS["batch_size"], kwargs)

    # ------------------------------------------------------------------
    # Config

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "model": list(self.input_shape_),
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "dense_units": self.dense_units,
            "weights_sha256": self.weights_sha256,
        }

    def get_build_config(self):
        return None

    def build_from_config(self, config):
        return None
