"""The smallest overrides that make the broken cleverhans 4.0.0 attacks run on Keras 3.

cleverhans 4.0.0 (the last release) predates Keras 3. Measured on TF 2.21 /
Keras 3.15, four of its TF2 entry points fail; each drop-in below changes
only what breaks and calls cleverhans for everything else:

1. `basic_iterative_method` and `madry_et_al` run
   `projected_gradient_descent(..., sanity_checks=True)`, whose final
   `assert np.all(asserts)` (`projected_gradient_descent.py:137`) builds one
   numpy array from two image-shaped tensors and two Python bools and raises
   `ValueError: ... inhomogeneous shape`. `projected_gradient_descent` here
   runs the same four checks one by one (raising `ValueError`, not
   `AssertionError`) and calls cleverhans with `sanity_checks=False`.
2. `spsa` builds `SPSAAdam(lr=...)`, and `SPSAAdam.__init__` passes `lr=` to
   `keras.optimizers.Adam`, which Keras 3 rejects (`spsa.py:98`).
3. `SPSAAdam._apply_gradients` then reads `self.lr`, which Keras 3 optimizers
   no longer have. `SPSAAdam` here passes `learning_rate=` and aliases `lr`.
4. `CarliniWagnerL2._attack` resets its optimizer with
   `self.optimizer.variables()`; in Keras 3 `variables` is a list, not a
   method. Two traps wait behind the obvious fix: the list also holds the
   learning rate (zeroing it turns the attack into a no-op), and a Keras 3
   optimizer refuses variables it was not built with (the second batch
   crashes). `CarliniWagnerL2` here gives every batch a fresh Adam wrapped in
   `_ResettableAdam`, whose `variables()` returns the moments and the step
   counter but not the learning rate.

What is *not* fixed here, because no small override can reach it: the
cleverhans C&W keeps its trade-off constant with the shape of the images
instead of one value per sample (cleverhans issue #1205), so with more than
one image per batch the constants of all images are mixed, and RGB batches
of a size other than 1 or 3 crash. `keras_advguard.attacks.carlini_wagner_l2`
is therefore written from the paper; this class remains for comparison
(`benchmarks/attacks.py`).

Nothing here monkeypatches cleverhans: importing this module changes no
cleverhans object.
"""

import keras
import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks import carlini_wagner_l2 as _cw
from cleverhans.tf2.attacks import spsa as _spsa
from cleverhans.tf2.attacks.projected_gradient_descent import (
    projected_gradient_descent as _cleverhans_pgd,
)

# --------------------------------------------------------------------------
# 1. BIM / Madry et al.: the sanity check
# --------------------------------------------------------------------------


def _sanity_checks(x, eps, eps_iter, norm, clip_min, clip_max):
    """The checks of `projected_gradient_descent.py`, each reduced to one bool."""
    if clip_min is not None and not bool(tf.reduce_all(x >= clip_min)):
        raise ValueError(f"Input values must be >= clip_min={clip_min}.")
    if clip_max is not None and not bool(tf.reduce_all(x <= clip_max)):
        raise ValueError(f"Input values must be <= clip_max={clip_max}.")
    if not eps_iter <= eps:
        raise ValueError(f"eps_iter={eps_iter} must be <= eps={eps}.")
    if norm == np.inf and clip_min is not None and not eps + clip_min <= clip_max:
        raise ValueError(f"eps={eps} is wider than the range [{clip_min}, {clip_max}].")


def projected_gradient_descent(
    model_fn, x, eps, eps_iter, nb_iter, norm, *, sanity_checks=False, **kwargs
):
    """cleverhans' `projected_gradient_descent` with working sanity checks.

    Same arguments; `**kwargs` go to cleverhans as they are.
    """
    if sanity_checks:
        _sanity_checks(x, eps, eps_iter, norm, kwargs.get("clip_min"), kwargs.get("clip_max"))
    return _cleverhans_pgd(model_fn, x, eps, eps_iter, nb_iter, norm, sanity_checks=False, **kwargs)


def basic_iterative_method(
    model_fn,
    x,
    eps,
    eps_iter,
    nb_iter,
    norm,
    clip_min=None,
    clip_max=None,
    y=None,
    targeted=False,
    rand_init=None,
    rand_minmax=0.3,
    sanity_checks=True,
):
    """Drop-in for cleverhans' `basic_iterative_method` (same signature)."""
    del rand_init  # cleverhans ignores it too: BIM never starts at random.
    return projected_gradient_descent(
        model_fn,
        x,
        eps,
        eps_iter,
        nb_iter,
        norm,
        clip_min=clip_min,
        clip_max=clip_max,
        y=y,
        targeted=targeted,
        rand_init=False,
        rand_minmax=rand_minmax,
        sanity_checks=sanity_checks,
    )


def madry_et_al(
    model_fn,
    x,
    eps,
    eps_iter,
    nb_iter,
    norm,
    clip_min=None,
    clip_max=None,
    y=None,
    targeted=False,
    rand_minmax=0.3,
    sanity_checks=True,
):
    """Drop-in for cleverhans' `madry_et_al` (same signature)."""
    return projected_gradient_descent(
        model_fn,
        x,
        eps,
        eps_iter,
        nb_iter,
        norm,
        clip_min=clip_min,
        clip_max=clip_max,
        y=y,
        targeted=targeted,
        rand_init=True,
        rand_minmax=rand_minmax,
        sanity_checks=sanity_checks,
    )


# --------------------------------------------------------------------------
# 2 and 3. SPSA: `lr=` in the constructor, `self.lr` in the update
# --------------------------------------------------------------------------


class SPSAAdam(_spsa.SPSAAdam):
    """cleverhans' `SPSAAdam` constructed the Keras 3 way."""

    def __init__(
        self,
        lr=0.01,
        delta=0.01,
        num_samples=128,
        num_iters=1,
        compare_to_analytic_grad=False,
    ):
        # Skip `_spsa.SPSAAdam.__init__`: its `Adam.__init__(lr=lr)` is the bug.
        keras.optimizers.Adam.__init__(self, learning_rate=lr)
        if num_samples % 2:
            raise ValueError(f"num_samples must be even. Received: {num_samples}")
        self._delta = delta
        self._num_samples = num_samples // 2  # Since we mirror +/- delta later
        self._num_iters = num_iters
        self._compare_to_analytic_grad = compare_to_analytic_grad

    @property
    def lr(self):
        """Keras 2's name of the learning rate, read by `_apply_gradients`."""
        return self.learning_rate


def spsa(
    model_fn,
    x,
    y,
    eps,
    nb_iter,
    clip_min=None,
    clip_max=None,
    targeted=False,
    early_stop_loss_threshold=None,
    learning_rate=0.01,
    delta=0.01,
    spsa_samples=128,
    spsa_iters=1,
    is_debug=False,
):
    """Drop-in for cleverhans' `spsa` (same signature), using `SPSAAdam` above."""
    if x.get_shape().as_list()[0] != 1:
        raise ValueError("For SPSA, input tensor x must have batch_size of 1.")
    optimizer = SPSAAdam(
        lr=learning_rate, delta=delta, num_samples=spsa_samples, num_iters=spsa_iters
    )
    return spsa_with_optimizer(
        optimizer,
        model_fn,
        x,
        y,
        eps,
        nb_iter,
        clip_min=clip_min,
        clip_max=clip_max,
        targeted=targeted,
        early_stop_loss_threshold=early_stop_loss_threshold,
        is_debug=is_debug,
    )


def spsa_with_optimizer(
    optimizer,
    model_fn,
    x,
    y,
    eps,
    nb_iter,
    clip_min=None,
    clip_max=None,
    targeted=False,
    early_stop_loss_threshold=None,
    is_debug=False,
):
    """The rest of cleverhans' `spsa` body, given a built `SPSAAdam`.

    Split out so that it can run inside `tf.function` (about 15 times
    faster than eagerly): a Keras 3 optimizer creates variables, which a
    `tf.function` only tolerates on its first trace, so the optimizer is
    built once outside. It holds only hyper-parameters here (the Adam state
    lives in `projected_optimization`'s loop), so one can serve every image.
    """

    def loss_fn(x, label):
        logits = model_fn(x)
        loss_multiplier = 1 if targeted else -1
        return loss_multiplier * _spsa.margin_logit_loss(
            logits, label, nb_classes=logits.get_shape()[-1]
        )

    return _spsa.projected_optimization(
        loss_fn,
        x,
        y,
        eps,
        nb_iter,
        optimizer,
        clip_min,
        clip_max,
        early_stop_loss_threshold,
        is_debug=is_debug,
    )


# --------------------------------------------------------------------------
# 4. Carlini & Wagner L2: resetting the optimizer
# --------------------------------------------------------------------------


class _ResettableAdam:
    """A Keras 3 Adam with the Keras 2 `variables()` method cleverhans calls.

    `variables()` lists what a fresh Adam would hold at zero: the step
    counter and the moment estimates. The learning rate, which Keras 3 also
    keeps in `optimizer.variables`, is left out so that zeroing the list
    resets the optimizer instead of freezing it.
    """

    def __init__(self, learning_rate):
        self.optimizer = keras.optimizers.Adam(learning_rate)

    def apply_gradients(self, grads_and_vars):
        return self.optimizer.apply_gradients(grads_and_vars)

    def variables(self):
        learning_rate = self.optimizer.learning_rate
        return [v for v in self.optimizer.variables if v is not learning_rate]


class CarliniWagnerL2(_cw.CarliniWagnerL2):
    """cleverhans' `CarliniWagnerL2` with an optimizer Keras 3 accepts."""

    def _attack(self, x):
        # A Keras 3 optimizer only updates the variables it was built with;
        # each call creates a new `modifier` variable, so it needs a new one.
        self.optimizer = _ResettableAdam(self.learning_rate)
        return super()._attack(x)


def carlini_wagner_l2(model_fn, x, **kwargs):
    """Drop-in for cleverhans' `carlini_wagner_l2` function."""
    return CarliniWagnerL2(model_fn, **kwargs).attack(x)
