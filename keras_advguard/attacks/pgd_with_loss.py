"""PGD on any differentiable loss over a model's outputs: the adaptive-attack engine."""

import numpy as np

from keras_advguard.attacks import _common


def pgd_with_loss(
    model,
    x,
    loss_fn,
    *,
    eps,
    eps_iter=None,
    nb_iter=40,
    step_decay=1.0,
    norm=np.inf,
    y=None,
    rand_init=True,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """Projected gradient ascent on `loss_fn(outputs, y)` inside the `eps` ball.

    The building block of adaptive white-box attacks (METHODS.md section 7):
    the loss sees the whole output dict of a `DetectorModel` (`"prediction"`,
    `"logits"`, `"activations"`), so it can, for example, push the logits
    away from the true class while keeping a detector's score low, or pull
    the activations of chosen layers towards those of a target-class input.
    Non-differentiable steps inside `model` (a squeezer, a median filter) are
    wrapped with `bpda` first.

    Each step: `x <- proj(x + eps_iter * sign(grad))` (L-infinity) or
    `x + eps_iter * grad / ||grad||_2` (L2), where `proj` clips to the `eps`
    ball around `x` and to `[clip_min, clip_max]`. `loss_fn` is *maximised*;
    return its negative to minimise. With `step_decay < 1` the step shrinks
    geometrically over the iterations, from `eps_iter` at the first to
    `eps_iter * step_decay` at the last: the large first steps cross the
    ball, the small last ones settle in narrow optima (a learned detector's
    score surface) that a constant sign step jumps over.

    Args:
        model: a `DetectorModel` (called as it is), a Keras model (wrapped in
            `DetectorModel(model)`, so the loss gets `"prediction"` and
            `"logits"`), or any callable `x -> outputs` (a dict with a
            `"logits"` entry, or a logits tensor, which the loss then gets
            as `{"logits": tensor}`), e.g. a composition of `bpda`-wrapped
            transforms and a `DetectorModel`.
        x: inputs `(N, ...)` in `[clip_min, clip_max]`.
        loss_fn: `loss_fn(outputs, y_batch) -> loss` of shape `(B,)` or a
            scalar, differentiable with respect to the input. `y_batch` is
            the batch's slice of `y` (tensors), or `None`.
        eps: radius of the ball in `norm`, >= 0.
        eps_iter: step size, in `[0, eps]`. Defaults to
            `min(eps, 2.5 * eps / nb_iter)`.
        nb_iter: number of steps, >= 1. Defaults to `40`.
        step_decay: the last step as a fraction of the first, in `(0, 1]`;
            step `i` is `eps_iter * step_decay ** (i / (nb_iter - 1))`.
            Defaults to `1.0` (a constant step).
        norm: `np.inf` or `2`. Defaults to `np.inf`.
        y: per-sample data for the loss: an array, or a dict or list of
            arrays, each with first dimension `N` (labels, target
            activations...). Defaults to `None`.
        rand_init: start at a uniformly random point of the ball (drawn with
            `seed`). Defaults to `True`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        batch_size: samples per batch. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.
        seed: seed of the random start. Defaults to `None`.

    Returns:
        An `AttackResult` whose `success` means "the predicted label changed"
        (`labels` = `y_pred_before`); judge other goals (a detector's score,
        a target class) from `x_adv`.

    Raises:
        ValueError: `eps < 0`, `eps_iter > eps`, `step_decay` outside
            `(0, 1]`, an unknown `norm`,
            `clip_min >= clip_max`, `x` outside the clip range, arrays of `y`
            of the wrong length, outputs without logits, or a loss with no
            gradient with respect to the input (wrap the step that blocks it
            with `bpda`).
        TypeError: `loss_fn` or `model` not callable, or other arguments of
            the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.full((2, 4), 0.5, dtype="float32")
        >>> def push_up_class_0(outputs, y):
        ...     return outputs["logits"][:, 0]
        >>> result = pgd_with_loss(
        ...     model, x, push_up_class_0, eps=0.1, nb_iter=5, seed=0)
        >>> logits = lambda x: keras.ops.convert_to_numpy(model(x))[:, 0]
        >>> bool(np.all(logits(result.x_adv) >= logits(x)))
        True

    Reference:
        A. Athalye, N. Carlini and D. Wagner, "Obfuscated Gradients Give a
        False Sense of Security", ICML 2018.
    """
    import keras
    import tensorflow as tf
    from cleverhans.tf2.utils import clip_eta, optimize_linear

    from keras_advguard import _validation
    from keras_advguard.detector_model import as_detector_model

    eps = _common.check_eps(eps)
    eps_iter = _common.check_step(eps, eps_iter, nb_iter)
    sizes = [tf.constant(v) for v in _common.step_sizes(eps_iter, step_decay, nb_iter)]
    norm = _common.check_norm(norm)
    _validation.check_type("rand_init", rand_init, bool)
    if not callable(loss_fn):
        raise TypeError(
            "Argument `loss_fn` must be a callable `(outputs, y) -> loss`. "
            f"Received: loss_fn of type {type(loss_fn).__name__}"
        )
    if isinstance(model, keras.Model):
        forward = as_detector_model(model)
    elif callable(model):
        forward = model
    else:
        raise TypeError(
            "Argument `model` must be a DetectorModel, a keras.Model or a callable. "
            f"Received: model of type {type(model).__name__}"
        )

    def outputs_of(x):
        outputs = forward(x)
        if not isinstance(outputs, dict):
            return {"logits": outputs}
        if "logits" not in outputs:
            raise ValueError(
                "The outputs of `model` must be a logits tensor or a dict with a "
                f"'logits' entry. Received: a dict with keys {sorted(outputs)}"
            )
        return outputs

    def logits_fn(x):
        return tf.cast(outputs_of(x)["logits"], tf.float32)

    @_common.compile_fn
    def step(x_adv, x0, y_batch, size):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            loss = tf.reduce_sum(loss_fn(outputs_of(x_adv), y_batch))
        grad = tape.gradient(loss, x_adv)
        if grad is None:  # known when tracing; reported outside the graph
            return None
        x_adv = x_adv + optimize_linear(grad, size, norm)
        x_adv = x0 + clip_eta(x_adv - x0, norm, eps)
        return tf.clip_by_value(x_adv, clip_min, clip_max)

    def attack_batch(logits_fn, xb, labels, rng, y=None):
        x_adv = xb
        if rand_init and eps > 0:
            x_adv = tf.clip_by_value(
                xb + _common.random_in_ball(rng, xb.shape, norm, eps), clip_min, clip_max
            )
        y_batch = None if y is None else keras.tree.map_structure(tf.constant, y)
        for size in sizes:
            x_adv = step(x_adv, xb, y_batch, size)
            if x_adv is None:
                raise ValueError(
                    "`loss_fn` has no gradient with respect to the input. Wrap the "
                    "non-differentiable step of `model` with `bpda`."
                )
        return x_adv

    return _common.run_attack(
        attack_batch,
        model,
        x,
        name="pgd_with_loss",
        y=None,
        targeted=False,
        clip_min=clip_min,
        clip_max=clip_max,
        batch_size=batch_size,
        verbose=verbose,
        seed=seed,
        logits_fn=logits_fn,
        batch_args={} if y is None else {"y": y},
        params={
            "eps": eps,
            "eps_iter": eps_iter,
            "nb_iter": nb_iter,
            "step_decay": float(step_decay),
            "norm": norm,
            "rand_init": rand_init,
            "loss_fn": getattr(loss_fn, "__name__", repr(loss_fn)),
        },
    )
