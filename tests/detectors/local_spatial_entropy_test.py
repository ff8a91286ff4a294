import numpy as np
import pytest
import tensorflow as tf
from skimage.filters.rank import entropy as skimage_entropy

from keras_advguard.detectors.local_spatial_entropy import (
    entropy_score,
    local_spatial_entropy,
    response_to_gray,
)


def skimage_maps(gray, patch):
    footprint = np.ones((patch, patch), dtype=np.uint8)
    return np.stack([skimage_entropy(g, footprint) for g in gray])


@pytest.mark.parametrize("patch", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("levels", [3, 256])
def test_matches_skimage_on_random_images(patch, levels):
    rng = np.random.default_rng(patch * 1000 + levels)
    gray = rng.integers(0, levels, size=(4, 11, 13)).astype(np.uint8)
    maps = local_spatial_entropy(gray, patch=patch).numpy()
    assert maps.dtype == np.float64 and maps.shape == gray.shape
    np.testing.assert_allclose(maps, skimage_maps(gray, patch), rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Bad rank filter performance")
def test_matches_skimage_on_uint16_levels_and_one_image():
    gray = np.random.default_rng(0).integers(0, 2000, size=(9, 7)).astype(np.uint16)
    maps = local_spatial_entropy(gray).numpy()
    assert maps.shape == (9, 7)
    np.testing.assert_allclose(maps, skimage_entropy(gray, np.ones((3, 3))), atol=1e-12)


def test_constant_images_have_zero_entropy():
    gray = np.full((2, 6, 6), 7, dtype=np.uint8)
    np.testing.assert_array_equal(local_spatial_entropy(gray).numpy(), 0.0)
    np.testing.assert_array_equal(skimage_maps(gray, 3), 0.0)
    np.testing.assert_array_equal(entropy_score(np.ones((2, 6, 6, 3))).numpy(), 0.0)


def test_all_distinct_levels_reach_log2_of_the_window():
    gray = np.arange(36, dtype=np.uint8).reshape(1, 6, 6)
    maps = local_spatial_entropy(gray).numpy()[0]
    assert maps[2, 2] == pytest.approx(np.log2(9))  # interior: 9 distinct levels
    assert maps[0, 0] == pytest.approx(2.0)  # corner: 4 pixels inside the image
    assert maps[0, 3] == pytest.approx(np.log2(6))  # edge: 6 pixels


def test_score_is_the_mean_of_the_skimage_map_of_the_gray_map():
    rng = np.random.default_rng(1)
    response = rng.normal(size=(5, 12, 10, 3)).astype(np.float32)
    gray = response_to_gray(response).numpy()
    expected = skimage_maps(gray.astype(np.uint8), 3).mean(axis=(1, 2))
    np.testing.assert_allclose(entropy_score(response).numpy(), expected, atol=1e-12)


def test_response_to_gray_is_min_max_scaled_abs_channel_mean():
    rng = np.random.default_rng(2)
    response = rng.normal(size=(3, 5, 4, 2)).astype(np.float32)
    a = np.abs(response).mean(axis=-1)
    low = a.min(axis=(1, 2), keepdims=True)
    high = a.max(axis=(1, 2), keepdims=True)
    expected = np.floor((a - low) / (high - low) * 255 + 0.5)
    gray = response_to_gray(response).numpy()
    np.testing.assert_array_equal(gray, expected)
    assert gray.min() == 0 and gray.max() == 255
    np.testing.assert_array_equal(
        response_to_gray(response, levels=2).numpy(), np.floor((a - low) / (high - low) + 0.5)
    )
    # Constant map: level 0 everywhere.
    np.testing.assert_array_equal(response_to_gray(np.full((1, 3, 3, 1), 2.0)).numpy(), 0)


def test_soft_counts_approach_the_exact_entropy_and_have_gradients():
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 6, size=(2, 8, 8)).astype(np.float64)
    exact = local_spatial_entropy(gray).numpy()
    soft = local_spatial_entropy(gray, bandwidth=0.05).numpy()
    np.testing.assert_allclose(soft, exact, atol=1e-9)
    x = tf.constant(gray)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(local_spatial_entropy(x, bandwidth=1.0))
    grad = tape.gradient(value, x).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_surrogate_score_has_the_exact_value_and_a_gradient():
    response = tf.constant(np.random.default_rng(4).normal(size=(3, 9, 9, 1)), tf.float32)
    exact = entropy_score(response).numpy()
    with tf.GradientTape() as tape:
        tape.watch(response)
        surrogate = entropy_score(response, surrogate_bandwidth=1.0)
    np.testing.assert_allclose(surrogate.numpy(), exact, atol=1e-12)
    grad = tape.gradient(surrogate, response).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    with tf.GradientTape() as tape:
        tape.watch(response)
        plain = entropy_score(response)
    assert tape.gradient(plain, response) is None or not np.any(tape.gradient(plain, response))


def test_runs_inside_tf_function():
    gray = np.random.default_rng(5).integers(0, 9, size=(2, 7, 7)).astype(np.uint8)
    compiled = tf.function(lambda g: local_spatial_entropy(g, patch=3))
    np.testing.assert_allclose(
        compiled(tf.constant(gray)).numpy(), skimage_maps(gray, 3), atol=1e-12
    )


def test_errors():
    with pytest.raises(ValueError, match="shape"):
        local_spatial_entropy(np.zeros((2, 3, 4, 1)))
    with pytest.raises(ValueError, match="patch"):
        local_spatial_entropy(np.zeros((3, 3)), patch=0)
    with pytest.raises(TypeError, match="patch"):
        local_spatial_entropy(np.zeros((3, 3)), patch=2.5)
    with pytest.raises(ValueError, match="bandwidth"):
        local_spatial_entropy(np.zeros((3, 3)), bandwidth=-1.0)
    with pytest.raises(ValueError, match="levels"):
        response_to_gray(np.zeros((1, 3, 3, 1)), levels=1)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        entropy_score(np.zeros((3, 3, 1)))
    with pytest.raises(ValueError, match="surrogate_bandwidth"):
        entropy_score(np.zeros((1, 3, 3, 1)), surrogate_bandwidth=0.0)
    with pytest.raises(TypeError, match="gray"):
        local_spatial_entropy(np.array([["a", "b"]]))
