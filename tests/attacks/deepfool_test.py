import numpy as np
import pytest

from keras_advguard.attacks import deepfool


@pytest.mark.parametrize("norm", [2, np.inf])
def test_one_exact_step_on_a_linear_model(norm, linear, x_mid):
    """On a linear model the first linearisation is exact: one minimal step."""
    labels = np.argmax(linear.logits(x_mid), axis=1)
    distance = linear.boundary_distance(x_mid, labels, norm=norm)
    result = deepfool(linear.model, x_mid, norm=norm, overshoot=0.02)
    assert result.success.all()
    measured = result.l2 if norm == 2 else result.linf
    np.testing.assert_allclose(measured, 1.02 * (distance + 1e-4), rtol=1e-3)


def test_success_and_minimality_on_digits(digits):
    model, x, y = digits
    result = deepfool(model, x, y=y)
    assert result.success_rate >= 0.95
    # Half the perturbation is not enough for most samples: the step is minimal.
    half = x + 0.5 * (result.x_adv - x)
    pred = np.argmax(model.predict(half, verbose=0), axis=1)
    assert np.mean(pred == y) >= 0.8


def test_linf_variant_on_digits(digits):
    model, x, y = digits
    l2 = deepfool(model, x, y=y)
    linf = deepfool(model, x, y=y, norm=np.inf)
    assert linf.success_rate >= 0.95
    ok = l2.success & linf.success
    assert np.median(linf.linf[ok]) < np.median(l2.linf[ok])
    assert np.median(l2.l2[ok]) < np.median(linf.l2[ok])
