"""BPDA: a forward pass through any transform, a differentiable stand-in backwards."""


def bpda(forward_fn, backward_fn=None):
    """Wrap `forward_fn` so that gradients flow as if it were `backward_fn`.

    Backward Pass Differentiable Approximation: the wrapped function returns
    exactly `forward_fn(x)`, but its gradient is that of `backward_fn(x)`,
    by default the identity. Use it on any layer or input transform that is
    non-differentiable (quantisation, median filtering, JPEG) or whose
    gradient is useless (zero almost everywhere, shattered), so that gradient
    attacks (`pgd_with_loss`, or any `attack` given the composed callable)
    see through it. Computed as
    `g(x) + stop_gradient(forward_fn(x) - g(x))` with `g = backward_fn`, in
    `keras.ops`, so it works eagerly, inside `tf.function` and on symbolic
    Keras tensors.

    Args:
        forward_fn: the transform, a callable `x -> tensor` (a function or a
            Keras layer). Extra positional and keyword arguments of the
            wrapped call are passed to it.
        backward_fn: a differentiable callable with the same output shape
            whose gradient replaces that of `forward_fn`. Defaults to `None`,
            the identity (then `forward_fn` must keep the input's shape).

    Returns:
        A callable with the signature of `forward_fn`.

    Raises:
        TypeError: `forward_fn` or `backward_fn` not callable.
        ValueError: (at call time) outputs of `forward_fn` and `backward_fn`
            (or the input, for the identity) of different shapes.

    Example:

        >>> import keras, tensorflow as tf
        >>> rounded = bpda(keras.ops.round)  # gradient of round() is 0 everywhere
        >>> x = tf.constant([0.2, 0.7])
        >>> with tf.GradientTape() as tape:
        ...     tape.watch(x)
        ...     y = rounded(x)
        >>> y.numpy().tolist(), tape.gradient(y, x).numpy().tolist()
        ([0.0, 1.0], [1.0, 1.0])

    Reference:
        A. Athalye, N. Carlini and D. Wagner, "Obfuscated Gradients Give a
        False Sense of Security", ICML 2018.
    """
    for name, fn in (("forward_fn", forward_fn), ("backward_fn", backward_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(
                f"Argument `{name}` must be callable. Received: {name} of type {type(fn).__name__}"
            )

    def wrapped(x, *args, **kwargs):
        import keras

        forward = forward_fn(x, *args, **kwargs)
        approx = x if backward_fn is None else backward_fn(x, *args, **kwargs)
        if _known_shape(forward) != _known_shape(approx):
            stand_in = "the input" if backward_fn is None else "`backward_fn`"
            raise ValueError(
                f"`bpda` needs `forward_fn` to return the shape of {stand_in}. "
                f"Received: {tuple(forward.shape)} vs {tuple(approx.shape)}"
                + (". Pass a `backward_fn` of the output's shape." if backward_fn is None else "")
            )
        forward = keras.ops.cast(forward, approx.dtype)
        return approx + keras.ops.stop_gradient(forward - approx)

    wrapped.__name__ = "bpda_" + getattr(forward_fn, "__name__", type(forward_fn).__name__)
    return wrapped


def _known_shape(tensor):
    """The static shape, with unknown dimensions as wildcards (`None`)."""
    return tuple(None if d is None else int(d) for d in tensor.shape)
