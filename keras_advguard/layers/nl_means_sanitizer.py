"""Non-local means over each hidden feature map."""

import math

import keras
from keras import ops

from keras_advguard import _validation
from keras_advguard.layers import _neighbourhood, _precision

_H_MODES = ("relative", "absolute")


@keras.saving.register_keras_serializable(package="keras_advguard")
class NLMeansSanitizer(keras.layers.Layer):
    """Replace each activation by a patch-similarity weighted mean.

        s(i) = (1 / Z(i)) * sum_{j in S(i)} w(i, j) a(j)
        w(i, j) = exp(-||P(i) - P(j)||_2^2 / h^2),   Z(i) = sum_j w(i, j)

    computed on each feature map: per sample and channel for `(B, H, W, C)`,
    per sample with 1-D patches and windows for vectors `(B, N)`.

    - `P(i)` is the `patch x patch` patch around `i`, read from the map
      padded by symmetric reflection (`numpy.pad(mode="symmetric")`, the
      same border as `MedianSanitizer`).
    - `S(i)` is the `search x search` window around `i`, clipped to the map:
      positions outside the map are not candidates. `j = i` is always one,
      with weight 1.
    - Windows are anchored as in `scipy.ndimage`: size `k` covers the offsets
      `-(k // 2) .. (k - 1) // 2` (centred for odd sizes).
    - `h_mode="relative"` (default): the filtering strength is `h` times the
      standard deviation of the map (population, per sample and channel);
      `h^2` is floored at the dtype's smallest normal number, so a constant
      map (std 0) comes back unchanged. The map is filtered divided by a
      power of two near its largest magnitude and scaled back, so the
      relative mode is scale-equivariant (`s(c a) = c s(a)`) across the
      whole float32 range. `h_mode="absolute"`: `h` as given.

    Memory stays a few times the input: the `search^d` offsets are unrolled
    at trace time, each adding its weights and weighted values to running
    sums; patch distances are box sums of squared shifted differences. No
    `(H W)^2` weight matrix is formed. With the TensorFlow backend the
    samples of a batch are filtered one at a time (`tf.map_fn`), so each
    map stays in the CPU's cache across the offsets (same values, about 3
    times faster than whole-batch passes on a 2-core CPU). Half-precision
    inputs are filtered in `float32` and cast back to `self.compute_dtype`.

    Gradient: smooth (exponentials, sums, a division by `Z >= 1`), including
    through the map's standard deviation in the relative mode.

    The layer is stateless; the output has the input's shape.

    Args:
        patch: patch size, a positive int. Defaults to `3`.
        search: search window size, a positive int. Defaults to `7`.
        h: filtering strength, `> 0`: a multiple of the map's standard
            deviation (`h_mode="relative"`) or an absolute value. Defaults
            to `1.0`.
        h_mode: `"relative"` or `"absolute"`. Defaults to `"relative"`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(B, N)` or `(B, H, W, C)` (channels last).

    Returns:
        A tensor of the same shape.

    Raises:
        TypeError: if `patch` or `search` is not an integer or `h` not a
            number.
        ValueError: if `patch` or `search` is `< 1`, `h <= 0`, `h_mode` is
            unknown, the input rank is not 2 or 4, or `patch` exceeds
            `2 n + 1` for a spatial size `n` of the input (a `search`
            window wider than the map is clipped to it, exactly).

    Example:

        >>> import numpy as np
        >>> layer = NLMeansSanitizer(patch=1, search=3, h=1.0, h_mode="absolute")
        >>> x = np.array([[0.0, 0.0, 1.0]])
        >>> np.round(keras.ops.convert_to_numpy(layer(x)), 4)
        array([[0.    , 0.1554, 0.7311]], dtype=float32)

    Reference:
        The non-local-means sanitizer of the "sanitizing hidden
        activations" defence for convolutional networks; A. Buades, B. Coll,
        J.-M. Morel, "A non-local algorithm for image denoising", CVPR 2005.
    """

    def __init__(self, patch=3, search=7, h=1.0, h_mode="relative", **kwargs):
        super().__init__(**kwargs)
        _validation.check_positive_int("patch", patch)
        _validation.check_positive_int("search", search)
        _validation.check_number("h", h, min_value=0.0, min_inclusive=False)
        _validation.check_choice("h_mode", h_mode, _H_MODES)
        self.patch = int(patch)
        self.search = int(search)
        self.h = float(h)
        self.h_mode = h_mode

    def build(self, input_shape):
        _neighbourhood.check_map_rank(type(self).__name__, input_shape)
        _neighbourhood.check_window_size(type(self).__name__, "patch", self.patch, input_shape)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        _neighbourhood.check_window_size(type(self).__name__, "patch", self.patch, x.shape)
        work_dtype = _precision.work_dtype(x.dtype)
        work = ops.cast(x, work_dtype)
        y, num_spatial, restore = _neighbourhood.to_channels_last(work)
        floor = ops.convert_to_tensor(_neighbourhood.smallest_normal(work_dtype), work_dtype)
        if self.h_mode == "relative":
            # Filter the map divided by a power of two just below its largest
            # magnitude (per sample and channel), then scale back: the
            # squared patch distances and the variance stay inside the
            # dtype's range (a map of ~1e19 squares past float32's largest
            # value; one of ~1e-19 below its smallest normal), and the
            # result is scale-equivariant, filter(c a) = c filter(a), across
            # the whole range. Dividing by a power of two is exact, and the
            # scale carries no gradient: the filter is homogeneous of degree
            # one in `a`, so its gradient is the unscaled filter's.
            spatial_axes = tuple(range(1, num_spatial + 1))
            largest = ops.max(ops.abs(y), axis=spatial_axes, keepdims=True)
            # Clamped at the smallest normal's exponent: `log2` of that
            # number can come out a hair below -126 (float32, eager CPU
            # kernels), and 2^-127 is subnormal, flushed to zero, so a dead
            # (all-zero) map became 0 / 0 = NaN.
            min_exponent = math.log2(_neighbourhood.smallest_normal(work_dtype))
            exponent = ops.maximum(ops.floor(ops.log2(ops.maximum(largest, floor))), min_exponent)
            scale = ops.stop_gradient(ops.power(ops.cast(2.0, work_dtype), exponent))
            y = y / scale
            variance = ops.var(y, axis=spatial_axes, keepdims=True)
            h2 = (self.h * self.h) * variance
        else:
            scale = None
            h2 = ops.convert_to_tensor(self.h * self.h, dtype=work_dtype)
        inv_h2 = 1.0 / ops.maximum(h2, floor)
        out = _neighbourhood.blocked_nl_means_filter(y, self.patch, self.search, inv_h2)
        if scale is not None:
            out = out * scale
        return ops.cast(restore(out), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        _neighbourhood.check_map_rank(type(self).__name__, input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "patch": self.patch,
                "search": self.search,
                "h": self.h,
                "h_mode": self.h_mode,
            }
        )
        return config
