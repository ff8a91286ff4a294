import numpy as np

from keras_advguard.attacks import mim


def test_matches_numpy_reference(linear, x_mid):
    labels = np.argmax(linear.logits(x_mid), axis=1)
    eps, step, decay = 0.1, 0.04, 0.7
    result = mim(linear.model, x_mid, eps=eps, eps_iter=step, nb_iter=4, decay_factor=decay)
    x_adv, momentum = x_mid.copy(), np.zeros_like(x_mid)
    for _ in range(4):
        g = linear.ce_grad(x_adv, labels)
        g /= np.mean(np.abs(g), axis=(1, 2, 3), keepdims=True)
        momentum = decay * momentum + g
        x_adv = x_adv + step * np.sign(momentum)
        x_adv = np.clip(x_mid + np.clip(x_adv - x_mid, -eps, eps), 0, 1)
    np.testing.assert_allclose(result.x_adv, x_adv, atol=1e-5)


def test_success_on_digits(digits):
    model, x, y = digits
    assert mim(model, x, eps=0.2, y=y).success_rate >= 0.9
    result = mim(model, x, eps=0.3, nb_iter=20, y=(y + 3) % 10, targeted=True)
    assert result.success_rate >= 0.8
