"""kNN baseline on one layer's activations (Carrara et al.)."""

import json
import os

import numpy as np

from keras_advguard import _validation, metrics
from keras_advguard._files import write_atomic, write_json

WEIGHTS = ("uniform", "distance")
DEFAULT_K_CANDIDATES = (1, 2, 5, 10, 20, 50, 100, 200)
_FORMAT_VERSION = 1


class KNNDetector:
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
    pooling of feature maps by default). scikit-learn style: `__init__`
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
        batch_size: batch size of the classifier passes. Defaults to `128`.
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

    # ------------------------------------------------------------------
    # Activations of the classifier

    def _check_params(self):
        _validation.check_positive_int("n_neighbors", self.n_neighbors)
        _validation.check_choice("weights", self.weights, WEIGHTS)
        _validation.check_positive_int("batch_size", self.batch_size)

    def _taps(self):
        import keras

        from keras_advguard.detector_model import DetectorModel

        if self.model is None:
            raise ValueError(
                "This KNNDetector has no model, so it cannot compute activations "
                "from inputs. Pass `model=` and `layer=`, or use the "
                "`*_activations` methods. Received: model=None"
            )
        cached = getattr(self, "_detector_model", None)
        key = (id(self.model), repr(self.layer), self.pooling)
        if cached is not None and self._detector_key == key:
            return cached
        model = self.model.base_model if isinstance(self.model, DetectorModel) else self.model
        _validation.check_type("model", model, keras.Model, "a keras.Model or a DetectorModel")
        if self.layer is None:
            raise ValueError("Argument `layer` is required with a model. Received: layer=None")
        taps = DetectorModel(model, layers=self.layer, pooling=self.pooling)
        if len(taps.tap_names) != 1:
            raise ValueError(
                "Argument `layer` must select exactly one layer. "
                f"Received: layer={self.layer!r}, which selects {taps.tap_names}"
            )
        self._detector_model, self._detector_key = taps, key
        return taps

    @property
    def layer_path_(self):
        """The path of the layer the activations come from."""
        return self._taps().tap_names[0]

    def activations(self, x):
        """The layer's activations and the classifier's predictions.

        Args:
            x: numpy inputs `(N, ...)` or a `tf.data.Dataset` of inputs or
                `(inputs, labels)` pairs (labels ignored).

        Returns:
            A pair `(activations (N, D) float32, predicted classes (N,) int64)`.
        """
        activations, predicted, _ = self._forward(x)
        return activations, predicted

    def _forward(self, x):
        """Activations, predicted classes and the dataset's labels (or None)."""
        self._check_params()
        taps = self._taps()
        name = taps.tap_names[0]
        acts, predicted, labels = [], [], []
        for outputs, yb in taps.iter_activations(x, batch_size=self.batch_size):
            acts.append(np.asarray(outputs["activations"][name], dtype=np.float32))
            predicted.append(np.argmax(outputs["prediction"], axis=-1))
            if yb is not None:
                labels.append(yb)
        if not acts:
            raise ValueError("Argument `x` holds no inputs. Received: an empty x")
        acts = np.concatenate(acts)
        return (
            acts.reshape(len(acts), -1),
            np.concatenate(predicted).astype(np.int64),
            np.concatenate(labels) if labels else None,
        )

    # ------------------------------------------------------------------
    # Fit

    def fit(self, x, y=None, *, validation_data=None, k_candidates=None, fpr=0.05):
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
            fpr: target FPR of the threshold set by `select_k`. Defaults to
                `0.05`.

        Returns:
            `self`.
        """
        from keras_advguard import _batching

        if _batching.is_tf_dataset(x) and y is not None:
            raise ValueError(
                "For a tf.data.Dataset the labels come from its (x, y) pairs; `y` "
                f"must be None. Received: y of type {type(y).__name__}"
            )
        activations, _, labels = self._forward(x)
        if y is None:
            if labels is None:
                raise ValueError(
                    "Training labels are required: pass `y`, or a dataset of (x, y) "
                    "pairs. Received: y=None"
                )
            y = labels
        self.fit_activations(activations, y)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError(
                    "Argument `validation_data` must be a pair (x_val, "
                    "is_adversarial_val). Received: validation_data of type "
                    f"{type(validation_data).__name__}"
                )
            self.select_k(*validation_data, k_candidates=k_candidates, fpr=fpr)
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
        labels = _as_class_ids("labels", labels)
        _validation.check_same_length("activations", activations, "labels", labels)
        self.train_activations_ = activations
        self.train_labels_ = labels
        self.n_neighbors_ = int(min(self.n_neighbors, len(labels)))
        self.nn_ = NearestNeighbors(algorithm=self.algorithm, n_jobs=self.n_jobs).fit(activations)
        for name in ("validation_auc_", "threshold_", "fpr_"):
            self.__dict__.pop(name, None)
        return self

    # ------------------------------------------------------------------
    # Scores

    def score(self, x):
        """Adversarial scores `1 - g(x)` in `[0, 1]`, shape `(N,)`."""
        _validation.check_is_fitted(self, "nn_")
        return self.score_activations(*self.activations(x))

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
        predicted = _as_class_ids("predicted_classes", predicted_classes)
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

    def select_k(self, x_val, is_adversarial_val, k_candidates=None, *, fpr=0.05):
        """Choose `k` by validation ROC AUC and set the threshold at `fpr`.

        Args:
            x_val: validation inputs, clean and adversarial.
            is_adversarial_val: 0/1 (or bool) labels `(N,)`, 1 = adversarial;
                both kinds must be present.
            k_candidates: candidate values. Defaults to `None`
                (`DEFAULT_K_CANDIDATES` up to the training size).
            fpr: target false positive rate of `threshold_`, computed on
                the clean validation inputs. Defaults to `0.05`.

        Returns:
            `self`, with `n_neighbors_`, `validation_auc_`, `threshold_`
            and `fpr_` set.
        """
        _validation.check_is_fitted(self, "nn_")
        activations, predicted = self.activations(x_val)
        return self.select_k_activations(
            activations, predicted, is_adversarial_val, k_candidates, fpr=fpr
        )

    def select_k_activations(
        self, activations, predicted_classes, is_adversarial, k_candidates=None, *, fpr=0.05
    ):
        """`select_k` on precomputed validation activations and predictions."""
        _validation.check_is_fitted(self, "nn_")
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
        self._set_threshold(by_k[best][~is_adv], fpr)
        return self

    def calibrate(self, x_clean_val, fpr=0.05):
        """Set `threshold_` so that at most `fpr` of clean validation inputs score above it.

        Args:
            x_clean_val: clean validation inputs (never the test set).
            fpr: target false positive rate. Defaults to `0.05`.

        Returns:
            `self`.
        """
        _validation.check_is_fitted(self, "nn_")
        self._set_threshold(self.score(x_clean_val), fpr)
        return self

    def _set_threshold(self, clean_scores, fpr):
        self.threshold_ = float(metrics.threshold_at_fpr(clean_scores, fpr))
        self.fpr_ = float(fpr)

    def predict(self, x):
        """Boolean flags `score(x) > threshold_`, shape `(N,)`."""
        _validation.check_is_fitted(self, ["nn_", "threshold_"])
        return self.score(x) > self.threshold_

    # ------------------------------------------------------------------
    # Save / load (JSON + npz, no pickle)

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

    def save(self, path, *, include_model=True):
        """Save the fitted detector without pickle.

        Writes `path` (JSON: parameters, `k`, threshold), the training
        activations and labels to the same name with `.npz` (read back with
        `allow_pickle=False`) and, with `include_model=True` and a model,
        the classifier as `.keras`. The neighbour index is rebuilt by `load`
        (`NearestNeighbors.fit` on the stored activations).

        Args:
            path: the JSON file to write, ending in `.json`.
            include_model: whether to save the classifier too. Defaults to
                `True`.

        Returns:
            `path`.

        Raises:
            ValueError: `path` not ending in `.json`, or not fitted.
        """
        _validation.check_is_fitted(self, "nn_")
        path = os.fspath(path)
        if not path.endswith(".json"):
            raise ValueError(f"Argument `path` must end in '.json'. Received: path={path!r}")
        stem = path[: -len(".json")]
        model_file = None
        if include_model and self.model is not None:
            model = self._taps().base_model
            write_atomic(stem + ".keras", model.save, ".keras")
            model_file = os.path.basename(stem + ".keras")
        write_atomic(
            stem + ".npz",
            lambda tmp: np.savez(
                tmp, train_activations=self.train_activations_, train_labels=self.train_labels_
            ),
            ".npz",
        )
        fitted = {"n_neighbors_": self.n_neighbors_}
        for name in ("threshold_", "fpr_"):
            if getattr(self, name, None) is not None:
                fitted[name] = getattr(self, name)
        if getattr(self, "validation_auc_", None) is not None:
            fitted["validation_auc_"] = [
                [int(k), float(v)] for k, v in self.validation_auc_.items()
            ]
        document = {
            "class_name": type(self).__name__,
            "format_version": _FORMAT_VERSION,
            "params": self.get_params(),
            "arrays_file": os.path.basename(stem + ".npz"),
            "model_file": model_file,
            "fitted": fitted,
        }
        write_json(path, document)
        return path

    @classmethod
    def load(cls, path, model=None):
        """Load a detector written by `save`.

        Args:
            path: the JSON file.
            model: the classifier. Defaults to `None`: the `.keras` file
                saved beside the JSON (safe mode), or no model if none was
                saved.

        Returns:
            A fitted `KNNDetector`.
        """
        path = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
        if not isinstance(document, dict) or document.get("class_name") != cls.__name__:
            raise ValueError(f"The file {path!r} does not hold a saved {cls.__name__}.")
        if document.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"Unsupported {cls.__name__} file format. Expected format_version="
                f"{_FORMAT_VERSION}. Received: format_version={document.get('format_version')!r}"
            )
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
    if not np.all(np.isfinite(array)):
        raise ValueError(f"Argument `{name}` must be finite. Received: NaN or inf values")
    return array


def _as_class_ids(name, values):
    values = np.asarray(values)
    if values.ndim == 2:
        _validation.check_array(name, values, ndim=2, dtype_kind="fiub")
        return np.argmax(values, axis=1).astype(np.int64)
    values = _validation.check_array(name, values, ndim=1, dtype_kind="iu")
    return values.astype(np.int64)


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
