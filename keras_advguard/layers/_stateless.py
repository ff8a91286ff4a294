"""The check that a layer given as a sanitizer or squeezer is stateless (floor 1).

`sanitize` inserts a fresh copy of its sanitizer (made from the config) after
each chosen layer, and `FeatureSqueezingDetector` applies its squeezers to the
classifier's input and re-creates them from their configs when it loads. Both
are only meaningful for layers without weights: a `keras.layers.Dense(64)`
given as a "sanitizer" would get new random weights at every insertion and
every load. An unbuilt layer has no weights yet, so `layer.weights` alone
cannot tell: `check_stateless` also builds a throw-away copy on the input
shape it will see and counts the weights that creates.
"""

import keras


def check_stateless(name, layer, input_shape=None):
    """Raise `ValueError` if `layer` holds weights or creates some when built.

    Args:
        name: the argument's name, for the message (`"sanitizer"`,
            `"squeezers[0]"`).
        layer: a `keras.layers.Layer` instance.
        input_shape: the shape the layer will be called on, batch axis
            included (`None` or an int there). When given, a copy of `layer`
            made from its config (`layer` itself stays unbuilt) is called on
            a symbolic input of that shape; no data is computed. Defaults to
            `None`: only the weights `layer` already holds are counted.

    Returns:
        `layer` unchanged.

    Raises:
        ValueError: the layer holds weights, or its copy creates weights when
            built on `input_shape`. Errors the symbolic call itself raises (a
            rank the layer refuses) propagate unchanged.

    Example:

        >>> import keras
        >>> from keras_advguard.layers import MedianSanitizer
        >>> check_stateless("sanitizer", MedianSanitizer(name="median"), (None, 8, 8, 4)).name
        'median'
        >>> try:
        ...     check_stateless("sanitizer", keras.layers.Dense(4), (None, 8))
        ... except ValueError as error:
        ...     print(str(error)[:47])
        Argument `sanitizer` must be a stateless layer:
    """
    _raise_if_weights(name, layer, layer.weights, "holds")
    if input_shape is not None:
        probe = layer.__class__.from_config(layer.get_config())
        probe(keras.KerasTensor(tuple(input_shape), dtype=probe.compute_dtype))
        where = f"when built on inputs of shape {tuple(input_shape)}"
        _raise_if_weights(name, layer, probe.weights, "creates", where)
    return layer


def check_no_weights(name, layer, where=""):
    """Raise `ValueError` if the (built) `layer` holds weights; `where` ends the message."""
    _raise_if_weights(name, layer, layer.weights, "holds", where)
    return layer


def _raise_if_weights(name, layer, weights, verb, where=""):
    if not weights:
        return
    listed = ", ".join(w.path for w in weights[:6]) + (", ..." if len(weights) > 6 else "")
    raise ValueError(
        f"Argument `{name}` must be a stateless layer: it is re-created from "
        "its config (one copy per use, and again on load), so weights would be "
        "fresh random values every time, not trained ones. Received: "
        f"{type(layer).__name__} '{layer.name}', which {verb} {len(weights)} "
        f"weight(s) ({listed})" + (f" {where}" if where else "")
    )
