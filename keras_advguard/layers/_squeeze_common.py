"""Argument checks and dtype rules shared by the input squeezer layers."""

import keras

from keras_advguard import _validation


def check_value_range(value_range):
    """Return `value_range` as a `(low, high)` pair of floats, `low < high`.

    Raises:
        TypeError: if it is not a pair of real numbers.
        ValueError: if it does not hold two values or `low >= high`.
    """
    if isinstance(value_range, (str, bytes)) or not hasattr(value_range, "__len__"):
        raise TypeError(
            "Argument `value_range` must be a pair `(low, high)` of real numbers. "
            f"Received: value_range={value_range!r}"
        )
    if len(value_range) != 2:
        raise ValueError(
            "Argument `value_range` must be a pair `(low, high)` of real numbers. "
            f"Received: value_range={value_range!r}"
        )
    low, high = value_range
    _validation.check_number("value_range[0]", low)
    _validation.check_number("value_range[1]", high)
    if not float(low) < float(high):
        raise ValueError(
            f"Argument `value_range` must satisfy low < high. Received: value_range={value_range!r}"
        )
    return float(low), float(high)


def work_dtype(dtype):
    """float32 for half-precision dtypes, the dtype itself otherwise."""
    dtype = keras.backend.standardize_dtype(dtype)
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def check_image_rank(layer_name, input_shape):
    """Raise `ValueError` unless the input is a batch of images `(B, H, W, C)`."""
    if len(input_shape) != 4:
        raise ValueError(
            f"`{layer_name}` expects a rank-4 input (batch, height, width, "
            f"channels). Received: input_shape={tuple(input_shape)}"
        )
