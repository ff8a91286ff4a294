"""Selective PGD: fool the classifier, then the detectors, one objective per step."""

import numpy as np

from keras_advguard.attacks import _adaptive, _common

_SWITCH_MARGIN = 0.05
"""Logit margin by which the label must be beaten before the detector steps."""


def selective_pgd(
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
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """Selective PGD against a classifier guarded by one or more detectors.

    Each step, for each sample: while the sample is still classified as its
    label (untargeted; targeted: not yet as the target), take a PGD step up
    the cross-entropy `L(x)` (down, targeted); once it is fooled, take a step
    down the detectors' combined score `s(x) = max_j (s_j(x) - t_j)`, with
    `s_j = detectors[j].score_tensor` and `t_j = detectors[j].threshold_`.
    Both cases share one forward and one backward pass: the per-sample choice
    is a 0/1 weight on the two objectives. Steps are `eps_iter * sign(g)`
    (L-infinity) or `eps_iter * g / ||g||_2` (L2), each followed by the
    projection onto the `eps` ball and the clip range.

    Of all the points visited, each sample keeps the one that fools the
    classifier with the lowest `s` (so `s <= 0`, below every threshold, when
    the attack succeeds against all detectors); a sample that was never
    fooled keeps its last point. Restarts (random starts) run only on the
    samples not yet fooled below every threshold. Detectors are used only
    through the Detector contract; a score whose gradient is missing or zero
    raises an error instead of being attacked silently: give it a
    differentiable stand-in (`bpda`, or a detector with
    `score_tensor_kind="surrogate"`/`"bpda"`), and wrap randomized defences
    with `eot`.

    Args:
        model: the classifier: a Keras model (attacked on its pre-softmax
            logits when it ends in softmax), a `DetectorModel`, or a callable
            returning logits (e.g. a `bpda`-wrapped sanitizer composed with
            the model).
        x: inputs `(N, ...)` in `[clip_min, clip_max]`, finite.
        detectors: a calibrated detector implementing the Detector contract
            (`score_tensor`, `threshold_`), a list of them (all must be
            evaded), or `None`/`[]` (then the attack is PGD that stops moving
            a sample once it is fooled).
        eps: radius of the ball in `norm`, >= 0.
        eps_iter: step size, in `[0, eps]`. Defaults to `eps / 10`, the
            paper's step.
        nb_iter: steps per restart, >= 1. Defaults to `100` (the paper uses
            1,000).
        step_decay: the last step as a fraction of the first, in `(0, 1]`:
            step `i` of each restart is
            `eps_iter * step_decay ** (i / (nb_iter - 1))`. Defaults to `1.0`
            (a constant step). Against a learned detector whose score has
            narrow minima, a constant step of `eps / 10` can jump over every
            one of them; `step_decay=0.05` ends at `eps / 200`.
        norm: `np.inf` or `2`. Defaults to `np.inf`.
        y: labels `(N,)` or one-hot `(N, C)`. Untargeted: the labels to move
            away from; defaults to the model's predictions. Targeted: the
            targets; defaults to a random class other than the predicted one.
        targeted: whether to move towards `y`. Defaults to `False`.
        rand_init: start each restart at a uniformly random point of the
            ball (drawn with `seed`). Defaults to `True`.
        restarts: number of runs from random starts, >= 1. Defaults to `1`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        batch_size: samples per batch. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.
        seed: seed of the random starts and targets. Defaults to `None`.

    Returns:
        An `AttackResult`. `success` is the classifier's side (fooled, as in
        every attack); whether the detectors are evaded is judged with the
        contract, e.g. `detector.predict(result.x_adv)` or
        `keras_advguard.metrics.success_rate_at_fpr`.

    Raises:
        ValueError: `eps < 0`, `eps_iter > eps`, `step_decay` outside
            `(0, 1]`, an unknown `norm`, NaN or
            infinite values in `x`, `x` outside the clip range, `y` of the
            wrong length, or a classifier or detector score without a
            gradient with respect to the input.
        TypeError: a detector without `score_tensor`, or arguments of the
            wrong type.
        NotFittedError: a detector without `threshold_` (not calibrated).

    Example:

        >>> import keras, numpy as np, tensorflow as tf
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> class LargeLogits:  # flags inputs whose top logit is large
        ...     score_tensor_kind = "exact"
        ...     threshold_ = 1.0
        ...     def score_tensor(self, x):
        ...         return tf.reduce_max(model(x), axis=1)
        >>> x = np.full((2, 4), 0.5, dtype="float32")
        >>> result = selective_pgd(model, x, LargeLogits(), eps=0.3, nb_iter=10, seed=0)
        >>> bool(np.all(result.linf <= 0.3 + 1e-6))
        True

    Reference:
        O. Bryniarski, N. Hingun, P. Pachuca, V. Wang and N. Carlini,
        "Evading Adversarial Example Detection Defenses with Orthogonal
        Projected Gradient Descent", ICLR 2022.
    """
    return _detector_pgd(
        model,
        x,
        detectors,
        name="selective_pgd",
        orthogonal=False,
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


def _detector_pgd(
    model,
    x,
    detectors,
    *,
    name,
    orthogonal,
    eps,
    project_classifier=True,
    project_detector=True,
    eps_iter,
    nb_iter,
    step_decay=1.0,
    norm,
    y,
    targeted,
    rand_init,
    restarts,
    clip_min,
    clip_max,
    batch_size,
    verbose,
    seed,
):
    """Selective (`orthogonal=False`) or orthogonal PGD; see `selective_pgd`."""
    import keras
    import tensorflow as tf

    from keras_advguard import _validation

    eps = _common.check_eps(eps)
    _validation.check_positive_int("nb_iter", nb_iter)
    eps_iter = _common.check_step(eps, eps / 10.0 if eps_iter is None else eps_iter, nb_iter)
    sizes = [tf.constant(v) for v in _common.step_sizes(eps_iter, step_decay, nb_iter)]
    norm = _common.check_norm(norm)
    _validation.check_type("rand_init", rand_init, bool)
    restarts = _adaptive.check_restarts(restarts)
    _common.check_common(batch_size, verbose, targeted, seed)
    x = _adaptive.check_x(x, clip_min, clip_max)
    detectors, thresholds = _adaptive.check_detectors(detectors)
    logits_fn = _common.logits_callable(model)
    step_logits = _adaptive.step_logits(model)

    score_fns = [_adaptive.score_fn(d) for d in detectors]

    def combined_score(x_adv):
        if not detectors:
            return tf.zeros(tf.shape(x_adv)[:1], tf.float32)
        scores = [
            tf.reshape(tf.cast(fn(x_adv), tf.float32), (-1,)) - float(t)
            for fn, t in zip(score_fns, thresholds, strict=True)
        ]
        return tf.reduce_max(tf.stack(scores, axis=0), axis=0)

    def objectives(x_adv, labels):
        logits = step_logits(x_adv)
        ce = keras.ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        pred = tf.argmax(logits, axis=1, output_type=tf.int64)
        fooled = tf.equal(pred, labels) if targeted else tf.not_equal(pred, labels)
        # The switch to the detectors' objective waits until the label is beaten
        # by a small logit margin, so that the point does not hover on the
        # decision boundary (as in the authors' code).
        shift = _SWITCH_MARGIN * tf.one_hot(labels, tf.shape(logits)[1], dtype=logits.dtype)
        past = tf.argmax(logits - shift if targeted else logits + shift, axis=1)
        past = tf.equal(past, labels) if targeted else tf.not_equal(past, labels)
        score = combined_score(x_adv)
        # Both maximised: the classifier's loss (its negative, targeted) and -s.
        return (-ce if targeted else ce), -score, fooled, past, score

    @_adaptive.compile_step
    def step(x_adv, x0, labels, best_x, best_s, size):
        with tf.GradientTape(persistent=orthogonal) as tape:
            tape.watch(x_adv)
            cls_obj, det_obj, fooled, past, score = objectives(x_adv, labels)
            on_detector = tf.stop_gradient(tf.cast(past, tf.float32))
            if orthogonal:
                cls_total, det_total = tf.reduce_sum(cls_obj), tf.reduce_sum(det_obj)
            else:
                total = tf.reduce_sum((1.0 - on_detector) * cls_obj + on_detector * det_obj)
        if orthogonal:
            g_cls = tape.gradient(cls_total, x_adv)
            g_det = tape.gradient(det_total, x_adv)
            if g_det is None:
                g_det = tf.zeros_like(x_adv)
            # Each objective's step without its component along the other's
            # gradient (both projections from the raw gradients).
            g_cls_raw, g_det_raw = g_cls, g_det
            if project_classifier:
                g_cls = _adaptive.orthogonal_part(g_cls_raw, g_det_raw)
            if project_detector:
                g_det = _adaptive.orthogonal_part(g_det_raw, g_cls_raw)
            grad = tf.where(_adaptive._per_row(past, x_adv), g_det, g_cls)
        else:
            grad = tape.gradient(total, x_adv)
        best_x, best_s = _keep_best(x_adv, fooled, score, best_x, best_s)
        x_new = x_adv + tf.cast(size, x_adv.dtype) * _adaptive.steepest(grad, norm)
        return _adaptive.project(x_new, x0, eps, norm, clip_min, clip_max), best_x, best_s

    @_adaptive.compile_step
    def final(x_adv, labels, best_x, best_s):
        _, _, fooled, _, score = objectives(x_adv, labels)
        return _keep_best(x_adv, fooled, score, best_x, best_s)

    checked = []

    def attack_batch(logits_fn_, xb, labels, rng):
        if not checked:
            _check_gradients(logits_fn, detectors, xb, labels)
            checked.append(True)
        x0 = xb.numpy()
        lab = labels.numpy()
        out = x0.copy()
        best_s = np.full(len(x0), np.inf, "float32")
        for _ in range(restarts):
            todo = np.flatnonzero(~(best_s <= 0))
            if not len(todo):
                break
            x_start = x0[todo]
            if rand_init:
                x_start = _adaptive.random_start(rng, x_start, eps, norm, clip_min, clip_max)
            x_adv = tf.constant(x_start)
            xt, lt = tf.constant(x0[todo]), tf.constant(lab[todo])
            bx, bs = tf.constant(out[todo]), tf.constant(best_s[todo])
            for size in sizes:
                x_adv, bx, bs = step(x_adv, xt, lt, bx, bs, size)
            bx, bs = final(x_adv, lt, bx, bs)
            bs = bs.numpy()
            # Never fooled in this run: keep the run's last point (unless an
            # earlier run fooled the classifier).
            last = np.isinf(bs) & np.isinf(best_s[todo])
            bx = np.where(_expand(last, x0.ndim), x_adv.numpy(), bx.numpy())
            out[todo] = bx
            best_s[todo] = bs
        return out

    return _common.run_attack(
        attack_batch,
        model,
        x,
        name=name,
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
            "eps_iter": eps_iter,
            "nb_iter": nb_iter,
            "step_decay": float(step_decay),
            "norm": norm,
            "rand_init": rand_init,
            "restarts": restarts,
            **(
                {"project_classifier": project_classifier, "project_detector": project_detector}
                if orthogonal
                else {}
            ),
            "detectors": [type(d).__name__ for d in detectors],
            "thresholds": thresholds.tolist(),
        },
    )


def _keep_best(x_adv, fooled, score, best_x, best_s):
    """Per sample: replace the best point by `x_adv` if it is fooled and scores lower."""
    import tensorflow as tf

    better = tf.logical_and(fooled, score < best_s)
    best_x = tf.where(_adaptive._per_row(better, x_adv), x_adv, best_x)
    return best_x, tf.where(better, score, best_s)


def _expand(mask, ndim):
    return mask.reshape((-1,) + (1,) * (ndim - 1))


def _check_gradients(logits_fn, detectors, xb, labels):
    """The classifier's loss and every detector's score must have a gradient."""
    import keras

    _adaptive.check_has_gradient(
        lambda v: keras.ops.sparse_categorical_crossentropy(labels, logits_fn(v), from_logits=True),
        xb,
        "The classifier's loss",
    )
    for i, detector in enumerate(detectors):
        _adaptive.check_has_gradient(
            detector.score_tensor, xb, f"The score of {_adaptive.describe(detector, i)}"
        )
