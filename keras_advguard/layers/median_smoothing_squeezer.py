"""Median smoothing of input images (feature squeezing)."""

import keras
from keras import ops

from keras_advguard import _validation
from keras_advguard.layers import _neighbourhood, _squeeze_common


@keras.saving.register_keras_serializable(package="keras_advguard")
class MedianSmoothingSqueezer(keras.layers.Layer):
    """Replace each pixel by the median of its `window x window` neighbourhood.

    Xu et al.'s local smoothing squeezer: every sample and every channel of
    a batch of images `(B, H, W, C)` is filtered independently over its two
    spatial axes. The result equals, element for element, what Xu et al.'s
    code computes,

        scipy.ndimage.median_filter(x, size=(1, window, window, 1), mode="reflect")

    (and ART's `SpatialSmoothing(window_size=window)`, the same call):

    - the window covers the offsets `-(window // 2) .. (window - 1) // 2`
      on each spatial axis: centred for odd windows; for the 2 x 2 window,
      the pixel, its upper and left neighbours and the upper-left one;
    - borders are extended by symmetric reflection with the edge value
      repeated (scipy's `"reflect"`, `numpy.pad(mode="symmetric")`);
    - for an even window the median of the `n` values is the order statistic
      of ascending rank `n // 2` (0-based), the upper of the two middle
      values (for 2 x 2: the second largest of 4), not their mean. The
      output is always one of the input values.

    The filter is the library's one median implementation
    (`keras_advguard.layers._neighbourhood.median_filter`, shared with
    `MedianSanitizer`): exact min/max selection networks (18 minima/maxima
    per pixel for 3 x 3, 6 for 2 x 2).

    Gradient: the median is a selection, so `d y(i) / d x(j)` is 1 for the
    one input value selected and 0 for the others (ties broken by the
    network's comparison order): finite everywhere, usable by gradient
    attacks as it is (no BPDA needed, although BPDA's identity is the usual
    smoother stand-in).

    The layer is stateless; the output has the input's shape and
    `self.compute_dtype`.

    Args:
        window: size of the square window, a positive int. Xu et al. use
            `2` and `3`. Defaults to `2`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(B, H, W, C)` (channels last).

    Returns:
        A tensor of the same shape.

    Raises:
        TypeError: if `window` is not an integer.
        ValueError: if `window < 1`, the input is not rank 4, or `window`
            exceeds `2 n + 1` for the image height or width `n`.

    Example:

        >>> import numpy as np
        >>> image = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
        >>> squeezed = MedianSmoothingSqueezer(window=2)(image)
        >>> keras.ops.convert_to_numpy(squeezed)[0, :, :, 0].tolist()
        [[1.0, 2.0], [3.0, 3.0]]

    Reference:
        W. Xu, D. Evans and Y. Qi, "Feature Squeezing: Detecting
        Adversarial Examples in Deep Neural Networks", NDSS 2018.
    """

    def __init__(self, window=2, **kwargs):
        super().__init__(**kwargs)
        _validation.check_positive_int("window", window)
        self.window = int(window)

    def build(self, input_shape):
        _squeeze_common.check_image_rank(type(self).__name__, input_shape)
        _neighbourhood.check_window_size(type(self).__name__, "window", self.window, input_shape)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        _neighbourhood.check_window_size(type(self).__name__, "window", self.window, x.shape)
        return _neighbourhood.compiled_median_filter(x, self.window, 2)

    def compute_output_shape(self, input_shape):
        _squeeze_common.check_image_rank(type(self).__name__, input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"window": self.window})
        return config
