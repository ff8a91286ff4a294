"""Orthogonal PGD: selective PGD whose steps do not undo the other objective."""

import numpy as np

from keras_advguard.attacks.selective_pgd import _detector_pgd


def orthogonal_pgd(
    model,
    x,
    detectors,
    *,
    eps,
    eps_iter=None,
    nb_iter=100,
    step_decay=1.0,
    norm=np.inf,
    y=None,
    targeted=False,
    rand_init=True,
    restarts=1,
    project_classifier=True,
    project_detector=True,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """Orthogonal PGD against a classifier guarded by one or more detectors.

    As `selective_pgd` (same arguments, same choice of objective per sample
    and step, same bookkeeping of the best point), but each step is projected
    onto the space orthogonal to the *other* objective's gradient, per
    sample: while the sample is not yet fooled it moves along
    `gL - (gL . gs / ||gs||^2) gs`, the part of the classifier gradient `gL`
    that leaves the detectors' combined score `s` unchanged to first order;
    once fooled it moves along `-gs + (gs . gL / ||gL||^2) gL`, lowering the
    score without moving the classifier's loss. The projected direction then
    goes through the norm's step (`sign` for L-infinity, L2 normalisation
    for L2). Where the two gradients are parallel to float precision (a
    max-softmax score and the cross-entropy of a correctly classified input
    are both functions of one probability) nothing is left to project onto
    and the step keeps the raw gradient. Costs one forward and two backward
    passes per step (selective PGD: one and one).

    Args:
        model: the classifier: a Keras model (attacked on its pre-softmax
            logits when it ends in softmax), a `DetectorModel`, or a callable
            returning logits.
        x: inputs `(N, ...)` in `[clip_min, clip_max]`, finite.
        detectors: a calibrated detector implementing the Detector contract
            (`score_tensor`, `threshold_`), or a list of them (all must be
            evaded).
        eps: radius of the ball in `norm`, >= 0.
        eps_iter: step size, in `[0, eps]`. Defaults to `eps / 10`.
        nb_iter: steps per restart, >= 1. Defaults to `100`.
        step_decay: the last step as a fraction of the first, in `(0, 1]`,
            as in `selective_pgd` (geometric in between). Defaults to `1.0`.
        norm: `np.inf` or `2`. Defaults to `np.inf`.
        y: labels `(N,)` or one-hot `(N, C)`: the labels to move away from
            (untargeted) or the targets (targeted). Defaults to the model's
            predictions (untargeted) or random other classes (targeted).
        targeted: whether to move towards `y`. Defaults to `False`.
        rand_init: start each restart at a uniformly random point of the
            ball. Defaults to `True`.
        restarts: number of runs from random starts, >= 1. Defaults to `1`.
        project_classifier: project the classifier step orthogonally to the
            detectors' gradient. Defaults to `True`.
        project_detector: project the detector step orthogonally to the
            classifier's gradient. Defaults to `True`. The authors' code
            exposes both switches; with both `False` this is `selective_pgd`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        batch_size: samples per batch. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.
        seed: seed of the random starts and targets. Defaults to `None`.

    Returns:
        An `AttackResult` (`success`: the classifier is fooled; judge the
        detectors with their `predict` or
        `keras_advguard.metrics.success_rate_at_fpr`).

    Raises:
        ValueError: bad `eps`, `eps_iter`, `step_decay`, `norm`, non-finite
            `x` or outside the clip range, or a classifier or detector score without a
            gradient with respect to the input (see `selective_pgd`).
        TypeError: a detector without `score_tensor`, or arguments of the
            wrong type.
        NotFittedError: a detector without `threshold_`.

    Example:

        >>> import keras, numpy as np, tensorflow as tf
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> class LargeLogits:  # flags inputs whose top logit is large
        ...     score_tensor_kind = "exact"
        ...     threshold_ = 1.0
        ...     def score_tensor(self, x):
        ...         return tf.reduce_max(model(x), axis=1)
        >>> x = np.full((2, 4), 0.5, dtype="float32")
        >>> result = orthogonal_pgd(model, x, LargeLogits(), eps=1.0, norm=2, nb_iter=10)
        >>> bool(np.all(result.l2 <= 1.0 + 1e-5))
        True

    Reference:
        O. Bryniarski, N. Hingun, P. Pachuca, V. Wang and N. Carlini,
        "Evading Adversarial Example Detection Defenses with Orthogonal
        Projected Gradient Descent", ICLR 2022.
    """
    from keras_advguard import _validation

    _validation.check_type("project_classifier", project_classifier, bool)
    _validation.check_type("project_detector", project_detector, bool)
    return _detector_pgd(
        model,
        x,
        detectors,
        name="orthogonal_pgd",
        orthogonal=True,
        project_classifier=project_classifier,
        project_detector=project_detector,
        eps=eps,
        eps_iter=eps_iter,
        nb_iter=nb_iter,
        step_decay=step_decay,
        norm=norm,
        y=y,
        targeted=targeted,
        rand_init=rand_init,
        restarts=restarts,
        clip_min=clip_min,
        clip_max=clip_max,
        batch_size=batch_size,
        verbose=verbose,
        seed=seed,
    )
