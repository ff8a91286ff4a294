"""Graph-mode helpers of the in-training PGD loops (floor 1): step, projection, random start, loop.

Used by `training.AdversarialModel` and `detectors.ClassConditionalInputDetector`,
whose inner attacks run inside a compiled `train_step`, and, for the step
schedule (`step_factors`), by the adaptive attacks. `norm` is `"inf"` or
`"l2"`; tensors are batches `(B, ...)`.
"""

from keras_advguard import _validation


def check_step_decay(step_decay):
    """`step_decay` (the last step as a fraction of the first) must be a number in `(0, 1]`."""
    return _validation.check_number(
        "step_decay", step_decay, min_value=0.0, max_value=1.0, min_inclusive=False
    )


def step_factors(step_decay, steps):
    """The step schedule: step `i` of `steps` is the first times `step_decay ** (i / (steps - 1))`.

    `1` keeps the step constant; below 1 it shrinks geometrically from the
    first step to `step_decay` times it at the last: large first steps cross
    the ball, the small last ones settle in narrow optima that a constant sign
    step jumps over. Returns Python floats, one per step (`steps == 1`: `[1.0]`).

    Raises:
        TypeError: `step_decay` is not a number.
        ValueError: `step_decay` outside `(0, 1]`.
    """
    check_step_decay(step_decay)
    span = max(steps - 1, 1)
    return [float(step_decay) ** (i / span) for i in range(steps)]


def step_direction(grad, norm):
    """The steepest-ascent direction of `grad`: its sign (L-inf) or unit L2 rows."""
    import tensorflow as tf

    if norm == "inf":
        return tf.sign(grad)
    axes = list(range(1, len(grad.shape)))
    length = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=axes, keepdims=True))
    return grad / tf.maximum(length, 1e-12)


def project(x, x_adv, eps, norm, clip_min, clip_max):
    """`x_adv` projected onto the `eps`-ball around `x`, then clipped to the valid range."""
    import tensorflow as tf

    delta = x_adv - x
    if norm == "inf":
        delta = tf.clip_by_value(delta, -eps, eps)
    else:
        axes = list(range(1, len(delta.shape)))
        length = tf.sqrt(tf.reduce_sum(tf.square(delta), axis=axes, keepdims=True))
        delta = delta * tf.minimum(1.0, eps / tf.maximum(length, 1e-12))
    return tf.clip_by_value(x + delta, clip_min, clip_max)


def random_in_ball(shape, eps, norm):
    """A uniform sample of the `eps`-ball: uniform per pixel (L-inf) or in the L2 ball.

    For L2: a Gaussian direction and a radius `eps * U^(1/d)`.
    """
    import tensorflow as tf

    if norm == "inf":
        return tf.random.uniform(shape, -1.0, 1.0) * eps
    direction = tf.random.normal(shape)
    flat = tf.reshape(direction, [shape[0], -1])
    d = tf.cast(tf.shape(flat)[1], tf.float32)
    radius = eps * tf.random.uniform([shape[0]]) ** (1.0 / d)
    flat = flat / tf.maximum(tf.norm(flat, axis=1, keepdims=True), 1e-12)
    return tf.reshape(flat * radius[:, None], shape)


def ascend(objective, x, start, *, steps, step, eps, norm, clip_min, clip_max, step_decay=1.0):
    """`steps` projected steepest-ascent steps on `objective` from `start`, as one `tf.while_loop`.

    Step `i` (from 0) moves by `step * step_factors(step_decay, steps)[i]`
    along `step_direction` of the gradient of `objective(x_adv)` (a scalar):
    a constant `step` for `step_decay=1`, else a geometric schedule from
    `step` down to `step * step_decay` at the last step. Each step then
    `project`s onto the `eps`-ball around `x` and the valid range. Returns
    the last point, without gradient.
    """
    import tensorflow as tf

    factors = None
    if step_decay != 1.0:
        factors = tf.constant(step_factors(step_decay, steps), tf.float32)

    def body(i, xa):
        with tf.GradientTape() as tape:
            tape.watch(xa)
            value = objective(xa)
        grad = tape.gradient(value, xa)
        size = step
        if factors is not None:
            size = tf.cast(step * tf.gather(factors, i), xa.dtype)
        moved = xa + size * step_direction(grad, norm)
        return i + 1, project(x, moved, eps, norm, clip_min, clip_max)

    _, x_adv = tf.while_loop(
        lambda i, _: i < steps, body, (tf.constant(0), start), maximum_iterations=steps
    )
    return tf.stop_gradient(x_adv)
