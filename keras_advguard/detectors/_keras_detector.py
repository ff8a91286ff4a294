"""What the `keras.Model` detectors share on top of the `Detector` contract.

`MedoidLSTMDetector` and `InputCNNDetector` are Keras models trained with
the ordinary `compile`/`fit`. Keras needs some of its own semantics kept,
and this mixin joins them with the contract:

- `predict`: the contract's bool decision once `calibrate` was called; before
  that, Keras's `predict` (the scores), with a `FutureWarning` pointing at
  `score`, so code written before the contract keeps working.
- `save(path)`: a path ending in `.keras` is a Keras file (what
  `keras.callbacks.ModelCheckpoint` and `keras.models.load_model` need),
  any other path the contract's archive (`Detector.save`, the one format
  `load_detector` reads). Both are written atomically, both keep the
  threshold.
- `load(path, model=None)` reads both, and refuses a classifier whose weights
  differ from the one the detector was built for (naming both SHA-256).
- `fit` refuses non-finite images and labels outside `[0, 1]` with a clear
  `ValueError` before training starts.
"""

import os
import warnings
import zipfile

import keras
import numpy as np

from keras_advguard import _batching, _fingerprint, _validation
from keras_advguard._files import write_atomic
from keras_advguard.detectors import _base

_MEMBER = "detector.keras"
_FINITE_MARKER = "keras_advguard: non-finite values in `x`"


def is_dataset_like(x):
    """Whether `x` brings its own batches (`tf.data` or `keras.utils.PyDataset`)."""
    return _batching.is_tf_dataset(x) or isinstance(x, keras.utils.PyDataset)


def check_fit_data(x, y, name_x="x", name_y="y"):
    """Check numpy training data of a supervised detector; return `(x, y as float32)`.

    Datasets are checked while training instead (see `checked_dataset`).
    """
    if is_dataset_like(x) or x is None:
        return x, y
    x = _validation.check_array(name_x, x, dtype_kind="fiub", allow_empty=False)
    _validation.check_finite(name_x, x)
    if y is not None:
        y = _validation.check_array(name_y, y, dtype_kind="fiub")
        _validation.check_same_length(name_x, x, name_y, y)
        _validation.check_finite(name_y, y)
        y = y.astype("float32")
        if np.any((y < 0) | (y > 1)):
            bad = y[(y < 0) | (y > 1)]
            raise ValueError(
                f"Argument `{name_y}` must hold 1 for adversarial and 0 for clean inputs "
                f"(values in [0, 1]). Received: {name_y} with values {bad[:5].tolist()}"
            )
    return x, y


def checked_dataset(dataset):
    """`dataset` with its inputs checked for NaN/inf on every batch (tf.data only)."""
    import tensorflow as tf

    if not _batching.is_tf_dataset(dataset):
        return dataset

    def check(*item):
        first = tf.debugging.check_numerics(
            tf.cast(item[0], tf.float32) if item[0].dtype.is_integer else item[0],
            _FINITE_MARKER,
        )
        return (first, *item[1:]) if len(item) > 1 else first

    return dataset.map(check)


class PerSampleLoss:
    """Mixin for `keras.Model`s whose output is one score per input, shape `(B,)`.

    Keras's losses read the last axis as the class axis: on `(B,)` scores,
    `binary_crossentropy` already averages the batch into a scalar, and Keras
    scales a loss for `tf.distribute` only when it reduces per-sample values
    itself. Under a `MirroredStrategy` every replica then returns its full
    mean, the replicas' gradients are summed, and training takes steps
    `num_replicas` times too long. `compute_loss` gives the loss `(B, 1)`
    tensors instead: the same value on one device, the right one on several.
    """

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is not None and y is not None and len(getattr(y_pred, "shape", ())) == 1:
            if len(getattr(y, "shape", ())) == 1:
                y_pred = keras.ops.expand_dims(y_pred, -1)
                y = keras.ops.expand_dims(y, -1)
        return super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )


class KerasDetector(PerSampleLoss, _base.Detector):
    """Mixin for detectors that are `keras.Model`s (put it first in the bases).

    Subclasses provide `score`, `score_tensor`, `_fingerprint_of_fit()` (the
    SHA-256 of the classifier they were built for, or `None`) and
    `_rebind(model)` (the same detector guarding the classifier object
    `model`, which has the same weights).
    """

    supervised = True
    score_tensor_kind = "exact"

    # --- the guarded classifier is not part of the detector's weights ---

    _NOT_SAVED = ("model", "_classifier")

    def __dir__(self):
        # Keras's saving (`save_weights`, `.keras` files) walks `dir(self)` and
        # would store the guarded classifier, reachable through `model`, with
        # the detector's own weights; `load_weights` would then overwrite the
        # user's classifier with the one the file was saved with. The
        # classifier is the user's: it is never saved or loaded here.
        return [name for name in super().__dir__() if name not in self._NOT_SAVED]

    # --- the threshold travels inside the .keras file ------------------

    def save_own_variables(self, store):
        super().save_own_variables(store)
        if getattr(self, "threshold_", None) is not None:
            n = getattr(self, "n_calibration_", None)
            store["threshold"] = np.array(
                [self.threshold_, self.fpr_, -1 if n is None else n], dtype="float64"
            )

    def load_own_variables(self, store):
        keys = list(store.keys())
        if "threshold" in keys:
            threshold, fpr, n = (float(v) for v in np.asarray(store["threshold"]))
            self.threshold_ = threshold
            self.fpr_ = fpr
            self.n_calibration_ = None if n < 0 else int(n)
        own = self._trainable_variables + self._non_trainable_variables
        for i, variable in enumerate(own):
            variable.assign(store[f"{i}"])

    # --- Keras's predict and the contract's ----------------------------

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Bool decisions `score(x) > threshold_` once calibrated; Keras's scores before.

        After `calibrate`, this is the contract's `predict`: a bool numpy
        array `(N,)`. Before it, it is `keras.Model.predict` (the scores,
        float `(N,)`) and warns: use `score(x)` for scores, as every detector
        does; a future version will require `calibrate` here.

        Args:
            x: numpy inputs or a `tf.data.Dataset`.
            batch_size: Defaults to `None` (`128` for the decision, Keras's
                default for the scores).
            verbose: `0` silent, `1` a progress bar. Defaults to `"auto"`.
            steps: Keras's `steps` (scores only).
            callbacks: Keras's `callbacks` (scores only).

        Returns:
            Bool `(N,)` after `calibrate`; float scores `(N,)` before.
        """
        if getattr(self, "threshold_", None) is not None:
            return _base.Detector.predict(
                self,
                x,
                batch_size=128 if batch_size is None else batch_size,
                verbose=0 if verbose == "auto" else verbose,
            )
        warnings.warn(
            f"{type(self).__name__}.predict before `calibrate` returns the scores "
            "(keras.Model.predict). Use `score(x)` for scores; after "
            "`calibrate(x_clean_validation, fpr)`, `predict` returns bool decisions.",
            FutureWarning,
            stacklevel=2,
        )
        return keras.Model.predict(
            self, x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks
        )

    # --- compile / fit ------------------------------------------------------

    def compile(self, optimizer="adam", loss="binary_crossentropy", metrics="default", **kwargs):
        """Configure training; without arguments Adam, binary cross-entropy and AUC.

        The defaults are the medoid LSTM paper's setup (Adam with learning
        rate 1e-3); `fit` compiles with them when `compile` was never called.

        Args:
            optimizer: Defaults to `"adam"`.
            loss: Defaults to `"binary_crossentropy"`.
            metrics: Defaults to `"default"`: `[keras.metrics.AUC(name="auc")]`.
                `None` for none.
            **kwargs: the other `keras.Model.compile` arguments.
        """
        if isinstance(metrics, str) and metrics == "default":
            metrics = [keras.metrics.AUC(name="auc")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    @classmethod
    def from_config(cls, config):
        """The detector from `get_config()` (a serialized `dtype` policy restored)."""
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)

    def compile_from_config(self, config):
        # `compile` only fills in defaults, so the saved compile config (the
        # arguments actually used) can be replayed through it on load.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _checked_fit(self, x, y, batch_size, epochs, default_batch_size, kwargs):
        """`keras.Model.fit` after the input checks (NaN/inf, labels), compiling if needed."""
        import tensorflow as tf

        x, y = check_fit_data(x, y)
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            checked = check_fit_data(
                validation[0], validation[1], "validation_data[0]", "validation_data[1]"
            )
            kwargs["validation_data"] = (*checked, *validation[2:])
        elif validation is not None:
            kwargs["validation_data"] = checked_dataset(validation)
        if not self.compiled:
            self.compile()
        if is_dataset_like(x):
            # A dataset brings its own order; Keras would warn on shuffle=True.
            kwargs.setdefault("shuffle", False)
            x = checked_dataset(x)
        elif batch_size is None:
            batch_size = default_batch_size
        try:
            return keras.Model.fit(self, x, y, batch_size=batch_size, epochs=epochs, **kwargs)
        except tf.errors.InvalidArgumentError as e:
            error = reraise_non_finite(e)
            if error is None:
                raise
            raise error from None

    # --- clone ---------------------------------------------------------

    def _clone_fresh(self):
        """A new, untrained detector with the same configuration (subclasses)."""
        raise NotImplementedError

    def clone(self):
        """The same detector with a freshly initialised trainable part and no threshold.

        Fitted statistics that are not trained by `fit` (medoids,
        standardization) are kept, so the clone can be trained on another
        split without recomputing them. The clone is not compiled (`fit`
        compiles it with the defaults).
        """
        return self._clone_fresh()

    # --- save / load ---------------------------------------------------

    def save(self, filepath, overwrite=True, zipped=None, *, include_model=True, **kwargs):
        """Save atomically: a `.keras` file, or the detectors' archive format.

        Args:
            filepath: a path ending in `.keras` writes a Keras file (loads
                with `keras.models.load_model` in safe mode, as Keras's
                callbacks expect); any other path the archive every detector
                writes (`Detector.save`, read by `load_detector`).
            overwrite: replace an existing file. Defaults to `True`.
            zipped: Keras's `zipped` (`.keras` only). Defaults to `None`.
            include_model: archive only: store the classifier too.
                Defaults to `True`.
            **kwargs: Keras's other `save` arguments (`.keras` only).

        Returns:
            `filepath`.

        Raises:
            FileExistsError: the file exists and `overwrite=False`.
        """
        path = os.fspath(filepath)
        if not overwrite and os.path.exists(path):
            raise FileExistsError(
                f"Argument `filepath` names an existing file and overwrite=False. "
                f"Received: filepath={path!r}"
            )
        if not path.endswith(".keras"):
            return _base.Detector.save(self, filepath, include_model=include_model)

        def write(tmp):
            keras.Model.save(self, tmp, overwrite=True, zipped=zipped, **kwargs)

        write_atomic(path, write, ".keras")
        return filepath

    def _write_members(self, folder):
        keras.Model.save(self, os.path.join(folder, _MEMBER))

    @classmethod
    def _from_saved(cls, model, config, folder=None):
        loaded = _load_keras_file(os.path.join(folder, _MEMBER), cls, shown=_MEMBER)
        return loaded if model is None else loaded._rebind(model)

    def _get_config(self):
        return {}

    @classmethod
    def load(cls, path, model=None, *, check_weights=True):
        """Load a detector saved by `save` (a `.keras` file or an archive).

        Args:
            path: the file.
            model: the classifier to guard. Defaults to `None`: the one the
                file holds.
            check_weights: refuse a `model` whose weights differ from the
                classifier the detector was built for. Defaults to `True`.

        Returns:
            The detector, guarding `model` when given.

        Raises:
            FileNotFoundError: no such file.
            ValueError: an unreadable file (naming it), another detector
                class, or a classifier with other weights (naming both
                SHA-256).
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"No detector file at {path!r}.")
        if _is_archive(path):
            return super().load(path, model, check_weights=check_weights)
        loaded = _load_keras_file(path, cls)
        if model is None:
            return loaded
        if check_weights:
            document = {
                "model": {
                    "weights_sha256": loaded._fingerprint_of_fit(),
                    "name": getattr(loaded._guarded_model(), "name", None),
                    "input_shape": list(loaded._input_shape()[1:]),
                }
            }
            _base.check_fingerprint(path, document, model)
        return loaded._rebind(model)

    def _input_shape(self):
        """The input shape including the batch axis (subclasses)."""
        raise NotImplementedError


def _is_archive(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return "detector.json" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _load_keras_file(path, cls, shown=None):
    import keras_advguard.detector_model  # noqa: F401  (registers the library's classes)
    import keras_advguard.layers  # noqa: F401

    shown = shown or path
    try:
        loaded = keras.models.load_model(path, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        raise ValueError(
            f"Cannot load the detector file {shown!r} (truncated or not a Keras file?): "
            f"{type(e).__name__}: {e}"
        ) from e
    if not isinstance(loaded, cls):
        raise ValueError(
            f"The file {shown!r} holds a {type(loaded).__name__}, not a {cls.__name__}."
        )
    return loaded


def fingerprint(model):
    """`weights_fingerprint` of the classifier (unwrapped), or `None`."""
    return None if model is None else _fingerprint.weights_fingerprint(model)


def reraise_non_finite(error):
    """A `ValueError` for the `checked_dataset` failure inside `fit`, else `None`."""
    if _FINITE_MARKER in str(error):
        return ValueError(
            "Argument `x` must hold finite values only. Received: a dataset batch "
            "with NaN or infinite values (found while training)."
        )
    return None
