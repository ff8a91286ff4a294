"""Bit-depth reduction of input images (feature squeezing)."""

import keras
from keras import ops

from keras_advguard import _validation
from keras_advguard.layers import _precision, _squeeze_common

_MAX_BITS = 24  # 2**24 - 1 levels are still exact integers in float32.


@keras.saving.register_keras_serializable(package="keras_advguard")
class BitDepthSqueezer(keras.layers.Layer):
    """Reduce the colour depth of an input to `bits` bits per value.

    With the input range `[low, high]` (default `[0, 1]`) and
    `L = 2**bits - 1` levels above zero, every value becomes

        y = round((x - low) / (high - low) * L) / L * (high - low) + low

    which for the default range is Xu et al.'s `round(x * L) / L`
    (`numpy.rint`: halves round to the even integer). The result equals, bit
    for bit in float32 and float64, `numpy.rint` applied with the same
    operations. ART's `FeatureSqueezing(clip_values=(low, high),
    bit_depth=bits)` picks the same levels but returns them in float64 (its
    `2**bits - 1` is a float64 scalar), so on float32 inputs the two agree
    up to the float32 rounding of the levels (exactly for 1 bit). Values outside
    `value_range` are not clipped: they round to the same grid extended
    beyond it. Each sample, position and channel is independent, so any
    input rank is accepted.

    Xu et al. squeeze MNIST to 1 bit (`round(x)`, a binarisation at 0.5) and
    CIFAR-10 and ImageNet to 5 bits.

    Gradient: the rounding is flat between grid points, so the true gradient
    is zero almost everywhere (undefined at the half-way points). TensorFlow
    registers no gradient for `round`: a loss that only reaches the input
    through this layer has *no* gradient (`None`), and gradient attacks stop
    with an error rather than stall silently. Attack through it with BPDA
    (`keras_advguard.attacks.bpda(layer)`: identity on the backward pass).

    The layer is stateless; the output has the input's shape and
    `self.compute_dtype` (half-precision inputs are rounded in float32 and
    cast back, so the levels are those of float32 rounded to the dtype).

    Args:
        bits: number of bits per value, an int in `[1, 24]` (`2**bits`
            levels including 0).
        value_range: pair `(low, high)` of the input's valid range, `low <
            high`. Defaults to `(0.0, 1.0)`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor of any shape, batch first.

    Returns:
        A tensor of the same shape.

    Raises:
        TypeError: if `bits` is not an integer or `value_range` not a pair
            of numbers.
        ValueError: if `bits` is outside `[1, 24]` or `value_range` is not
            increasing.

    Example:

        >>> import numpy as np
        >>> layer = BitDepthSqueezer(bits=2)  # levels 0, 1/3, 2/3, 1
        >>> x = np.array([[0.1, 0.2, 0.5, 0.9]])
        >>> np.round(keras.ops.convert_to_numpy(layer(x)), 4)
        array([[0.    , 0.3333, 0.6667, 1.    ]], dtype=float32)

    Reference:
        W. Xu, D. Evans and Y. Qi, "Feature Squeezing: Detecting
        Adversarial Examples in Deep Neural Networks", NDSS 2018.
    """

    def __init__(self, bits, value_range=(0.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        _validation.check_number("bits", bits, min_value=1, max_value=_MAX_BITS, integer=True)
        self.bits = int(bits)
        self.value_range = _squeeze_common.check_value_range(value_range)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        work = ops.cast(x, _precision.work_dtype(x.dtype))
        low, high = self.value_range
        levels = float(2**self.bits - 1)
        width = high - low
        y = ops.round((work - low) / width * levels) / levels * width + low
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"bits": self.bits, "value_range": list(self.value_range)})
        return config
