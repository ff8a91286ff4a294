"""Mask the small activations of each hidden feature map."""

import functools
import math

import keras
from keras import ops

from keras_advguard import _validation
from keras_advguard.layers import _neighbourhood, _precision

_MODES = ("relative", "quantile", "absolute")
# Relative slack on q * n before rounding up, so that decimal fractions such
# as q=0.07, n=100 (0.07 * 100 == 7.000000000000001 in floating point) keep
# the intended 7 values.
_COUNT_SLACK = 1e-12


def _kept_count(q, n):
    """Number `k = ceil(q * n)` of values the quantile mode keeps at least.

    `q * n` is shrunk by a relative `1e-12` before rounding up, which absorbs
    floating-point error in decimal fractions. `k >= 1` for `q > 0`.
    """
    return max(1, math.ceil(q * n * (1.0 - _COUNT_SLACK)))


@keras.saving.register_keras_serializable(package="keras_advguard")
class MaskSanitizer(keras.layers.Layer):
    """Zero the activations below a per-map threshold, keep the others.

        s(i) = a(i) if a(i) >= tau else 0

    The threshold `tau` is computed per feature map: per sample and channel
    for 4-D inputs `(B, H, W, C)`, per sample for vectors `(B, N)`:

    - `mode="relative"` (default): `tau = alpha * max_j a(j)` over the map.
    - `mode="quantile"`: keep the top fraction `q` of the map's `n` values:
      with `k = ceil(q * n)` (`q * n` shrunk by a relative `1e-12` first, so
      `q=0.07, n=100` gives `k=7`), `tau` is the `k`-th largest value. Every
      value `>= tau` is kept, so with ties at `tau` more than `k` values may
      be kept; the threshold is exact (a selection, no interpolation).
    - `mode="absolute"`: `tau = threshold`, the same for every map.

    Only the parameter of the chosen mode may be set: `q` only with
    `"quantile"`, `threshold` only with `"absolute"`; `alpha` is required by
    `"relative"` and ignored by the other modes (it keeps its default).
    With `"relative"` and a map whose maximum is negative, `tau` exceeds
    every value and the whole map is zeroed; after a ReLU this cannot
    happen.

    Gradient: `tau` is wrapped in `stop_gradient`. The output's gradient is
    the identity for the kept entries and exactly zero for the masked ones.
    This is also the true derivative almost everywhere: `s` is piecewise
    `a(i)` or `0`, and moving `tau` only moves the jump points. Gradient
    attacks therefore cannot see through masked entries; an adaptive
    attacker should use BPDA (identity on the backward pass) for this layer.

    Half-precision inputs (`float16`, `mixed_float16`) are compared with the
    threshold in `float32`; the output has `self.compute_dtype`. The layer
    is stateless; the output has the input's shape.

    Args:
        mode: `"relative"`, `"quantile"` or `"absolute"`. Defaults to
            `"relative"`.
        alpha: fraction of the map's maximum used as threshold, in `[0, 1]`,
            required by `mode="relative"`. Defaults to `0.1`.
        q: fraction of values kept, in `(0, 1]`, required by
            `mode="quantile"`. Defaults to `None`.
        threshold: fixed threshold (any real), required by
            `mode="absolute"`. Defaults to `None`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(B, N)` or `(B, H, W, C)` (channels last).

    Returns:
        A tensor of the same shape.

    Raises:
        TypeError: if `alpha`, `q` or `threshold` is not a number.
        ValueError: for an unknown `mode`, a missing parameter of the mode,
            a parameter set for another mode, a value out of range (an
            infinite `threshold` included), or an input rank other than 2 or 4.

    Example:

        >>> import numpy as np
        >>> layer = MaskSanitizer(mode="relative", alpha=0.5)
        >>> x = np.array([[0.2, 1.0, 0.5, 0.7]])
        >>> keras.ops.convert_to_numpy(layer(x))
        array([[0. , 1. , 0.5, 0.7]], dtype=float32)
        >>> keras.ops.convert_to_numpy(MaskSanitizer(mode="quantile", q=0.25)(x))
        array([[0., 1., 0., 0.]], dtype=float32)

    Reference:
        The mask sanitizer of the "sanitizing hidden activations" defence
        for convolutional networks.
    """

    def __init__(self, mode="relative", alpha=0.1, q=None, threshold=None, **kwargs):
        super().__init__(**kwargs)
        _validation.check_choice("mode", mode, _MODES)
        if alpha is not None:
            _validation.check_number("alpha", alpha, min_value=0.0, max_value=1.0)
            alpha = float(alpha)
        elif mode == "relative":
            raise ValueError(
                "Argument `alpha` is required when mode='relative'. Received: alpha=None"
            )
        q = self._check_mode_argument("q", q, "quantile", mode)
        if q is not None:
            _validation.check_number("q", q, min_value=0.0, min_inclusive=False, max_value=1.0)
            q = float(q)
        threshold = self._check_mode_argument("threshold", threshold, "absolute", mode)
        if threshold is not None:
            _validation.check_number("threshold", threshold)
            if not math.isfinite(threshold):
                # +inf masks every unit, -inf none: neither is a sanitizer.
                raise ValueError(
                    f"Argument `threshold` must be finite. Received: threshold={threshold}"
                )
            threshold = float(threshold)
        self.mode = mode
        self.alpha = alpha
        self.q = q
        self.threshold = threshold

    @staticmethod
    def _check_mode_argument(name, value, owner, mode):
        if mode == owner and value is None:
            raise ValueError(
                f"Argument `{name}` is required when mode={owner!r}. Received: {name}=None"
            )
        if mode != owner and value is not None:
            raise ValueError(
                f"Argument `{name}` is only used when mode={owner!r}; leave it "
                f"None for mode={mode!r}. Received: {name}={value!r}"
            )
        return value

    def build(self, input_shape):
        _neighbourhood.check_map_rank(type(self).__name__, input_shape)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "relative" and keras.backend.backend() == "tensorflow":
            return _compiled_relative_mask(self.alpha, len(x.shape))(x)
        work = ops.cast(x, _precision.work_dtype(x.dtype))
        spatial_axes = (1,) if len(x.shape) == 2 else (1, 2)
        if self.mode == "relative":
            tau = self.alpha * ops.max(work, axis=spatial_axes, keepdims=True)
        elif self.mode == "absolute":
            tau = ops.convert_to_tensor(self.threshold, dtype=work.dtype)
        else:
            tau = self._quantile_threshold(work)
        tau = ops.stop_gradient(tau)
        # A 0-d zero broadcast by `where` (no zero map written).
        return ops.where(work >= tau, x, ops.convert_to_tensor(0, dtype=x.dtype))

    def _quantile_threshold(self, work):
        # The k-th largest value of each map, read with top_k from whichever
        # end needs fewer elements.
        if len(work.shape) == 4:
            flat = ops.transpose(work, (0, 3, 1, 2))
            flat = ops.reshape(flat, (ops.shape(flat)[0], ops.shape(flat)[1], -1))
        else:
            flat = work
        n = flat.shape[-1]
        if n is None:
            n_dynamic = ops.cast(ops.shape(flat)[-1], "float64")
            k = ops.ceil(self.q * n_dynamic * (1.0 - _COUNT_SLACK))
            k = ops.cast(ops.maximum(k, 1.0), "int32")
            tau = ops.top_k(flat, k, sorted=True)[0][..., -1]
        else:
            k = _kept_count(self.q, n)
            smallest = n - k + 1
            if k <= smallest:
                tau = ops.top_k(flat, k, sorted=True)[0][..., -1]
            else:
                tau = -ops.top_k(-flat, smallest, sorted=True)[0][..., -1]
        if len(work.shape) == 4:
            return tau[:, None, None, :]
        return tau[:, None]

    def compute_output_shape(self, input_shape):
        _neighbourhood.check_map_rank(type(self).__name__, input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mode": self.mode,
                "alpha": self.alpha,
                "q": self.q,
                "threshold": self.threshold,
            }
        )
        return config


@functools.cache
def _compiled_relative_mask(alpha, rank):
    """The relative mask as one XLA kernel forward and one backward (TF backend).

    Same values and gradient as the op-by-op `ops` version in `call` (a
    maximum, a comparison and a selection; the gradient is `dy` on the kept
    entries and 0 elsewhere, the threshold carrying no gradient), but one
    pass over the map instead of four when the model runs in eager or plain
    graph mode (`_neighbourhood.compile_with_gradient`). One compiled pair
    per `alpha` and input rank.
    """
    import tensorflow as tf

    axes = [1] if rank == 2 else [1, 2]

    def mask(x):
        work = tf.cast(x, _precision.work_dtype(x.dtype))
        tau = tf.constant(alpha, work.dtype) * tf.reduce_max(work, axis=axes, keepdims=True)
        return tf.where(work >= tf.stop_gradient(tau), x, tf.zeros((), x.dtype))

    return _neighbourhood.compile_with_gradient(mask)
