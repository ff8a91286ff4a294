"""EOT: average a randomized defence over several draws, for gradient attacks."""


def eot(fn, n_draws=10):
    """Expectation over Transformation: average `fn` over `n_draws` random draws.

    A randomized defence (random resizing and padding, noise, random
    sanitizer masks) gives a different output, and a different gradient, at
    each call: one draw's gradient is a poor step direction. The wrapped
    callable calls `fn` `n_draws` times on the same input (each call draws
    anew) and returns the mean output, so the gradient of anything linear in
    the output, a detector's score or a logit, is exactly the mean of the
    `n_draws` gradients. A dict output (a `DetectorModel`'s) is averaged
    entry by entry.

    Given a detector implementing the Detector contract (an object with
    `score_tensor`), it returns a detector whose `score_tensor` is the mean
    over draws; `threshold_`, `score`, `predict` and every other attribute
    are the wrapped detector's own (the defence is judged as deployed, one
    draw per input). Pass the result to any attack: `selective_pgd(eot(model_fn),
    x, eot(detector))`.

    Args:
        fn: a randomized callable `x -> tensor` (or dict of tensors), e.g. a
            model behind a random transform, or a contract detector.
        n_draws: number of draws averaged per call, >= 1. Defaults to `10`.

    Returns:
        A callable with the signature of `fn` (for a detector: a detector).

    Raises:
        TypeError: `fn` not callable and not a detector; `n_draws` not an
            integer.
        ValueError: `n_draws < 1`.

    Example:

        >>> import keras, numpy as np, tensorflow as tf
        >>> def noisy(x):  # a randomized defence: Gaussian noise on the input
        ...     return 2.0 * (x + keras.random.normal(keras.ops.shape(x), stddev=0.1))
        >>> x = tf.constant(np.zeros((1, 3), "float32"))
        >>> with tf.GradientTape() as tape:
        ...     tape.watch(x)
        ...     y = tf.reduce_sum(eot(noisy, n_draws=5)(x))
        >>> tape.gradient(y, x).numpy().tolist()
        [[2.0, 2.0, 2.0]]

    Reference:
        A. Athalye, L. Engstrom, A. Ilyas and K. Kwok, "Synthesizing Robust
        Adversarial Examples", ICML 2018; A. Athalye, N. Carlini and D.
        Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML
        2018.
    """
    from keras_advguard import _validation

    _validation.check_positive_int("n_draws", n_draws)
    if callable(getattr(fn, "score_tensor", None)):
        return _EOTDetector(fn, n_draws)
    if not callable(fn):
        raise TypeError(
            "Argument `fn` must be a callable or a detector with `score_tensor`. "
            f"Received: fn of type {type(fn).__name__}"
        )

    import tensorflow as tf

    @tf.autograph.experimental.do_not_convert
    def averaged(x, *args, **kwargs):
        return _mean_over_draws(lambda: fn(x, *args, **kwargs), n_draws)

    averaged.__name__ = "eot_" + getattr(fn, "__name__", type(fn).__name__)
    return averaged


def _mean_over_draws(draw, n_draws):
    import keras

    outputs = [draw() for _ in range(n_draws)]
    return keras.tree.map_structure(
        lambda *values: keras.ops.mean(keras.ops.stack(values, axis=0), axis=0), *outputs
    )


class _EOTDetector:
    """A contract detector whose `score_tensor` is averaged over draws."""

    def __init__(self, detector, n_draws):
        self.detector = detector
        self.n_draws = n_draws

    def score_tensor(self, x):
        import tensorflow as tf

        score = tf.autograph.experimental.do_not_convert(self.detector.score_tensor)
        return _mean_over_draws(lambda: score(x), self.n_draws)

    def __getattr__(self, name):
        # Called only for attributes not found here: threshold_, score, predict,
        # score_tensor_kind, model... are the wrapped detector's.
        if name == "detector":
            raise AttributeError(name)
        return getattr(self.detector, name)

    def __repr__(self):
        return f"eot({self.detector!r}, n_draws={self.n_draws})"
