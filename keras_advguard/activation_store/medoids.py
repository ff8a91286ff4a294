"""Medoids from an activation store, and the medoids file (`save_medoids`, `load_medoids`)."""

import os

import numpy as np

from keras_advguard import _files, _progress, _validation

MEDOIDS_FORMAT = "keras_advguard.medoids"


def fit_store_medoids(
    store,
    *,
    num_classes=None,
    only_correct=False,
    max_samples_per_class=None,
    seed=0,
    block_size=512,
    verbose=0,
):
    """`ActivationStore.fit_medoids` (see there): one class of one layer in memory at a time."""
    from keras_advguard.detectors.class_medoids import ClassMedoids

    result = ClassMedoids(
        num_classes=num_classes,
        only_correct=only_correct,
        max_samples_per_class=max_samples_per_class,
        seed=seed,
        block_size=block_size,
        verbose=verbose,
    )
    if num_classes is not None:
        _validation.check_positive_int("num_classes", num_classes)
    _validation.check_type("only_correct", only_correct, (bool, np.bool_))
    if max_samples_per_class is not None:
        _validation.check_positive_int("max_samples_per_class", max_samples_per_class)
    _validation.check_number("seed", seed, min_value=0, integer=True)
    if store.labels is None:
        raise ValueError(
            "Class medoids need the true labels, and this store holds none "
            "(extract it with `y`, or from a dataset of (x, y) pairs). "
            f"Received: the store {store.directory!r}"
        )
    if store.num_samples == 0:
        raise ValueError(f"The store {store.directory!r} holds no samples.")
    if num_classes is None:
        num_classes = int(store.labels.max()) + 1
    bad = (store.labels < 0) | (store.labels >= num_classes)
    if np.any(bad):
        raise ValueError(
            f"The store's labels must be class ids in [0, {num_classes}). Received: "
            f"{int(bad.sum())} labels out of range (e.g. {int(store.labels[bad][0])})"
        )
    medoids = {
        name: np.empty((num_classes,) + store.layer_shapes[name], store.layer_dtypes[name])
        for name in store.tap_names
    }
    indices = {name: np.empty(num_classes, dtype=np.int64) for name in store.tap_names}
    used = np.empty(num_classes, dtype=np.int64)
    bar = _progress.progress_bar(num_classes, verbose=verbose, unit_name="class")
    for c in range(num_classes):
        rows = store.class_rows(c, only_correct=only_correct)
        if len(rows) == 0:
            where = " among the correctly classified rows" if only_correct else ""
            raise ValueError(
                f"Every class needs at least one sample to have a medoid, but class "
                f"{c} has none{where}. Received: num_classes={num_classes}, the store "
                f"{store.directory!r}"
            )
        keep = class_subset(store.sample_index[rows], c, max_samples_per_class, seed)
        rows = rows[keep]
        members = store.sample_index[rows]
        used[c] = len(rows)
        for j, name in enumerate(store.tap_names):
            points = store._gather(j, rows)
            try:
                local = medoid_position(points, block_size)
            except ValueError as error:
                raise ValueError(f"{error} (class {c}, layer {name!r})") from None
            medoids[name][c] = points[local]
            indices[name][c] = members[local]
            del points
        bar.update(c + 1)
    result.medoids_ = medoids
    result.medoid_indices_ = indices
    result.classes_ = np.arange(num_classes)
    result.n_samples_per_class_ = used
    return result


def adapt_distance(store, distance, batch_size=1024):
    """`ActivationStore.adapt` (see there): the distances' statistics, streaming."""
    from keras_advguard.layers import MedoidDistance
    from keras_advguard.layers.medoid_distance import streamed_mean_std

    _validation.check_type("distance", distance, MedoidDistance, "a MedoidDistance layer")
    if not distance.standardize:
        raise ValueError(
            "`adapt` fits the standardization of a layer built with `standardize=True`. "
            "Received: a MedoidDistance with standardize=False"
        )
    names = list(distance.tap_names or store.tap_names)
    raw = MedoidDistance(
        medoid_shapes=distance.medoid_shapes,
        tap_names=distance.tap_names,
        standardize=False,
        epsilon=distance.epsilon,
    )
    raw.set_medoids([np.asarray(v) for v in distance.medoids])
    mean, std = streamed_mean_std(
        (
            raw([batch["activations"][n] for n in names])
            for batch in store.iter_batches(batch_size, layers=names)
        ),
        distance.num_layers,
    )
    if mean is None:
        raise ValueError(f"The store {store.directory!r} holds no samples.")
    distance.set_standardization(mean, std)
    return distance


# ----------------------------------------------------------------------
# One class's medoid (shared with the Beam pipelines)


def class_subset(members, class_id, max_samples_per_class=None, seed=0):
    """Positions in `members` of the samples `ClassMedoids` uses for one class.

    `ClassMedoids` caps a class of more than `max_samples_per_class` samples
    at a random subset drawn with `numpy.random.default_rng([seed, class_id])`
    from the class's sample positions; this draws the same subset.

    Args:
        members: the class's sample positions, ascending.
        class_id: the class.
        max_samples_per_class: the cap, or `None` (all).
        seed: the seed. Defaults to `0`.

    Returns:
        An int array of positions into `members`, ascending.
    """
    members = np.asarray(members, dtype=np.int64)
    if max_samples_per_class is None or len(members) <= max_samples_per_class:
        return np.arange(len(members))
    rng = np.random.default_rng([seed, int(class_id)])
    chosen = np.sort(rng.choice(members, size=max_samples_per_class, replace=False))
    return np.searchsorted(members, chosen)


def medoid_position(points, block_size=512):
    """Row of the exact L2 medoid of `points` `(K, N_l)`, as `ClassMedoids.fit` finds it."""
    from keras_advguard.detectors.class_medoids import ClassMedoids

    one = ClassMedoids(num_classes=1, block_size=block_size)
    one.fit({"layer": points}, np.zeros(len(points), np.int64))
    return int(one.medoid_indices_["layer"][0])


# ----------------------------------------------------------------------
# Medoids files


def save_medoids(path, medoids):
    """Write fitted class medoids to one `.npz` file, atomically.

    The file holds, for layer `i` (in the medoids' order), `medoids_{i}`
    `(C, N_l)` and `medoid_indices_{i}` `(C,)`, plus `tap_names` (unicode),
    `n_samples_per_class` and `format` (`"keras_advguard.medoids"`): plain
    arrays, loaded with `allow_pickle=False`.

    Args:
        path: the target file (`.npz`).
        medoids: a fitted `ClassMedoids`, or a dict `{tap_name: array (C, N_l)}`.

    Returns:
        `path`.

    Example:

        >>> import os, tempfile, numpy as np
        >>> path = os.path.join(tempfile.mkdtemp(), "medoids.npz")
        >>> _ = save_medoids(path, {"fc": np.eye(2, dtype="float32")})
        >>> load_medoids(path).medoids_["fc"].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    arrays_by_name = getattr(medoids, "medoids_", medoids)
    if not isinstance(arrays_by_name, dict) or not arrays_by_name:
        raise TypeError(
            "Argument `medoids` must be a fitted ClassMedoids or a non-empty dict "
            f"{{tap_name: array (C, N_l)}}. Received: medoids of type {type(medoids).__name__}"
        )
    names = [str(k) for k in arrays_by_name]
    indices = getattr(medoids, "medoid_indices_", None) or {}
    members = {"format": np.array(MEDOIDS_FORMAT), "tap_names": np.array(names)}
    counts = getattr(medoids, "n_samples_per_class_", None)
    for i, (key, value) in enumerate(arrays_by_name.items()):
        value = _validation.check_array(f"medoids[{key!r}]", value, ndim=2, dtype_kind="fiu")
        members[f"medoids_{i}"] = value
        if key in indices:
            members[f"medoid_indices_{i}"] = np.asarray(indices[key], dtype=np.int64)
    if counts is not None:
        members["n_samples_per_class"] = np.asarray(counts, dtype=np.int64)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **members)

    _files.write_atomic(os.fspath(path), write, suffix=".npz")
    return path


def load_medoids(path):
    """Read a medoids file (`save_medoids`, the Beam medoid pipeline) as a fitted `ClassMedoids`.

    The result goes straight to `MedoidDistance.from_medoids` or
    `MedoidLSTMDetector.from_medoids(model, load_medoids(path))`.

    Args:
        path: a file written by `save_medoids`.

    Returns:
        A `ClassMedoids` with `medoids_` (and `medoid_indices_`,
        `n_samples_per_class_` when stored) set.

    Raises:
        ValueError: a file that is not a medoids file.
    """
    from keras_advguard.detectors.class_medoids import ClassMedoids

    with np.load(os.fspath(path), allow_pickle=False) as data:
        if "format" not in data or str(data["format"]) != MEDOIDS_FORMAT:
            raise ValueError(
                f"Argument `path` must be a medoids file written by `save_medoids` (format "
                f"{MEDOIDS_FORMAT!r}). Received: path={os.fspath(path)!r}"
            )
        names = [str(n) for n in data["tap_names"]]
        medoids = {name: data[f"medoids_{i}"] for i, name in enumerate(names)}
        indices = {
            name: data[f"medoid_indices_{i}"]
            for i, name in enumerate(names)
            if f"medoid_indices_{i}" in data
        }
        counts = data["n_samples_per_class"] if "n_samples_per_class" in data else None
    num_classes = len(next(iter(medoids.values())))
    result = ClassMedoids(num_classes=num_classes)
    result.medoids_ = medoids
    if len(indices) == len(names):
        result.medoid_indices_ = indices
    result.classes_ = np.arange(num_classes)
    if counts is not None:
        result.n_samples_per_class_ = counts
    return result
