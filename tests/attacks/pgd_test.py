import keras
import numpy as np

from keras_advguard.attacks import bim, pgd


def test_without_random_start_is_bim(digits):
    model, x, _ = digits
    a = pgd(model, x, eps=0.1, nb_iter=5, rand_init=False)
    b = bim(model, x, eps=0.1, nb_iter=5)
    np.testing.assert_allclose(a.x_adv, b.x_adv, atol=1e-6)


def test_l2_matches_numpy_reference(linear, x_mid):
    labels = np.argmax(linear.logits(x_mid), axis=1)
    eps, step = 0.5, 0.2
    result = pgd(linear.model, x_mid, eps=eps, eps_iter=step, nb_iter=5, norm=2, rand_init=False)
    x_adv = x_mid.copy()
    for _ in range(5):
        g = linear.ce_grad(x_adv, labels)
        g /= np.linalg.norm(g.reshape(len(g), -1), axis=1)[:, None, None, None]
        eta = x_adv + step * g - x_mid
        norms = np.linalg.norm(eta.reshape(len(eta), -1), axis=1)
        eta *= np.minimum(1.0, eps / norms)[:, None, None, None]
        x_adv = np.clip(x_mid + eta, 0, 1)
    np.testing.assert_allclose(result.x_adv, x_adv, atol=1e-5)
    np.testing.assert_allclose(result.l2, eps, rtol=1e-4)


def test_random_start_follows_the_tf_seed(digits):
    model, x, _ = digits
    keras.utils.set_random_seed(1)
    a = pgd(model, x, eps=0.1, nb_iter=2)
    keras.utils.set_random_seed(1)
    b = pgd(model, x, eps=0.1, nb_iter=2)
    c = pgd(model, x, eps=0.1, nb_iter=2)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    assert not np.array_equal(b.x_adv, c.x_adv)


def test_success_on_digits(digits):
    model, x, y = digits
    assert pgd(model, x, eps=0.2, nb_iter=20, y=y).success_rate >= 0.9
    assert pgd(model, x, eps=1.5, nb_iter=20, norm=2, y=y).success_rate >= 0.9
    result = pgd(model, x, eps=0.3, nb_iter=20, targeted=True, seed=0)
    assert result.success_rate >= 0.8
    assert np.all(result.labels != result.y_pred_before)


def test_seeded_random_start_repeats_whatever_the_tf_seed(digits):
    model, x, _ = digits
    keras.utils.set_random_seed(1)
    a = pgd(model, x, eps=0.1, nb_iter=2, seed=7)
    keras.utils.set_random_seed(2)
    b = pgd(model, x, eps=0.1, nb_iter=2, seed=7)
    c = pgd(model, x, eps=0.1, nb_iter=2, seed=8)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    assert not np.array_equal(a.x_adv, c.x_adv)
    assert np.max(np.abs(a.x_adv - x)) <= 0.1 + 1e-6


def test_seeded_linf_matches_numpy_reference(linear, x_mid):
    """The seeded path: start drawn from `default_rng(seed)`, then signed steps."""
    labels = np.argmax(linear.logits(x_mid), axis=1)
    eps, step, seed = 0.1, 0.03, 3
    result = pgd(linear.model, x_mid, eps=eps, eps_iter=step, nb_iter=4, seed=seed)
    rng = np.random.default_rng(seed)
    x_adv = np.clip(x_mid + rng.uniform(-eps, eps, size=x_mid.shape), 0, 1)
    for _ in range(4):
        g = linear.ce_grad(x_adv, labels)
        x_adv = np.clip(x_adv + step * np.sign(g), 0, 1)
        x_adv = np.clip(x_mid + np.clip(x_adv - x_mid, -eps, eps), 0, 1)
    np.testing.assert_allclose(result.x_adv, x_adv, atol=1e-5)
