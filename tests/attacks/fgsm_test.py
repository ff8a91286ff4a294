import numpy as np

from keras_advguard.attacks import fgsm


def test_matches_closed_form_on_linear_model(linear, x_mid):
    labels = np.argmax(linear.logits(x_mid), axis=1)
    result = fgsm(linear.model, x_mid, eps=0.05)
    expected = np.clip(x_mid + 0.05 * np.sign(linear.ce_grad(x_mid, labels)), 0, 1)
    np.testing.assert_allclose(result.x_adv, expected, atol=1e-6)


def test_targeted_and_l2_match_closed_form(linear, x_mid):
    targets = np.array([0, 1, 2, 0, 1, 2])
    result = fgsm(linear.model, x_mid, eps=0.3, y=targets, targeted=True, norm=2)
    grad = -linear.ce_grad(x_mid, targets)
    norms = np.linalg.norm(grad.reshape(len(grad), -1), axis=1)
    expected = x_mid + 0.3 * grad / norms[:, None, None, None]
    np.testing.assert_allclose(result.x_adv, expected, atol=1e-6)
    np.testing.assert_allclose(result.l2, 0.3, rtol=1e-5)


def test_untargeted_success_on_digits(digits):
    model, x, y = digits
    result = fgsm(model, x, eps=0.2, y=y)
    assert result.success_rate >= 0.8
    np.testing.assert_allclose(result.linf, 0.2, atol=1e-6)
