"""`sanitize`: insert a sanitizer layer after chosen layers of a trained model."""

import keras

from keras_advguard import _graph, _selectors, _validation
from keras_advguard._naming import SANITIZER_SUFFIX as SANITIZER_SUFFIX
from keras_advguard._naming import sanitizer_name as sanitizer_name
from keras_advguard.attacks.bpda import bpda as _bpda
from keras_advguard.layers import MaskSanitizer, _stateless
from keras_advguard.saving import make_save_atomic


def sanitize(model, after, sanitizer=None, *, bpda=False, name=None):
    """Return `model` with a sanitizer inserted after each chosen layer.

    The new model runs the same layer objects as `model` (every weight is
    shared: nothing is copied or retrained) with one sanitizer after each
    selected layer. The sanitizer replaces that layer's output for **every**
    consumer: the next layer of a Sequential model, every branch of a
    Functional graph (residual connections included) and layers inside
    nested models. The result is one flat functional `keras.Model` (nested
    models are entered and their layers inlined), so the sanitized
    network is "dynamic": each layer after a sanitizer is computed from the
    sanitized values.

    Each insertion gets its own copy of `sanitizer`, made from its config
    (`sanitizer.__class__.from_config(sanitizer.get_config())`), named
    `sanitizer_name(path)` (`"conv1_sanitizer"`). Sanitizers are stateless,
    so the copies behave identically. The result saves to `.keras` and
    reloads with `keras.models.load_model` in safe mode; its `save` writes
    atomically (`keras_advguard.save_model`: a temporary file beside the
    target, then `os.replace`), so an interrupted save keeps the old file.

    With `bpda=True`, each sanitizer is wrapped in the BPDA identity
    (`keras_advguard.attacks.bpda`): the forward pass computes
    `a + stop_gradient(s(a) - a)`, which equals the sanitized output `s(a)`
    up to one rounding of floating-point arithmetic (exactly for the mask
    sanitizer, whose outputs are `a` or `0`), while the gradient passes
    through the sanitizer as the identity. Attack that model, not the plain
    one, when the sanitizer's own gradient is useless (the mask's gradient
    is zero on every masked unit). It also saves and reloads in safe mode.

    Args:
        model: a built Functional or Sequential `keras.Model` with one input
            and one output; nested models inside it are entered.
        after: which layers to sanitize: a layer name, a path into a nested
            model (`"backbone/conv1"`), a layer class, a layer object, a
            predicate `layer -> bool`, a preset (`"conv"`, `"dense"`,
            `"conv+dense"`), or a list of them (see `resolve_layers`). The
            paper's choice for `mnist_cnn` is
            `keras_advguard.models.MNIST_CNN_SANITIZED_LAYERS`.
        sanitizer: the layer to insert, an instance of a stateless
            `keras.layers.Layer` (`MaskSanitizer`, `MedianSanitizer`,
            `NLMeansSanitizer`, or your own). It is only used as a template.
            Defaults to `None`, i.e. `MaskSanitizer()` (relative threshold,
            `alpha=0.1`).
        bpda: whether to wrap each sanitizer in the BPDA identity (see
            above). Defaults to `False`.
        name: name of the new model. Defaults to `model.name + "_sanitized"`
            (`"_sanitized_bpda"` with `bpda=True`).

    Returns:
        A functional `keras.Model` with the input and output of `model`.

    Raises:
        TypeError: `model` is not a Keras model, `sanitizer` is not a layer
            instance (a class, a model, anything else), a selector in
            `after` has a bad type, or `bpda`/`name` have the wrong type.
        ValueError: a selector matches no layer or is ambiguous (the message
            lists the valid layers), `after` is empty, the model is
            unbuilt, subclassed, multi-input or multi-output, two nested
            layers share a name (the flat model needs unique names), `sanitizer`
            holds weights or creates weights when built (an unbuilt
            `keras.layers.Dense`), or the sanitizer cannot take the output of a
            chosen layer (its rank, or an output that is not one tensor).

    Example:

        >>> import keras, numpy as np
        >>> from keras_advguard.layers import MaskSanitizer
        >>> model = keras.Sequential([
        ...     keras.Input((4,)),
        ...     keras.layers.Dense(8, activation="relu", name="fc1"),
        ...     keras.layers.Dense(3, name="logits"),
        ... ])
        >>> defended = sanitize(model, after="fc1", sanitizer=MaskSanitizer(alpha=0.5))
        >>> [layer.name for layer in defended.layers[1:]]
        ['fc1', 'fc1_sanitizer', 'logits']
        >>> defended.get_layer("fc1") is model.get_layer("fc1")
        True

    Reference:
        The "sanitizing hidden activations" defence for convolutional
        networks; BPDA: A. Athalye, N. Carlini and D. Wagner, "Obfuscated
        Gradients Give a False Sense of Security", ICML 2018.
    """
    # === Checks ===
    if sanitizer is None:
        sanitizer = MaskSanitizer()
    _check_sanitizer(sanitizer)
    _validation.check_type("bpda", bpda, bool)
    if name is not None:
        _validation.check_type("name", name, str)
    if after is None or (isinstance(after, (list, tuple)) and not after):
        raise ValueError(
            "Argument `after` must select at least one layer (a name, a class, "
            f"a predicate, a preset or a list of them). Received: after={after!r}"
        )
    _check_after(after)
    graph = _graph.trace(model)  # inspected once: selection and names
    try:
        paths = _selectors.resolve_layers(graph, after)
    except ValueError as error:
        # `resolve_layers` names its argument `layers`; here it is `after`.
        raise ValueError(str(error).replace("in `layers`", "in `after`")) from None
    taken = _leaf_names(graph)

    # === One fresh, uniquely named copy per selected layer ===
    config = sanitizer.get_config()
    copies = {}
    for path in paths:
        base = sanitizer_name(path)
        unique, index = base, 0
        while unique in taken:
            index += 1
            unique = f"{base}_{index}"
        taken.add(unique)
        copies[path] = sanitizer.__class__.from_config({**config, "name": unique})

    # === Rebuild, sanitizing after each chosen layer ===
    def insert(path, layer, output):
        copy = copies.get(path)
        if copy is None:
            return output
        if not isinstance(output, keras.KerasTensor):
            raise ValueError(
                f"The output of layer '{path}' is not a single tensor (it is a "
                f"{type(output).__name__}); a sanitizer cannot follow it."
            )
        try:
            result = _bpda(copy)(output) if bpda else copy(output)
        except ValueError as error:
            raise ValueError(
                f"Cannot insert {type(copy).__name__} after layer '{path}' "
                f"(output shape {tuple(output.shape)}): {error}"
            ) from error
        # An unbuilt layer has no weights until this first call builds it
        # (`keras.layers.Dense(64)`): refuse it now that it is built.
        _stateless.check_no_weights(
            "sanitizer", copy, f"once built on the output of layer '{path}'"
        )
        return result

    default = f"{model.name}_sanitized" + ("_bpda" if bpda else "")
    return make_save_atomic(_graph.rebuild_model(model, after=insert, name=name or default))


def _check_sanitizer(sanitizer):
    if isinstance(sanitizer, type):
        raise TypeError(
            "Argument `sanitizer` must be a layer instance, not a class: write "
            f"`sanitizer={sanitizer.__name__}(...)`. Received: sanitizer={sanitizer!r}"
        )
    if isinstance(sanitizer, keras.Model) or not isinstance(sanitizer, keras.layers.Layer):
        raise TypeError(
            "Argument `sanitizer` must be a keras.layers.Layer instance such as "
            "MaskSanitizer(), MedianSanitizer() or NLMeansSanitizer(). "
            f"Received: sanitizer of type {type(sanitizer).__name__}"
        )
    if sanitizer.weights:
        raise ValueError(
            "Argument `sanitizer` must be a stateless layer (it is copied from "
            "its config, one copy per insertion, so weights would not be "
            f"shared). Received: {sanitizer.name} with {len(sanitizer.weights)} "
            "weights"
        )


def _check_after(after):
    """Each selector in `after` has a type `resolve_layers` accepts."""
    for selector in after if isinstance(after, (list, tuple)) else [after]:
        if isinstance(selector, type):
            if not issubclass(selector, keras.layers.Layer):
                raise TypeError(
                    "A class given in `after` must be a subclass of keras.layers.Layer. "
                    f"Received: after={after!r}"
                )
        elif not isinstance(selector, (str, keras.layers.Layer)) and not callable(selector):
            raise TypeError(
                "Argument `after` must be a layer name or path, a preset name, a "
                "layer class, a layer object, a predicate `layer -> bool`, or a "
                f"list of them. Received: after={after!r} (an entry of type "
                f"{type(selector).__name__})"
            )


def _leaf_names(graph):
    """Names of every layer the flattened model will contain (checked unique)."""
    paths_by_name = {}
    for path in graph.leaf_paths():
        paths_by_name.setdefault(path.rsplit("/", 1)[-1], []).append(path)
    for name, paths in paths_by_name.items():
        if len(paths) > 1:
            raise ValueError(
                f"Layer name '{name}' is used by several nested layers ({paths}). "
                "`sanitize` flattens nested models into one graph, where Keras "
                "needs unique layer names. Give the nested layers distinct names."
            )
    return set(paths_by_name)
