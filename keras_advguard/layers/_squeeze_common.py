"""Argument checks shared by the input squeezer layers (dtype rule: `_precision`)."""

import math

from keras_advguard import _validation


def check_value_range(value_range):
    """Return `value_range` as a `(low, high)` pair of floats, `low < high`.

    Raises:
        TypeError: if it is not a pair of real numbers.
        ValueError: if it does not hold two finite values or `low >= high`.
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
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        raise ValueError(
            f"Argument `value_range` must hold finite values. Received: value_range={value_range!r}"
        )
    if not float(low) < float(high):
        raise ValueError(
            f"Argument `value_range` must satisfy low < high. Received: value_range={value_range!r}"
        )
    return float(low), float(high)


def check_image_rank(layer_name, input_shape):
    """Raise `ValueError` unless the input is a batch of images `(B, H, W, C)`."""
    if len(input_shape) != 4:
        raise ValueError(
            f"`{layer_name}` expects a rank-4 input (batch, height, width, "
            f"channels). Received: input_shape={tuple(input_shape)}"
        )
