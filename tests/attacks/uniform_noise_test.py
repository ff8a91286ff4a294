import numpy as np
from scipy import stats

from keras_advguard.attacks import uniform_noise


def test_noise_is_uniform_in_the_box(linear):
    x = np.full((50, 4, 4, 1), 0.5, dtype="float32")
    result = uniform_noise(linear.model, x, eps=0.2, seed=0)
    noise = (result.x_adv - x).ravel()
    assert stats.kstest(noise, "uniform", args=(-0.2, 0.4)).pvalue > 0.01
    assert np.abs(noise).max() <= 0.2


def test_seeded(linear, x_mid):
    a = uniform_noise(linear.model, x_mid, eps=0.1, seed=1)
    b = uniform_noise(linear.model, x_mid, eps=0.1, seed=1)
    c = uniform_noise(linear.model, x_mid, eps=0.1, seed=2)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    assert not np.array_equal(a.x_adv, c.x_adv)


def test_noise_rarely_fools_the_digits_model(digits):
    """The control: noise of FGSM's size changes far fewer labels than FGSM."""
    model, x, y = digits
    assert uniform_noise(model, x, eps=0.2, y=y, seed=0).success_rate <= 0.3
