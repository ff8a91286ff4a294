"""Uniform random noise in the L-infinity ball: the papers' "random noise" control."""

from keras_advguard.attacks import _common


def uniform_noise(
    model,
    x,
    *,
    eps,
    y=None,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """Add noise drawn uniformly from `[-eps, eps]` to every input value.

    Not an attack (it ignores the model's gradients): it is the control the
    papers use to check that a detector reacts to adversarial structure, not
    to any perturbation of the same size. The result is clipped into the
    valid range; `success` says whether the noise alone changed the label.

    Args:
        model: a Keras model, a `DetectorModel`, or a callable returning
            logits (used only to measure the effect).
        x: inputs `(N, ...)` in `[clip_min, clip_max]`.
        eps: half-width of the noise, >= 0.
        y: true labels `(N,)` or one-hot `(N, C)`, against which `success`
            is measured. Defaults to the model's predictions.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        batch_size: samples per batch. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.
        seed: seed of the noise. Defaults to `None`.

    Returns:
        An `AttackResult`.

    Raises:
        ValueError: `eps < 0`, `clip_min >= clip_max`, `x` outside the clip
            range, `y` of the wrong length, or a model whose logits cannot be
            reached.
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.full((2, 4), 0.5, dtype="float32")
        >>> result = uniform_noise(model, x, eps=0.1, seed=0)
        >>> bool(np.all(result.linf <= 0.1)), bool(np.all(result.linf > 0))
        (True, True)
    """
    eps = _common.check_eps(eps)

    def attack_batch(logits_fn, xb, labels, rng):
        noise = rng.uniform(-eps, eps, size=xb.shape).astype("float32")
        return xb.numpy() + noise

    return _common.run_attack(
        attack_batch,
        model,
        x,
        name="uniform_noise",
        y=y,
        targeted=False,
        clip_min=clip_min,
        clip_max=clip_max,
        batch_size=batch_size,
        verbose=verbose,
        seed=seed,
        params={"eps": eps, "seed": seed},
    )
