"""Each Keras 3 breakage of cleverhans 4.0.0: it fails unfixed, it works fixed.

The first assertion of every test runs the *unfixed* cleverhans code and
expects its failure, so these tests also tell when a cleverhans release
repairs the bug (and the override can go).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from cleverhans.tf2.attacks import carlini_wagner_l2 as cw
from cleverhans.tf2.attacks import spsa as cleverhans_spsa
from cleverhans.tf2.attacks.basic_iterative_method import basic_iterative_method
from cleverhans.tf2.attacks.madry_et_al import madry_et_al
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

from keras_advguard import as_logits_fn
from keras_advguard.attacks import _cleverhans_fixes as fixes


@pytest.fixture
def logits_fn(digits):
    return as_logits_fn(digits[0])


@pytest.fixture
def x(digits):
    return tf.constant(digits[1][:6])


# --------------------------------------------------------------------------
# 1. BIM and Madry et al.: np.all over tensors and bools
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "unfixed, fixed",
    [
        (basic_iterative_method, fixes.basic_iterative_method),
        (madry_et_al, fixes.madry_et_al),
    ],
    ids=["bim", "madry_et_al"],
)
def test_sanity_check_of_bim_and_madry(unfixed, fixed, logits_fn, x):
    args = (logits_fn, x, 0.1, 0.02, 3, np.inf)
    with pytest.raises(ValueError, match="inhomogeneous"):
        unfixed(*args, clip_min=0.0, clip_max=1.0)
    tf.random.set_seed(0)
    ours = fixed(*args, clip_min=0.0, clip_max=1.0)
    tf.random.set_seed(0)
    reference = unfixed(*args, clip_min=0.0, clip_max=1.0, sanity_checks=False)
    np.testing.assert_array_equal(ours.numpy(), reference.numpy())


def test_fixed_sanity_checks_still_check(logits_fn, x):
    with pytest.raises(ValueError, match=r"must be <= clip_max"):
        fixes.basic_iterative_method(
            logits_fn, x + 1.0, 0.1, 0.02, 3, np.inf, clip_min=0.0, clip_max=1.0
        )
    with pytest.raises(ValueError, match=r"wider than the range"):
        fixes.projected_gradient_descent(
            logits_fn,
            x,
            2.0,
            0.1,
            3,
            np.inf,
            clip_min=0.0,
            clip_max=1.0,
            sanity_checks=True,
        )
    # The unfixed function cannot report either: it fails before.
    with pytest.raises(ValueError, match="inhomogeneous"):
        projected_gradient_descent(
            logits_fn,
            x,
            2.0,
            0.1,
            3,
            np.inf,
            clip_min=0.0,
            clip_max=1.0,
            sanity_checks=True,
        )


# --------------------------------------------------------------------------
# 2 and 3. SPSA: Adam(lr=...) and self.lr
# --------------------------------------------------------------------------


def test_spsa_adam_constructor():
    with pytest.raises(ValueError, match=r"not recognized.*'lr'"):
        cleverhans_spsa.SPSAAdam(lr=0.05)
    optimizer = fixes.SPSAAdam(lr=0.05, num_samples=8)
    assert float(optimizer.lr) == pytest.approx(0.05)
    assert optimizer._num_samples == 4


def test_spsa_adam_update_reads_lr():
    """`_apply_gradients` reads `self.lr`: missing on a Keras 3 Adam."""
    unfixed = object.__new__(cleverhans_spsa.SPSAAdam)
    keras.optimizers.Adam.__init__(unfixed, learning_rate=0.05)  # the constructor fix only
    x = [tf.constant([1.0, 2.0])]
    grads = [tf.constant([0.5, -2.0])]
    with pytest.raises(AttributeError, match="lr"):
        unfixed._apply_gradients(grads, x, unfixed.init_state(x))
    fixed = fixes.SPSAAdam(lr=0.05)
    new_x, _ = fixed._apply_gradients(grads, x, fixed.init_state(x))
    # One Adam step from zero state moves every coordinate by lr against the sign.
    np.testing.assert_allclose(new_x[0].numpy(), [1.0 - 0.05, 2.0 + 0.05], rtol=1e-5)


def test_spsa_function(logits_fn, digits):
    x = tf.constant(digits[1][:1])
    y = tf.constant(digits[2][:1])
    with pytest.raises(ValueError, match=r"not recognized.*'lr'"):
        cleverhans_spsa.spsa(logits_fn, x, y, 0.1, 2, clip_min=0.0, clip_max=1.0)
    x_adv = fixes.spsa(logits_fn, x, y, 0.1, 2, clip_min=0.0, clip_max=1.0, spsa_samples=16)
    assert x_adv.shape == x.shape
    assert float(tf.reduce_max(tf.abs(x_adv - x))) <= 0.1 + 1e-6


# --------------------------------------------------------------------------
# 4. Carlini & Wagner L2: optimizer.variables()
# --------------------------------------------------------------------------


def test_cw_optimizer_reset(logits_fn, x):
    with pytest.raises(TypeError, match="'list' object is not callable"):
        cw.carlini_wagner_l2(logits_fn, x, max_iterations=2, binary_search_steps=1)
    # Two batches (a Keras 3 optimizer only takes the variables it was built
    # with), and the attack moves (the learning rate is not zeroed).
    x_adv = fixes.carlini_wagner_l2(
        logits_fn, x, batch_size=3, max_iterations=50, binary_search_steps=2,
        learning_rate=0.1, initial_const=10.0,
    )  # fmt: skip
    pred = np.argmax(logits_fn(x_adv), axis=1)
    assert np.mean(pred != np.argmax(logits_fn(x), axis=1)) >= 0.5


def test_cw_traps_behind_the_obvious_fix():
    """Why `_ResettableAdam` and a fresh optimizer per batch are needed."""
    optimizer = keras.optimizers.Adam(0.1)
    a = tf.Variable([1.0])
    optimizer.apply_gradients([(tf.constant([1.0]), a)])
    assert any(v is optimizer.learning_rate for v in optimizer.variables)
    with pytest.raises(Exception, match="Unknown variable"):
        optimizer.apply_gradients([(tf.constant([1.0]), tf.Variable([1.0]))])

    wrapped = fixes._ResettableAdam(0.1)
    wrapped.apply_gradients([(tf.constant([1.0]), a)])
    for var in wrapped.variables():
        var.assign(tf.zeros_like(var))
    assert float(wrapped.optimizer.learning_rate) == pytest.approx(0.1)
    assert int(wrapped.optimizer.iterations) == 0


def test_cw_const_bug_not_fixable_by_override():
    """cleverhans #1205: RGB batches crash; our carlini_wagner_l2 is rewritten."""
    from keras_advguard.attacks import carlini_wagner_l2

    model = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    x = np.random.default_rng(0).random((4, 4, 4, 3), dtype=np.float32)
    with pytest.raises(Exception, match="Incompatible shapes|Dimensions must be equal"):
        fixes.carlini_wagner_l2(model, x, max_iterations=2, binary_search_steps=1)
    result = carlini_wagner_l2(model, x, max_iterations=2, binary_search_steps=1)
    assert result.x_adv.shape == x.shape
