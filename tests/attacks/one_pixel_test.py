import keras
import numpy as np
import pytest

from keras_advguard.attacks import one_pixel


def _one_pixel_model():
    """Class 1 wins exactly when pixel (1, 2) is brighter than 0.5."""
    dense = keras.layers.Dense(2)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), dense])
    kernel = np.zeros((16, 2), dtype="float32")
    kernel[1 * 4 + 2, 1] = 20.0
    dense.set_weights([kernel, np.array([0.0, -10.0], dtype="float32")])
    return model


def test_finds_the_one_pixel_that_flips_the_class():
    x = np.zeros((3, 4, 4, 1), dtype="float32")
    result = one_pixel(_one_pixel_model(), x, maxiter=20, population=40, seed=0)
    assert result.success.all()
    changed = np.argwhere(result.x_adv != x)
    np.testing.assert_array_equal(changed[:, 1:3], [[1, 2]] * 3)
    assert np.all(result.x_adv[:, 1, 2, 0] > 0.5)


@pytest.mark.parametrize("pixels", [1, 2])
def test_at_most_pixels_change(pixels, digits):
    model, x, y = digits
    result = one_pixel(model, x[:4], pixels=pixels, maxiter=2, population=20, seed=0)
    changed = np.any(result.x_adv != x[:4], axis=-1).reshape(4, -1).sum(axis=1)
    assert np.all(changed <= pixels)


def test_seeded_and_successful_sometimes_on_digits(digits):
    model, x, y = digits
    a = one_pixel(model, x[:10], maxiter=10, population=60, seed=0)
    b = one_pixel(model, x[:10], maxiter=10, population=60, seed=0)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    assert a.success_rate >= 0.1


def test_needs_images(linear):
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        one_pixel(linear.model, np.zeros((2, 16), dtype="float32"))
