"""Exact L2 medoids of each class at each tapped layer (Caldelli et al.)."""

import math
import os
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np

from keras_advguard import _progress, _validation

# Unit roundoffs of float32 and float64 (round to nearest).
_U32 = 2.0**-24
_U64 = 2.0**-53


class ClassMedoids:
    """Exact L2 medoid of every class at every tapped layer.

    For class `c` and layer `l`, with the class's activations
    `{a_l^k}` (k = 1..K_c), the representative is the member minimizing the
    sum of Euclidean distances to the others:

        R_c^l = argmin_{y in {a_l^k}}  sum_k || y - a_l^k ||_2

    The sums are computed one class at a time, in square blocks of
    `block_size x block_size` pairs, as `sqrt(|a.b'|)` where one float32
    matrix product of the class-centered activations augmented with their
    squared norms (`a = [-2x, ||x||^2, 1]`, `b = [x, 1, ||x||^2]`) gives
    `||x||^2 + ||x'||^2 - 2 x.x'`; the row sums are matrix-vector products,
    added up in float64, and the symmetry of the distance matrix halves the
    work. A rigorous bound on the rounding error of every sum selects the
    members that can still be the medoid; when more than one can, their sums
    are recomputed the same way in float64, centered on the float32 winner
    (close pairs then cancel relative to their own small norms), with the
    float64 bound; if still more than one can, in float64 from direct
    differences. The result is therefore the medoid of the float64 brute force
    `argmin_i sum_k ||a_i - a_k||`, ties (equal float64 sums, e.g. duplicated
    samples) going to the lowest sample index like `numpy.argmin`.

    Speed: the matrix products run on one BLAS thread each (a multi-threaded
    BLAS spends more time synchronizing than multiplying on blocks this
    small) and the layers of a class run in parallel threads, one per CPU
    core. On the 60,000 MNIST training images with 7 taps of widths 10 to 200
    this is about the time of the Gram products at the machine's matmul peak
    (`benchmarks/fitting.py`).

    Memory: besides the caller's arrays, per layer in flight (one per core),
    one class (`K_c x N_l` in the input dtype, two `K_c x (N_l + 2)` float32
    operands, and float64 ones of the same shape when the float64 stage runs)
    and one `block_size x block_size` block (float64 at most, `8 *
    block_size**2` bytes, 2 MiB at the default); nothing grows with the total
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
        block_size: side of the square blocks of pairwise distances; the
            working block takes `4 * block_size**2` bytes (float32; twice
            that in the float64 stage). Defaults to `512`.
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
        block_size = self.block_size

        def medoid_of(key, members, c):
            points = np.asarray(layers[key][members])
            try:  # per class: a memory map is read once
                _validation.check_finite(f"activations_by_layer[{key!r}]", points)
            except ValueError as error:
                raise ValueError(f"{error}, in the samples of class {c}") from None
            local = _medoid_index(points, block_size)
            return local, points[local]

        workers = max(1, min(len(layers), _usable_cores()))
        with _one_blas_thread(), ThreadPoolExecutor(workers) as pool:
            for c in range(num_classes):
                members = order[bounds[c] : bounds[c + 1]]
                cap = self.max_samples_per_class
                if cap is not None and len(members) > cap:
                    rng = np.random.default_rng([self.seed, c])
                    members = np.sort(rng.choice(members, size=cap, replace=False))
                used[c] = len(members)
                futures = {key: pool.submit(medoid_of, key, members, c) for key in layers}
                for key, future in futures.items():  # errors in layer order
                    local, row = future.result()
                    indices[key][c] = members[local]
                    medoids[key][c] = row
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


def _usable_cores():
    """The CPU cores this process may run on (its affinity where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - macOS, Windows


def _one_blas_thread():
    """Context: the BLAS of numpy on one thread (`threadpoolctl`, a scikit-learn
    dependency); a no-op where it is missing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn always brings it
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


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
    # Stage 1, float32: every sum, with a rigorous bound on its error.
    y = _centered_float32(points, b)
    norms = np.einsum("ij,ij->i", y, y, dtype=np.float64)
    left, right = _augmented(y, norms, np.float32)
    del y
    sums = _distance_sums(left, right, b)
    del left, right
    bound = _sum_bound(norms, sums, dim, b, _U32, 1.01 * _U32)
    candidates = np.flatnonzero(sums - bound <= np.min(sums + bound))
    if len(candidates) > 1:
        # Stage 2, float64, centered on the stage-1 minimum: the candidates' sums.
        candidates = _refine(points, int(np.argmin(sums)), candidates, b)
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


def _centered_float32(points, block):
    """The rows centered on their mean and scaled by a power of two, in float32.

    Centering does not change the distances, so that the float32 cancellation
    in `||a||^2 + ||b||^2 - 2ab` is relative to the class spread, not its
    offset. Float32 points minus a float32 center: the shift is exact for every
    point alike, the subtraction's rounding is relative to the centered value.
    The power of two (exact, and the medoid does not change) puts the largest
    centered coordinate in [0.5, 1): the float32 squares, norms and products
    can neither overflow (activations of ~1e20 have float32 squared norms
    beyond its range) nor underflow.
    """
    k, dim = points.shape
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
        for s in range(0, k, block):
            y[s : s + block] = (points[s : s + block] - center) * scale
    return y


def _augmented(y, norms, dtype):
    """`left, right` with `left_i . right_j = ||y_i||^2 + ||y_j||^2 - 2 y_i . y_j`.

    `left = [-2 y, ||y||^2, 1]`, `right = [y, 1, ||y||^2]`: one matrix product
    gives the squared distances (the factor -2 is exact).
    """
    k, dim = y.shape
    left = np.empty((k, dim + 2), dtype=dtype)
    np.multiply(y, -2.0, out=left[:, :dim])
    left[:, dim] = norms
    left[:, dim + 1] = 1.0
    right = np.empty((k, dim + 2), dtype=dtype)
    right[:, :dim] = y
    right[:, dim] = 1.0
    right[:, dim + 1] = norms
    return left, right


def _distance_sums(left, right, block, rows=None):
    """`sum_j sqrt(|left_i . right_j|)` for the rows `i` (all when `None`).

    Blocks of `block x block` pairs: one matrix product, an absolute value and
    a square root in place, the sums by matrix-vector products (BLAS), added
    up in float64. For all rows the distance matrix's symmetry halves the work
    (each off-diagonal block gives its row and its column sums).
    """
    k = len(left)
    dtype = left.dtype
    g_buf = np.empty(block * block, dtype=dtype)
    ones = np.ones(block, dtype=dtype)
    part = np.empty(block, dtype=dtype)
    if rows is None:
        sums = np.zeros(k)
        for i0 in range(0, k, block):
            i1 = min(k, i0 + block)
            for j0 in range(i0, k, block):
                j1 = min(k, j0 + block)
                g = _root_block(left[i0:i1], right[j0:j1], g_buf)
                np.matmul(g, ones[: j1 - j0], out=part[: i1 - i0])
                sums[i0:i1] += part[: i1 - i0]
                if j0 != i0:
                    np.matmul(ones[: i1 - i0], g, out=part[: j1 - j0])
                    sums[j0:j1] += part[: j1 - j0]
        return sums
    sums = np.zeros(len(rows))
    for r0 in range(0, len(rows), block):
        r1 = min(len(rows), r0 + block)
        lhs = left[rows[r0:r1]]
        for j0 in range(0, k, block):
            j1 = min(k, j0 + block)
            g = _root_block(lhs, right[j0:j1], g_buf)
            np.matmul(g, ones[: j1 - j0], out=part[: r1 - r0])
            sums[r0:r1] += part[: r1 - r0]
    return sums


def _root_block(lhs, rhs, buffer):
    g = buffer[: len(lhs) * len(rhs)].reshape(len(lhs), len(rhs))
    np.matmul(lhs, rhs.T, out=g)
    np.abs(g, out=g)  # a negative d^2 (rounding) is below the error bound
    return np.sqrt(g, out=g)


def _gamma(n, u):
    return n * u / (1.0 - n * u)


def _sum_bound(norms, sums, dim, sum_terms, u, norm_error):
    """Rigorous bound on `|sums_i - exact sum_i|` (the float32 or the float64 stage).

    Per pair, the product's rounding (`dim + 2` terms summing to at most
    `2 (n_i + n_j)` in absolute value) and the norms' own error (`norm_error`,
    relative) put the computed `d^2` within `e_ij = c (n_i + n_j)` of the exact
    one, hence the distance within `sqrt(e_ij) <= sqrt(c) (|y_i| + |y_j|)`, and
    `<= sqrt(2 c max n)`. Added: the square root's rounding, the accumulation
    of the sums (at most `sum_terms` addends in the working precision, then
    float64) and the rounding of the points themselves (each moves by at most
    `u |y_i|`, so each distance by `u (|y_i| + |y_j|)`).
    """
    k = len(norms)
    lengths = np.sqrt(norms)
    spread_sums = k * lengths + float(lengths.sum())
    c = 1.01 * (2.0001 * _gamma(dim + 2, u) + norm_error)
    return (
        math.sqrt(c) * np.minimum(spread_sums, k * math.sqrt(2.0 * float(norms.max())))
        + (1.01 * (_gamma(sum_terms, u) + u) + _gamma(k + 1, _U64)) * sums
        + 1.01 * u * spread_sums
        + k * 1e-30
    )


def _refine(points, center, candidates, block):
    """The candidates whose sums, recomputed in float64, can still be the least.

    The points are centered on one of them (`center`, the float32 stage's
    least sum: in a dense cluster, so that the cancellation of close pairs is
    relative to their own small norms) and scaled by a power of two; the
    squared-norm products of the candidates' rows (all pairs by symmetry when
    they are more than half) with the float64 counterpart of the float32
    bound.
    """
    k, dim = points.shape
    z = np.empty((k, dim))
    origin = points[center].astype(np.float64)
    for s in range(0, k, block):
        np.subtract(points[s : s + block], origin, out=z[s : s + block])
    spread = float(np.max(np.abs(z)))
    if spread > 0.0:
        z *= 2.0 ** -np.frexp(spread)[1]
    norms = np.einsum("ij,ij->i", z, z)
    left, right = _augmented(z, norms, np.float64)
    del z
    if 2 * len(candidates) > k:
        sums = _distance_sums(left, right, block)
    else:
        sums = np.zeros(k)
        sums[candidates] = _distance_sums(left, right, block, rows=candidates)
    bound = _sum_bound(norms, sums, dim, 2 * k + 2, _U64, _gamma(dim, _U64))[candidates]
    sums = sums[candidates]
    return candidates[sums - bound <= np.min(sums + bound)]


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
