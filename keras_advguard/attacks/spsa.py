"""SPSA: a gradient-free L-infinity attack (Uesato et al.)."""

from keras_advguard.attacks import _common


def spsa(
    model,
    x,
    *,
    eps,
    nb_iter=100,
    y=None,
    targeted=False,
    learning_rate=0.01,
    delta=0.01,
    spsa_samples=128,
    spsa_iters=1,
    early_stop_loss_threshold=None,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """SPSA: projected Adam on a finite-difference estimate of the margin loss.

    Needs only the logits, never their gradient, so it attacks defences with
    broken or useless gradients. At each of `nb_iter` steps the gradient of
    the margin loss `max_{k != l} z_k - z_l` is estimated from
    `spsa_samples` random +/-`delta` (Rademacher) perturbations, an Adam
    step is taken and the result is projected on the `eps` L-infinity ball
    and the clip range. Runs cleverhans' `spsa` (with its Keras 3 breakage
    fixed, see `docs/attacks.md`) one sample at a time, as cleverhans
    requires, each sample's loop compiled with `tf.function`. Its random
    draws come from TensorFlow's global generator (call
    `keras.utils.set_random_seed` for repeatable runs).

    Args:
        model: a Keras model (attacked on its pre-softmax logits when it ends
            in softmax), a `DetectorModel`, or a callable returning logits.
        x: inputs `(N, ...)` in `[clip_min, clip_max]`.
        eps: L-infinity radius, >= 0.
        nb_iter: number of optimisation steps, >= 1. Defaults to `100`.
        y: labels `(N,)` or one-hot `(N, C)`. Untargeted: the labels to move
            away from; defaults to the model's predictions. Targeted: the
            targets; defaults to a random class other than the predicted one.
        targeted: whether to reach `y`. Defaults to `False`.
        learning_rate: Adam learning rate, > 0. Defaults to `0.01`.
        delta: size of the finite-difference perturbation, > 0. Defaults to
            `0.01`.
        spsa_samples: perturbations per gradient estimate (even), >= 2.
            Defaults to `128`.
        spsa_iters: gradient estimates averaged per step, >= 1. Defaults to
            `1`.
        early_stop_loss_threshold: stop a sample once its loss is below this
            value (`0.0` stops at the first success), or `None` to always run
            `nb_iter` steps. Defaults to `None`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        batch_size: samples per progress-bar step. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.
        seed: seed of the random targets. Defaults to `None`.

    Returns:
        An `AttackResult`.

    Raises:
        ValueError: `eps < 0`, a number out of range, an odd `spsa_samples`,
            `clip_min >= clip_max`, `x` outside the clip range, `y` of the
            wrong length, or a model whose logits cannot be reached.
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.full((2, 4), 0.5, dtype="float32")
        >>> result = spsa(model, x, eps=0.1, nb_iter=2, spsa_samples=8)
        >>> bool(np.all(result.linf <= 0.1 + 1e-6))
        True

    Reference:
        J. Uesato, B. O'Donoghue, A. van den Oord and P. Kohli, "Adversarial
        Risk and the Dangers of Evaluating Against Weak Attacks", ICML 2018.
    """
    import tensorflow as tf

    from keras_advguard import _validation
    from keras_advguard.attacks import _cleverhans_fixes

    check = _validation.check_number
    eps = _common.check_eps(eps)
    _validation.check_positive_int("nb_iter", nb_iter)
    learning_rate = float(check("learning_rate", learning_rate, min_value=0, min_inclusive=False))
    delta = float(check("delta", delta, min_value=0, min_inclusive=False))
    check("spsa_samples", spsa_samples, min_value=2, integer=True)
    if spsa_samples % 2:
        raise ValueError(
            "Argument `spsa_samples` must be even (each perturbation is used "
            f"with both signs). Received: spsa_samples={spsa_samples}"
        )
    _validation.check_positive_int("spsa_iters", spsa_iters)
    if early_stop_loss_threshold is not None:
        early_stop_loss_threshold = float(
            check("early_stop_loss_threshold", early_stop_loss_threshold)
        )

    logits_fn = _common.logits_callable(model)
    optimizer = _cleverhans_fixes.SPSAAdam(
        lr=learning_rate, delta=delta, num_samples=spsa_samples, num_iters=spsa_iters
    )

    @_common.compile_fn
    def attack_one(x_one, label):
        return _cleverhans_fixes.spsa_with_optimizer(
            optimizer,
            logits_fn,
            x_one,
            label,
            eps,
            nb_iter,
            clip_min=clip_min,
            clip_max=clip_max,
            targeted=targeted,
            early_stop_loss_threshold=early_stop_loss_threshold,
        )

    def attack_batch(logits_fn, xb, labels, rng):
        rows = [attack_one(xb[i : i + 1], labels[i : i + 1]) for i in range(len(xb))]
        return tf.concat(rows, axis=0)

    return _common.run_attack(
        attack_batch,
        model,
        x,
        name="spsa",
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
            "learning_rate": learning_rate,
            "delta": delta,
            "spsa_samples": spsa_samples,
            "spsa_iters": spsa_iters,
            "early_stop_loss_threshold": early_stop_loss_threshold,
        },
    )
