"""Momentum Iterative Method (MI-FGSM)."""

import numpy as np

from keras_advguard.attacks import _common


def mim(
    model,
    x,
    *,
    eps,
    eps_iter=None,
    nb_iter=10,
    decay_factor=1.0,
    norm=np.inf,
    y=None,
    targeted=False,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """Momentum Iterative Method: iterative FGSM with an accumulated gradient.

    `g <- decay_factor * g + grad / mean(|grad|)`, then a step of size
    `eps_iter` along `sign(g)` (or `g / ||g||_2`), projected on the `eps`
    ball around `x` and the clip range. Runs cleverhans'
    `momentum_iterative_method`.

    Args:
        model: a Keras model (attacked on its pre-softmax logits when it ends
            in softmax), a `DetectorModel`, or a callable returning logits.
        x: inputs `(N, ...)` in `[clip_min, clip_max]`.
        eps: radius of the ball in `norm`, >= 0.
        eps_iter: step size, in `[0, eps]`. Defaults to
            `min(eps, 2.5 * eps / nb_iter)`.
        nb_iter: number of steps, >= 1. Defaults to `10`.
        decay_factor: momentum decay `mu`, >= 0. Defaults to `1.0` (the
            paper's choice).
        norm: `np.inf` or `2`. Defaults to `np.inf`.
        y: labels `(N,)` or one-hot `(N, C)`. Untargeted: the labels to move
            away from; defaults to the model's predictions. Targeted: the
            targets; defaults to a random class other than the predicted one.
        targeted: whether to move towards `y`. Defaults to `False`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        batch_size: samples per batch. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.
        seed: seed of the random targets. Defaults to `None`.

    Returns:
        An `AttackResult`.

    Raises:
        ValueError: `eps < 0`, `eps_iter > eps`, `decay_factor < 0`, an
            unknown `norm`, `clip_min >= clip_max`, `x` outside the clip
            range, `y` of the wrong length, or a model whose logits cannot be
            reached.
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.full((2, 4), 0.5, dtype="float32")
        >>> result = mim(model, x, eps=0.1, nb_iter=3)
        >>> bool(np.all(result.linf <= 0.1 + 1e-6))
        True

    Reference:
        Y. Dong, F. Liao, T. Pang, H. Su, J. Zhu, X. Hu and J. Li, "Boosting
        Adversarial Attacks with Momentum", CVPR 2018.
    """
    from cleverhans.tf2.attacks.momentum_iterative_method import (
        momentum_iterative_method,
    )

    from keras_advguard import _validation

    eps = _common.check_eps(eps)
    eps_iter = _common.check_step(eps, eps_iter, nb_iter)
    norm = _common.check_norm(norm)
    decay_factor = float(_validation.check_number("decay_factor", decay_factor, min_value=0))

    def attack_batch(logits_fn, xb, labels, rng):
        return momentum_iterative_method(
            logits_fn,
            xb,
            eps=eps,
            eps_iter=eps_iter,
            nb_iter=nb_iter,
            norm=norm,
            clip_min=clip_min,
            clip_max=clip_max,
            y=labels,
            targeted=targeted,
            decay_factor=decay_factor,
            sanity_checks=False,  # run_attack has checked x and the clip range
        )

    return _common.run_attack(
        attack_batch,
        model,
        x,
        name="mim",
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
            "decay_factor": decay_factor,
            "norm": norm,
        },
    )
