"""Layer selectors and presets: which traced layers a `layers=` argument names (floor 1).

A selector is a layer name or a path into a nested model, a preset name, a
layer class, a layer object or a predicate `layer -> bool`. `DetectorModel`,
`sanitize`, the divergence figures and guided backpropagation all select
layers through `select` / `resolve_layers`, so they accept the same
selectors and raise the same errors.
"""

import re

import keras

from keras_advguard import _graph

PRESETS = {
    "conv": "every convolution layer (Conv1D/2D/3D, separable, depthwise, transposed)",
    "dense": "every Dense and EinsumDense layer",
    "conv+dense": "every convolution and dense layer",
    "inception_mixed": "the 11 `mixed0`..`mixed10` blocks of keras.applications.InceptionV3",
}

CONV_CLASSES = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
DENSE_CLASSES = (keras.layers.Dense, keras.layers.EinsumDense)


def _preset(selector, leaf, layers):
    if selector == "inception_mixed":
        return [p for p in leaf if re.fullmatch(r"mixed\d+", p.rsplit("/", 1)[-1])]
    classes = {
        "conv": CONV_CLASSES,
        "dense": DENSE_CLASSES,
        "conv+dense": CONV_CLASSES + DENSE_CLASSES,
    }[selector]
    return [p for p in leaf if isinstance(layers[p], classes)]


def _by_name(selector, paths):
    by_name = [p for p in paths if p.rsplit("/", 1)[-1] == selector]
    if len(by_name) == 1:
        return by_name
    if len(by_name) > 1:
        raise ValueError(
            f"Layer name '{selector}' is ambiguous: it matches {by_name}. "
            "Select it by its full path."
        )
    presets = ", ".join(f"'{k}'" for k in PRESETS)
    raise ValueError(
        f"No layer '{selector}'. Layers: {_graph.describe_paths(paths)}. Presets: {presets}."
    )


def resolve(selector, paths, layers):
    """Paths (in graph order) chosen by one selector."""
    leaf = [p for p in paths if not isinstance(layers[p], keras.Model)]
    if isinstance(selector, str):
        if selector in paths:
            return [selector]
        if selector in PRESETS:
            return _preset(selector, leaf, layers)
        return _by_name(selector, paths)
    if isinstance(selector, type):
        if not issubclass(selector, keras.layers.Layer):
            raise TypeError(
                "A class given in `layers` must be a subclass of keras.layers.Layer. "
                f"Received: {selector!r}"
            )
        return [p for p in paths if isinstance(layers[p], selector)]
    if isinstance(selector, keras.layers.Layer):
        found = [p for p in paths if layers[p] is selector]
        if not found:
            raise ValueError(
                f"Layer object '{selector.name}' is not part of the model. "
                f"Layers: {_graph.describe_paths(paths)}"
            )
        return found[:1]
    if callable(selector):
        return [p for p in leaf if selector(layers[p])]
    raise TypeError(
        "Each entry of `layers` must be a layer name or path, a preset name, a "
        "layer class, a layer object or a predicate `layer -> bool`. "
        f"Received: {selector!r} of type {type(selector).__name__}"
    )


def as_list(layers):
    """`layers` as a list of selectors (`None` -> `[]`)."""
    if layers is None:
        return []
    return list(layers) if isinstance(layers, (list, tuple)) else [layers]


def select(selectors, paths, layer_map):
    """The paths chosen by any of `selectors`, in graph order; each must match."""
    chosen = set()
    for selector in selectors:
        found = resolve(selector, paths, layer_map)
        if not found:
            raise ValueError(
                f"Selector {selector!r} in `layers` matches no layer. "
                f"Layers: {_graph.describe_paths(paths)}"
            )
        chosen.update(found)
    return [p for p in paths if p in chosen]


def resolve_layers(model, layers):
    """Paths of the layers of `model` chosen by `layers`, in graph order.

    Uses the same selectors as `DetectorModel` (names, nested paths, classes,
    layer objects, predicates, presets) and raises the same errors.

    Args:
        model: a built Functional or Sequential `keras.Model` (or a
            `TracedGraph` of one from `keras_advguard._graph.trace`, which is
            then not traced again).
        layers: a selector or a list of selectors.

    Returns:
        A list of layer paths such as `["conv1", "backbone/block_1_expand"]`.

    Example:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc1"),
        ...                           keras.layers.Dense(2, name="fc2")])
        >>> resolve_layers(model, keras.layers.Dense)
        ['fc1', 'fc2']
    """
    graph = model if isinstance(model, _graph.TracedGraph) else _graph.trace(model)
    return select(as_list(layers), graph.paths, graph.layers)
