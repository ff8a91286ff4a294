"""Activation-level helpers shared by detectors and the divergence analysis (floor 1).

Internal-layer feature squeezing (Jonas & Evans) compares a network's hidden
activations for two versions of the same inputs. Its three building blocks
live here, below both users, `keras_advguard.detectors.FeatureSqueezingDetector`
(floor 3) and `keras_advguard.divergence` (floor 2):

- `is_activation_layer(layer)`: the default choice of "activation layers";
- `cosine_distance(a, b)`: the per-sample distance (a `keras.ops` function,
  differentiable);
- `apply_in_batches(fn, x)`: a squeezer (or any callable) applied batch by
  batch.

Keras is imported inside the functions, so importing this module is cheap.
"""

import numpy as np

from keras_advguard import _validation

#: Activations that do not count as hidden non-linearities.
_NOT_HIDDEN = frozenset({"linear", "softmax", "log_softmax"})

#: Names of the standalone Keras activation layers.
_ACTIVATION_LAYER_CLASSES = ("ReLU", "LeakyReLU", "ELU", "PReLU")


def is_activation_layer(layer):
    """Whether `layer`'s output is a hidden activation (the default taps).

    Jonas & Evans average over "all the activation layers" of the network.
    Here that is every layer whose output has just gone through a
    non-linearity other than the final softmax:

    - a standalone `ReLU`, `LeakyReLU`, `ELU` or `PReLU` layer;
    - an `Activation` layer whose function is not `linear`, `softmax` or
      `log_softmax` (DenseNet's `Activation("relu")` layers);
    - any other layer with a fused `activation` (`Conv2D(...,
      activation="relu")`, `Dense(..., activation="relu")`), except
      `linear`, `softmax` and `log_softmax`.

    So the softmax output (what Xu et al.'s output score compares) and
    linear layers (pre-activations, pooling, flatten, batch normalisation)
    are left out. Use it as a `DetectorModel` selector
    (`DetectorModel(model, layers=is_activation_layer)`), or pass your own
    selectors to the detector's `layers=`.

    Args:
        layer: a `keras.layers.Layer`.

    Returns:
        A bool.

    Example:

        >>> import keras
        >>> is_activation_layer(keras.layers.Conv2D(4, 3, activation="relu"))
        True
        >>> is_activation_layer(keras.layers.Dense(10, activation="softmax"))
        False
    """
    if type(layer).__name__ in _ACTIVATION_LAYER_CLASSES:
        return True
    activation = getattr(layer, "activation", None)
    if activation is None or not callable(activation):
        return False
    name = getattr(activation, "__name__", type(activation).__name__)
    return name not in _NOT_HIDDEN


def cosine_distance(a, b):
    """Cosine distance `1 - cos(a, b)` of each pair of flattened samples.

    Computed in float32 as `||a / ||a|| - b / ||b|| ||^2 / 2`, which equals
    `1 - a.b / (||a|| ||b||)` and keeps its precision when the distance is
    tiny. Conventions for zero vectors (a dead ReLU layer): two zero vectors
    are at distance 0 (identical); a zero and a non-zero vector at distance 1
    (cosine 0). The result is in `[0, 2]`. Differentiable with finite
    gradients (also at zero vectors).

    Args:
        a: tensor `(B, ...)`.
        b: tensor of the same shape.

    Returns:
        A float32 tensor `(B,)`.

    Example:

        >>> import keras, numpy as np
        >>> a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
        >>> b = np.array([[0.0, 2.0], [2.0, 2.0], [0.0, 0.0]])
        >>> np.round(keras.ops.convert_to_numpy(cosine_distance(a, b)), 6)
        array([1., 0., 0.], dtype=float32)
    """
    from keras import ops

    a = ops.cast(a, "float32")
    b = ops.cast(b, "float32")
    batch = ops.shape(a)[0]
    a = ops.reshape(a, (batch, -1))
    b = ops.reshape(b, (batch, -1))
    sum_a = ops.sum(ops.square(a), axis=1)
    sum_b = ops.sum(ops.square(b), axis=1)
    pos_a = sum_a > 0
    pos_b = sum_b > 0
    unit_a = a / ops.expand_dims(ops.sqrt(ops.where(pos_a, sum_a, 1.0)), 1)
    unit_b = b / ops.expand_dims(ops.sqrt(ops.where(pos_b, sum_b, 1.0)), 1)
    distance = 0.5 * ops.sum(ops.square(unit_a - unit_b), axis=1)
    one_zero = ops.cast(ops.logical_or(pos_a, pos_b), "float32")
    return ops.where(ops.logical_and(pos_a, pos_b), distance, one_zero)


def check_inputs(name, x):
    """`x` as a float32 numpy array with a batch axis (`(N, ...)`, N >= 1)."""
    return _validation.check_array(name, x, min_ndim=2, dtype_kind="fiu").astype("float32")


def apply_in_batches(fn, x, batch_size=128):
    """`fn` applied to `x` batch by batch, as one float32 numpy array.

    Args:
        fn: a callable `(B, ...) -> (B, ...)` (a squeezer layer, a function).
        x: numpy array `(N, ...)`.
        batch_size: samples per call. Defaults to `128`.

    Returns:
        A float32 numpy array `(N, ...)`.

    Raises:
        ValueError: if `x` is empty or has no batch axis, or `batch_size`
            is not positive.
        TypeError: if `x` is not numeric.

    Example:

        >>> import numpy as np
        >>> out = apply_in_batches(lambda b: 2 * b, np.ones((5, 2)), batch_size=2)
        >>> out.shape, out.dtype.name, float(out.sum())
        ((5, 2), 'float32', 20.0)
    """
    import keras

    _validation.check_positive_int("batch_size", batch_size)
    x = check_inputs("x", x)
    parts = [
        keras.ops.convert_to_numpy(fn(x[start : start + batch_size])).astype("float32")
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts, axis=0)
