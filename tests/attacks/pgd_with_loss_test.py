import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard import DetectorModel
from keras_advguard.attacks import bim, bpda, pgd_with_loss


def _cross_entropy(outputs, y):
    return keras.ops.sparse_categorical_crossentropy(y, outputs["logits"], from_logits=True)


def test_cross_entropy_without_random_start_equals_cleverhans_bim(digits):
    """Two independent implementations of the same iteration agree."""
    model, x, y = digits
    ours = pgd_with_loss(
        model,
        x,
        _cross_entropy,
        y=y,
        eps=0.1,
        eps_iter=0.02,
        nb_iter=8,
        rand_init=False,
    )
    theirs = bim(model, x, y=y, eps=0.1, eps_iter=0.02, nb_iter=8)
    np.testing.assert_allclose(ours.x_adv, theirs.x_adv, atol=1e-5)
    np.testing.assert_array_equal(ours.success, theirs.success)


def test_random_start_is_seeded_and_inside_the_l2_ball(digits):
    model, x, y = digits
    run = lambda seed: pgd_with_loss(  # noqa: E731
        model, x, _cross_entropy, y=y, eps=1.0, nb_iter=3, norm=2, seed=seed
    )
    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    assert not np.array_equal(a.x_adv, c.x_adv)
    assert a.l2.max() <= 1.0 + 1e-5


def test_matches_the_activations_of_a_target_class(digits):
    """An activation-matching loss over a DetectorModel's taps."""
    model, x, y = digits
    detector = DetectorModel(model, layers=["fc4"])
    source, target = x[y != y[0]][:10], x[y == y[0]][:1]
    target_acts = detector(target)["activations"]["fc4"].numpy()
    wanted = np.repeat(target_acts, len(source), axis=0)

    def distance(outputs, y):
        diff = outputs["activations"]["fc4"] - y["fc4"]
        return -keras.ops.sum(diff**2, axis=1)

    result = pgd_with_loss(
        detector, source, distance, y={"fc4": wanted}, eps=0.3, nb_iter=30, seed=0
    )
    before = np.sum((detector(source)["activations"]["fc4"].numpy() - wanted) ** 2, 1)
    after = np.sum((detector(result.x_adv)["activations"]["fc4"].numpy() - wanted) ** 2, 1)
    assert np.all(after < before)
    assert np.mean(result.y_pred_after == y[0]) >= 0.8


def test_bpda_lets_the_attack_through_a_quantiser(digits):
    model, x, y = digits

    def quantise(x):
        return tf.round(x * 4.0) / 4.0

    defended = DetectorModel(model)
    with pytest.raises(ValueError, match=r"no gradient with respect to the input"):
        pgd_with_loss(lambda v: defended(quantise(v)), x, _cross_entropy, y=y, eps=0.2)

    result = pgd_with_loss(
        lambda v: defended(bpda(quantise)(v)),
        x,
        _cross_entropy,
        y=y,
        eps=0.3,
        nb_iter=20,
        seed=0,
    )
    # Success is judged through the quantiser, as the defended model sees it.
    pred = np.argmax(model.predict(quantise(result.x_adv).numpy(), verbose=0), axis=1)
    np.testing.assert_array_equal(result.y_pred_after, pred)
    assert np.mean(pred != y) >= 0.7


def test_a_logits_callable_gets_a_logits_dict(linear, x_mid):
    seen = []

    def loss(outputs, y):
        seen.append(sorted(outputs))
        return outputs["logits"][:, 0]

    logits = lambda v: tf.reshape(v, (-1, 16)) @ linear.w + linear.b  # noqa: E731
    result = pgd_with_loss(logits, x_mid, loss, eps=0.05, nb_iter=2, rand_init=False)
    assert seen[0] == ["logits"]
    grad_sign = np.sign(linear.w[:, 0]).reshape(1, 4, 4, 1)
    np.testing.assert_allclose(result.x_adv, x_mid + 0.05 * grad_sign, atol=1e-6)


def test_bad_arguments(digits):
    model, x, _ = digits
    with pytest.raises(TypeError, match=r"`loss_fn` must be a callable"):
        pgd_with_loss(model, x, "cross_entropy", eps=0.1)
    with pytest.raises(TypeError, match=r"`model` must be a DetectorModel"):
        pgd_with_loss(3, x, _cross_entropy, eps=0.1)
    with pytest.raises(ValueError, match=r"dict with a 'logits' entry"):
        pgd_with_loss(lambda v: {"scores": model(v)}, x, _cross_entropy, eps=0.1)


def _sum_of_inputs(outputs, y):
    return tf.reduce_sum(outputs["logits"], axis=1)


def test_step_decay_takes_the_geometric_steps_worked_by_hand():
    """Gradient sign +1 everywhere: the point moves by the sum of the steps, then the ball.

    nb_iter=5, eps_iter=0.08, step_decay=1/16: steps 0.08, 0.04, 0.02, 0.01,
    0.005 (each half the last), 0.155 in all; a constant step travels 0.4 and
    stops at the ball's edge, 0.3.
    """
    x = np.full((3, 4), 0.5, "float32")
    kw = dict(eps=0.3, eps_iter=0.08, nb_iter=5, rand_init=False)
    decayed = pgd_with_loss(lambda v: v, x, _sum_of_inputs, step_decay=1 / 16, **kw)
    np.testing.assert_allclose(decayed.x_adv, 0.5 + 0.155, atol=1e-6)
    assert decayed.params["step_decay"] == 1 / 16
    constant = pgd_with_loss(lambda v: v, x, _sum_of_inputs, **kw)
    np.testing.assert_allclose(constant.x_adv, 0.8, atol=1e-6)
    assert constant.params["step_decay"] == 1.0
    one = pgd_with_loss(lambda v: v, x, _sum_of_inputs, step_decay=0.5, **{**kw, "nb_iter": 1})
    np.testing.assert_allclose(one.x_adv, 0.58, atol=1e-6)  # one step: eps_iter itself


@pytest.mark.parametrize("bad, error", [(0.0, ValueError), (1.5, ValueError), ("0.5", TypeError)])
def test_bad_step_decay(bad, error):
    x = np.full((2, 4), 0.5, "float32")
    with pytest.raises(error, match=r"`step_decay`"):
        pgd_with_loss(lambda v: v, x, _sum_of_inputs, eps=0.3, step_decay=bad)
