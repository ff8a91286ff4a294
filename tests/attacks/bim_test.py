import numpy as np

from keras_advguard.attacks import bim, fgsm


def _numpy_bim(linear, x, labels, eps, eps_iter, nb_iter, targeted=False):
    x_adv = x.copy()
    sign = -1.0 if targeted else 1.0
    for _ in range(nb_iter):
        x_adv = x_adv + eps_iter * np.sign(sign * linear.ce_grad(x_adv, labels))
        x_adv = np.clip(x + np.clip(x_adv - x, -eps, eps), 0, 1)
    return x_adv


def test_matches_numpy_reference(linear, x_mid):
    labels = np.argmax(linear.logits(x_mid), axis=1)
    result = bim(linear.model, x_mid, eps=0.1, eps_iter=0.03, nb_iter=6)
    expected = _numpy_bim(linear, x_mid, labels, 0.1, 0.03, 6)
    np.testing.assert_allclose(result.x_adv, expected, atol=1e-5)


def test_one_full_step_is_fgsm(digits):
    model, x, _ = digits
    a = bim(model, x, eps=0.1, eps_iter=0.1, nb_iter=1)
    b = fgsm(model, x, eps=0.1)
    np.testing.assert_allclose(a.x_adv, b.x_adv, atol=1e-6)


def test_success_on_digits(digits):
    model, x, y = digits
    assert bim(model, x, eps=0.2, y=y).success_rate >= 0.9
    targets = (y + 1) % 10
    result = bim(model, x, eps=0.3, nb_iter=20, y=targets, targeted=True)
    assert result.success_rate >= 0.8
    np.testing.assert_array_equal(result.labels, targets)
    np.testing.assert_array_equal(result.success, result.y_pred_after == targets)
