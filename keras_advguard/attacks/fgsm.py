"""Fast Gradient Sign Method (one signed gradient step)."""

import numpy as np

from keras_advguard.attacks import _common


def fgsm(
    model,
    x,
    *,
    eps,
    y=None,
    targeted=False,
    norm=np.inf,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """Fast Gradient (Sign) Method: one step of size `eps` along the loss gradient.

    `x_adv = clip(x + eps * sign(grad_x CE(logits(x), y)))` (untargeted; the
    targeted attack steps down the loss of the target). With `norm=2` the
    step is the L2-normalised gradient (cleverhans' "fast gradient method").
    Runs cleverhans' `fast_gradient_method` on the model's logits.

    Args:
        model: a Keras model (attacked on its pre-softmax logits when it ends
            in softmax), a `DetectorModel`, or a callable returning logits.
        x: inputs `(N, ...)` in `[clip_min, clip_max]`.
        eps: step size = radius of the perturbation in `norm`, >= 0.
        y: labels `(N,)` or one-hot `(N, C)`. Untargeted: the labels to move
            away from; defaults to the model's predictions (no label
            leaking). Targeted: the targets; defaults to a random class other
            than the predicted one (drawn with `seed`).
        targeted: whether to move towards `y` instead of away from it.
            Defaults to `False`.
        norm: `np.inf` (FGSM) or `2`. Defaults to `np.inf`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        batch_size: samples per batch. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.
        seed: seed of the random targets. Defaults to `None`.

    Returns:
        An `AttackResult`.

    Raises:
        ValueError: `eps < 0`, an unknown `norm`, `clip_min >= clip_max`, `x`
            outside the clip range, `y` of the wrong length, or a model whose
            logits cannot be reached.
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.full((2, 4), 0.5, dtype="float32")
        >>> result = fgsm(model, x, eps=0.1)
        >>> np.allclose(result.linf, 0.1), result.x_adv.shape
        (True, (2, 4))

    Reference:
        I. Goodfellow, J. Shlens and C. Szegedy, "Explaining and Harnessing
        Adversarial Examples", ICLR 2015.
    """
    from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method

    eps = _common.check_eps(eps)
    norm = _common.check_norm(norm)

    def attack_batch(logits_fn, xb, labels, rng):
        return fast_gradient_method(
            logits_fn,
            xb,
            eps,
            norm,
            clip_min=clip_min,
            clip_max=clip_max,
            y=labels,
            targeted=targeted,
        )

    return _common.run_attack(
        attack_batch,
        model,
        x,
        name="fgsm",
        y=y,
        targeted=targeted,
        clip_min=clip_min,
        clip_max=clip_max,
        batch_size=batch_size,
        verbose=verbose,
        seed=seed,
        params={"eps": eps, "norm": norm},
    )
