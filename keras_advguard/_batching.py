"""Iterate over numpy arrays or `tf.data.Dataset`s in bounded batches."""

import numpy as np

from keras_advguard import _validation


def is_tf_dataset(x):
    """Whether `x` is a `tf.data.Dataset` (without importing TF eagerly)."""
    return type(x).__module__.startswith("tensorflow") and hasattr(x, "element_spec")


def _input_spec(ds):
    spec = ds.element_spec
    return spec[0] if isinstance(spec, (tuple, list)) else spec


def has_labels(ds):
    """Whether a dataset yields `(x, y, ...)` tuples rather than bare inputs."""
    return isinstance(ds.element_spec, (tuple, list))


def check_label_source(x, y):
    """Where a fit's labels come from: `y` for arrays, the pairs of a dataset.

    A `tf.data.Dataset` carries its labels in `(x, y)` pairs, so `y` must be
    `None` and the dataset must yield pairs; array inputs need `y`.

    Raises:
        ValueError: `y` given with a dataset, a dataset of bare inputs, or
            arrays without `y`.

    Example:

        >>> import numpy as np
        >>> check_label_source(np.zeros((2, 3)), [0, 1]) is None
        True
    """
    if not is_tf_dataset(x):
        if y is None:
            raise ValueError(
                "Labels `y` are required for array inputs (or pass a tf.data.Dataset "
                "of (x, y) pairs). Received: y=None"
            )
        return
    if y is not None:
        raise ValueError(
            "For a tf.data.Dataset the labels come from its (x, y) pairs; `y` must be "
            f"None. Received: y of type {type(y).__name__}"
        )
    if not has_labels(x):
        raise ValueError(
            "The dataset must yield (x, y) pairs with the labels. "
            f"Received a dataset with element_spec={x.element_spec}"
        )


def is_batched(ds, input_rank=None):
    """Whether the dataset's elements are batches.

    With `input_rank` (the rank of a model input *including* the batch axis)
    the answer is exact: elements of that rank are batches. Without it, an
    unknown leading dimension is taken as the batch axis (what `.batch()`
    without `drop_remainder` produces).
    """
    shape = _input_spec(ds).shape
    if input_rank is not None:
        if len(shape) not in (input_rank, input_rank - 1):
            raise ValueError(
                f"The dataset yields inputs of rank {len(shape)} (shape {shape}); the "
                f"model expects batches of rank {input_rank}."
            )
        return len(shape) == input_rank
    return len(shape) > 0 and shape[0] is None


def ensure_batched(ds, batch_size, input_rank=None):
    """Return `ds` batched by `batch_size` unless it already yields batches."""
    return ds if is_batched(ds, input_rank) else ds.batch(batch_size)


def iterate_batches(x, batch_size, *, with_labels=False, input_rank=None):
    """Yield batches of `x` (numpy or `tf.data.Dataset`) as numpy arrays.

    Numpy inputs are sliced (no copy of the whole set). A dataset is batched
    here unless it already yields batches (see `is_batched`). With
    `with_labels=True` a dataset must yield `(x, y)` pairs and each item is a
    pair of numpy arrays.

    Yields:
        `x_batch` or `(x_batch, y_batch)`.
    """
    _validation.check_positive_int("batch_size", batch_size)
    if is_tf_dataset(x):
        if with_labels and not has_labels(x):
            raise ValueError(
                f"The dataset must yield (x, y) pairs. Received elements of spec {x.element_spec}"
            )
        for item in ensure_batched(x, batch_size, input_rank):
            if has_labels(x):
                yield (
                    (np.asarray(item[0]), np.asarray(item[1]))
                    if with_labels
                    else np.asarray(item[0])
                )
            else:
                yield np.asarray(item)
        return
    if with_labels:
        raise ValueError("`with_labels=True` needs a tf.data.Dataset of (x, y) pairs.")
    array = np.asarray(x)
    for start in range(0, len(array), batch_size):
        yield array[start : start + batch_size]


def num_batches(x, batch_size, input_rank=None):
    """Number of batches `iterate_batches` yields, or `None` when unknown."""
    if is_tf_dataset(x):
        n = int(x.cardinality())
        if n < 0:
            return None
        return n if is_batched(x, input_rank) else -(-n // batch_size)
    return -(-len(x) // batch_size)
