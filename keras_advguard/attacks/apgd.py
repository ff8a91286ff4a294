"""APGD: PGD with momentum and a step size that adapts to the loss (AutoAttack's core)."""

import math

import numpy as np

from keras_advguard.attacks import _adaptive, _common

LOSSES = ("ce", "dlr")
"""Losses of `apgd`: cross-entropy (APGD-CE) and the difference of logits ratio (APGD-DLR)."""

_ALPHA = 0.75  # momentum
_RHO = 0.75  # share of increasing steps below which the step is halved


def apgd(
    model,
    x,
    *,
    eps,
    nb_iter=100,
    norm=np.inf,
    loss="ce",
    restarts=1,
    y=None,
    targeted=False,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """Auto-PGD (APGD-CE or APGD-DLR) in the L-infinity or L2 ball.

    PGD without a step size to tune (Croce & Hein 2020, Algorithm 1): the
    step starts at `2 * eps`; each iterate is
    `x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1}))`
    with `z_{k+1} = P(x_k + step * sign(grad))` (L-infinity; L2: the
    normalised gradient) and momentum `alpha = 0.75` (`1` on the first
    step). At checkpoints `w_j = ceil(p_j * nb_iter)` with `p_0 = 0`,
    `p_1 = 0.22`, `p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`, a
    sample's step is halved, and it restarts from its best point, when at
    most `rho = 0.75` of the steps since the last checkpoint increased its
    loss, or when neither its step nor its best loss changed since then.
    Losses: `"ce"`, the cross-entropy, and `"dlr"`, the difference of logits
    ratio `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)` (`z_pi` the logits
    sorted decreasingly; targeted: `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`
    with `y` the class predicted on the clean input and `t` the target),
    invariant to shifts and scalings of the logits. Restarts start from new
    random points and run only on the samples not yet fooled.

    Args:
        model: a Keras model (attacked on its pre-softmax logits when it ends
            in softmax), a `DetectorModel`, or a callable returning logits.
        x: inputs `(N, ...)` in `[clip_min, clip_max]`, finite.
        eps: radius of the ball in `norm`, >= 0.
        nb_iter: steps per restart, >= 1. Defaults to `100` (AutoAttack's
            budget).
        norm: `np.inf` or `2`. Defaults to `np.inf`.
        loss: `"ce"` or `"dlr"`. Defaults to `"ce"`. DLR needs at least 3
            classes (4 targeted).
        restarts: number of random starts, >= 1. Defaults to `1`.
        y: labels `(N,)` or one-hot `(N, C)`. Untargeted: the labels to move
            away from; defaults to the model's predictions. Targeted: the
            targets; defaults to a random class other than the predicted one.
        targeted: whether to move towards `y`. Defaults to `False`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        batch_size: samples per batch. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.
        seed: seed of the random starts and targets. Defaults to `None`.

    Returns:
        An `AttackResult`. Each sample's `x_adv` is the first point found
        that fools the model (targeted: reaches the target) if any, else the
        point of highest loss.

    Raises:
        ValueError: `eps < 0`, an unknown `norm` or `loss`, NaN or infinite
            values in `x`, `x` outside the clip range, `y` of the wrong
            length, too few classes for DLR, or a model without a gradient
            with respect to the input.
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.full((2, 4), 0.5, dtype="float32")
        >>> result = apgd(model, x, eps=0.1, nb_iter=10, loss="dlr", seed=0)
        >>> bool(np.all(result.linf <= 0.1 + 1e-6))
        True

    Reference:
        F. Croce and M. Hein, "Reliable evaluation of adversarial robustness
        with an ensemble of diverse parameter-free attacks", ICML 2020.
    """
    import tensorflow as tf

    from keras_advguard import _validation

    eps = _common.check_eps(eps)
    _validation.check_positive_int("nb_iter", nb_iter)
    norm = _common.check_norm(norm)
    _validation.check_choice("loss", loss, LOSSES)
    restarts = _adaptive.check_restarts(restarts)
    _common.check_common(batch_size, verbose, targeted, seed)
    x = _adaptive.check_x(x, clip_min, clip_max)
    logits_fn = _common.logits_callable(model)
    step_logits = _adaptive.step_logits(model)

    loss_of = _dlr if loss == "dlr" else _cross_entropy

    def loss_and_grad(x_adv, labels, source):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits = step_logits(x_adv)
            value = loss_of(logits, labels, source, targeted)
            total = tf.reduce_sum(value)
        grad = tape.gradient(total, x_adv)
        pred = tf.argmax(logits, axis=1, output_type=tf.int64)
        fooled = tf.equal(pred, labels) if targeted else tf.not_equal(pred, labels)
        return value, grad, fooled

    @_adaptive.compile_step
    def first(x_adv, labels, source):
        return loss_and_grad(x_adv, labels, source)

    @_adaptive.compile_step
    def step(x0, labels, source, x_adv, x_prev, grad, step_size, momentum, state):
        """One iteration; `state` = (loss_prev, n_up, x_best, g_best, l_best, x_fool, fooled)."""
        loss_prev, n_up, x_best, g_best, l_best, x_fool, fooled = state
        size = _adaptive._per_row(step_size, x_adv)
        z = _adaptive.project(
            x_adv + size * _adaptive.steepest(grad, norm), x0, eps, norm, clip_min, clip_max
        )
        x_new = x_adv + momentum * (z - x_adv) + (1.0 - momentum) * (x_adv - x_prev)
        x_new = _adaptive.project(x_new, x0, eps, norm, clip_min, clip_max)
        value, grad_new, now_fooled = loss_and_grad(x_new, labels, source)
        n_up = n_up + tf.cast(value > loss_prev, tf.int32)
        better = value > l_best
        rows = lambda m: _adaptive._per_row(m, x_new)  # noqa: E731
        x_best = tf.where(rows(better), x_new, x_best)
        g_best = tf.where(rows(better), grad_new, g_best)
        l_best = tf.where(better, value, l_best)
        first_fool = tf.logical_and(now_fooled, tf.logical_not(fooled))
        x_fool = tf.where(rows(first_fool), x_new, x_fool)
        fooled = tf.logical_or(fooled, now_fooled)
        state = (value, n_up, x_best, g_best, l_best, x_fool, fooled)
        return x_new, x_adv, grad_new, state

    checkpoints = _checkpoints(nb_iter)
    checked = []

    def run_once(x0, labels, source, x_start):
        x0t, lab, src = tf.constant(x0), tf.constant(labels), tf.constant(source)
        x_adv = tf.constant(x_start)
        value, grad, fooled = first(x_adv, lab, src)
        if not checked:
            if grad is None or not bool(tf.reduce_any(grad != 0)):
                raise _adaptive.no_gradient_error("The classifier's loss")
            checked.append(True)
        n = len(x0)
        step_size = tf.fill((n,), 2.0 * eps)
        state = (value, tf.zeros((n,), tf.int32), x_adv, grad, value, x_adv, fooled)
        x_prev = x_adv
        last_check = 0
        l_best_last = value.numpy()
        reduced_last = np.zeros(n, bool)
        for k in range(1, nb_iter + 1):
            momentum = tf.constant(1.0 if k == 1 else _ALPHA)
            x_adv, x_prev, grad, state = step(
                x0t, lab, src, x_adv, x_prev, grad, step_size, momentum, state
            )
            if k in checkpoints:
                loss_prev, n_up, x_best, g_best, l_best, x_fool, fooled = state
                l_best_np = l_best.numpy()
                oscillating = n_up.numpy() <= _RHO * (k - last_check)
                stalled = ~reduced_last & (l_best_last >= l_best_np)
                halve = oscillating | stalled
                reduced_last = halve
                l_best_last = l_best_np
                last_check = k
                if halve.any():
                    h = tf.constant(halve)
                    step_size = tf.where(h, step_size / 2.0, step_size)
                    x_adv = tf.where(_adaptive._per_row(h, x_adv), x_best, x_adv)
                    grad = tf.where(_adaptive._per_row(h, grad), g_best, grad)
                state = (loss_prev, tf.zeros_like(n_up), x_best, g_best, l_best, x_fool, fooled)
        _, _, x_best, _, l_best, x_fool, fooled = state
        fooled = fooled.numpy()
        out = np.where(_expand(fooled, x0.ndim), x_fool.numpy(), x_best.numpy())
        return out, fooled, l_best.numpy()

    def attack_batch(logits_fn_, xb, labels, rng):
        x0, lab = xb.numpy(), labels.numpy()
        clean_logits = logits_fn(xb)
        source = np.argmax(clean_logits.numpy(), axis=1).astype("int64")
        if loss == "dlr":
            _check_classes(int(clean_logits.shape[-1]), targeted)
        out = x0.copy()
        done = np.zeros(len(x0), bool)
        best_loss = np.full(len(x0), -np.inf, "float32")
        for _ in range(restarts):
            todo = np.flatnonzero(~done)
            if not len(todo):
                break
            start = _start(rng, x0[todo], eps, norm, clip_min, clip_max)
            adv, fooled, l_best = run_once(x0[todo], lab[todo], source[todo], start)
            keep = fooled | (l_best > best_loss[todo])
            out[todo[keep]] = adv[keep]
            best_loss[todo] = np.maximum(best_loss[todo], l_best)
            done[todo] = fooled
        return out

    return _common.run_attack(
        attack_batch,
        model,
        x,
        name="apgd",
        y=y,
        targeted=targeted,
        clip_min=clip_min,
        clip_max=clip_max,
        batch_size=batch_size,
        verbose=verbose,
        seed=seed,
        logits_fn=logits_fn,
        params={
            "eps": eps,
            "nb_iter": nb_iter,
            "norm": norm,
            "loss": loss,
            "restarts": restarts,
        },
    )


def _checkpoints(nb_iter):
    """The iterations after which the step size is checked (the paper's `w_j`)."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # Rounded first: 0.57 * 100 is 57.00000000000001 in floating point.
    return {w for w in (math.ceil(round(q * nb_iter, 6)) for q in p[1:]) if 0 < w <= nb_iter}


def _start(rng, x0, eps, norm, clip_min, clip_max):
    """AutoAttack's random start: uniform in the L-infinity cube, on the L2 sphere."""
    if eps == 0:
        return x0.copy()
    if norm == np.inf:
        noise = rng.uniform(-eps, eps, size=x0.shape)
    else:
        noise = rng.standard_normal(x0.shape)
        flat = noise.reshape(len(x0), -1)
        noise = eps * (flat / (np.linalg.norm(flat, axis=1, keepdims=True) + 1e-12))
        noise = noise.reshape(x0.shape)
    return np.clip(x0 + noise, clip_min, clip_max).astype("float32")


def _expand(mask, ndim):
    return mask.reshape((-1,) + (1,) * (ndim - 1))


def _check_classes(num_classes, targeted):
    need = 4 if targeted else 3
    if num_classes < need:
        mode, rank = ("targeted", "4th") if targeted else ("untargeted", "3rd")
        raise ValueError(
            f"The DLR loss needs at least {need} classes ({mode}: it divides by the "
            f"gap between the largest and the {rank} largest logit). Received: a model with "
            f"{num_classes} outputs. Use loss='ce'."
        )


def _cross_entropy(logits, labels, source, targeted):
    import keras

    ce = keras.ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return -ce if targeted else ce


def _dlr(logits, labels, source, targeted):
    """Difference of logits ratio, to maximise (untargeted and targeted).

    Targeted, `labels` are the targets and `source` the classes predicted on
    the clean inputs: `-(z_source - z_target) / (z_pi1 - (z_pi3 + z_pi4) / 2)`.
    """
    import tensorflow as tf

    z_sorted = tf.sort(logits, axis=1, direction="DESCENDING")
    num_classes = tf.shape(logits)[1]
    own = tf.reduce_sum(logits * tf.one_hot(labels, num_classes), axis=1)
    if targeted:
        z_source = tf.reduce_sum(logits * tf.one_hot(source, num_classes), axis=1)
        denom = z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + 1e-12
        return -(z_source - own) / denom
    is_top = tf.equal(tf.argmax(logits, axis=1, output_type=labels.dtype), labels)
    other = tf.where(is_top, z_sorted[:, 1], z_sorted[:, 0])
    return -(own - other) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)
