"""Non-local means smoothing of input images (feature squeezing)."""

import keras
from keras import ops

from keras_advguard import _validation
from keras_advguard.layers import _neighbourhood, _precision, _squeeze_common


@keras.saving.register_keras_serializable(package="keras_advguard")
class NLMeansSqueezer(keras.layers.Layer):
    """Non-local means denoising of input images, Xu et al.'s "search-patch-strength".

    Xu et al.'s non-local smoothing squeezer, named by three numbers: "11-3-4"
    is a search window of 11, a patch of 3 and a filter strength of 4 on the
    0-255 scale (OpenCV's `fastNlMeansDenoisingColored(img, None, h=4,
    hColor=4, templateWindowSize=3, searchWindowSize=11)`). This layer
    computes, for every image `(H, W, C)` of the batch and every pixel `i`,

        y(i) = sum_{j in S(i)} w(i, j) x(j) / sum_{j in S(i)} w(i, j)
        w(i, j) = exp(-D(i, j) / (patch^2 * C * strength^2))
        D(i, j) = sum over the patch offsets t and the channels c of
                  (255 / (high - low))^2 * (x_c(i + t) - x_c(j + t))^2

    i.e. OpenCV's weight `exp(-d / (h^2 * C))` with `d` the patch distance
    averaged over the `patch x patch` positions, on pixel values rescaled to
    0-255. Colour channels share one weight per pair of pixels (the patch
    distance sums the channels), as OpenCV's `fastNlMeansDenoising` does for
    a multi-channel image.

    - `S(i)`: the `search x search` window around `i`, clipped to the image
      (positions outside are not candidates); `j = i` is always one, with
      weight 1, so the normaliser is at least 1.
    - Patches around `i` and `j` are read from the image padded by symmetric
      reflection, the edge value repeated (`numpy.pad(mode="symmetric")`).
    - Windows are anchored as in `scipy.ndimage`: size `k` covers the
      offsets `-(k // 2) .. (k - 1) // 2` (centred for the odd sizes Xu et
      al. use).

    Differences from OpenCV (so results are close to, not equal to, Xu et
    al.'s squeezed images):

    - OpenCV's `fastNlMeansDenoisingColored` converts RGB to CIELAB and
      denoises L (with `h`) and the a, b pair (with `hColor`) separately; this
      layer filters the channels as given, jointly (Xu et al. set `h =
      hColor`, so only the colour space differs). For one channel (MNIST,
      Xu et al.'s `fastNlMeansDenoising`) there is no such difference.
    - OpenCV works on uint8 images (Xu et al. round `x * 255` first) and
      rounds its output to uint8; this layer works on floats and does not
      quantise.
    - OpenCV approximates the patch average by a bit shift (divides the
      patch sum by the nearest power of two, `8` for a 3 x 3 patch, then
      rescales, so `d` is quantised), stores weights as fixed-point integers
      and sets weights below `0.001` to zero; this layer uses the exact
      average and float weights.
    - OpenCV extends borders with `BORDER_REFLECT_101` (edge not repeated)
      and keeps candidates from that reflected border; this layer repeats
      the edge for patches and clips the search window to the image.
    - OpenCV rounds even window sizes up to the next odd size; this layer
      anchors them as scipy does.

    Memory stays a few images' worth: the `search^2` offsets are unrolled at
    trace time into running sums (the library's non-local means filter,
    `keras_advguard.layers._neighbourhood.nl_means_filter`, shared with
    `NLMeansSanitizer`); no `(H W)^2` matrix is formed. Compile with
    `jit_compile=True` for speed. Half-precision inputs are filtered in
    float32 and cast back to `self.compute_dtype`.

    Gradient: smooth (exponentials, sums and a division by a normaliser of at
    least 1), so gradient attacks can go through it as it is.

    Args:
        search: search window size, a positive int. Defaults to `11`.
        patch: patch size, a positive int. Defaults to `3`.
        strength: filter strength `h` on the 0-255 scale, `> 0`. Defaults
            to `4.0`.
        value_range: pair `(low, high)` of the input's valid range, mapped to
            0-255 for `strength`. Defaults to `(0.0, 1.0)`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(B, H, W, C)` (channels last, `C` known).

    Returns:
        A tensor of the same shape.

    Raises:
        TypeError: if `search` or `patch` is not an integer, `strength` not a
            number or `value_range` not a pair of numbers.
        ValueError: if `search` or `patch` is `< 1`, `strength <= 0`,
            `value_range` not increasing, the input is not rank 4 with a
            known number of channels, or `patch` exceeds `2 n + 1` for the
            image height or width `n`.

    Example:

        >>> import numpy as np
        >>> squeezer = NLMeansSqueezer(search=3, patch=1, strength=255.0)
        >>> x = np.array([0.0, 0.0, 1.0]).reshape(1, 1, 3, 1)
        >>> np.round(keras.ops.convert_to_numpy(squeezer(x))[0, 0, :, 0], 4)
        array([0.    , 0.1554, 0.7311], dtype=float32)

    Reference:
        W. Xu, D. Evans and Y. Qi, "Feature Squeezing: Detecting
        Adversarial Examples in Deep Neural Networks", NDSS 2018;
        A. Buades, B. Coll and J.-M. Morel, "A non-local algorithm for image
        denoising", CVPR 2005.
    """

    def __init__(self, search=11, patch=3, strength=4.0, value_range=(0.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        _validation.check_positive_int("search", search)
        _validation.check_positive_int("patch", patch)
        _validation.check_number("strength", strength, min_value=0.0, min_inclusive=False)
        self.search = int(search)
        self.patch = int(patch)
        self.strength = float(strength)
        self.value_range = _squeeze_common.check_value_range(value_range)

    def _check_shape(self, input_shape):
        name = type(self).__name__
        _squeeze_common.check_image_rank(name, input_shape)
        if input_shape[-1] is None:
            raise ValueError(
                f"`{name}` needs a known number of channels (the last axis). "
                f"Received: input_shape={tuple(input_shape)}"
            )

    def build(self, input_shape):
        self._check_shape(input_shape)
        _neighbourhood.check_window_size(type(self).__name__, "patch", self.patch, input_shape)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        _neighbourhood.check_window_size(type(self).__name__, "patch", self.patch, x.shape)
        dtype = _precision.work_dtype(x.dtype)
        work = ops.cast(x, dtype)
        low, high = self.value_range
        scale = 255.0 / (high - low)
        channels = x.shape[-1]
        inv_h2 = scale * scale / (self.patch * self.patch * channels * self.strength**2)
        inv_h2 = ops.convert_to_tensor(inv_h2, dtype=dtype)
        out = _neighbourhood.nl_means_filter(
            work, self.patch, self.search, inv_h2, joint_channels=True
        )
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        self._check_shape(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "search": self.search,
                "patch": self.patch,
                "strength": self.strength,
                "value_range": list(self.value_range),
            }
        )
        return config
