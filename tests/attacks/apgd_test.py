"""APGD-CE / APGD-DLR: the paper's schedule, a closed-form optimum, and APGD >= PGD."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.attacks import apgd, pgd
from keras_advguard.attacks.apgd import _checkpoints, _dlr


def test_checkpoints_are_the_papers():
    """p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), times 100."""
    assert sorted(_checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]
    # AutoAttack's own bookkeeping: first period 22, then 3 shorter, at least 6.
    period, w, expected = 22, 0, []
    while w + period <= 100:
        w += period
        expected.append(w)
        period = max(period - 3, 6)
    assert sorted(_checkpoints(100)) == expected
    assert sorted(_checkpoints(10)) == [3, 5, 6, 7, 8, 9, 10]


def test_dlr_matches_its_formula():
    z = np.array([[3.0, 1.0, 2.0, -1.0], [0.5, 4.0, 1.0, 0.0]], "float32")
    y = np.array([0, 0])
    got = _dlr(tf.constant(z), tf.constant(y, tf.int64), tf.constant(y, tf.int64), False)
    # Row 0: y is the top: -(3 - 2) / (3 - 1). Row 1: -(0.5 - 4) / (4 - 0.5).
    np.testing.assert_allclose(got.numpy(), [-0.5, 1.0], rtol=1e-6)
    target = np.array([2, 2])
    got = _dlr(tf.constant(z), tf.constant(target, tf.int64), tf.constant(y, tf.int64), True)
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    np.testing.assert_allclose(
        got.numpy(), [-(3 - 2) / (3 - 0), -(0.5 - 1) / (4 - 0.25)], rtol=1e-6
    )


def _two_class_linear(seed=4):
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(16, 2)).astype("float32"), np.zeros(2, "float32")
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), dense])
    dense.set_weights([w, b])
    return model, w


@pytest.mark.parametrize("norm", [np.inf, 2])
def test_two_class_linear_reaches_the_loss_maximiser(x_mid, norm):
    """For two classes the cross-entropy grows with `(w_o - w_y) . x`: its maximiser in
    the ball is `x + eps sign(w_o - w_y)` (L-inf) or `x + eps (w_o - w_y) / ||.||` (L2)."""
    model, w = _two_class_linear()
    z = x_mid.reshape(len(x_mid), -1) @ w
    labels = np.argmax(z, axis=1)
    diff = (w[:, 1 - labels] - w[:, labels]).T  # (N, 16)
    dual = np.abs(diff).sum(1) if norm == np.inf else np.linalg.norm(diff, axis=1)
    eps = 0.5 * np.min(np.abs(z[:, 0] - z[:, 1]) / dual)  # the boundary is out of reach
    direction = diff.reshape(x_mid.shape)
    result = apgd(model, x_mid, eps=eps, nb_iter=20, norm=norm, seed=0)
    if norm == np.inf:
        expected = x_mid + eps * np.sign(direction)
    else:
        flat = direction.reshape(len(x_mid), -1)
        expected = x_mid + eps * (flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(
            x_mid.shape
        )
    np.testing.assert_allclose(result.x_adv, expected, atol=2e-4)
    assert not result.success.any()


@pytest.mark.parametrize("norm, eps", [(np.inf, 0.1), (2, 0.5)])
def test_apgd_at_least_pgd_at_equal_budget_on_digits(digits, norm, eps):
    """Croce & Hein's claim, on the sum over three random starts (a borderline
    digit flips with the start, so one run alone is a coin toss on it)."""
    model, x, y = digits
    n_pgd = n_apgd = 0
    for seed in range(3):
        keras.utils.set_random_seed(seed)
        n_pgd += pgd(model, x, y=y, eps=eps, nb_iter=20, norm=norm).success.sum()
        ce = apgd(model, x, y=y, eps=eps, nb_iter=20, norm=norm, seed=seed)
        n_apgd += ce.success.sum()
        size = ce.linf if norm == np.inf else ce.l2
        assert size.max() <= eps * (1 + 1e-5)
    assert 0.1 < n_pgd / (3 * len(x)) < 0.9  # a budget where the attacks can differ
    assert n_apgd >= n_pgd
    dlr = apgd(model, x, y=y, eps=eps, nb_iter=20, norm=norm, loss="dlr", seed=0)
    assert dlr.success.sum() >= 0.8 * n_pgd / 3


def test_targeted_restarts_and_eps_zero(digits):
    model, x, y = digits
    target = (y + 3) % 10
    result = apgd(model, x, y=target, targeted=True, eps=0.3, nb_iter=20, restarts=2, seed=0)
    np.testing.assert_array_equal(result.success, result.y_pred_after == target)
    assert result.success.mean() >= 0.8
    dlr = apgd(model, x, y=target, targeted=True, eps=0.3, nb_iter=20, loss="dlr", seed=0)
    assert dlr.success.mean() >= 0.8
    same = apgd(model, x, y=y, eps=0.0, nb_iter=5, norm=2, seed=0)
    np.testing.assert_array_equal(same.x_adv, x)
    assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0


def test_errors(linear, x_mid):
    bad = x_mid.copy()
    bad[1, 2, 3, 0] = np.inf
    with pytest.raises(ValueError, match=r"`x` must hold finite values"):
        apgd(linear.model, bad, eps=0.1)
    with pytest.raises(ValueError, match=r"`loss` must be one of"):
        apgd(linear.model, x_mid, eps=0.1, loss="cw")
    two, _ = _two_class_linear()
    with pytest.raises(ValueError, match=r"DLR loss needs at least 3 classes"):
        apgd(two, x_mid, eps=0.1, loss="dlr")
    with pytest.raises(ValueError, match=r"DLR loss needs at least 4 classes"):
        apgd(linear.model, x_mid, eps=0.1, loss="dlr", targeted=True)
    flat = lambda v: tf.zeros((tf.shape(v)[0], 3)) + 0.0 * tf.round(v[:, 0, 0, :])  # noqa: E731
    with pytest.raises(ValueError, match=r"no gradient with respect to the input"):
        apgd(flat, x_mid, eps=0.1)
