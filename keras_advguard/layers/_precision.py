"""The dtype rule of the library's layers: half precision is computed in float32."""

import keras


def work_dtype(dtype):
    """float32 for half-precision dtypes (`float16`, `bfloat16`), the dtype itself otherwise.

    The layers compute thresholds, medians and weights in this dtype and
    cast the result back to their compute dtype, so `mixed_float16` and
    `float16` policies keep float32 accuracy where it matters.

    Example:

        >>> work_dtype("float16"), work_dtype("bfloat16"), work_dtype("float64")
        ('float32', 'float32', 'float64')
    """
    dtype = keras.backend.standardize_dtype(dtype)
    return "float32" if dtype in ("float16", "bfloat16") else dtype
