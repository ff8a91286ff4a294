"""Iterate over numpy arrays or `tf.data.Dataset`s in bounded batches."""

import numpy as np

from keras_advguard import _validation

def is_tf_dataset(x):
    """Whether `x` is a `tf.data.Dataset` (without importing TF eagerly)."""
    return type(x).__module__.startswith("tensorflow") and hasattr(x, "element_spec")

def iterate_batches(x, batch_size, *, with_labels=False):
    """Yield batches of `x` (numpy or `tf.data.Dataset`) as numpy arrays.

    Numpy inputs are sliced (no copy of the whole set); a dataset is assumed
    to be batched already if its element rank says so, else it is batched
    here. With `with_labels=True` a dataset must yield `(x, y)` pairs and each
    item is a pair of numpy arrays.

    Yields:
        `x_batch` or `(x_batch, y_batch)`.
    """
    _validation.check_positive_int("batch_size", batch_size)
    if is_tf_dataset(x):
        yield from _iterate_dataset(x, batch_size, with_labels)
        return
    if with_labels:
        raise ValueError("`with_labels=True` needs a tf.data.Dataset of (x, y) pairs.")
    array = np.asarray(x)
    for start in range(0, len(array), batch_size):
        yield array[start : start + batch_size]

def num_batches(x, batch_size):
    """Number of batches `iterate_batches` yields, or `None` when unknown."""
    if is_tf_dataset(x):

        n = int(x.cardinality())
        if n < 0:
            return None
        return n if _dataset_is_batched(x) else -(-n // batch_size)
    return -(-len(x) // batch_size)

def _dataset_is_batched(ds):
    spec = ds.element_spec
    first = spec[0] if isinstance(spec, tuple) else spec
    # A batched dataset has an unknown (None) leading dimension.
    return len(first.shape) > 0 and first.shape[0] is None

def _iterate_dataset(ds, batch_size, with_labels):
    if not _dataset_is_batched(ds):
        ds = ds.batch(batch_size)
    for item in ds:
        if isinstance(item, (tuple, list)):
            if with_labels:
                yield np.asarray(item[0]), np.asarray(item[1])
            else:
                yield np.asarray(item[0])
        else:
            if with_labels:
                raise ValueError(
                    "The dataset must yield (x, y) pairs. "
                    f"Received elements of spec {ds.element_spec}"
                )
            yield np.asarray(item)
