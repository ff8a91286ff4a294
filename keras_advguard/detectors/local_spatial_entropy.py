"""Local spatial entropy of gray-level maps, and the entropy score of a response.

Amirian et al. turn a feature response into a gray-level image and measure
how spread out it is with the entropy of the gray levels in each small patch
(their Eq. 3), averaged over the image (their Eq. 4). This module holds:

- `local_spatial_entropy(gray, patch=3)`: the entropy map, equal to
  `skimage.filters.rank.entropy(gray, footprint=np.ones((patch, patch)))`;
- `response_to_gray(response, levels=256)`: the gray map of a response;
- `entropy_score(response, patch=3, levels=256)`: the mean of the entropy
  map of that gray map, the detector's score.

All three are written with TensorFlow ops on whole batches, so they also run
inside a `tf.function` and on the gradient path of adaptive attacks
(`bandwidth=` / `surrogate_bandwidth=`).
"""

import numpy as np

from keras_advguard import _validation


def _check_patch(patch):
    return _validation.check_positive_int("patch", patch)


def local_spatial_entropy(gray, patch=3, bandwidth=0.0):
    """Entropy (bits) of the gray levels in the `patch x patch` window of each pixel.

    For the window `W(i)` of pixel `i`, with `n_i` pixels inside the image
    and the normalized histogram `h_i(v) = #{j in W(i): g_j = v} / n_i`:

        S_i = - sum_v h_i(v) log2 h_i(v)

    computed as `(1 / n_i) sum_{j in W(i)} log2(n_i / c_j)`, where
    `c_j = #{k in W(i): g_k = g_j}` (each level `v` is counted `h_i(v) n_i`
    times). This equals `skimage.filters.rank.entropy(gray,
    footprint=np.ones((patch, patch)))` (tested to 1e-12):

    - the window covers the offsets `-(patch // 2) .. patch - 1 - patch // 2`
      on each axis (centred for odd sizes; scikit-image's anchor for even
      ones);
    - at the borders only the pixels inside the image are counted (no
      padding values enter the histogram), so a corner pixel of a 3 x 3
      window has a histogram of 4 pixels;
    - gray levels are compared for equality, so any integer levels work
      (uint8, uint16, or floats holding integers).

    With `bandwidth > 0` the counts become soft, `c_j = sum_k
    exp(-(g_j - g_k)^2 / (2 bandwidth^2))`: a differentiable surrogate of the
    histogram (the exact value is approached as `bandwidth -> 0`), for
    adaptive attacks.

    Args:
        gray: gray levels, shape `(N, H, W)` or `(H, W)`, any real or integer
            dtype (numpy array or tensor).
        patch: side of the square window, >= 1. Defaults to `3` (the paper's,
            the size of the first convolution's filters).
        bandwidth: `0` for exact counts, or the width (in gray levels) of the
            Gaussian kernel of the soft counts. Defaults to `0.0`.

    Returns:
        A float64 `tf.Tensor` of the shape of `gray`: the entropy in bits of
        each pixel's window, in `[0, log2(patch**2)]`.

    Raises:
        ValueError: `gray` not of rank 2 or 3, empty, `patch < 1`,
            `bandwidth < 0`.
        TypeError: a non-numeric `gray`, a non-integer `patch`.

    Example:

        >>> import numpy as np
        >>> gray = np.array([[0, 0, 1],
        ...                  [0, 0, 1],
        ...                  [2, 2, 2]], dtype=np.uint8)
        >>> maps = local_spatial_entropy(gray, patch=3).numpy()
        >>> float(maps[0, 0])  # window {0, 0, 0, 0}: a single level
        0.0
        >>> round(float(maps[1, 1]), 4)  # four 0s, two 1s, three 2s
        1.5305

    Reference:
        H. Amirian, A. Hosseini Mehr, F. Marquez, S. Pirk. "Trace and Detect
        Adversarial Attacks on CNNs Using Feature Response Maps", ANNPR 2018.
    """
    import tensorflow as tf

    patch = _check_patch(patch)
    _validation.check_number("bandwidth", bandwidth, min_value=0.0)
    if not tf.is_tensor(gray):
        gray = _validation.check_array("gray", gray, dtype_kind="fiub")
    if len(gray.shape) not in (2, 3):
        raise ValueError(
            "Argument `gray` must be a gray-level map of shape (N, H, W) or "
            f"(H, W). Received: gray with shape={tuple(gray.shape)}"
        )
    values = tf.cast(tf.convert_to_tensor(gray), tf.float64)
    squeeze = len(values.shape) == 2
    if squeeze:
        values = values[None]
    shape = tf.shape(values)
    height, width = shape[1], shape[2]

    # Every window as `patch**2` shifted copies of the zero-padded map, with
    # a 0/1 mask of which window positions fall inside the image.
    before, after = patch // 2, patch - 1 - patch // 2
    paddings = [[0, 0], [before, after], [before, after]]
    padded = tf.pad(values, paddings)
    inside = tf.pad(tf.ones_like(values), paddings)
    shifted, valid = [], []
    for di in range(patch):
        for dj in range(patch):
            shifted.append(padded[:, di : di + height, dj : dj + width])
            valid.append(inside[:, di : di + height, dj : dj + width])
    stacked = tf.stack(shifted, axis=-1)  # (N, H, W, P)
    valid_stacked = tf.stack(valid, axis=-1)
    n = tf.reduce_sum(valid_stacked, axis=-1)  # (N, H, W), >= 1

    # sum_j valid_j log(n / c_j), one window position j at a time (memory
    # (N, H, W, P) instead of (N, H, W, P, P)); n / c_j is exactly 1 for a
    # single level, so a constant window gives exactly 0.
    total = tf.zeros_like(n)
    for j in range(patch * patch):
        diff = stacked - stacked[..., j : j + 1]
        if bandwidth > 0:
            kernel = tf.exp(-tf.square(diff) / (2.0 * float(bandwidth) ** 2))
        else:
            kernel = tf.cast(tf.equal(diff, 0.0), tf.float64)
        count = tf.reduce_sum(kernel * valid_stacked, axis=-1)
        # c_j >= 1 where j is valid (it counts itself); n elsewhere (log 1).
        count = tf.where(valid[j] > 0, count, n)
        total += valid[j] * tf.math.log(n / count)
    entropy = total / (n * np.log(2.0))
    return entropy[0] if squeeze else entropy


def response_to_gray(response, levels=256):
    """The gray-level map of a feature response (Amirian et al., section 4.2).

    `|response|`, averaged over the channels, scaled per image to
    `[0, levels - 1]` by its minimum and maximum, and rounded to the nearest
    integer level (halves up): `round((a - min a) / (max a - min a) *
    (levels - 1))`. A constant map (max == min) gives level 0 everywhere.
    The paper converts the responses to gray-scale images without stating
    how; this reading (256 levels, min-max per image) is METHODS.md's
    **(choice)**.

    Args:
        response: feature responses `(N, H, W, C)` (or one map `(H, W, C)`),
            e.g. from `feature_response`.
        levels: number of gray levels, >= 2. Defaults to `256` (uint8).

    Returns:
        A float32 `tf.Tensor` `(N, H, W)` (or `(H, W)`) holding integers in
        `[0, levels - 1]`.

    Raises:
        ValueError: `response` not of rank 3 or 4, or `levels < 2`.

    Example:

        >>> import numpy as np
        >>> response = np.array([[[-1.0], [0.5]], [[0.0], [0.25]]])  # (2, 2, 1)
        >>> response_to_gray(response).numpy().tolist()
        [[255.0, 128.0], [0.0, 64.0]]
    """
    return _gray(response, levels)


def _gray(response, levels, quantize=True):
    import tensorflow as tf

    _validation.check_number("levels", levels, min_value=2, integer=True)
    if not tf.is_tensor(response):
        response = _validation.check_array("response", response, dtype_kind="fiu")
    if len(response.shape) not in (3, 4):
        raise ValueError(
            "Argument `response` must be feature responses of shape (N, H, W, C) "
            f"or (H, W, C). Received: response with shape={tuple(response.shape)}"
        )
    r = tf.cast(tf.convert_to_tensor(response), tf.float32)
    squeeze = len(r.shape) == 3
    if squeeze:
        r = r[None]
    a = tf.reduce_mean(tf.abs(r), axis=-1)
    low = tf.reduce_min(a, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(a, axis=[1, 2], keepdims=True)
    span = high - low
    safe = tf.where(span > 0, span, tf.ones_like(span))
    scaled = tf.where(span > 0, (a - low) / safe, tf.zeros_like(a)) * (levels - 1)
    if quantize:
        exact = tf.clip_by_value(tf.floor(scaled + 0.5), 0.0, float(levels - 1))
        # BPDA: the rounding's value, the identity's gradient.
        scaled = scaled + tf.stop_gradient(exact - scaled)
    return scaled[0] if squeeze else scaled


def entropy_score(response, patch=3, levels=256, surrogate_bandwidth=None):
    """The detector's score: mean local spatial entropy of the response's gray map.

    `mean_i S_i` over all pixels of `local_spatial_entropy(response_to_gray(
    response, levels), patch)` (Amirian et al., Eq. 4: the average over all
    K patches of the response).

    The exact score has no useful gradient (rounding to gray levels,
    counting equal levels). With `surrogate_bandwidth` set, the value is the
    same but the gradient is that of a differentiable stand-in (BPDA):
    identity through the rounding to gray levels, and the soft-histogram
    entropy (`local_spatial_entropy(..., bandwidth=surrogate_bandwidth)`) of
    the unrounded gray map in place of the counts. Adaptive attacks use it.

    Args:
        response: feature responses `(N, H, W, C)`.
        patch: side of the square window, >= 1. Defaults to `3`.
        levels: number of gray levels, >= 2. Defaults to `256`.
        surrogate_bandwidth: `None` for the exact score, or the kernel width
            (in gray levels, > 0) of the surrogate gradient. Defaults to
            `None`.

    Returns:
        A float64 `tf.Tensor` `(N,)` of scores in bits.

    Raises:
        ValueError: `response` not of rank 4, `patch < 1`, `levels < 2` or
            `surrogate_bandwidth <= 0`.

    Example:

        >>> import numpy as np
        >>> flat = np.ones((1, 4, 4, 1))  # constant response: one gray level
        >>> entropy_score(flat).numpy().tolist()
        [0.0]
    """
    import tensorflow as tf

    patch = _check_patch(patch)
    if len(getattr(response, "shape", np.shape(response))) != 4:
        raise ValueError(
            "Argument `response` must be a batch of feature responses of shape "
            f"(N, H, W, C). Received: response with shape={tuple(np.shape(response))}"
        )
    if surrogate_bandwidth is None:
        gray = _gray(response, levels)
        return tf.reduce_mean(local_spatial_entropy(gray, patch), axis=[1, 2])
    _validation.check_number(
        "surrogate_bandwidth", surrogate_bandwidth, min_value=0.0, min_inclusive=False
    )
    gray = _gray(response, levels)  # rounded value, identity gradient
    exact = tf.reduce_mean(local_spatial_entropy(tf.stop_gradient(gray), patch), axis=[1, 2])
    soft = tf.reduce_mean(
        local_spatial_entropy(gray, patch, bandwidth=surrogate_bandwidth), axis=[1, 2]
    )
    return soft + tf.stop_gradient(exact - soft)
