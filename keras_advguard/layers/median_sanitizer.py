"""Median filter over each hidden feature map."""

import keras
from keras import ops

from keras_advguard import _validation
from keras_advguard.layers import _neighbourhood


@keras.saving.register_keras_serializable(package="keras_advguard")
class MedianSanitizer(keras.layers.Layer):
    """Replace each activation by the median of its neighbourhood.

    For feature maps `(B, H, W, C)` every sample and channel is filtered
    independently with a `window x window` median; for vectors `(B, N)` (the
    output of a dense layer) each sample is filtered with a 1-D median of
    length `window`:

        s(i) = median{ a(j) : j in W(i) }

    The result equals `scipy.ndimage.median_filter(map, size=window,
    mode="reflect")` on each map, element for element:

    - the window covers the offsets `-(window // 2) .. (window - 1) // 2`
      on each spatial axis (centred for odd windows; for even windows the
      extra position is before the centre, as scipy anchors them);
    - borders are extended by symmetric reflection with the edge value
      repeated (`numpy.pad(mode="symmetric")`, TF `SYMMETRIC`); the window
      may reach one reflection past each border, so it is at most `2 n + 1`
      on an axis of size `n` (a wider one only repeats values; it is
      refused when the layer is built);
    - for an even window the median of the `n` values is the order
      statistic of ascending rank `n // 2` (0-based), i.e. the upper of the
      two middle values, not their mean. The output is always one of the
      input values.

    The default 3 x 3 window runs as a min/max network (18 elementwise
    minima/maxima per output, sorted columns shared between neighbouring
    windows), as do all windows up to 9 x 9 values (pruned Batcher networks);
    compile with XLA (`jit_compile=True`) for speed.

    Gradient: the median is a selection, so the gradient of `s(i)` is 1 for
    the one input value selected and 0 for the others (ties are broken by
    the network's comparison order). It exists and is finite everywhere but
    is piecewise constant in the selection.

    The layer is stateless; the output has the input's shape and
    `self.compute_dtype`.

    Args:
        window: size of the window along each spatial axis, a positive int.
            Defaults to `3`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(B, N)` or `(B, H, W, C)` (channels last).

    Returns:
        A tensor of the same shape.

    Raises:
        TypeError: if `window` is not an integer.
        ValueError: if `window < 1`, the input rank is not 2 or 4, or
            `window` exceeds `2 n + 1` for a spatial size `n` of the input.

    Example:

        >>> import numpy as np
        >>> layer = MedianSanitizer(window=3)
        >>> x = np.array([[1.0, 5.0, 2.0, 8.0, 3.0]])
        >>> keras.ops.convert_to_numpy(layer(x))
        array([[1., 2., 5., 3., 3.]], dtype=float32)

    Reference:
        The median-filtering sanitizer of the "sanitizing hidden
        activations" defence for convolutional networks; A. W. Paeth,
        "Median finding on a 3 x 3 grid", Graphics Gems, 1990 (the 3 x 3
        network); K. E. Batcher, "Sorting networks and their applications",
        1968 (odd-even merge sort, pruned to the median).
    """

    def __init__(self, window=3, **kwargs):
        super().__init__(**kwargs)
        _validation.check_positive_int("window", window)
        self.window = int(window)

    def build(self, input_shape):
        _neighbourhood.check_map_rank(type(self).__name__, input_shape)
        _neighbourhood.check_window_size(type(self).__name__, "window", self.window, input_shape)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        _neighbourhood.check_window_size(type(self).__name__, "window", self.window, x.shape)
        y, num_spatial, restore = _neighbourhood.to_channels_last(x)
        return restore(_neighbourhood.compiled_median_filter(y, self.window, num_spatial))

    def compute_output_shape(self, input_shape):
        _neighbourhood.check_map_rank(type(self).__name__, input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"window": self.window})
        return config
