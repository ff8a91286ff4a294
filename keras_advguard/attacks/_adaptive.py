"""What the adaptive attacks share: detector checks, steps, projections, starts.

Detectors are used only through the Detector contract: `score_tensor(x)` (a
differentiable `(N,)` score, higher = adversarial), `threshold_` (set by
`calibrate`) and the class attribute `score_tensor_kind`.
"""

import numpy as np

from keras_advguard import _validation

_TINY = 1e-12


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


def check_x(x, clip_min, clip_max):
    """Finite values first (NaN slips through a range check), then the range."""
    from keras_advguard.attacks import _common

    _common.check_clip(clip_min, clip_max)
    x = _validation.check_array("x", x, min_ndim=2, dtype_kind="fiu")
    _validation.check_finite("x", x)
    return _common.check_inputs(x, clip_min, clip_max)


def check_detectors(detectors):
    """One contract detector or a non-empty list of them, each calibrated.

    Returns:
        `(detectors, thresholds)`: a list, and a float32 array of their
        `threshold_`s.
    """
    if detectors is None:
        return [], np.zeros((0,), "float32")
    if not isinstance(detectors, (list, tuple)):
        detectors = [detectors]
    detectors = list(detectors)
    thresholds = []
    for i, detector in enumerate(detectors):
        if not callable(getattr(detector, "score_tensor", None)):
            raise TypeError(
                f"Every detector must implement the Detector contract's "
                f"`score_tensor(x)` (a differentiable (N,) score). Received: "
                f"detectors[{i}] of type {type(detector).__name__}"
            )
        threshold = getattr(detector, "threshold_", None)
        if threshold is None:
            raise _validation.NotFittedError(
                f"detectors[{i}] ({type(detector).__name__}) has no `threshold_`. Call "
                "`calibrate(x_clean_validation, fpr=...)` before attacking it."
            )
        threshold = float(threshold)
        if not np.isfinite(threshold):
            raise ValueError(
                f"The `threshold_` of detectors[{i}] ({type(detector).__name__}) must be "
                f"finite. Received: threshold_={threshold}"
            )
        thresholds.append(threshold)
    return detectors, np.asarray(thresholds, "float32")


def compile_step(fn):
    """`tf.function` without AutoGraph (the steps use no tensor-dependent Python
    control flow), like `_common.compile_fn` otherwise.

    AutoGraph re-reads the source file of every Python function it converts,
    which breaks when that file changed since it was imported; a detector's
    `score_tensor` is therefore called through `score_fn`, unconverted.
    """
    import functools

    import tensorflow as tf

    return tf.function(functools.partial(fn), reduce_retracing=True, autograph=False)


def step_logits(model):
    """The model's float32 logits, uncompiled, for use inside a compiled step.

    `_common.logits_callable` compiles a Keras model's logits on its own; a
    `tf.function` nested in the step's would be differentiated as a separate
    function call, slower than the inlined graph.
    """
    import tensorflow as tf

    from keras_advguard.attacks._common import as_logits_fn

    fn = tf.autograph.experimental.do_not_convert(as_logits_fn(model))
    return lambda x: tf.cast(fn(x), tf.float32)


def score_fn(detector):
    """The detector's `score_tensor`, never converted by AutoGraph."""
    import tensorflow as tf

    return tf.autograph.experimental.do_not_convert(detector.score_tensor)


def check_restarts(restarts):
    return _validation.check_positive_int("restarts", restarts)


def describe(detector, i):
    kind = getattr(detector, "score_tensor_kind", None)
    kind_text = "" if kind is None else f", score_tensor_kind={kind!r}"
    return f"detectors[{i}] ({type(detector).__name__}{kind_text})"


def no_gradient_error(what):
    return ValueError(
        f"{what} has no gradient with respect to the input: the gradient is missing "
        "or exactly zero on every sample of the first batch, so a gradient attack "
        "would silently do nothing. Its output is piecewise constant or blocks the "
        "gradient (a squeezer, a median filter, rounding, a histogram). Give it a "
        "differentiable stand-in: wrap the non-differentiable step with "
        "`keras_advguard.attacks.bpda`, or use a detector whose `score_tensor_kind` "
        "is 'surrogate' or 'bpda'. A randomized defence also needs `eot`."
    )


def check_has_gradient(fn, x, what):
    """Raise the 'no gradient' error unless `fn(x)` has a non-zero gradient."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(tf.cast(fn(x), tf.float32))
    grad = tape.gradient(value, x)
    if grad is None or not bool(tf.reduce_any(grad != 0)):
        raise no_gradient_error(what)


# --------------------------------------------------------------------------
# Steps and projections (tensors; used inside compiled steps)
# --------------------------------------------------------------------------


def _rowwise(t):
    import tensorflow as tf

    return tf.reshape(t, (tf.shape(t)[0], -1))


def _per_row(v, like):
    """`(B,)` -> a tensor broadcasting against `like` `(B, ...)`."""
    import tensorflow as tf

    shape = tf.concat([tf.shape(v), tf.ones([tf.rank(like) - 1], tf.int32)], 0)
    return tf.reshape(v, shape)


def l2_norm(t):
    """Per-row L2 norm `(B,)`."""
    import tensorflow as tf

    return tf.norm(_rowwise(t), axis=1)


def normalize(t):
    """Each row divided by its L2 norm (zero rows stay zero)."""
    return t / _per_row(l2_norm(t) + _TINY, t)


def steepest(grad, norm):
    """The unit-step direction: `sign(g)` (L-infinity) or `g / ||g||_2` (L2)."""
    import tensorflow as tf

    return tf.sign(grad) if norm == np.inf else normalize(grad)


def project(x_adv, x0, eps, norm, clip_min, clip_max):
    """Onto the `eps` ball around `x0` (in `norm`), then the clip range."""
    import tensorflow as tf

    delta = x_adv - x0
    if norm == np.inf:
        delta = tf.clip_by_value(delta, -eps, eps)
    else:
        n = l2_norm(delta)
        scale = tf.minimum(1.0, eps / (n + _TINY))
        delta = delta * _per_row(scale, delta)
    return tf.clip_by_value(x0 + delta, clip_min, clip_max)


PARALLEL_TOL = 1e-3
"""Relative norm below which a projected gradient counts as numerical noise."""


def orthogonal_part(g, other):
    """`g` minus its projection on `other`, per row: `g - (g.o / ||o||^2) o`.

    Rows where `g` and `other` are parallel to float precision (what is left
    is under `PARALLEL_TOL` of `||g||`: e.g. a max-softmax score and the
    cross-entropy of a correctly classified input, both functions of the
    same probability) have no orthogonal direction; the sign of the residual
    would be noise, so they keep `g` itself.
    """
    import tensorflow as tf

    gf, of = _rowwise(g), _rowwise(other)
    coef = tf.reduce_sum(gf * of, axis=1) / (tf.reduce_sum(of * of, axis=1) + _TINY)
    residual = g - _per_row(coef, g) * other
    degenerate = l2_norm(residual) <= PARALLEL_TOL * l2_norm(g)
    return tf.where(_per_row(degenerate, g), g, residual)


def random_start(rng, x, eps, norm, clip_min, clip_max):
    """A uniform point of the `eps` ball around `x` (numpy), clipped."""
    from keras_advguard.attacks import _common

    if eps == 0:
        return np.array(x, dtype="float32")
    noise = _common.random_in_ball(rng, x.shape, norm, eps)
    return np.clip(x + noise, clip_min, clip_max).astype("float32")
