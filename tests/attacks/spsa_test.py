import numpy as np
import pytest

from keras_advguard.attacks import spsa


def test_success_on_digits(digits):
    model, x, y = digits
    result = spsa(model, x[:12], y=y[:12], eps=0.2, nb_iter=20)
    assert result.success_rate >= 0.5
    assert result.linf.max() <= 0.2 + 1e-6


def test_targeted_on_digits(digits):
    model, x, y = digits
    targets = (y[:8] + 1) % 10
    result = spsa(model, x[:8], y=targets, targeted=True, eps=0.3, nb_iter=30)
    assert result.success_rate >= 0.5
    np.testing.assert_array_equal(result.success, result.y_pred_after == targets)


def test_odd_sample_count_raises(linear, x_mid):
    with pytest.raises(ValueError, match=r"`spsa_samples` must be even"):
        spsa(linear.model, x_mid, eps=0.1, spsa_samples=7)
