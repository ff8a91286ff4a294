import numpy as np

from keras_advguard.attacks import gradient_attack


def test_smallest_successful_step_on_the_grid(linear, x_mid):
    labels = np.argmax(linear.logits(x_mid), axis=1)
    eps, steps = 3.0, 30
    result = gradient_attack(linear.model, x_mid, eps=eps, steps=steps)
    grad = linear.ce_grad(x_mid, labels)
    direction = grad / np.linalg.norm(grad.reshape(len(grad), -1), axis=1)[:, None, None, None]
    for i in np.flatnonzero(result.success):
        sizes = eps * np.arange(1, steps + 1) / steps
        preds = [
            np.argmax(linear.logits(np.clip(x_mid[i : i + 1] + s * direction[i], 0, 1)))
            for s in sizes
        ]
        first = np.argmax(np.array(preds) != labels[i])
        expected = np.clip(x_mid[i] + sizes[first] * direction[i], 0, 1)
        np.testing.assert_allclose(result.x_adv[i], expected, atol=1e-5)
    assert result.success.any()


def test_success_on_digits(digits):
    model, x, y = digits
    result = gradient_attack(model, x, eps=2.0, y=y)
    assert result.success_rate >= 0.8
    assert result.l2.max() <= 2.0 + 1e-5
