import numpy as np

from keras_advguard.attacks import carlini_wagner_l2


def test_near_the_exact_minimum_on_a_linear_model(linear, x_mid):
    labels = np.argmax(linear.logits(x_mid), axis=1)
    distance = linear.boundary_distance(x_mid, labels)
    result = carlini_wagner_l2(
        linear.model,
        x_mid,
        max_iterations=300,
        binary_search_steps=8,
        learning_rate=0.05,
        initial_const=1.0,
    )
    assert result.success.all()
    # Never closer than the boundary; close to it (C&W is not exact: at the
    # optimum the margin term is 0, so it ends just past the boundary).
    ratio = result.l2 / distance
    assert np.all(ratio >= 1 - 1e-3)
    assert np.all(ratio <= 1.1) and np.median(ratio) <= 1.01


def test_confidence_margin_is_kept(linear, x_mid):
    labels = np.argmax(linear.logits(x_mid), axis=1)
    result = carlini_wagner_l2(
        linear.model, x_mid, confidence=2.0, max_iterations=200, learning_rate=0.05
    )
    assert result.success.all()
    z = linear.logits(result.x_adv)
    label_logit = z[np.arange(len(z)), labels]
    z[np.arange(len(z)), labels] = -np.inf
    assert np.all(z.max(axis=1) - label_logit >= 2.0 - 1e-4)


def test_untargeted_and_targeted_on_digits(digits):
    model, x, y = digits
    x, y = x[:20], y[:20]
    params = {"max_iterations": 100, "binary_search_steps": 4, "learning_rate": 0.05}
    result = carlini_wagner_l2(model, x, y=y, **params)
    assert result.success_rate >= 0.95
    targets = (y + 5) % 10
    result = carlini_wagner_l2(model, x, y=targets, targeted=True, **params)
    assert result.success_rate >= 0.9
    np.testing.assert_array_equal(result.success, result.y_pred_after == targets)


def test_failed_samples_keep_x(linear, x_mid):
    result = carlini_wagner_l2(linear.model, x_mid, max_iterations=1, binary_search_steps=1)
    np.testing.assert_array_equal(result.x_adv[~result.success], x_mid[~result.success])
