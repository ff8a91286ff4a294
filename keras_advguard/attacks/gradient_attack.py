"""Gradient attack: one L2 step along the loss gradient (Foolbox's GradientAttack)."""

import numpy as np

from keras_advguard.attacks import _common


def gradient_attack(
    model,
    x,
    *,
    eps,
    steps=10,
    y=None,
    targeted=False,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """One step along the L2-normalised gradient, with the smallest size that works.

    The direction `d = grad_x CE(logits(x), y) / ||grad||_2` is computed once
    (towards the target's loss decrease when targeted). The candidates
    `clip(x + e * d)` for `e` in `eps / steps, 2 * eps / steps, ..., eps`
    are tried in order and, per sample, the first that succeeds is kept;
    samples where none succeeds get the full step `eps`. This is the
    "gradient attack" of Foolbox 1.x used by Amirian et al. (2018), bounded
    by an L2 radius instead of Foolbox's RMS-scaled step. With `steps=1` it
    is the plain L2 fast gradient method.

    Args:
        model: a Keras model (attacked on its pre-softmax logits when it ends
            in softmax), a `DetectorModel`, or a callable returning logits.
        x: inputs `(N, ...)` in `[clip_min, clip_max]`.
        eps: largest L2 step, >= 0.
        steps: number of step sizes tried (one forward pass each), >= 1.
            Defaults to `10`.
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
        An `AttackResult` (`l2 <= eps` for every sample).

    Raises:
        ValueError: `eps < 0`, `steps < 1`, `clip_min >= clip_max`, `x`
            outside the clip range, `y` of the wrong length, or a model whose
            logits cannot be reached.
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.full((2, 4), 0.5, dtype="float32")
        >>> result = gradient_attack(model, x, eps=0.3, steps=3)
        >>> bool(np.all(result.l2 <= 0.3 + 1e-6))
        True

    Reference:
        J. Rauber, W. Brendel and M. Bethge, "Foolbox: A Python toolbox to
        benchmark the robustness of machine learning models", 2017.
    """
    import tensorflow as tf
    from cleverhans.tf2.utils import compute_gradient, optimize_linear

    from keras_advguard import _validation

    eps = _common.check_eps(eps)
    _validation.check_positive_int("steps", steps)
    sizes = eps * np.arange(1, steps + 1) / steps

    def attack_batch(logits_fn, xb, labels, rng):
        grad = compute_gradient(
            logits_fn,
            tf.nn.sparse_softmax_cross_entropy_with_logits,
            xb,
            labels,
            targeted,
        )
        direction = optimize_linear(grad, 1.0, 2)
        best = xb
        done = np.zeros(len(xb), dtype=bool)
        for i, size in enumerate(sizes):
            candidate = tf.clip_by_value(xb + size * direction, clip_min, clip_max)
            if i == len(sizes) - 1:  # the full step for every sample still open
                take = ~done
            else:
                pred = np.argmax(logits_fn(candidate), axis=1)
                hit = pred == labels.numpy() if targeted else pred != labels.numpy()
                take = hit & ~done
            mask = tf.reshape(take, [-1] + [1] * (len(xb.shape) - 1))
            best = tf.where(mask, candidate, best)
            done |= take
            if done.all():
                break
        return best

    return _common.run_attack(
        attack_batch,
        model,
        x,
        name="gradient_attack",
        y=y,
        targeted=targeted,
        clip_min=clip_min,
        clip_max=clip_max,
        batch_size=batch_size,
        verbose=verbose,
        seed=seed,
        params={"eps": eps, "steps": steps},
    )
