import keras
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from keras_advguard.layers import MedianSanitizer, _neighbourhood
from keras_advguard.layers.median_smoothing_squeezer import MedianSmoothingSqueezer
from tests.layers._layer_test_case import run_layer_test


def xu_median(x, window):
    """Xu et al.'s median_filter_py (also ART's SpatialSmoothing)."""
    return scipy.ndimage.median_filter(x, size=(1, window, window, 1), mode="reflect")


def squeeze(x, window, dtype="float64"):
    return keras.ops.convert_to_numpy(MedianSmoothingSqueezer(window, dtype=dtype)(x))


@pytest.mark.parametrize("window", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("kind", ["uniform", "integers"])
def test_matches_xu_scipy_call(window, kind):
    rng = np.random.default_rng(window)
    shape = (3, 9, 8, 3)
    if kind == "uniform":
        x = rng.random(shape)
    else:  # many ties, like images with flat regions
        x = rng.integers(0, 4, size=shape).astype("float64")
    np.testing.assert_array_equal(squeeze(x, window), xu_median(x, window))


def test_mnist_like_float32_images():
    x = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28, 1)).astype("float32") / 255
    for window in (2, 3):
        np.testing.assert_array_equal(squeeze(x, window, "float32"), xu_median(x, window))


def test_hand_worked_2x2():
    # The 2 x 2 window covers the pixel, its upper and left neighbours and
    # the upper-left one (scipy anchoring); the result is the second largest.
    image = np.array([[1.0, 5.0, 2.0], [4.0, 3.0, 6.0]]).reshape(1, 2, 3, 1)
    out = squeeze(image, 2)[0, :, :, 0]
    # (1, 1): {1, 5, 4, 3} -> 4; (1, 2): {5, 2, 3, 6} -> 5; (0, 1): {1, 5, 1, 5} -> 5.
    assert out[1, 1] == 4.0
    assert out[1, 2] == 5.0
    assert out[0, 1] == 5.0


def test_uses_the_shared_median(monkeypatch):
    calls = []
    original = _neighbourhood.compiled_median_filter

    def spy(x, size, num_spatial):
        calls.append((size, num_spatial))
        return original(x, size, num_spatial)

    monkeypatch.setattr(_neighbourhood, "compiled_median_filter", spy)
    x = np.random.default_rng(1).random((1, 5, 5, 2)).astype("float32")
    out = squeeze(x, 3, "float32")
    assert calls == [(3, 2)]
    np.testing.assert_array_equal(out, keras.ops.convert_to_numpy(MedianSanitizer(3)(x)))


def test_gradient_selects_one_input_per_output():
    x = tf.constant(np.random.default_rng(2).random((2, 6, 6, 1)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(MedianSmoothingSqueezer(3)(x))
    grad = tape.gradient(total, x).numpy()
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad, np.round(grad))  # counts of selections
    assert grad.sum() == x.shape[0] * 36  # one selected input per output


def test_layer_contract():
    x = np.random.default_rng(3).random((2, 6, 5, 3)).astype("float32")
    run_layer_test(
        MedianSmoothingSqueezer,
        {"window": 2},
        x,
        expected_output=xu_median(x, 2),
        atol=0,
        rtol=0,
    )


def test_bad_arguments_and_rank():
    with pytest.raises(ValueError, match="window"):
        MedianSmoothingSqueezer(0)
    with pytest.raises(TypeError, match="window"):
        MedianSmoothingSqueezer(2.5)
    with pytest.raises(ValueError, match="rank-4"):
        MedianSmoothingSqueezer(2)(np.zeros((2, 5), "float32"))
