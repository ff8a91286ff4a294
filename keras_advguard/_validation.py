"""Argument checks shared by the whole library.

Every public function validates its arguments through these helpers so that
errors read the same everywhere: what is wrong, what was expected, then
``Received: name=value``. No ``assert`` in library code.
"""

import numbers

import numpy as np


def _fmt(value):
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def check_type(name, value, types, expected=None):
    """Raise `TypeError` unless `value` is an instance of `types`."""
    if not isinstance(value, types):
        if expected is None:
            if isinstance(types, tuple):
                expected = " or ".join(t.__name__ for t in types)
            else:
                expected = types.__name__
        raise TypeError(
            f"Argument `{name}` must be {expected}. "
            f"Received: {name}={_fmt(value)} of type {type(value).__name__}"
        )
    return value


def check_choice(name, value, choices):
    """Raise `ValueError` unless `value` is one of `choices`."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"Argument `{name}` must be one of {listed}. Received: {name}={_fmt(value)}"
        )
    return value


def check_number(
    name,
    value,
    *,
    min_value=None,
    max_value=None,
    min_inclusive=True,
    max_inclusive=True,
    integer=False,
):
    """Check a real (or integer) scalar and its range; return it unchanged.

    Raises `TypeError` for a non-number (bools are refused) and `ValueError`
    for a number out of range or a NaN.
    """
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, (kind, np.number)):
        what = "an integer" if integer else "a real number"
        raise TypeError(
            f"Argument `{name}` must be {what}. "
            f"Received: {name}={_fmt(value)} of type {type(value).__name__}"
        )
    if integer and isinstance(value, np.floating):
        raise TypeError(f"Argument `{name}` must be an integer. Received: {name}={value!r}")
    if np.isnan(value):
        raise ValueError(f"Argument `{name}` must not be NaN. Received: {name}={value}")
    if min_value is not None:
        bad = value < min_value if min_inclusive else value <= min_value
        if bad:
            op = ">=" if min_inclusive else ">"
            raise ValueError(
                f"Argument `{name}` must be {op} {min_value}. Received: {name}={value}"
            )
    if max_value is not None:
        bad = value > max_value if max_inclusive else value >= max_value
        if bad:
            op = "<=" if max_inclusive else "<"
            raise ValueError(
                f"Argument `{name}` must be {op} {max_value}. Received: {name}={value}"
            )
    return value


def check_positive_int(name, value):
    """Check an integer >= 1 (batch sizes, windows, epochs)."""
    return check_number(name, value, min_value=1, integer=True)


def check_array(name, value, *, ndim=None, min_ndim=None, dtype_kind="fc", allow_empty=False):
    """Convert `value` to a numpy array and check its rank and dtype kind.

    Args:
        name: argument name used in error messages.
        value: array-like.
        ndim: exact rank required, or `None`.
        min_ndim: minimal rank, or `None`.
        dtype_kind: accepted numpy dtype kinds (`"f"` float, `"i"`/`"u"`
            integers, `"b"` bool, `"c"` complex).
        allow_empty: whether an array of size 0 is accepted.

    Returns:
        The numpy array.
    """
    try:
        array = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise TypeError(
            f"Argument `{name}` must be array-like. Received: {name} of type {type(value).__name__}"
        ) from e
    if array.dtype.kind not in dtype_kind:
        raise TypeError(
            f"Argument `{name}` must hold numbers of kind {dtype_kind!r} "
            f"(numpy dtype kinds). Received: {name} with dtype={array.dtype}"
        )
    if ndim is not None and array.ndim != ndim:
        raise ValueError(
            f"Argument `{name}` must have rank {ndim}. Received: {name} with shape={array.shape}"
        )
    if min_ndim is not None and array.ndim < min_ndim:
        raise ValueError(
            f"Argument `{name}` must have rank >= {min_ndim}. "
            f"Received: {name} with shape={array.shape}"
        )
    if not allow_empty and array.size == 0:
        raise ValueError(
            f"Argument `{name}` must not be empty. Received: {name} with shape={array.shape}"
        )
    return array


def check_same_length(name_a, a, name_b, b):
    """Raise `ValueError` unless `len(a) == len(b)`."""
    if len(a) != len(b):
        raise ValueError(
            f"Arguments `{name_a}` and `{name_b}` must have the same length. "
            f"Received: len({name_a})={len(a)}, len({name_b})={len(b)}"
        )


def check_same_shape(name_a, a, name_b, b, hint=""):
    """Raise `ValueError` unless `a.shape == b.shape`; `hint` ends the first sentence."""
    if a.shape != b.shape:
        raise ValueError(
            f"Arguments `{name_a}` and `{name_b}` must have the same shape{hint}. "
            f"Received: {name_a}.shape={a.shape}, {name_b}.shape={b.shape}"
        )


class NotFittedError(ValueError, AttributeError):
    """Raised when a scikit-learn style object is used before `fit`."""


def check_is_fitted(estimator, attributes):
    """Raise `NotFittedError` unless all `attributes` are set on `estimator`."""
    if isinstance(attributes, str):
        attributes = [attributes]
    if not all(getattr(estimator, a, None) is not None for a in attributes):
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet. "
            "Call `fit` with appropriate arguments before using it."
        )


def check_finite(name, value):
    """Raise `ValueError` if the array `value` holds NaN or infinite entries.

    Cheap on the arrays the library already holds in memory (one vectorised
    pass, no copy); call it per batch where data is streamed, so a large
    dataset is not read twice. Integer and boolean arrays are always finite.

    Returns:
        `value` unchanged.
    """
    array = np.asarray(value)
    if array.dtype.kind not in "fc" or array.size == 0:
        return value
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(array.size - finite.sum()) - n_nan
        raise ValueError(
            f"Argument `{name}` must hold finite values only. Received: {name} with "
            f"{n_nan} NaN and {n_inf} infinite value(s) out of {array.size} "
            f"(shape={array.shape})"
        )
    return value


def check_nonempty(name, value, dtype_kind):
    """`check_array` that reports emptiness before the dtype.

    `np.asarray([])` is float64, so an empty list of labels must be refused
    as empty (`ValueError`) before its dtype is judged (`TypeError`).
    """
    array = check_array(name, value, dtype_kind=dtype_kind + "f", allow_empty=True)
    if array.size == 0:
        raise ValueError(
            f"Argument `{name}` must not be empty. Received: {name} with shape={array.shape}"
        )
    return check_array(name, array, dtype_kind=dtype_kind)


def check_labels(name, value):
    """Return `value` as a non-empty 1-D array of class labels (ints, bools or strings)."""
    array = check_nonempty(name, value, "iubUS")
    if array.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must be a 1-D array of class labels "
            "(e.g. `np.argmax(probabilities, axis=-1)`). "
            f"Received: {name} with shape={array.shape}"
        )
    return array


def as_class_ids(name, values):
    """Class ids `(N,)` or one-hot / score rows `(N, C)` as int64 class ids `(N,)`.

    Rows are reduced by their argmax; 1-D values must be integers.

    Example:

        >>> as_class_ids("labels", [[0.1, 0.9], [1.0, 0.0]]).tolist()
        [1, 0]
        >>> as_class_ids("labels", [2, 0]).dtype
        dtype('int64')
    """
    values = np.asarray(values)
    if values.ndim == 2:
        check_array(name, values, ndim=2, dtype_kind="fiub")
        return np.argmax(values, axis=1).astype(np.int64)
    values = check_array(name, values, ndim=1, dtype_kind="iu")
    return values.astype(np.int64)


def check_clip(clip_min, clip_max):
    """Both bounds real numbers and `clip_min < clip_max` (attacks, training)."""
    check_number("clip_min", clip_min)
    check_number("clip_max", clip_max)
    if not clip_min < clip_max:
        raise ValueError(
            "Argument `clip_min` must be smaller than `clip_max`. "
            f"Received: clip_min={clip_min}, clip_max={clip_max}"
        )
