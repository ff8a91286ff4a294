"""The one tracer of Keras graphs (floor 1).

This is the only module of keras_advguard that reads Keras internals to walk
a model's graph (`_keras_history`, `_run_through_graph`, `_nodes_by_depth`).
The wrapped model's graph is run again from a fresh `keras.Input`, calling
the *same* layer objects (so every weight is shared, nothing is copied or
retrained), entering nested Functional and Sequential models, and recording
the output of every layer under its path (`"backbone/block_1_expand"`).

`trace(model)` returns a `TracedGraph` record (paths in graph order, the
layer and first output of each path, the paths consuming each output) that
`DetectorModel`, `resolve_layers`, `sanitize` and guided backpropagation
reuse, so that a model is inspected once. `rebuild_model` traces again with
hooks on each layer, to build a new functional model.
"""

import keras

from keras_advguard._fingerprint import unwrap_model
from keras_advguard.layers.dense_logits import DenseLogits


def _is_softmax(op):
    """Whether `op` is a softmax layer or op (not a layer with fused softmax)."""
    if isinstance(op, keras.layers.Softmax) or type(op).__name__ == "Softmax":
        return True
    if isinstance(op, keras.layers.Activation):
        return getattr(op.activation, "__name__", "") == "softmax"
    return False


def _has_fused_softmax(op):
    return getattr(getattr(op, "activation", None), "__name__", "") == "softmax"


def is_traceable(model):
    """Functional models expose `_run_through_graph`; Sequential has `layers`."""
    if isinstance(model, keras.Sequential):
        return True
    return hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth")


class Tracer:
    """Re-runs a model's graph on new symbolic inputs, recording every layer."""

    def __init__(self, logits_layer=None, find_logits=True, replace=None, after=None):
        self.outputs = {}  # path -> output of the first call of that layer
        self.layers = {}  # path -> layer object
        self.consumers = {}  # path -> paths of the layers called on its output
        self._producers = {}  # id(tensor) -> (path, tensor kept alive)
        self.logits = None
        self.logits_layer = logits_layer
        self.find_logits = find_logits
        self.replace = replace  # (path, layer, args, kwargs) -> output or None
        self.after = after  # (path, layer, output) -> output

    def record(self, path, layer, output):
        if path not in self.outputs:
            self.outputs[path] = output
            self.layers[path] = layer
        if isinstance(output, keras.KerasTensor):
            self._producers.setdefault(id(output), (path, output))
        if self.logits_layer is not None and path == self.logits_layer:
            self.logits = output

    def _note_inputs(self, path, args, kwargs):
        for tensor in keras.tree.flatten((args, kwargs)):
            source = self._producers.get(id(tensor))
            if source is not None and path not in self.consumers.setdefault(source[0], []):
                self.consumers[source[0]].append(path)

    def trace(self, model, inputs, prefix="", is_last=True):
        """Return `model`'s output on `inputs`, recording inner outputs."""
        if isinstance(model, keras.Sequential):
            layers = [
                layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
            ]
            x = inputs
            for i, layer in enumerate(layers):
                x = self.call_op(layer, (x,), {}, prefix, is_last and i == len(layers) - 1)
            return x
        final_ops = {id(t._keras_history.operation) for t in model.outputs}

        def operation_fn(op):
            def call(*args, **kwargs):
                last = is_last and id(op) in final_ops
                return self.call_op(op, args, kwargs, prefix, last)

            return call

        return model._run_through_graph(inputs, operation_fn=operation_fn)

    def call_op(self, op, args, kwargs, prefix, is_last):
        name = getattr(op, "name", type(op).__name__)
        path = prefix + name
        if isinstance(op, keras.Model) and is_traceable(op):
            inner = args[0] if len(args) == 1 else list(args)
            output = self.trace(op, inner, prefix=path + "/", is_last=is_last)
            return self._after(path, op, output)
        if isinstance(op, keras.layers.Layer):
            self._note_inputs(path, args, kwargs)
        if self.replace is not None and isinstance(op, keras.layers.Layer):
            output = self.replace(path, op, args, kwargs)
            if output is not None:
                return self._after(path, op, output)
        if self.find_logits and is_last and self.logits_layer is None and self.logits is None:
            if _is_softmax(op):
                self.logits = args[0]
            elif _has_fused_softmax(op) and isinstance(op, keras.layers.Dense):
                self.logits = DenseLogits(op, dtype=op.dtype_policy, name=name + "_logits")(args[0])
                output = keras.layers.Activation(
                    "softmax", dtype=op.dtype_policy, name=name + "_softmax"
                )(self.logits)
                self.record(path, op, output)
                return output
            elif _has_fused_softmax(op):
                raise ValueError(
                    f"Layer '{path}' applies a softmax inside a {type(op).__name__}; "
                    "only Dense layers with a fused softmax are supported. Split the "
                    "activation into its own `Activation('softmax')` layer or pass "
                    "`logits_layer=`."
                )
        output = op(*args, **kwargs)
        if isinstance(op, keras.layers.Layer):
            return self._after(path, op, output)
        return output

    def _after(self, path, op, output):
        self.record(path, op, output)
        if self.after is not None:
            output = self.after(path, op, output)
        return output


class TracedGraph:
    """What one trace of a model's graph recorded, reusable by every caller.

    Attributes:
        model: the traced model (a `DetectorModel` unwrapped to its base).
        inputs: the fresh `keras.Input` the graph was run from.
        prediction: the model's output on `inputs`.
        logits: the pre-softmax tensor found (or `None`).
        paths: every layer path, in graph order (nested models included).
        layers: `{path: layer object}`.
        outputs: `{path: output of the first call of that layer}`.
        consumers: `{path: [paths of the layers called on its output]}`.
    """

    def __init__(self, model, inputs, prediction, tracer):
        self.model = model
        self.inputs = inputs
        self.prediction = prediction
        self.logits = tracer.logits
        self.layers = tracer.layers
        self.outputs = tracer.outputs
        self.consumers = tracer.consumers
        self.paths = list(tracer.outputs)

    def leaf_paths(self):
        """The paths of the layers that are not nested models."""
        return [p for p in self.paths if not isinstance(self.layers[p], keras.Model)]


def check_model(model):
    """`model` (a `DetectorModel` unwrapped) if the tracer can walk it, else raise."""
    model = unwrap_model(model)
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model (Functional or Sequential). "
            f"Received: model of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built. Build it first, e.g. give it a "
            "`keras.Input` or call `model.build(input_shape)`."
        )
    if not is_traceable(model):
        raise ValueError(
            f"Model '{model.name}' is a subclassed keras.Model: its internal "
            "layers cannot be reached. Rebuild it as a Functional or Sequential "
            "model (it may contain subclassed layers), or pass a callable that "
            "returns logits where a callable is accepted."
        )
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"Model '{model.name}' has no defined input. Build it with a "
            "`keras.Input` (or `model.build(input_shape)`)."
        )
    if len(inputs) != 1:
        raise ValueError(
            f"DetectorModel needs a model with exactly one input. Model "
            f"'{model.name}' has {len(inputs)} inputs."
        )
    if len(model.outputs) != 1:
        raise ValueError(
            f"DetectorModel needs a model with exactly one output. Model "
            f"'{model.name}' has {len(model.outputs)} outputs."
        )
    return model


def fresh_input(model):
    spec = model.inputs[0]
    return keras.Input(shape=spec.shape[1:], dtype=spec.dtype, name="inputs")


def describe_paths(paths, limit=60):
    shown = ", ".join(paths[:limit])
    if len(paths) > limit:
        shown += f", ... ({len(paths) - limit} more)"
    return shown


def trace(model, *, logits_layer=None, find_logits=False):
    """Trace `model` once from a fresh input and return the `TracedGraph`.

    Args:
        model: a built Functional or Sequential `keras.Model` (or a wrapper
            exposing one as `base_model`, such as `DetectorModel`).
        logits_layer: path of the layer whose output is the logits.
        find_logits: whether to look for the logits behind a final softmax
            (a final `Dense(activation="softmax")` is then split in two).

    Returns:
        A `TracedGraph`.

    Example:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc1"),
        ...                           keras.layers.Dense(2, name="fc2")])
        >>> graph = trace(model)
        >>> graph.paths, graph.consumers["fc1"]
        (['fc1', 'fc2'], ['fc2'])
    """
    model = check_model(model)
    tracer = Tracer(logits_layer=logits_layer, find_logits=find_logits)
    inputs = fresh_input(model)
    prediction = tracer.trace(model, inputs)
    return TracedGraph(model, inputs, prediction, tracer)


def rebuild_model(model, *, after=None, replace=None, outputs=None, name=None):
    """Rebuild `model` as one flat functional model, with hooks on each layer.

    The graph is run again from a fresh input calling the *same* layer
    objects (weights shared), entering nested models. This is the one place
    through which `sanitize` inserts layers and the entropy detector swaps
    ReLU gradients; user code rarely needs it.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        after: optional `(path, layer, output) -> output`, called after each
            layer (and each nested model) with its output; what it returns
            replaces that output for every consumer downstream (e.g. a
            sanitizer applied to it).
        replace: optional `(path, layer, args, kwargs) -> output or None`,
            called instead of the layer; returning `None` calls the layer as
            usual.
        outputs: optional list of layer paths whose outputs (after `after`)
            are returned too; then the model's output is a dict
            `{"prediction": ..., path: ...}`.
        name: name of the new model. Defaults to `model.name + "_rebuilt"`.

    Returns:
        A functional `keras.Model` with the same input as `model`.
    """
    model = check_model(model)
    recorded = {}

    def _after(path, layer, output):
        if after is not None:
            output = after(path, layer, output)
        recorded[path] = output
        return output

    tracer = Tracer(find_logits=False, replace=replace, after=_after)
    inputs = fresh_input(model)
    prediction = tracer.trace(model, inputs)
    if outputs is None:
        result = prediction
    else:
        missing = [p for p in outputs if p not in recorded]
        if missing:
            raise ValueError(
                f"No layer {missing[0]!r} (argument `outputs`). "
                f"Layers: {describe_paths(list(recorded))}"
            )
        result = {"prediction": prediction, **{p: recorded[p] for p in outputs}}
    return keras.Model(inputs, result, name=name or f"{model.name}_rebuilt")
