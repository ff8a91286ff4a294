"""Projected Gradient Descent with a random start (Madry et al.)."""

import numpy as np

from keras_advguard.attacks import _common


def pgd(
    model,
    x,
    *,
    eps,
    eps_iter=None,
    nb_iter=40,
    norm=np.inf,
    rand_init=True,
    y=None,
    targeted=False,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """Projected Gradient Descent in the L-infinity or L2 ball, random start.

    Starts at a uniformly random point of the `eps` ball around `x`, then
    takes `nb_iter` steps of size `eps_iter` along the signed (L-infinity)
    or L2-normalised (L2) gradient of the cross-entropy, each followed by a
    projection onto the ball and the clip range. Runs cleverhans'
    `projected_gradient_descent`; with a `seed`, the random start is drawn
    from that seed (numpy) and the same steps (cleverhans'
    `fast_gradient_method` and `clip_eta`) run from it, so a seeded attack
    repeats exactly. With `seed=None` the start draws from TensorFlow's
    global generator (`keras.utils.set_random_seed` makes it repeatable).

    Args:
        model: a Keras model (attacked on its pre-softmax logits when it ends
            in softmax), a `DetectorModel`, or a callable returning logits.
        x: inputs `(N, ...)` in `[clip_min, clip_max]`.
        eps: radius of the ball in `norm`, >= 0.
        eps_iter: step size, in `[0, eps]`. Defaults to
            `min(eps, 2.5 * eps / nb_iter)`.
        nb_iter: number of steps, >= 1. Defaults to `40`.
        norm: `np.inf` or `2`. Defaults to `np.inf`.
        rand_init: whether to start at a random point of the ball (`False`
            gives `bim`). Defaults to `True`.
        y: labels `(N,)` or one-hot `(N, C)`. Untargeted: the labels to move
            away from; defaults to the model's predictions. Targeted: the
            targets; defaults to a random class other than the predicted one.
        targeted: whether to move towards `y`. Defaults to `False`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        batch_size: samples per batch. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.
        seed: seed of the random start and the random targets. Defaults to
            `None`.

    Returns:
        An `AttackResult`.

    Raises:
        ValueError: `eps < 0`, `eps_iter > eps`, an unknown `norm`,
            `clip_min >= clip_max`, `x` outside the clip range, `y` of the
            wrong length, or a model whose logits cannot be reached.
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.full((2, 4), 0.5, dtype="float32")
        >>> result = pgd(model, x, eps=0.5, norm=2, nb_iter=5)
        >>> bool(np.all(result.l2 <= 0.5 + 1e-5))
        True

    Reference:
        A. Madry, A. Makelov, L. Schmidt, D. Tsipras and A. Vladu, "Towards
        Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
    """
    from keras_advguard import _validation
    from keras_advguard.attacks import _adaptive, _cleverhans_fixes

    eps = _common.check_eps(eps)
    eps_iter = _common.check_step(eps, eps_iter, nb_iter)
    norm = _common.check_norm(norm)
    _validation.check_type("rand_init", rand_init, bool)

    def _steps_from(logits_fn, xb, start, labels):
        """cleverhans' PGD loop, started at `start` instead of its own draw."""
        import tensorflow as tf
        from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
        from cleverhans.tf2.utils import clip_eta

        x_adv = tf.constant(start, dtype=xb.dtype)
        for _ in range(nb_iter):
            x_adv = fast_gradient_method(
                logits_fn,
                x_adv,
                eps_iter,
                norm,
                clip_min=clip_min,
                clip_max=clip_max,
                y=labels,
                targeted=targeted,
            )
            x_adv = xb + clip_eta(x_adv - xb, norm, eps)
            x_adv = tf.clip_by_value(x_adv, clip_min, clip_max)
        return x_adv

    def attack_batch(logits_fn, xb, labels, rng):
        if rand_init and seed is not None:
            start = _adaptive.random_start(rng, xb.numpy(), eps, norm, clip_min, clip_max)
            return _steps_from(logits_fn, xb, start, labels)
        return _cleverhans_fixes.projected_gradient_descent(
            logits_fn,
            xb,
            eps,
            eps_iter,
            nb_iter,
            norm,
            clip_min=clip_min,
            clip_max=clip_max,
            y=labels,
            targeted=targeted,
            rand_init=rand_init,
            rand_minmax=eps,
        )

    return _common.run_attack(
        attack_batch,
        model,
        x,
        name="pgd",
        y=y,
        targeted=targeted,
        clip_min=clip_min,
        clip_max=clip_max,
        batch_size=batch_size,
        verbose=verbose,
        seed=seed,
        params={
            "eps": eps,
            "eps_iter": eps_iter,
            "nb_iter": nb_iter,
            "norm": norm,
            "rand_init": rand_init,
        },
    )
