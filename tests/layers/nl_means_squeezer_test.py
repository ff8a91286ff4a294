import itertools

import keras
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from keras_advguard.layers import NLMeansSanitizer
from keras_advguard.layers.nl_means_squeezer import NLMeansSqueezer
from tests.layers._layer_test_case import run_layer_test


def nlm_image(img, search, patch, strength, value_range=(0.0, 1.0)):
    """The documented formula, pixel by pixel, on one (H, W, C) image."""
    low, high = value_range
    scale = 255.0 / (high - low)
    h_dim, w_dim, channels = img.shape
    p_before, p_after = patch // 2, (patch - 1) // 2
    s_before, s_after = search // 2, (search - 1) // 2
    padded = np.pad(img, ((p_before, p_after), (p_before, p_after), (0, 0)), mode="symmetric")
    out = np.empty_like(img)
    for i, j in np.ndindex(h_dim, w_dim):
        own = padded[i : i + patch, j : j + patch]
        numerator = np.zeros(channels)
        denominator = 0.0
        for di, dj in itertools.product(range(-s_before, s_after + 1), repeat=2):
            a, b = i + di, j + dj
            if not (0 <= a < h_dim and 0 <= b < w_dim):
                continue  # the search window is clipped to the image
            other = padded[a : a + patch, b : b + patch]
            distance = np.sum((scale * (own - other)) ** 2)  # patch and channels
            weight = np.exp(-distance / (patch * patch * channels * strength**2))
            numerator += weight * img[a, b]
            denominator += weight
        out[i, j] = numerator / denominator
    return out


def reference(x, **kwargs):
    return np.stack([nlm_image(img, **kwargs) for img in x])


def squeeze(x, dtype="float64", **kwargs):
    return keras.ops.convert_to_numpy(NLMeansSqueezer(dtype=dtype, **kwargs)(x))


def smooth_images(shape, seed):
    # Piecewise-constant images with mild noise: patches are similar enough
    # for the weights to be neither all 1 nor all 0.
    rng = np.random.default_rng(seed)
    base = np.kron(rng.random((shape[0], 3, 3, shape[3])), np.ones((1, 4, 4, 1)))
    base = base[:, : shape[1], : shape[2]]
    return np.clip(base + rng.normal(0, 0.01, size=base.shape), 0, 1)


@pytest.mark.parametrize(
    "search, patch, strength, channels",
    [(11, 3, 4.0, 1), (13, 3, 2.0, 3), (5, 2, 10.0, 3), (4, 3, 30.0, 2), (3, 1, 8.0, 1)],
)
def test_matches_reference(search, patch, strength, channels):
    x = smooth_images((2, 9, 10, channels), seed=search + channels)
    kwargs = dict(search=search, patch=patch, strength=strength)
    expected = reference(x, **kwargs)
    np.testing.assert_allclose(squeeze(x, **kwargs), expected, rtol=1e-10, atol=1e-12)
    # The weights are not degenerate: the result differs from the input.
    assert np.max(np.abs(expected - x)) > 1e-3


def test_value_range_rescales_to_0_255():
    x = smooth_images((1, 8, 8, 3), seed=7)
    kwargs = dict(search=5, patch=3, strength=6.0)
    ranged = squeeze(x * 2.0 - 1.0, value_range=(-1.0, 1.0), **kwargs)
    np.testing.assert_allclose(ranged, squeeze(x, **kwargs) * 2.0 - 1.0, atol=1e-12)
    np.testing.assert_allclose(
        ranged, reference(x * 2.0 - 1.0, value_range=(-1.0, 1.0), **kwargs), atol=1e-12
    )


def test_one_channel_equals_the_sanitizer_with_absolute_h():
    # For C = 1: exp(-SSD * 255^2 / (p^2 h^2)) is the sanitizer's weight with
    # an absolute h' = p * h / 255.
    x = smooth_images((2, 9, 9, 1), seed=3)
    ours = squeeze(x, search=7, patch=3, strength=5.0)
    sanitizer = NLMeansSanitizer(
        patch=3, search=7, h=3 * 5.0 / 255, h_mode="absolute", dtype="float64"
    )
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(sanitizer(x)), rtol=1e-12)


def test_channels_share_one_weight():
    # Channel 1 is constant: filtered on its own it would stay constant and
    # so would its weights; jointly, the weights come from channel 0 too.
    x = smooth_images((1, 8, 8, 2), seed=4)
    x[..., 1] = 0.5
    x[0, 3, 3, 1] = 0.6
    out = squeeze(x, search=5, patch=3, strength=20.0)
    np.testing.assert_allclose(out, reference(x, search=5, patch=3, strength=20.0), atol=1e-12)


def test_large_strength_averages_the_clipped_window():
    x = np.random.default_rng(5).random((1, 7, 6, 2))
    out = squeeze(x, search=3, patch=3, strength=1e9)
    ones = np.ones((7, 6))
    count = scipy.ndimage.uniform_filter(ones, 3, mode="constant")
    for c in range(2):
        mean = scipy.ndimage.uniform_filter(x[0, :, :, c], 3, mode="constant") / count
        np.testing.assert_allclose(out[0, :, :, c], mean, rtol=1e-7)


def test_constant_image_and_tiny_strength_return_the_input():
    x = np.full((2, 6, 6, 3), 0.25)
    np.testing.assert_array_equal(squeeze(x, search=5, patch=3, strength=2.0), x)
    y = np.random.default_rng(6).random((1, 6, 6, 3))
    np.testing.assert_allclose(squeeze(y, search=5, patch=3, strength=1e-3), y, atol=1e-12)


def test_gradient_is_finite():
    x = tf.constant(smooth_images((2, 8, 8, 3), seed=8).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(NLMeansSqueezer(search=5, patch=3, strength=4.0)(x) ** 2)
    grad = tape.gradient(total, x).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_layer_contract():
    x = smooth_images((2, 6, 6, 3), seed=9).astype("float32")
    kwargs = {"search": 3, "patch": 3, "strength": 4.0, "value_range": [0.0, 1.0]}
    run_layer_test(
        NLMeansSqueezer,
        kwargs,
        x,
        expected_output=reference(x.astype("float64"), search=3, patch=3, strength=4.0),
        atol=1e-6,
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"search": 0}, ValueError, "search"),
        ({"patch": 1.5}, TypeError, "patch"),
        ({"strength": 0.0}, ValueError, "strength"),
        ({"strength": "4"}, TypeError, "strength"),
        ({"value_range": (1.0, 1.0)}, ValueError, "low < high"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        NLMeansSqueezer(**kwargs)


def test_bad_rank():
    with pytest.raises(ValueError, match="rank-4"):
        NLMeansSqueezer()(np.zeros((2, 5), "float32"))
