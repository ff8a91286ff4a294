"""The one cache of built objects the package keeps on its instances (floor 1).

Detectors build, on first use, things that are costly to rebuild and valid
only for their current state: a `DetectorModel` tapping their classifier, a
`tf.function` of their score, the training activations as constant tensors.
`memo(owner, name, build, depends_on=...)` keeps one such object per `name`
on `owner` and rebuilds it when what it was built from changed (another
model, another layer, a refit), so no class writes its own
`if self._x is None or self._key != key` bookkeeping.

`depends_on` is compared element by element: strings, numbers, `None` and
tuples of them by value, everything else (models, layers, arrays) by
identity. The entry holds those objects, so an identity cannot be reused by
a new object while the entry stands.
"""

_SLOT = "_memo"
_BY_VALUE = (str, bytes, int, float, bool, type(None))


def _same(a, b):
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, _BY_VALUE) and isinstance(b, _BY_VALUE):
        return type(a) is type(b) and a == b
    return a is b


def memo(owner, name, build, depends_on=()):
    """`build()`, computed once for `owner` while `depends_on` stays the same.

    Args:
        owner: the object the cached value belongs to (stored in its
            `__dict__`, bypassing `__setattr__`, so Keras does not track it).
        name: the entry's name, unique within `owner`.
        build: a callable of no argument returning the value.
        depends_on: a tuple of what the value is built from. Defaults to
            `()` (built once).

    Returns:
        The cached (or freshly built) value.

    Example:

        >>> class Owner:
        ...     pass
        >>> owner, calls = Owner(), []
        >>> def build():
        ...     calls.append(1)
        ...     return len(calls)
        >>> memo(owner, "n", build, ("a",)), memo(owner, "n", build, ("a",))
        (1, 1)
        >>> memo(owner, "n", build, ("b",))
        2
    """
    entries = owner.__dict__.setdefault(_SLOT, {})
    depends_on = tuple(depends_on)
    entry = entries.get(name)
    if entry is not None and _same(entry[0], depends_on):
        return entry[1]
    value = build()
    entries[name] = (depends_on, value)
    return value


def batch_function(owner, name, fn, input_shape, depends_on=()):
    """`tf.function(fn)` on float32 batches `(None, *input_shape[1:])`, kept by `memo`.

    One trace serves every batch size (the last batch of a pass is smaller);
    it is rebuilt when `input_shape` or `depends_on` changes.

    Args:
        owner: as `memo`.
        name: as `memo`.
        fn: a callable `batch tensor -> tensor(s)`.
        input_shape: the model's input shape, batch axis first.
        depends_on: as `memo`. Defaults to `()`.

    Returns:
        The compiled function.
    """
    import tensorflow as tf

    shape = tuple(input_shape)
    spec = tf.TensorSpec((None,) + shape[1:], "float32")
    return memo(owner, name, lambda: tf.function(fn, input_signature=[spec]), (*depends_on, shape))


def forget(owner, *names):
    """Drop the entries `names` of `owner` (all of them without `names`).

    Example:

        >>> class Owner:
        ...     pass
        >>> owner = Owner()
        >>> memo(owner, "n", lambda: 1)
        1
        >>> forget(owner, "n")
        >>> memo(owner, "n", lambda: 2)
        2
    """
    entries = owner.__dict__.get(_SLOT)
    if not entries:
        return
    if not names:
        entries.clear()
    for name in names:
        entries.pop(name, None)
