"""DeepFool: minimal L2 or L-infinity steps to the nearest linearised boundary."""

from keras_advguard.attacks import _common


def deepfool(
    model,
    x,
    *,
    norm=2,
    overshoot=0.02,
    max_iter=50,
    candidates=10,
    y=None,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
):
    """DeepFool (untargeted): step to the closest linearised decision boundary.

    At each step the logits are linearised around the current point; for
    every candidate class `k` (the `candidates - 1` classes with the largest
    original logits besides the label `l`), `f_k = z_k - z_l` and
    `w_k = grad f_k`. The class with the smallest distance
    `|f_k| / ||w_k||` (dual norm: L2 for `norm=2`, L1 for `norm=np.inf`) is
    chosen and the minimal step onto its hyperplane, `(|f_k| / ||w_k||_2^2) w_k`
    (L2) or `(|f_k| / ||w_k||_1) sign(w_k)` (L-infinity), is added to the
    total perturbation `p`. The candidate is `clip(x + (1 + overshoot) * p)`;
    a sample stops as soon as its label changes. Batched, in TensorFlow,
    following the Foolbox 3 formulation.

    Args:
        model: a Keras model (attacked on its pre-softmax logits when it ends
            in softmax), a `DetectorModel`, or a callable returning logits.
        x: inputs `(N, ...)` in `[clip_min, clip_max]`.
        norm: `2` or `np.inf`: the norm the step minimises. Defaults to `2`.
        overshoot: relative overshoot past the boundary, >= 0. Defaults to
            `0.02` (the paper's value).
        max_iter: most linearisation steps, >= 1. Defaults to `50`.
        candidates: number of classes considered (label included), >= 2;
            capped at the number of classes. Defaults to `10`.
        y: labels `(N,)` or one-hot `(N, C)` to move away from. Defaults to
            the model's predictions.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        batch_size: samples per batch. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.

    Returns:
        An `AttackResult`. Samples that did not flip within `max_iter` steps
        keep their last iterate and `success=False`.

    Raises:
        ValueError: an unknown `norm`, `overshoot < 0`, `max_iter < 1`,
            `candidates < 2`, `clip_min >= clip_max`, `x` outside the clip
            range, `y` of the wrong length, or a model whose logits cannot be
            reached.
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> keras.utils.set_random_seed(0)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.full((4, 4), 0.5, dtype="float32")
        >>> result = deepfool(model, x)
        >>> bool(result.success.all())  # a linear model flips in one step
        True

    Reference:
        S.-M. Moosavi-Dezfooli, A. Fawzi and P. Frossard, "DeepFool: a simple
        and accurate method to fool deep neural networks", CVPR 2016.
    """
    import tensorflow as tf

    from keras_advguard import _validation

    norm = _common.check_norm(norm)
    overshoot = float(_validation.check_number("overshoot", overshoot, min_value=0))
    _validation.check_positive_int("max_iter", max_iter)
    _validation.check_number("candidates", candidates, min_value=2, integer=True)

    logits_fn = _common.logits_callable(model)

    @_common.compile_fn
    def linearise(x, classes):
        # f_k = z_{c_k} - z_{c_0} and its gradient, for k = 1..K-1.
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            logits = logits_fn(x)
            picked = tf.gather(logits, classes, batch_dims=1)
            diffs = picked[:, 1:] - picked[:, :1]
            per_class = [diffs[:, k] for k in range(diffs.shape[1])]
        grads = tf.stack([tape.gradient(f, x) for f in per_class], axis=1)
        return logits, diffs, grads

    def attack_batch(logits_fn, xb, labels, rng):
        n = int(xb.shape[0])
        axes = list(range(2, len(xb.shape) + 1))
        logits = logits_fn(xb)
        k = min(int(candidates), int(logits.shape[-1]))
        # The label first, then the other classes by decreasing logit.
        order = tf.cast(tf.argsort(logits, axis=1, direction="DESCENDING"), tf.int64)
        others = tf.boolean_mask(order, order != labels[:, None])
        others = tf.reshape(others, [n, -1])[:, : k - 1]
        classes = tf.concat([labels[:, None], others], axis=1)

        x_adv = xb
        total = tf.zeros_like(xb)
        for _ in range(max_iter):
            logits, diffs, grads = linearise(x_adv, classes)
            active = tf.argmax(logits, axis=1) == labels
            if not bool(tf.reduce_any(active)):
                break
            if norm == 2:
                grad_norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axes))
            else:
                grad_norms = tf.reduce_sum(tf.abs(grads), axes)
            distances = tf.abs(diffs) / (grad_norms + 1e-8)
            best = tf.argmin(distances, axis=1)
            distance = tf.gather(distances, best, batch_dims=1) + 1e-4
            grad = tf.gather(grads, best, batch_dims=1)
            scale = distance / (tf.gather(grad_norms, best, batch_dims=1) + 1e-8)
            shape = [-1] + [1] * (len(xb.shape) - 1)
            if norm == 2:
                step = tf.reshape(scale, shape) * grad
            else:
                step = tf.reshape(distance, shape) * tf.sign(grad)
            total = total + tf.where(tf.reshape(active, shape), step, 0.0)
            x_adv = tf.clip_by_value(xb + (1.0 + overshoot) * total, clip_min, clip_max)
        return x_adv

    return _common.run_attack(
        attack_batch,
        model,
        x,
        name="deepfool",
        y=y,
        targeted=False,
        clip_min=clip_min,
        clip_max=clip_max,
        batch_size=batch_size,
        verbose=verbose,
        logits_fn=logits_fn,
        params={
            "norm": norm,
            "overshoot": overshoot,
            "max_iter": max_iter,
            "candidates": candidates,
        },
    )
