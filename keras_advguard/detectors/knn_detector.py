"""kNN baseline on one layer's activations (Carrara et al.)."""

import os

import numpy as np

from keras_advguard import _fingerprint, _memo, _validation, metrics
from keras_advguard.detectors._base import (
    Detector,
    check_calibrated,
    check_fpr,
    read_legacy_document,
)

WEIGHTS = ("uniform", "distance")
DEFAULT_K_CANDIDATES = (1, 2, 5, 10, 20, 50, 100, 200)
_FORMAT_VERSION = 1


class KNNDetector(Detector):
    """Flag inputs whose nearest training activations disagree with the prediction.

    For an input `x` that the classifier labels `c_hat`, take the `k`
    training samples whose activations at one layer are nearest to
    `a(x)` (Euclidean distance, scikit-learn `NearestNeighbors`) and their
    ground-truth labels `y_j`. The share of them that agree with the
    prediction,

        g(x) = sum_j w_j [y_j == c_hat] / sum_j w_j,

    is the genuineness score of Carrara et al.; the detector's score is
    `1 - g(x)` in `[0, 1]` (higher = more adversarial, as everywhere in
    keras_advguard). `weights="uniform"` gives every neighbour weight 1;
    `weights="distance"` weights it by `1 / distance` (when some neighbours
    coincide with `a(x)`, those alone count, as in scikit-learn). `k` is a
    hyper-parameter chosen on validation data by `select_k` (largest
    validation ROC AUC; the smallest `k` on ties). Ties between equally
    distant neighbours at the `k`-th place are broken by scikit-learn.

    The layer's output is pooled as in `DetectorModel` (global average
    pooling of feature maps by default); activations and predictions come
    from one `DetectorModel.collect` pass. On a `tf.data.Dataset` of
    `(inputs, labels)` pairs, `score` and `predict` use the classifier's
    predictions, never the dataset's labels (those are the training labels
    of `fit` only).

    The `Detector` contract: `score`, `calibrate` (sets `threshold_`,
    `fpr_`, `n_calibration_`), `predict`, `clone` (same training
    activations, no threshold), `save`/`load` (one archive file, refusing a
    classifier with other weights) and `score_tensor`, a **surrogate**
    (`score_tensor_kind = "surrogate"`): the kNN vote is piecewise constant,
    so the differentiable stand-in replaces the hard vote by the
    classifier's softmax probability of each neighbour's label and the
    `k` neighbours' equal weights by a softmax of their negative squared
    distances (see `score_tensor`). scikit-learn style: `__init__`
    stores the parameters, `fit` returns `self`, learned attributes end in
    `_`. Every method taking inputs `x` has an `*_activations` twin taking
    the layer's activations and the predicted classes instead (for
    precomputed activations; `model` may then be `None`).

    Args:
        model: the classifier (`keras.Model` or `DetectorModel`). May be
            `None` when only the `*_activations` methods are used.
            Defaults to `None`.
        layer: the layer (name, path or any single-layer selector of
            `DetectorModel`). Required with a model. Defaults to `None`.
        n_neighbors: `k` used until `select_k` picks one. Defaults to `10`.
        weights: `"uniform"` or `"distance"`. Defaults to `"uniform"`.
        pooling: pooling of 4-D maps (`DetectorModel`). Defaults to `"avg"`.
        batch_size: batch size of the classifier passes, used when a
            method's own `batch_size` is `None`. Defaults to `128`.
        algorithm: `NearestNeighbors` algorithm. Defaults to `"auto"`.
        n_jobs: `NearestNeighbors` parallel jobs. Defaults to `None`.

    Attributes:
        train_activations_: float32 `(N, D)`, the training activations.
        train_labels_: int64 `(N,)`, their ground-truth labels.
        n_neighbors_: the `k` in use (`n_neighbors`, or the one `select_k`
            chose).
        nn_: the fitted `sklearn.neighbors.NearestNeighbors`.
        validation_auc_: dict `{k: validation AUC}`, set by `select_k`.
        threshold_: decision threshold of `predict`, set by `select_k` or
            `calibrate` (from clean validation scores at a target FPR).
        fpr_: the target FPR of `threshold_`.
        n_calibration_: the number of clean inputs `threshold_` came from.

    Raises:
        TypeError: a parameter of the wrong type, detected when first used.
        ValueError: a parameter out of range (`n_neighbors < 1`, unknown
            `weights`), detected when first used.

    Example:

        >>> import numpy as np
        >>> train = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2]])
        >>> labels = np.array([0, 0, 0, 1, 1, 1])
        >>> knn = KNNDetector(n_neighbors=3).fit_activations(train, labels)
        >>> # near class 0 and predicted 0: genuine; near class 0 but predicted 1
        >>> knn.score_activations(np.array([[0.05], [0.05]]), np.array([0, 1])).tolist()
        [0.0, 1.0]

    Reference:
        F. Carrara, F. Falchi, R. Caldelli, G. Amato, R. Becarelli.
        "Adversarial image detection in deep neural networks", Multimedia
        Tools and Applications, 2018.
    """

    def __init__(
        self,
        model=None,
        layer=None,
        *,
        n_neighbors=10,
        weights="uniform",
        pooling="avg",
        batch_size=128,
        algorithm="auto",
        n_jobs=None,
    ):
        self.model = model
        self.layer = layer
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.pooling = pooling
        self.batch_size = batch_size
        self.algorithm = algorithm
        self.n_jobs = n_jobs

    supervised = False
    score_tensor_kind = "surrogate"

    # ------------------------------------------------------------------
    # Activations of the classifier

    def _check_params(self):
        _validation.check_positive_int("n_neighbors", self.n_neighbors)
        _validation.check_choice("weights", self.weights, WEIGHTS)
        _validation.check_positive_int("batch_size", self.batch_size)

    def _batch_size(self, batch_size):
        if batch_size is None:
            return self.batch_size
        return _validation.check_positive_int("batch_size", batch_size)

    def _taps(self):
        if self.model is None:
            raise ValueError(
                "This KNNDetector has no model, so it cannot compute activations "
                "from inputs. Pass `model=` and `layer=`, or use the "
                "`*_activations` methods. Received: model=None"
            )
        depends_on = (self.model, repr(self.layer), self.pooling)
        return _memo.memo(self, "taps", self._build_taps, depends_on)

    def _build_taps(self):
        import keras

        from keras_advguard.detector_model import DetectorModel

        model = _fingerprint.unwrap_model(self.model)
        _validation.check_type("model", model, keras.Model, "a keras.Model or a DetectorModel")
        if self.layer is None:
            raise ValueError("Argument `layer` is required with a model. Received: layer=None")
        taps = DetectorModel(model, layers=self.layer, pooling=self.pooling)
        if len(taps.tap_names) != 1:
            raise ValueError(
                "Argument `layer` must select exactly one layer. "
                f"Received: layer={self.layer!r}, which selects {taps.tap_names}"
            )
        return taps

    @property
    def layer_path_(self):
        """The path of the layer the activations come from."""
        return self._taps().tap_names[0]

    def activations(self, x, *, batch_size=None, verbose=0):
        """The layer's activations and the classifier's predictions.

        Args:
            x: numpy inputs `(N, ...)` or a `tf.data.Dataset` of inputs or
                `(inputs, labels)` pairs (labels ignored).
            batch_size: inputs per batch. Defaults to `None` (the
                constructor's `batch_size`).
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A pair `(activations (N, D) float32, predicted classes (N,) int64)`.
        """
        activations, predicted, _ = self._forward(x, batch_size, verbose)
        return activations, predicted

    def _forward(self, x, batch_size=None, verbose=0):
        """Activations, predicted classes and the dataset's labels (or None)."""
        self._check_params()
        taps = self._taps()
        out = taps.collect(x, batch_size=self._batch_size(batch_size), verbose=verbose)
        acts = np.asarray(out["activations"][taps.tap_names[0]], dtype=np.float32)
        acts = acts.reshape(len(acts), int(np.prod(acts.shape[1:], dtype=np.int64)))
        return acts, out["predicted_class"], out["labels"]

    # ------------------------------------------------------------------
    # Fit

    def fit(
        self,
        x,
        y=None,
        *,
        validation_data=None,
        k_candidates=None,
        fpr=0.05,
        batch_size=None,
        verbose=0,
    ):
        """Index the training activations; optionally choose `k` on validation data.

        Args:
            x: training inputs (numpy), or a `tf.data.Dataset` of
                `(inputs, labels)` pairs.
            y: the ground-truth labels of numpy inputs, int `(N,)` or one-hot
                `(N, C)`; `None` for a dataset. Defaults to `None`.
            validation_data: optional `(x_val, is_adversarial_val)`: clean
                and adversarial validation inputs and their 0/1 labels;
                `select_k` is then run on them. Defaults to `None`.
            k_candidates: candidate `k` values for `select_k`. Defaults to
                `None` (`DEFAULT_K_CANDIDATES`, capped at the training size).
            fpr: target FPR in `(0, 1)` of the threshold set by `select_k`.
                Defaults to `0.05`.
            batch_size: inputs per batch. Defaults to `None` (the
                constructor's).
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            `self`.
        """
        from keras_advguard import _batching

        _batching.check_label_source(x, y)
        activations, _, labels = self._forward(x, batch_size, verbose)
        if y is None:
            y = labels
        self.fit_activations(activations, y)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError(
                    "Argument `validation_data` must be a pair (x_val, "
                    "is_adversarial_val). Received: validation_data of type "
                    f"{type(validation_data).__name__}"
                )
            self.select_k(
                *validation_data,
                k_candidates=k_candidates,
                fpr=fpr,
                batch_size=batch_size,
                verbose=verbose,
            )
        elif k_candidates is not None:
            raise ValueError(
                "`k_candidates` is used with `validation_data` (k is chosen on "
                "validation data). Received: validation_data=None"
            )
        return self

    def fit_activations(self, activations, labels):
        """`fit` on precomputed training activations.

        Args:
            activations: float `(N, D)` (higher ranks are flattened).
            labels: ground-truth labels, int `(N,)` or one-hot `(N, C)`.

        Returns:
            `self`.
        """
        from sklearn.neighbors import NearestNeighbors

        self._check_params()
        activations = _as_activations("activations", activations)
        labels = _validation.as_class_ids("labels", labels)
        _validation.check_same_length("activations", activations, "labels", labels)
        self.train_activations_ = activations
        self.train_labels_ = labels
        self.n_neighbors_ = int(min(self.n_neighbors, len(labels)))
        self.nn_ = NearestNeighbors(algorithm=self.algorithm, n_jobs=self.n_jobs).fit(activations)
        _memo.forget(self, "train_tensors")  # free the previous fit's tensors now
        self.__dict__.pop("validation_auc_", None)
        self._clear_threshold()
        return self

    # ------------------------------------------------------------------
    # Scores

    def score(self, x, *, batch_size=None, verbose=0):
        """Adversarial scores `1 - g(x)` in `[0, 1]`.

        Args:
            x: numpy inputs `(N, ...)` or a `tf.data.Dataset` of inputs or
                `(inputs, labels)` pairs (the labels are ignored: the vote
                is against the classifier's prediction).
            batch_size: inputs per batch. Defaults to `None` (the
                constructor's).
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A float64 array `(N,)`.

        Raises:
            NotFittedError: `fit` was not called.
            ValueError: inputs of another shape than the model's, or
                non-finite inputs.
        """
        _validation.check_is_fitted(self, "nn_")
        activations, predicted = self.activations(x, batch_size=batch_size, verbose=verbose)
        if len(activations) == 0:
            return np.zeros((0,), np.float64)
        return self.score_activations(activations, predicted)

    def score_tensor(self, x, *, temperature=1.0):
        """A differentiable surrogate of `score` for one batch: float32 `(B,)`.

        With `a` the layer's activations of `x`, `p = softmax(logits(x))` and
        `j = 1..k` the `k = n_neighbors_` nearest training activations (found
        exactly, at squared distances `d_j`, labels `y_j`):

            s~(x) = 1 - sum_j w_j p_{y_j}(x),   w = softmax(-d / (temperature * mean_j d_j))

        The hard vote `[y_j == argmax p]` becomes the probability `p_{y_j}`
        and the weights a softmax of the distances (scale-free: divided by
        their mean, without gradient). When the classifier is confident and
        the neighbours equidistant, `s~` equals the `"uniform"` score.

        Args:
            x: a batch tensor `(B, ...)` of the model's input shape.
            temperature: softness of the distance weights, > 0. Defaults to
                `1.0`.

        Returns:
            A float32 tensor `(B,)`, differentiable with respect to `x`.
        """
        from keras import ops

        _validation.check_is_fitted(self, "nn_")
        _validation.check_number("temperature", temperature, min_value=0.0, min_inclusive=False)
        taps = self._taps()
        train, train_sq, train_labels = _memo.memo(
            self,
            "train_tensors",
            self._train_tensors,
            (self.train_activations_, self.train_labels_),
        )
        out = taps(ops.cast(x, "float32"), training=False)
        a = ops.cast(out["activations"][taps.tap_names[0]], "float32")
        a = ops.reshape(a, (ops.shape(a)[0], -1))
        p = ops.softmax(ops.cast(out["logits"], "float32"), axis=-1)
        d2 = ops.sum(ops.square(a), axis=1, keepdims=True) - 2.0 * ops.matmul(
            a, ops.transpose(train)
        )
        d2 = d2 + train_sq[None, :]
        neg, idx = ops.top_k(-d2, k=self.n_neighbors_, sorted=True)
        d_k = ops.maximum(-neg, 0.0)
        scale = ops.stop_gradient(ops.mean(d_k, axis=1, keepdims=True)) * temperature + 1e-12
        w = ops.softmax(-d_k / scale, axis=1)
        labels_k = ops.take(train_labels, idx)
        p_k = ops.take_along_axis(p, labels_k, axis=1)
        return 1.0 - ops.sum(w * p_k, axis=1)

    def _train_tensors(self):
        """The training set as constant tensors (for `score_tensor`), built once per fit."""
        import tensorflow as tf
        from keras import ops

        # Created outside any `tf.function` being traced (init_scope), so the
        # cached tensors stay valid for later calls in other graphs.
        with tf.init_scope():
            train = ops.convert_to_tensor(self.train_activations_, "float32")
            return (
                train,
                ops.sum(ops.square(train), axis=1),
                ops.convert_to_tensor(self.train_labels_, "int32"),
            )

    def tap_request(self):
        """The one tapped layer and its pooling (for a shared activation pass)."""
        if self.model is None:
            return None
        return {"layers": [self.layer_path_], "pooling": self.pooling}

    def features_from_taps(self, collected):
        """The scores of one batch of a shared pass (`tap_request`)."""
        acts = np.asarray(collected["activations"][self.layer_path_], dtype=np.float32)
        if len(acts) == 0:
            return np.zeros((0,), np.float64)
        acts = acts.reshape(len(acts), -1)
        return self.score_activations(acts, collected["predicted_class"])

    def score_activations(self, activations, predicted_classes, n_neighbors=None):
        """`score` from the layer's activations and the predicted classes.

        Args:
            activations: float `(N, D)`.
            predicted_classes: int `(N,)` or scores `(N, C)` (argmax taken).
            n_neighbors: `k`. Defaults to `None` (`n_neighbors_`).

        Returns:
            A float64 array `(N,)`.
        """
        _validation.check_is_fitted(self, "nn_")
        k = self.n_neighbors_ if n_neighbors is None else n_neighbors
        return self.scores_by_k(activations, predicted_classes, [k])[k]

    def scores_by_k(self, activations, predicted_classes, k_candidates):
        """Scores for several `k` at once, from one neighbour search.

        Args:
            activations: float `(N, D)`.
            predicted_classes: int `(N,)` or scores `(N, C)`.
            k_candidates: iterable of positive ints, at most the training
                size.

        Returns:
            A dict `{k: float64 array (N,)}`.
        """
        _validation.check_is_fitted(self, "nn_")
        self._check_params()
        activations = _as_activations("activations", activations)
        if activations.shape[1] != self.train_activations_.shape[1]:
            raise ValueError(
                f"Argument `activations` must have {self.train_activations_.shape[1]} "
                f"features like the training activations. Received: shape={activations.shape}"
            )
        predicted = _validation.as_class_ids("predicted_classes", predicted_classes)
        _validation.check_same_length("activations", activations, "predicted_classes", predicted)
        ks = _check_k_candidates(k_candidates, len(self.train_labels_))
        distances, indices = self.nn_.kneighbors(activations, n_neighbors=max(ks))
        agree = (self.train_labels_[indices] == predicted[:, None]).astype(np.float64)
        result = {}
        for k in ks:
            w = self._weights(distances[:, :k])
            result[k] = 1.0 - (w * agree[:, :k]).sum(axis=1) / w.sum(axis=1)
        return result

    def _weights(self, distances):
        if self.weights == "uniform":
            return np.ones_like(distances, dtype=np.float64)
        distances = distances.astype(np.float64)
        zero = distances == 0.0
        with np.errstate(divide="ignore"):
            w = 1.0 / distances
        rows = zero.any(axis=1)
        w[rows] = zero[rows].astype(np.float64)
        return w

    # ------------------------------------------------------------------
    # Hyper-parameter and threshold

    def select_k(
        self,
        x_val,
        is_adversarial_val,
        k_candidates=None,
        *,
        fpr=0.05,
        batch_size=None,
        verbose=0,
    ):
        """Choose `k` by validation ROC AUC and set the threshold at `fpr`.

        Args:
            x_val: validation inputs, clean and adversarial.
            is_adversarial_val: 0/1 (or bool) labels `(N,)`, 1 = adversarial;
                both kinds must be present.
            k_candidates: candidate values. Defaults to `None`
                (`DEFAULT_K_CANDIDATES` up to the training size).
            fpr: target false positive rate of `threshold_` in `(0, 1)`,
                computed on the clean validation inputs. Defaults to `0.05`.
            batch_size: inputs per batch. Defaults to `None` (the
                constructor's).
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            `self`, with `n_neighbors_`, `validation_auc_`, `threshold_`,
            `fpr_` and `n_calibration_` set.
        """
        _validation.check_is_fitted(self, "nn_")
        check_fpr(fpr)
        activations, predicted = self.activations(x_val, batch_size=batch_size, verbose=verbose)
        return self.select_k_activations(
            activations, predicted, is_adversarial_val, k_candidates, fpr=fpr
        )

    def select_k_activations(
        self, activations, predicted_classes, is_adversarial, k_candidates=None, *, fpr=0.05
    ):
        """`select_k` on precomputed validation activations and predictions."""
        _validation.check_is_fitted(self, "nn_")
        fpr = check_fpr(fpr)
        is_adv = _as_binary("is_adversarial", is_adversarial)
        _validation.check_same_length("activations", activations, "is_adversarial", is_adv)
        if is_adv.all() or not is_adv.any():
            raise ValueError(
                "Validation data must hold clean (0) and adversarial (1) samples to "
                f"choose k. Received: {int(is_adv.sum())} adversarial out of {is_adv.size}"
            )
        if k_candidates is None:
            n = len(self.train_labels_)
            k_candidates = [k for k in DEFAULT_K_CANDIDATES if k <= n] or [n]
        by_k = self.scores_by_k(activations, predicted_classes, k_candidates)
        aucs = {k: metrics.roc_auc(s[~is_adv], s[is_adv]) for k, s in by_k.items()}
        best = max(aucs, key=lambda k: (aucs[k], -k))
        self.n_neighbors_ = int(best)
        self.validation_auc_ = aucs
        self._set_threshold(by_k[best][~is_adv], fpr, name="x_val")
        return self

    def calibrate(self, x_clean_validation, fpr=0.05, *, batch_size=None, verbose=0):
        """Set `threshold_` so that at most `fpr` of clean validation inputs score above it.

        Args:
            x_clean_validation: clean validation inputs (never the test set),
                numpy or a `tf.data.Dataset`.
            fpr: target false positive rate in `(0, 1)`. Defaults to `0.05`.
            batch_size: inputs per batch. Defaults to `None` (the
                constructor's).
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            `self`, with `threshold_`, `fpr_` and `n_calibration_` set.
        """
        _validation.check_is_fitted(self, "nn_")
        fpr = check_fpr(fpr)
        return self._set_threshold(
            self.score(x_clean_validation, batch_size=batch_size, verbose=verbose), fpr
        )

    def calibrate_activations(self, activations, predicted_classes, fpr=0.05):
        """`calibrate` on precomputed clean activations and predicted classes."""
        fpr = check_fpr(fpr)
        return self._set_threshold(
            self.score_activations(activations, predicted_classes), fpr, name="activations"
        )

    def predict(self, x, *, batch_size=None, verbose=0):
        """Boolean flags `score(x) > threshold_`, shape `(N,)`.

        Raises:
            NotFittedError: `fit` or `calibrate` was not called.
        """
        _validation.check_is_fitted(self, "nn_")
        check_calibrated(self)
        return self.score(x, batch_size=batch_size, verbose=verbose) > self.threshold_

    # ------------------------------------------------------------------
    # Save / load (one archive: JSON + npz + optional .keras, no pickle)

    def get_params(self):
        """The constructor arguments except the model (JSON-serializable)."""
        layer = self.layer
        if self.model is not None:
            layer = self.layer_path_
        elif layer is not None and not isinstance(layer, str):
            raise ValueError(
                f"Only a layer given by name or path can be saved. Received: layer={layer!r}"
            )
        return {
            "layer": layer,
            "n_neighbors": self.n_neighbors,
            "weights": self.weights,
            "pooling": self.pooling,
            "batch_size": self.batch_size,
            "algorithm": self.algorithm,
            "n_jobs": self.n_jobs,
        }

    def _guarded_model(self):
        return None if self.model is None else self._taps().base_model

    def _get_config(self):
        return self.get_params()

    def _get_state(self):
        if getattr(self, "nn_", None) is None:
            return {}, {}
        scalars = {"n_neighbors_": self.n_neighbors_}
        if getattr(self, "validation_auc_", None) is not None:
            scalars["validation_auc_"] = [
                [int(k), float(v)] for k, v in self.validation_auc_.items()
            ]
        arrays = {
            "train_activations": self.train_activations_,
            "train_labels": self.train_labels_,
        }
        return scalars, arrays

    def _set_state(self, scalars, arrays):
        if "train_activations" not in arrays:
            return
        self.fit_activations(arrays["train_activations"], arrays["train_labels"])
        self.n_neighbors_ = int(scalars["n_neighbors_"])
        if "validation_auc_" in scalars:
            self.validation_auc_ = {int(k): float(v) for k, v in scalars["validation_auc_"]}

    @classmethod
    def _from_saved(cls, model, config, folder=None):
        return cls(model, **config)

    @classmethod
    def _load_legacy(cls, path, model=None, *, check_weights=True):
        """Read the JSON + `.npz` (+ `.keras`) files of keras_advguard <= 0.1 (deprecated)."""
        document = read_legacy_document(path, cls.__name__, _FORMAT_VERSION)
        folder = os.path.dirname(os.path.abspath(path))
        if model is None and document.get("model_file"):
            import keras

            model = keras.models.load_model(
                os.path.join(folder, document["model_file"]), safe_mode=True
            )
        detector = cls(model, **document["params"])
        with np.load(os.path.join(folder, document["arrays_file"]), allow_pickle=False) as data:
            detector.fit_activations(data["train_activations"], data["train_labels"])
        fitted = document["fitted"]
        detector.n_neighbors_ = int(fitted["n_neighbors_"])
        for name in ("threshold_", "fpr_"):
            if name in fitted:
                setattr(detector, name, float(fitted[name]))
        if "validation_auc_" in fitted:
            detector.validation_auc_ = {int(k): float(v) for k, v in fitted["validation_auc_"]}
        return detector

    def __repr__(self):
        name = None if self.model is None else getattr(self.model, "name", None)
        return (
            f"{type(self).__name__}(model={name!r}, layer={self.layer!r}, "
            f"n_neighbors={self.n_neighbors}, weights={self.weights!r})"
        )


def _as_activations(name, value):
    array = _validation.check_array(name, value, min_ndim=2, dtype_kind="fiu")
    array = array.reshape(len(array), -1).astype(np.float32, copy=False)
    return _validation.check_finite(name, array)


def _as_binary(name, values):
    values = _validation.check_array(name, values, ndim=1, dtype_kind="biuf")
    if not np.all((values == 0) | (values == 1)):
        raise ValueError(
            f"Argument `{name}` must hold 0 (clean) and 1 (adversarial) only. "
            f"Received: values {np.unique(values)[:10].tolist()}"
        )
    return values.astype(bool)


def _check_k_candidates(k_candidates, n_train):
    if isinstance(k_candidates, (int, np.integer)):
        k_candidates = [k_candidates]
    ks = []
    for k in k_candidates:
        _validation.check_positive_int("k", k)
        if k > n_train:
            raise ValueError(f"k cannot exceed the {n_train} training samples. Received: k={k}")
        ks.append(int(k))
    if not ks:
        raise ValueError("Argument `k_candidates` must not be empty. Received: []")
    return sorted(set(ks))
