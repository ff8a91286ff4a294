"""The distance-space LSTM detector of Caldelli et al.: taps -> medoid distances -> LSTM."""

import keras
import numpy as np
from keras import ops

from keras_advguard import _batching, _validation
from keras_advguard.detector_model import DetectorModel, as_detector_model
from keras_advguard.detectors import _keras_detector
from keras_advguard.detectors.class_medoids import ClassMedoids
from keras_advguard.layers.medoid_distance import MedoidDistance

_FIT_DEFAULTS = {"epochs": 100, "batch_size": 100}


@keras.saving.register_keras_serializable(package="keras_advguard")
class MedoidLSTMDetector(_keras_detector.KerasDetector, keras.Model):
    """Detect adversarial inputs from their distances to class medoids, layer by layer.

    One Keras model, input image -> score in `[0, 1]` (1 = adversarial):

    1. `detector_model` (a `DetectorModel`) taps `L` layers of the frozen
       classifier, each pooled to a vector `a_l(x)`;
    2. `distance` (a `MedoidDistance` layer holding the class medoids
       `R_c^l`) turns them into the sequence
       `F[l, c] = || a_l(x) - R_c^l ||_2` of `L` steps x `C` features,
       optionally standardized per layer;
    3. `LSTM(lstm_units)` reads the `L` steps; its last hidden state goes to
       `Dense(1, activation="sigmoid")`.

    Only the LSTM and the dense head are trainable: the classifier is
    always run in inference mode (`training=False`, so its dropout and batch
    normalization never switch to training behaviour) and its weights are
    frozen (`detector_model.trainable = False`). The classifier's layers are
    shared, not copied, so they are frozen in the classifier object too; set
    `classifier.trainable = True` to fine-tune it again later.

    The paper's training setup is the default: `compile()` without arguments
    uses Adam, binary cross-entropy and an `AUC` metric, and `fit` defaults
    to `epochs=100` and `batch_size=100` (compiling with those defaults when
    `compile` was never called). Train it like any Keras model, on *inputs*
    (clean and adversarial images) and their labels `1 = adversarial`;
    `validation_data`, callbacks and `tf.data` datasets work as usual;
    non-finite images are refused with a `ValueError`.

    The detector contract (`keras_advguard.detectors.Detector`,
    `supervised = True`): `score(x)` gives the scores, float `(N,)`, from one
    shared activation pass (`DetectorModel.collect`); `score_tensor(x)` the
    same score as a differentiable tensor (`score_tensor_kind = "exact"`);
    `calibrate(x_clean_validation, fpr)` sets `threshold_`; `clone()` keeps
    the taps, medoids and standardization with a fresh LSTM and head.
    Keras's `predict` and the contract's coexist: after `calibrate`,
    `predict(x)` returns the contract's bool decisions `score(x) >
    threshold_`; before it, Keras's scores (with a `FutureWarning`: use
    `score`). `save("detector.keras")` writes a Keras file (loads with
    `keras.models.load_model` in safe mode; what `ModelCheckpoint` needs),
    any other name the archive every detector writes (`load_detector`);
    both are atomic, keep the threshold, and `load(path, model=...)` refuses
    a classifier whose weights differ from the detector's.

    Build one with `from_training_data` (medoids from the classifier's
    training set) or `from_medoids` (medoids already fitted with
    `ClassMedoids`); the constructor takes the two parts directly.

    Args:
        detector_model: a `DetectorModel` tapping the layers the medoids were
            computed on, in the same order (`detector_model.tap_names ==
            distance.tap_names`), or a plain classifier `keras.Model`, then
            wrapped as `DetectorModel(model, layers=distance.tap_names)`
            (global average pooling).
        distance: a `MedoidDistance` layer holding the medoids (and the
            standardization statistics when `distance.standardize`).
        lstm_units: width of the LSTM. Defaults to `100` (the paper).
        **kwargs: `keras.Model` keyword arguments such as `name`.

    Call arguments:
        inputs: a batch of classifier inputs `(B, ...)`.
        training: whether the LSTM runs in training mode (the classifier
            never does). Defaults to `None`.

    Returns:
        Scores `(B,)` in `[0, 1]`, higher = more likely adversarial.

    Raises:
        TypeError: `distance` is not a `MedoidDistance`, or
            `detector_model` not a Keras model.
        ValueError: taps that do not match the medoids (names, number or
            widths), or `lstm_units < 1`.

    Example:

        >>> import keras, numpy as np
        >>> from keras_advguard.detectors.medoid_lstm_detector import MedoidLSTMDetector
        >>> keras.utils.set_random_seed(0)
        >>> classifier = keras.Sequential([
        ...     keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="fc1"),
        ...     keras.layers.Dense(3, activation="softmax", name="out")])
        >>> x = np.random.default_rng(0).random((60, 6)).astype("float32")
        >>> y = np.arange(60) % 3
        >>> detector = MedoidLSTMDetector.from_training_data(
        ...     classifier, x, y, layers=["fc1", "out"], lstm_units=4)
        >>> detector.tap_names, detector.num_classes
        (['fc1', 'out'], 3)
        >>> history = detector.fit(x, y == 0, epochs=1, verbose=0)
        >>> detector.score(x[:5]).shape
        (5,)
        >>> detector.calibrate(x[y != 0], fpr=0.1).predict(x[:5]).dtype
        dtype('bool')

    Reference:
        R. Caldelli, R. Becarelli, F. Carrara, F. Falchi, G. Amato.
        "Exploiting CNN Layer Activations to Improve Adversarial Image
        Classification", ICIP 2019.
    """

    def __init__(self, detector_model, distance, lstm_units=100, **kwargs):
        # === Checks ===
        if isinstance(detector_model, dict):
            detector_model = keras.saving.deserialize_keras_object(detector_model)
        if isinstance(distance, dict):
            distance = keras.saving.deserialize_keras_object(distance)
        _validation.check_type(
            "distance", distance, MedoidDistance, "a keras_advguard MedoidDistance layer"
        )
        _validation.check_type(
            "detector_model", detector_model, keras.Model, "a DetectorModel or a keras.Model"
        )
        _validation.check_positive_int("lstm_units", lstm_units)
        if not isinstance(detector_model, DetectorModel):
            if distance.tap_names is None:
                raise ValueError(
                    "A plain classifier needs `distance.tap_names` to know which "
                    "layers to tap; pass a DetectorModel or a MedoidDistance built "
                    "with `tap_names`. Received: distance.tap_names=None"
                )
            detector_model = DetectorModel(detector_model, layers=distance.tap_names)
        _check_taps(detector_model, distance)
        super().__init__(**kwargs)

        # === Layers ===
        detector_model.trainable = False
        self.detector_model = detector_model
        self.distance = distance
        self.lstm_units = int(lstm_units)
        self.lstm = keras.layers.LSTM(self.lstm_units, name="lstm")
        self.head = keras.layers.Dense(1, activation="sigmoid", name="score")

        # === Build now (all shapes are known) ===
        self.lstm.build((None, distance.num_layers, distance.num_classes))
        self.head.build((None, self.lstm_units))
        self.built = True

    # ------------------------------------------------------------------
    # Construction helpers

    @classmethod
    def from_medoids(
        cls,
        model,
        medoids,
        *,
        pooling="avg",
        standardize=False,
        standardization_data=None,
        batch_size=128,
        lstm_units=100,
        **kwargs,
    ):
        """Build a detector from medoids fitted beforehand.

        Args:
            model: the classifier (`keras.Model`), or a `DetectorModel`
                whose taps are the medoids' layers.
            medoids: a fitted `ClassMedoids` or a dict
                `{tap_name: array (C, N_l)}`; its keys name the tapped layers.
            pooling: pooling of the taps when `model` is a plain classifier;
                must be the pooling the medoids were computed with. Defaults
                to `"avg"`.
            standardize: whether to standardize each layer's distances.
                Defaults to `False`.
            standardization_data: classifier inputs (numpy or `tf.data`) the
                per-layer statistics are fitted on, normally the training set
                the medoids came from; required when `standardize=True`.
                Defaults to `None`.
            batch_size: batch size of the activations pass. Defaults to `128`.
            lstm_units: width of the LSTM. Defaults to `100`.
            **kwargs: `keras.Model` keyword arguments such as `name`.

        Returns:
            A `MedoidLSTMDetector` (untrained LSTM).

        Raises:
            ValueError: medoids whose keys are not layer names, layers
                missing from `model`, or `standardize=True` without data.
        """
        _validation.check_type("standardize", standardize, (bool, np.bool_))
        arrays = medoids.medoids_ if isinstance(medoids, ClassMedoids) else medoids
        if isinstance(medoids, ClassMedoids):
            _validation.check_is_fitted(medoids, "medoids_")
        if not isinstance(arrays, dict) or not all(isinstance(k, str) for k in arrays):
            keys = list(arrays)[:10] if isinstance(arrays, dict) else None
            raise ValueError(
                "Argument `medoids` must be keyed by the tapped layers' names (a "
                "ClassMedoids fitted on `DetectorModel.activations` or a dict "
                f"{{tap_name: array}}). Received: {type(arrays).__name__} with keys {keys}"
            )
        detector_model = as_detector_model(model, layers=list(arrays), pooling=pooling)
        names = list(detector_model.tap_names)
        missing = [name for name in arrays if name not in names]
        if missing or len(names) != len(arrays):
            raise ValueError(
                f"The medoids' layers must be the tapped layers. Taps: {names}. "
                f"Received: medoids for {list(arrays)}"
            )
        ordered = {name: arrays[name] for name in names}
        distance = MedoidDistance.from_medoids(ordered, standardize=bool(standardize))
        if standardize:
            if standardization_data is None:
                raise ValueError(
                    "`standardize=True` needs `standardization_data` (the training "
                    "inputs) to fit the per-layer statistics. Received: "
                    "standardization_data=None"
                )
            collected = detector_model.collect(standardization_data, batch_size=batch_size)
            if len(collected["predicted_class"]) == 0:
                raise ValueError(
                    "Argument `standardization_data` must not be empty. Received: "
                    "standardization_data with 0 inputs"
                )
            distance.adapt(_in_tap_order(detector_model, collected))
        return cls(detector_model, distance, lstm_units=lstm_units, **kwargs)

    @classmethod
    def from_training_data(
        cls,
        model,
        x,
        y=None,
        *,
        layers="conv+dense",
        pooling="avg",
        standardize=False,
        only_correct=False,
        max_samples_per_class=None,
        seed=0,
        batch_size=128,
        lstm_units=100,
        verbose=0,
        **kwargs,
    ):
        """Tap `model`, fit the class medoids on its training data, build the detector.

        Runs the classifier once over `x`, computes the exact L2 medoid of
        every class at every tapped layer (`ClassMedoids`) and, with
        `standardize=True`, fits the per-layer statistics of the distances
        on the same activations.

        Args:
            model: the classifier (`keras.Model`); a `DetectorModel` is used
                as it is (its taps and pooling win over `layers`/`pooling`).
            x: training inputs (numpy), or a `tf.data.Dataset` of
                `(inputs, labels)` pairs.
            y: training labels (int `(N,)` or one-hot) for a numpy `x`;
                `None` for a dataset. Defaults to `None`.
            layers: `DetectorModel` selectors of the tapped layers. Defaults
                to `"conv+dense"` (every convolution and dense layer).
            pooling: pooling of 4-D maps. Defaults to `"avg"` (the paper's
                global average pooling).
            standardize: whether to standardize each layer's distances.
                Defaults to `False`.
            only_correct: medoids from the correctly classified samples only.
                Defaults to `False` (ground-truth labels).
            max_samples_per_class: cap (random subset, approximate medoid).
                Defaults to `None`.
            seed: seed of that subset. Defaults to `0`.
            batch_size: batch size of the activations pass. Defaults to `128`.
            lstm_units: width of the LSTM. Defaults to `100`.
            verbose: `0` silent, `1` progress bars. Defaults to `0`.
            **kwargs: `keras.Model` keyword arguments such as `name`.

        Returns:
            A `MedoidLSTMDetector` (untrained LSTM).

        Raises:
            ValueError: missing labels, a class without samples, and every
                error of `DetectorModel` and `ClassMedoids.fit`.
        """
        _validation.check_type("standardize", standardize, (bool, np.bool_))
        detector_model = as_detector_model(model, layers=layers, pooling=pooling)
        if not detector_model.tap_names:
            raise ValueError(
                f"The detector needs at least one tapped layer. Received: layers={layers!r}"
            )
        if _batching.is_tf_dataset(x):
            if y is not None:
                raise ValueError(
                    "For a tf.data.Dataset the labels come from its (x, y) pairs; "
                    f"`y` must be None. Received: y of type {type(y).__name__}"
                )
        elif y is None:
            raise ValueError("Labels `y` are required for array inputs. Received: y=None")
        collected = detector_model.collect(x, batch_size=batch_size, verbose=verbose)
        if len(collected["predicted_class"]) == 0:
            raise ValueError("Argument `x` must not be empty. Received: x with 0 inputs")
        activations = _in_tap_order(detector_model, collected)
        predictions = collected["prediction"]
        labels = collected["labels"]
        if labels is None:
            labels = np.asarray(y)
            _validation.check_same_length("x", predictions, "y", labels)
        medoids = ClassMedoids(
            num_classes=int(predictions.shape[-1]),
            only_correct=only_correct,
            max_samples_per_class=max_samples_per_class,
            seed=seed,
            verbose=verbose,
        ).fit(activations, labels, predictions=collected["predicted_class"])
        distance = MedoidDistance.from_medoids(medoids, standardize=bool(standardize))
        if standardize:
            distance.adapt(activations)
        return cls(detector_model, distance, lstm_units=lstm_units, **kwargs)

    # ------------------------------------------------------------------
    # Forward passes

    @property
    def tap_names(self):
        """The tapped layers, in the order of the LSTM's steps."""
        return list(self.detector_model.tap_names)

    @property
    def num_classes(self):
        """`C`, the number of medoids per layer (features per step)."""
        return self.distance.num_classes

    @property
    def base_model(self):
        """The (frozen) classifier."""
        return self.detector_model.base_model

    @property
    def model(self):
        """The classifier this detector guards (the contract's name for `base_model`)."""
        return self.detector_model.base_model

    # ------------------------------------------------------------------
    # The detector contract

    def score(self, x, *, batch_size=128, verbose=0):
        """Adversarial scores in `[0, 1]`: float `(N,)`, higher = more adversarial.

        One pass of the classifier (`DetectorModel.collect`: input shape and
        finite values checked), then the distances, LSTM and head batch by
        batch. The same values as calling the detector (and as
        `score_tensor`), up to float32 rounding.

        Args:
            x: numpy inputs `(N, ...)` or a `tf.data.Dataset` of inputs or
                `(inputs, labels)` pairs (labels ignored).
            batch_size: batch size. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A float64 array `(N,)`.
        """
        features = self.features(x, batch_size=batch_size, verbose=verbose)
        scores = np.empty(len(features))
        for start in range(0, len(features), batch_size):
            batch = features[start : start + batch_size]
            scores[start : start + batch_size] = np.asarray(self._score_of_features(batch))
        return scores

    def score_tensor(self, x):
        """The score of a batch as a differentiable float32 tensor `(B,)` (exact)."""
        return ops.cast(self._forward(x, training=False)["score"], "float32")

    def tap_request(self):
        """The tapped layers and their pooling (for a shared activation pass)."""
        return {"layers": self.tap_names, "pooling": self.detector_model.pooling}

    def features_from_taps(self, collected):
        """The distance sequences `F (B, L, C)` of one batch of a shared pass."""
        activations = _in_tap_order(self.detector_model, collected)
        return self._features_of(activations, max(1, len(activations[0])))

    def score_features(self, features, batch_size=128):
        """Scores `(N,)` from distance sequences `F (N, L, C)` (`features`).

        Example:

            >>> import numpy as np
            >>> from keras_advguard.detectors import MedoidLSTMDetector
            >>> from keras_advguard.models import load_or_train
            >>> model, _ = load_or_train("digits_cnn", "digits", epochs=30)
            >>> x = np.random.default_rng(0).random((20, 8, 8, 1), dtype="float32")
            >>> y = np.arange(20) % 10
            >>> detector = MedoidLSTMDetector.from_training_data(model, x, y, lstm_units=4)
            >>> scores = detector.score_features(detector.features(x))
            >>> bool(np.allclose(scores, detector.score(x), atol=1e-6))
            True
        """
        features = np.asarray(features, dtype=np.float32)
        scores = np.empty(len(features))
        for start in range(0, len(features), batch_size):
            batch = features[start : start + batch_size]
            scores[start : start + batch_size] = np.asarray(self._score_of_features(batch))
        return scores

    def fit_features(self, features, is_adversarial, *, epochs=100, batch_size=100, **kwargs):
        """Train the LSTM and head on precomputed distance sequences `F (N, L, C)`.

        The same training as `fit(x, is_adversarial)` (same compile setup,
        epochs and batches), without running the classifier at every epoch:
        `F` comes from `features(x)` or a shared activation pass. Compiles
        with `compile()`'s defaults when the detector was never compiled.

        Args:
            features: float `(N, L, C)`, finite.
            is_adversarial: `(N,)` labels, 1 adversarial, 0 clean.
            epochs: Defaults to `100`.
            batch_size: Defaults to `100`.
            **kwargs: passed to `keras.Model.fit` (`verbose`, `callbacks`...).

        Returns:
            The `History`.

        Raises:
            ValueError: features of another shape than `(N, L, C)`, NaN or
                infinite values, labels outside `[0, 1]`.
        """
        features = _validation.check_array("features", features, ndim=3, dtype_kind="fiu")
        expected = (self.distance.num_layers, self.distance.num_classes)
        if features.shape[1:] != expected:
            raise ValueError(
                f"Argument `features` must have shape (N, {expected[0]}, {expected[1]}) "
                f"(layers, classes). Received: features with shape={features.shape}"
            )
        features, labels = _keras_detector.check_fit_data(
            features.astype("float32"), is_adversarial, "features", "is_adversarial"
        )
        if not self.compiled:
            self.compile()
        sequence = self.sequence_model()
        sequence.compile(**keras.saving.deserialize_keras_object(self.get_compile_config()))
        return sequence.fit(features, labels, epochs=epochs, batch_size=batch_size, **kwargs)

    def _score_of_features(self, features):
        hidden = self.lstm(features, training=False)
        kernel = ops.cast(self.head.kernel, hidden.dtype)
        bias = ops.cast(self.head.bias, hidden.dtype)
        return ops.sigmoid(ops.cast(ops.squeeze(ops.matmul(hidden, kernel) + bias, -1), "float32"))

    def _fingerprint_of_fit(self):
        return _keras_detector.fingerprint(self.base_model)

    def _input_shape(self):
        return tuple(self.detector_model.inputs[0].shape)

    def _clone_fresh(self):
        return type(self)(self.detector_model, self.distance, lstm_units=self.lstm_units)

    def _rebind(self, model):
        """This detector (same medoids, LSTM, head, threshold) tapping `model`."""
        if model is self.base_model or model is self.detector_model:
            return self
        detector_model = as_detector_model(
            model,
            layers=self.tap_names,
            pooling=self.detector_model.pooling,
            logits_layer=self.detector_model.logits_layer,
        )
        rebound = type(self)(
            detector_model, self.distance, lstm_units=self.lstm_units, name=self.name
        )
        rebound.lstm.set_weights(self.lstm.get_weights())
        rebound.head.set_weights(self.head.get_weights())
        if self.compiled:
            rebound.compile_from_config(self.get_compile_config())
        for name in ("threshold_", "fpr_", "n_calibration_"):
            if getattr(self, name, None) is not None:
                setattr(rebound, name, getattr(self, name))
        return rebound

    def call(self, inputs, training=None):
        return self._forward(inputs, training=training)["score"]

    def call_with_details(self, inputs, training=False):
        """Every intermediate output of one batch, as differentiable tensors.

        For adaptive attacks (`attacks.pgd_with_loss` accepts this method as
        its `model`): a loss can mislead the classifier through `"logits"`
        while keeping `"score_logit"` low, or pull `"features"` towards a
        class's medoids.

        Args:
            inputs: a batch of classifier inputs `(B, ...)`.
            training: whether the LSTM runs in training mode. Defaults to
                `False`.

        Returns:
            A dict: `"prediction"` and `"logits"` `(B, C)` of the
            classifier, `"activations"` `{tap_name: (B, N_l)}`,
            `"features"` the distance sequence `(B, L, C)` (standardized
            when the detector standardizes), `"score_logit"` `(B,)` the
            pre-sigmoid score and `"score"` `(B,)`.
        """
        return self._forward(inputs, training=training)

    def _forward(self, inputs, training=None):
        outputs = self.detector_model(inputs, training=False)
        activations = outputs["activations"]
        features = self.distance([activations[name] for name in self.detector_model.tap_names])
        hidden = self.lstm(features, training=training)
        kernel = ops.cast(self.head.kernel, hidden.dtype)
        bias = ops.cast(self.head.bias, hidden.dtype)
        score_logit = ops.squeeze(ops.matmul(hidden, kernel) + bias, axis=-1)
        return {
            "prediction": outputs["prediction"],
            "logits": outputs["logits"],
            "activations": activations,
            "features": features,
            "score_logit": score_logit,
            "score": ops.sigmoid(score_logit),
        }

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def features(self, x, batch_size=128, verbose=0):
        """The distance sequences `F` of inputs, as a numpy array.

        Args:
            x: numpy inputs `(N, ...)` or a `tf.data.Dataset` of inputs or
                `(inputs, labels)` pairs (labels ignored).
            batch_size: batch size. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A float32 array `(N, L, C)`.
        """
        _validation.check_positive_int("batch_size", batch_size)
        collected = self.detector_model.collect(x, batch_size=batch_size, verbose=verbose)
        return self._features_of(_in_tap_order(self.detector_model, collected), batch_size)

    def _features_of(self, activations, batch_size):
        n = len(activations[0])
        features = np.empty((n, self.distance.num_layers, self.distance.num_classes), "float32")
        for start in range(0, n, batch_size):
            batch = [a[start : start + batch_size] for a in activations]
            features[start : start + batch_size] = np.asarray(self.distance(batch))
        return features

    def sequence_model(self):
        """A model `F (B, L, C) -> score (B,)` sharing this detector's LSTM and head.

        Training it on precomputed `features(x)` trains this detector (the
        weights are the same objects) without running the classifier at
        every epoch: useful for many folds or attacks on a fixed set of
        inputs. It is not part of the saved detector; build it again when
        needed.

        Returns:
            An uncompiled `keras.Model`.
        """
        model = _SequenceModel(self.lstm, self.head, name=f"{self.name}_sequence")
        model.build((None, self.distance.num_layers, self.distance.num_classes))
        return model

    # ------------------------------------------------------------------
    # Paper defaults for compile / fit

    def fit(self, x=None, y=None, batch_size=None, epochs=100, **kwargs):
        """Train the LSTM and head on inputs labelled `1 = adversarial`.

        `keras.Model.fit` with the paper's defaults: `epochs=100` and, for
        array inputs, `batch_size=100` (a `tf.data.Dataset` brings its own
        batches). Compiles with `compile()`'s defaults when the detector was
        never compiled. Every other `keras.Model.fit` argument
        (`validation_data`, `callbacks`, `class_weight`, ...) works as usual.

        Args:
            x: classifier inputs (clean and adversarial), or a dataset of
                `(inputs, is_adversarial)` pairs. Must be finite.
            y: `(N,)` labels, 1 for adversarial and 0 for clean (bool or
                numbers in `[0, 1]`).
            batch_size: Defaults to `100` for arrays, `None` for datasets.
            epochs: Defaults to `100`.
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
            "detector_model": _without_base_compile(
                keras.saving.serialize_keras_object(self.detector_model)
            ),
            "distance": keras.saving.serialize_keras_object(self.distance),
            "lstm_units": self.lstm_units,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["detector_model"] = keras.saving.deserialize_keras_object(config["detector_model"])
        config["distance"] = keras.saving.deserialize_keras_object(config["distance"])
        return cls(**config)

    def get_build_config(self):
        return None

    def build_from_config(self, config):
        return None


class _SequenceModel(_keras_detector.PerSampleLoss, keras.Model):
    """`F (B, L, C) -> scores (B,)` through shared LSTM and head layers (not saved)."""

    def __init__(self, lstm, head, **kwargs):
        super().__init__(**kwargs)
        self.lstm = lstm
        self.head = head

    def build(self, input_shape):
        self.built = True

    def call(self, inputs, training=None):
        return ops.squeeze(self.head(self.lstm(inputs, training=training)), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def fit(self, x=None, y=None, **kwargs):
        if y is not None and not _is_dataset_like(x):
            y = np.asarray(y, dtype="float32")
        return super().fit(x, y, **kwargs)


def _without_base_compile(config):
    """Drop the frozen classifier's own training setup from its saved config.

    Its optimizer would be rebuilt on load for zero trainable variables (the
    classifier is frozen here) and Keras would warn that the saved optimizer
    state does not fit; the detector never trains the classifier.
    """
    model_config = config.get("config", {}).get("model")
    if isinstance(model_config, dict):
        model_config.pop("compile_config", None)
    return config


def _is_dataset_like(x):
    return _batching.is_tf_dataset(x) or isinstance(x, keras.utils.PyDataset)


def _check_taps(detector_model, distance):
    names = list(detector_model.tap_names)
    if len(names) != distance.num_layers:
        raise ValueError(
            f"The classifier taps {len(names)} layers but the medoids are for "
            f"{distance.num_layers}. Received: tap_names={names}, "
            f"distance.tap_names={distance.tap_names}"
        )
    if distance.tap_names is not None and list(distance.tap_names) != names:
        raise ValueError(
            "The tapped layers must be the medoids' layers, in the same order. "
            f"Received: tap_names={names}, distance.tap_names={distance.tap_names}"
        )
    activations = detector_model.output["activations"]
    for name, (_, width) in zip(names, distance.medoid_shapes, strict=True):
        shape = tuple(activations[name].shape)
        if len(shape) != 2 or shape[-1] != width:
            raise ValueError(
                f"Tap {name!r} outputs shape {shape}; its medoids need (batch, "
                f"{width}). Use the pooling the medoids were computed with."
            )


def _in_tap_order(detector_model, collected):
    """`collect`'s activations as a list, in the order of the LSTM's steps."""
    return [collected["activations"][name] for name in detector_model.tap_names]
