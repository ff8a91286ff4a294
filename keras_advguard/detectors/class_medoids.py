"""Exact L2 medoids of each class at each tapped layer (Caldelli et al.)."""

import math
import tempfile
from collections.abc import Mapping
from contextlib import nullcontext

import numpy as np

from keras_advguard import _progress, _validation

# Unit roundoff of float32 (round to nearest).
_U32 = 2.0**-24


class ClassMedoids:
    """Exact L2 medoid of every class at every tapped layer.

    For class `c` and layer `l`, with the class's activations
    `{a_l^k}` (k = 1..K_c), the representative is the member minimizing the
    sum of Euclidean distances to the others:

        R_c^l = argmin_{y in {a_l^k}}  sum_k || y - a_l^k ||_2

    The sums are computed one class at a time, in square blocks of
    `block_size x block_size` pairs, as
    `sqrt(max(0, ||a||^2 + ||b||^2 - 2 a.b))` with a float32 matrix product on
    the class-centered activations and float64 accumulation of the sums; the
    symmetry of the distance matrix halves the products. A rigorous bound on
    the float32 rounding error of every sum selects the members that can still
    be the medoid; when more than one can, their sums are recomputed in float64
    from direct differences. The result is therefore the medoid of the float64
    brute force `argmin_i sum_k ||a_i - a_k||`, ties (equal float64 sums,
    e.g. duplicated samples) going to the lowest sample index like
    `numpy.argmin`.

    Memory: besides the caller's arrays, one class of one layer at a time
    (`K_c x N_l` float32 plus a copy in the input dtype) and two
    `block_size x block_size` float32 blocks; nothing grows with the total
    number of samples. Time: `O(K_c^2 N_l)` per class and layer.

    Args:
        num_classes: number of classes `C`. Defaults to `None`: one more than
            the largest label. Every class in `[0, C)` must have at least one
            sample.
        only_correct: when `True`, a class is represented by its correctly
            classified samples only (prediction equal to the label); `fit` then
            needs `predictions`. Defaults to `False` (ground-truth labels, the
            paper's choice).
        max_samples_per_class: when a class has more samples than this, its
            medoid is computed on a random subset of this size (the same
            subset at every layer). The result is then the exact medoid of the
            subset, an *approximation* of the class medoid. Defaults to `None`
            (all samples).
        seed: seed of the subset drawn when `max_samples_per_class` applies;
            class `c` uses `numpy.random.default_rng([seed, c])`, so a class's
            subset does not depend on the other classes. Defaults to `0`.
        block_size: side of the square blocks of pairwise distances; the two
            working blocks take `8 * block_size**2` bytes. Defaults to `512`.
        verbose: `0` silent, `1` a progress bar over classes (and over batches
            in `fit_from_model`). Defaults to `0`.

    Attributes:
        medoids_: dict `{layer: array (C, N_l)}`, in the order of the
            activations given to `fit`; row `c` is a copy of the medoid sample
            of class `c` (same dtype as the activations).
        medoid_indices_: dict `{layer: int array (C,)}`, the index of each
            medoid among the samples given to `fit`.
        classes_: int array `(C,)`, `0..C-1`.
        n_samples_per_class_: int array `(C,)`, the number of samples each
            medoid was computed from (after `only_correct` filtering and the
            `max_samples_per_class` cap).

    Example:

        >>> import numpy as np
        >>> from keras_advguard.detectors import ClassMedoids
        >>> acts = {"dense": np.array([[0.0], [1.0], [5.0], [9.0], [10.0], [20.0]])}
        >>> labels = np.array([0, 0, 0, 1, 1, 1])
        >>> medoids = ClassMedoids().fit(acts, labels)
        >>> medoids.medoids_["dense"].ravel().tolist()
        [1.0, 10.0]
        >>> medoids.medoid_indices_["dense"].tolist()
        [1, 4]

    Reference:
        R. Caldelli, R. Becarelli, F. Carrara, F. Falchi, G. Amato.
        "Exploiting CNN Layer Activations to Improve Adversarial Image
        Classification", ICIP 2019.
    """

    def __init__(
        self,
        num_classes=None,
        *,
        only_correct=False,
        max_samples_per_class=None,
        seed=0,
        block_size=512,
        verbose=0,
    ):
        self.num_classes = num_classes
        self.only_correct = only_correct
        self.max_samples_per_class = max_samples_per_class
        self.seed = seed
        self.block_size = block_size
        self.verbose = verbose

    def fit(self, activations_by_layer, labels, *, predictions=None):
        """Compute the medoid of every class at every layer.

        Args:
            activations_by_layer: dict `{layer: array (N, N_l)}` (e.g.
                `DetectorModel.activations(x)`), or a list of such arrays
                (layers are then named `0..L-1`). Widths may differ by layer.
                Numpy memory maps work: only one class is read at a time.
            labels: int array `(N,)` of class ids, or `(N, C)` one-hot /
                scores (the argmax is taken).
            predictions: the classifier's predicted classes, same formats as
                `labels`. Required when `only_correct=True`, ignored otherwise.
                Defaults to `None`.

        Returns:
            `self`.

        Raises:
            ValueError: empty input, arrays of different lengths, activations
                that are not 2-D or not finite, labels outside
                `[0, num_classes)`, a class without samples (the message names
                it), or `only_correct=True` without `predictions`.
            TypeError: arguments of the wrong type.
        """
        self._check_params()
        layers = _as_layer_dict(activations_by_layer)
        (first_key, first), *others = layers.items()
        first_name = f"activations_by_layer[{first_key!r}]"
        for key, value in others:
            _validation.check_same_length(
                first_name, first, f"activations_by_layer[{key!r}]", value
            )
        labels = _validation.as_class_ids("labels", labels)
        _validation.check_same_length(first_name, first, "labels", labels)
        n = len(labels)
        num_classes = self.num_classes
        if num_classes is None:
            num_classes = int(labels.max()) + 1
        _check_range("labels", labels, num_classes)
        keep = np.ones(n, dtype=bool)
        if self.only_correct:
            if predictions is None:
                raise ValueError(
                    "`only_correct=True` needs the classifier's `predictions` "
                    "(class ids or scores, one per sample). Received: predictions=None"
                )
            predictions = _validation.as_class_ids("predictions", predictions)
            _validation.check_same_length("labels", labels, "predictions", predictions)
            keep = predictions == labels

        # Group the kept samples by class (stable: indices ascend in a group).
        order = np.flatnonzero(keep)
        order = order[np.argsort(labels[order], kind="stable")]
        bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
        counts = np.diff(bounds)
        if np.any(counts == 0):
            missing = np.flatnonzero(counts == 0)
            shown = ", ".join(str(c) for c in missing[:20])
            more = f" (and {len(missing) - 20} more)" if len(missing) > 20 else ""
            where = (
                " among the correctly classified samples (only_correct=True)"
                if self.only_correct
                else ""
            )
            raise ValueError(
                f"Every class needs at least one sample to have a medoid, but "
                f"class {shown}{more} has none{where}. Received: "
                f"num_classes={num_classes}, {int(keep.sum())} samples"
            )

        medoids = {k: np.empty((num_classes, v.shape[1]), v.dtype) for k, v in layers.items()}
        indices = {k: np.empty(num_classes, dtype=np.int64) for k in layers}
        used = np.empty(num_classes, dtype=np.int64)
        bar = _progress.progress_bar(num_classes, verbose=self.verbose, unit_name="class")
        for c in range(num_classes):
            members = order[bounds[c] : bounds[c + 1]]
            cap = self.max_samples_per_class
            if cap is not None and len(members) > cap:
                rng = np.random.default_rng([self.seed, c])
                members = np.sort(rng.choice(members, size=cap, replace=False))
            used[c] = len(members)
            for key, value in layers.items():
                points = np.asarray(value[members])
                try:  # per class: a memory map is read once
                    _validation.check_finite(f"activations_by_layer[{key!r}]", points)
                except ValueError as error:
                    raise ValueError(f"{error}, in the samples of class {c}") from None
                local = _medoid_index(points, self.block_size)
                indices[key][c] = members[local]
                medoids[key][c] = points[local]
            bar.update(c + 1)

        self.medoids_ = medoids
        self.medoid_indices_ = indices
        self.classes_ = np.arange(num_classes)
        self.n_samples_per_class_ = used
        return self

    def fit_from_model(self, detector_model, x, y=None, *, batch_size=128, cache_dir=None):
        """Run `detector_model` over `x` and fit the medoids of its taps.

        Args:
            detector_model: a `keras_advguard.DetectorModel` (its `collect`
                is the activation pass).
            x: numpy array of inputs, or a `tf.data.Dataset` yielding
                `(inputs, labels)` pairs (batched or not).
            y: labels for a numpy `x` (int `(N,)` or one-hot `(N, C)`); must be
                `None` for a dataset. Defaults to `None`.
            batch_size: batch size for numpy inputs and unbatched datasets.
                Defaults to `128`.
            cache_dir: when set, the pooled activations are written to
                temporary (memory-mapped) files in this folder and read back
                one class at a time (for training sets whose activations do not fit in
                memory); the files are deleted before returning. Defaults to
                `None` (kept in memory).

        Returns:
            `self`.

        Raises:
            ValueError: missing or extra labels, a model that taps nothing, an
                activation that is not 2-D (pool it in the `DetectorModel`),
                plus everything `fit` raises.
        """
        from keras_advguard import _batching

        names = list(getattr(detector_model, "tap_names", []) or [])
        if not names:
            raise ValueError(
                "`detector_model` taps no layer, so there is nothing to fit. "
                "Build it with `DetectorModel(model, layers=...)`. "
                f"Received: tap_names={names}"
            )
        _batching.check_label_source(x, y)
        is_dataset = _batching.is_tf_dataset(x)
        if not is_dataset:
            y = np.asarray(y)
            _validation.check_same_length("x", x, "y", y)

        with tempfile.TemporaryDirectory(dir=cache_dir) if cache_dir else nullcontext() as tmp:
            collected = detector_model.collect(
                x, batch_size=batch_size, verbose=self.verbose, cache_dir=tmp
            )
            activations = collected["activations"]
            for name, value in activations.items():
                if value.ndim != 2:
                    raise ValueError(
                        "Activations must be 2-D (batch, features) to compute medoids; "
                        "pool the maps in the DetectorModel (pooling='avg'). Received: "
                        f"activations[{name!r}] with shape={value.shape}"
                    )
            if len(collected["predicted_class"]) == 0:
                raise ValueError("Argument `x` must not be empty. Received: x with 0 samples")
            labels = collected["labels"] if is_dataset else y
            predictions = collected["predicted_class"] if self.only_correct else None
            self.fit(activations, labels, predictions=predictions)
            del activations, collected
        return self

    def _check_params(self):
        if self.num_classes is not None:
            _validation.check_positive_int("num_classes", self.num_classes)
        _validation.check_type("only_correct", self.only_correct, (bool, np.bool_))
        if self.max_samples_per_class is not None:
            _validation.check_positive_int("max_samples_per_class", self.max_samples_per_class)
        _validation.check_number("seed", self.seed, min_value=0, integer=True)
        _validation.check_positive_int("block_size", self.block_size)
        _validation.check_choice("verbose", self.verbose, (0, 1, 2))


def _as_layer_dict(activations_by_layer):
    if isinstance(activations_by_layer, Mapping):
        items = list(activations_by_layer.items())
    elif isinstance(activations_by_layer, (list, tuple)):
        items = list(enumerate(activations_by_layer))
    else:
        raise TypeError(
            "Argument `activations_by_layer` must be a dict {layer: array (N, N_l)} "
            "or a list of such arrays. Received: activations_by_layer of type "
            f"{type(activations_by_layer).__name__}"
        )
    if not items:
        raise ValueError(
            "Argument `activations_by_layer` must hold at least one layer. "
            "Received: activations_by_layer={}"
        )
    layers = {}
    for key, value in items:
        name = f"activations_by_layer[{key!r}]"
        if not isinstance(value, np.ndarray):  # memory maps pass through as they are
            value = np.asarray(value)
        _validation.check_array(name, value, ndim=2, dtype_kind="fiu")
        if value.dtype.kind != "f":
            value = value.astype(np.float64)
        layers[key] = value
    return layers


def _check_range(name, values, num_classes):
    bad = (values < 0) | (values >= num_classes)
    if np.any(bad):
        first = np.flatnonzero(bad)[0]
        raise ValueError(
            f"Argument `{name}` must hold class ids in [0, {num_classes}). "
            f"Received: {name}[{first}]={values[first]} "
            f"({int(bad.sum())} values out of range)"
        )


def _medoid_index(points, block_size):
    """Index of the exact L2 medoid of the rows of `points` (lowest on ties)."""
    k, dim = points.shape
    if k == 1:
        return 0
    # Balanced blocks: ceil(k / block_size) blocks of (nearly) equal size.
    b = -(-k // -(-k // block_size))
    # Center (distances do not change) so that the float32 cancellation in
    # ||a||^2 + ||b||^2 - 2ab is relative to the class spread, not its offset.
    # Float32 points minus a float32 center: the shift is exact for every point
    # alike, the subtraction's rounding is relative to the centered value.
    # Scaled by a power of two (exact, and the medoid does not change) so that
    # the largest centered coordinate lies in [0.5, 1): the float32 squares,
    # norms and products below can neither overflow (activations of ~1e20
    # have float32 squared norms beyond its range) nor underflow.
    y = np.empty((k, dim), dtype=np.float32)
    center = points.mean(axis=0, dtype=np.float64)
    spread = float(
        max(
            np.max(np.max(points, axis=0) - center),
            np.max(center - np.min(points, axis=0)),
        )
    )
    scale = 2.0 ** -np.frexp(spread)[1] if spread > 0.0 else 1.0
    if points.dtype == np.float32 and spread < 1e38 and 2.0**-126 <= scale <= 2.0**126:
        np.subtract(points, center.astype(np.float32), out=y)
        y *= np.float32(scale)
    else:
        for s in range(0, k, b):
            y[s : s + b] = (points[s : s + b] - center) * scale
    norms = np.einsum("ij,ij->i", y, y, dtype=np.float64)
    norms32 = norms.astype(np.float32)
    # |computed d^2 - exact d^2| <= delta for every pair (float32 dot products of
    # length `dim`, rounding of the norms and of the two additions).
    delta = (dim + 8) * _U32 * 1.01 * 2.0 * float(norms.max())
    root = np.float32(math.sqrt(delta))

    sums = np.zeros(k)  # sum_k d~_ik
    inv = np.zeros(k)  # sum_k 1 / max(d~_ik, sqrt(delta))
    g_buf = np.empty(b * b, dtype=np.float32)
    w_buf = np.empty(b * b, dtype=np.float32)
    for i0 in range(0, k, b):
        i1 = min(k, i0 + b)
        for j0 in range(i0, k, b):
            j1 = min(k, j0 + b)
            shape = (i1 - i0, j1 - j0)
            g = g_buf[: shape[0] * shape[1]].reshape(shape)
            np.matmul(y[i0:i1], y[j0:j1].T, out=g)
            g *= -2.0
            g += norms32[i0:i1, None]
            g += norms32[None, j0:j1]
            np.maximum(g, 0.0, out=g)
            np.sqrt(g, out=g)
            sums[i0:i1] += g.sum(axis=1, dtype=np.float64)
            if j0 != i0:
                sums[j0:j1] += g.sum(axis=0, dtype=np.float64)
            if delta > 0.0:
                w = w_buf[: shape[0] * shape[1]].reshape(shape)
                np.maximum(g, root, out=w)
                np.reciprocal(w, out=w)
                inv[i0:i1] += w.sum(axis=1, dtype=np.float64)
                if j0 != i0:
                    inv[j0:j1] += w.sum(axis=0, dtype=np.float64)

    # Per pair |d~ - d| <= delta / max(d~, sqrt(delta)) (+ the square root's own
    # rounding); casting the centered points to float32 moves each by at most
    # u * ||y_i||. Summing gives a bound on |sums_i - exact sum_i|.
    lengths = np.sqrt(norms)
    bound = delta * inv + 1.01 * _U32 * (sums + k * lengths + lengths.sum()) + 1e-12 * sums + 1e-300
    candidates = np.flatnonzero(sums - bound <= np.min(sums + bound))
    if len(candidates) == 1:
        return int(candidates[0])
    # Identical rows have identical sums: keep the first of each.
    first = {}
    for i in candidates:
        first.setdefault(points[i].tobytes(), i)
    candidates = np.array(sorted(first.values()))
    if len(candidates) == 1:
        return int(candidates[0])
    exact = [_distance_sum(points, i, b) for i in candidates]
    return int(candidates[int(np.argmin(exact))])


def _distance_sum(points, i, block_size):
    """`sum_k ||points[i] - points[k]||` in float64 from direct differences."""
    x = points[i].astype(np.float64)
    buffer = np.empty((min(block_size, len(points)), points.shape[1]))
    total = 0.0
    for s in range(0, len(points), block_size):
        chunk = points[s : s + block_size]
        diff = np.subtract(chunk, x, out=buffer[: len(chunk)])
        total += float(np.sqrt(np.einsum("ij,ij->i", diff, diff)).sum())
    return total
