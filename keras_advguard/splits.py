"""Splits of a data set: validation, train/validation/test and k-fold (floor 1).

Every split the library offers, in one place:

- `validation_split(x, y)`: a stratified validation part of a training set,
  to pick hyper-parameters on training data only;
- `train_val_test_split_by_group(groups)`: train / validation / test indices
  with no group (source image) in two splits;
- `stratified_kfold(labels, groups=None)`: shuffled stratified k-fold
  indices, optionally grouped by source image, so an image's clean and
  adversarial versions never straddle train and test.

They are also importable from their former homes
(`keras_advguard.datasets.validation_split`,
`keras_advguard.metrics.stratified_kfold`,
`keras_advguard.metrics.train_val_test_split_by_group`). scikit-learn is
imported inside the functions that need it.
"""

import math

import numpy as np

from keras_advguard import _validation


def validation_split(x, y, fraction=0.1, seed=0):
    """Split a training set into a fitting part and a stratified validation part.

    Use it to pick hyper-parameters (thresholds, epochs, window sizes) on
    training data only, never on the test set.

    Args:
        x: array of samples, first axis = samples.
        y: integer labels of shape `(N,)`, used to stratify.
        fraction: share of the samples that goes to validation, in `(0, 1)`.
            Defaults to `0.1`.
        seed: integer seed of the shuffle. Defaults to `0`.

    Returns:
        `(x_fit, y_fit), (x_val, y_val)`, the same dtypes as the inputs. Every
        class keeps (up to rounding) its share in both parts.

    Raises:
        ValueError: `fraction` outside `(0, 1)`, `x` and `y` of different
            lengths, or too few samples per class to stratify.
        TypeError: `y` not integer, `seed` not an integer.

    Example:

        >>> import numpy as np
        >>> x = np.arange(20, dtype="float32").reshape(10, 2)
        >>> y = np.array([0, 1] * 5)
        >>> (x_fit, y_fit), (x_val, y_val) = validation_split(x, y, fraction=0.4)
        >>> x_fit.shape, x_val.shape, sorted(y_val.tolist())
        ((6, 2), (4, 2), [0, 0, 1, 1])
    """
    x = _validation.check_array("x", x, min_ndim=1, dtype_kind="fcbiu")
    y = _validation.check_array("y", y, ndim=1, dtype_kind="iu")
    _validation.check_same_length("x", x, "y", y)
    _validation.check_number(
        "fraction",
        fraction,
        min_value=0,
        max_value=1,
        min_inclusive=False,
        max_inclusive=False,
    )
    _validation.check_number("seed", seed, min_value=0, integer=True)
    from sklearn.model_selection import train_test_split

    try:
        x_fit, x_val, y_fit, y_val = train_test_split(
            x, y, test_size=fraction, stratify=y, random_state=int(seed)
        )
    except ValueError as e:
        counts = np.bincount(y - y.min()) if y.size else []
        raise ValueError(
            "Cannot split the samples into a stratified validation set: every "
            "class needs at least 2 samples, and both parts at least one sample "
            f"per class ({len(np.unique(y))} classes). Use a larger `fraction` or "
            f"more data. Received: fraction={fraction}, len(y)={len(y)}, "
            f"smallest class size={int(np.min(counts[counts > 0]))}"
        ) from e
    return (x_fit, y_fit), (x_val, y_val)


def _check_groups(groups, n=None, labels_name="labels"):
    groups = _validation.check_nonempty("groups", groups, "iuUS")
    if groups.ndim != 1:
        raise ValueError(
            "Argument `groups` must be a 1-D array of group ids. "
            f"Received: groups with shape={groups.shape}"
        )
    if n is not None and groups.size != n:
        raise ValueError(
            f"Arguments `{labels_name}` and `groups` must have the same length. "
            f"Received: len({labels_name})={n}, len(groups)={groups.size}"
        )
    return groups


def stratified_kfold(labels, n_splits=5, seed=0, groups=None):
    """Shuffled stratified k-fold indices, optionally grouped by source image.

    Without `groups`: `sklearn.model_selection.StratifiedKFold` (shuffled).
    With `groups` (the id of the source image of each sample):
    `sklearn.model_selection.StratifiedGroupKFold` (shuffled), so an image's
    clean and adversarial versions are always in the same fold and never
    straddle train and test. Stratification is then approximate.

    Args:
        labels: 1-D array of the labels to stratify on, typically 0 clean /
            1 adversarial.
        n_splits: number of folds, at least 2. Defaults to `5`.
        seed: seed of the shuffle. Defaults to `0`.
        groups: optional 1-D array of group ids (ints or strings), one per
            sample. Defaults to `None`.

    Returns:
        A generator of `(train_index, test_index)` int64 array pairs, one per
        fold; every sample is in exactly one `test_index`.

    Raises:
        ValueError: if `labels` is empty or not 1-D, `groups` has another
            length, `n_splits < 2`, or scikit-learn cannot make the folds
            (e.g. more folds than samples or groups).
        TypeError: if `labels` holds floats, or `n_splits`/`seed` is not an int.

    Example:

        >>> labels = [0, 0, 1, 1, 0, 0, 1, 1]
        >>> groups = [0, 1, 0, 1, 2, 3, 2, 3]  # image i: clean and adversarial
        >>> for train, test in stratified_kfold(labels, 2, groups=groups):
        ...     shared = {groups[i] for i in train} & {groups[i] for i in test}
        ...     print(len(train), len(test), shared)
        4 4 set()
        4 4 set()
    """
    from sklearn import model_selection

    labels = _validation.check_labels("labels", labels)
    _validation.check_number("n_splits", n_splits, min_value=2, integer=True)
    _validation.check_number("seed", seed, min_value=0, integer=True)
    if groups is None:
        splitter = model_selection.StratifiedKFold(
            n_splits=int(n_splits), shuffle=True, random_state=int(seed)
        )
        splits = splitter.split(np.zeros(labels.size), labels)
    else:
        groups = _check_groups(groups, labels.size)
        splitter = model_selection.StratifiedGroupKFold(
            n_splits=int(n_splits), shuffle=True, random_state=int(seed)
        )
        splits = splitter.split(np.zeros(labels.size), labels, groups)
    # Materialise now so that scikit-learn's errors surface at the call.
    folds = [(train.astype(np.int64), test.astype(np.int64)) for train, test in splits]
    return (fold for fold in folds)


def train_val_test_split_by_group(groups, fractions=(0.8, 0.1, 0.1), seed=0):
    """Split sample indices into train, validation and test by group.

    The unique groups (e.g. source image ids) are shuffled with `seed` and
    dealt in order to train, validation and test; a group goes to the split
    in which the middle of its run of samples falls, so the sample fractions
    match `fractions` up to the size of one group. No group is in two splits.

    Args:
        groups: 1-D array of group ids (ints or strings), one per sample.
        fractions: three non-negative fractions of the samples for train,
            validation and test, summing to 1. Defaults to `(0.8, 0.1, 0.1)`.
        seed: seed of the shuffle. Defaults to `0`.

    Returns:
        A tuple `(train_index, val_index, test_index)` of sorted int64 arrays.

    Raises:
        ValueError: if `groups` is empty or not 1-D, `fractions` does not hold
            three values in `[0, 1]` summing to 1.
        TypeError: if `groups` holds floats, or `seed` is not an int.

    Example:

        >>> groups = [g for g in range(10) for _ in range(2)]  # 10 images x 2
        >>> train, val, test = train_val_test_split_by_group(groups, (0.6, 0.2, 0.2))
        >>> len(train), len(val), len(test)
        (12, 4, 4)
        >>> sorted({groups[i] for i in val} & {groups[i] for i in test})
        []
    """
    groups = _check_groups(groups)
    _validation.check_number("seed", seed, min_value=0, integer=True)
    fractions_array = _validation.check_array("fractions", fractions, ndim=1, dtype_kind="fiu")
    if fractions_array.size != 3:
        raise ValueError(
            "Argument `fractions` must hold three values (train, validation, "
            f"test). Received: fractions={fractions!r}"
        )
    for name, value in zip(("train", "validation", "test"), fractions_array.tolist(), strict=True):
        _validation.check_number(f"fractions ({name})", value, min_value=0.0, max_value=1.0)
    if not math.isclose(float(fractions_array.sum()), 1.0, abs_tol=1e-6):
        raise ValueError(
            "Argument `fractions` must sum to 1. "
            f"Received: fractions={fractions!r} (sum={float(fractions_array.sum())})"
        )
    unique, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.random.default_rng(int(seed)).permutation(unique.size)
    sizes = counts[order]
    middles = np.cumsum(sizes) - sizes / 2.0
    bounds = np.cumsum(fractions_array)[:2] * groups.size
    split_of_group = np.empty(unique.size, dtype=np.int64)
    split_of_group[order] = np.searchsorted(bounds, middles, side="right")
    split_of_sample = split_of_group[inverse]
    return tuple(np.flatnonzero(split_of_sample == k).astype(np.int64) for k in range(3))
