"""`DetectorModel`: one functional model exposing a classifier's insides.

This is the only module of keras_advguard that reaches inside a Keras model:
layer paths, nested backbones, the logits behind a softmax and the pooling of
feature maps all live here. Attacks, sanitizers and detectors go through
`DetectorModel` or `as_logits_fn`.

How it works: the wrapped model's graph is traced again from a fresh
`keras.Input`, calling the *same* layer objects (so every weight is shared,
nothing is copied or retrained), entering nested Functional and Sequential
models, and recording the output of every layer under its path
(`"backbone/block_1_expand"`). The chosen outputs become extra outputs of one
functional model.
"""

import re

import keras
import numpy as np

from keras_advguard import _validation

POOLING_MODES = ("avg", "max", "flatten", None)

_PRESETS = {
    "conv": "every convolution layer (Conv1D/2D/3D, separable, depthwise, transposed)",
    "dense": "every Dense and EinsumDense layer",
    "conv+dense": "every convolution and dense layer",
    "inception_mixed": "the 11 `mixed0`..`mixed10` blocks of keras.applications.InceptionV3",
}

_CONV_CLASSES = (
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
_DENSE_CLASSES = (keras.layers.Dense, keras.layers.EinsumDense)


@keras.saving.register_keras_serializable(package="keras_advguard")
class DenseLogits(keras.layers.Layer):
    """The pre-activation output `x @ kernel + bias` of an existing `Dense`.

    Used by `DetectorModel` to expose the logits of a classifier whose last
    `Dense` layer applies the softmax itself. The wrapped layer's variables
    are used as they are (shared, not copied).

    Args:
        dense: the `keras.layers.Dense` layer whose pre-activation to compute.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(self, dense, **kwargs):
        super().__init__(**kwargs)
        if isinstance(dense, dict):
            dense = keras.saving.deserialize_keras_object(dense)
        _validation.check_type("dense", dense, keras.layers.Dense)
        self.dense = dense

    def build(self, input_shape):
        if not self.dense.built:
            self.dense.build(input_shape)
        self.built = True

    def call(self, inputs):
        kernel = keras.ops.cast(self.dense.kernel, self.compute_dtype)
        outputs = keras.ops.matmul(keras.ops.cast(inputs, self.compute_dtype), kernel)
        if self.dense.use_bias:
            outputs = outputs + keras.ops.cast(self.dense.bias, self.compute_dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.dense.units,)

    def get_config(self):
        config = super().get_config()
        config["dense"] = keras.saving.serialize_keras_object(self.dense)
        return config


def _is_softmax(op):
    """Whether `op` is a softmax layer or op (not a layer with fused softmax)."""
    if isinstance(op, keras.layers.Softmax) or type(op).__name__ == "Softmax":
        return True
    if isinstance(op, keras.layers.Activation):
        return getattr(op.activation, "__name__", "") == "softmax"
    return False


def _has_fused_softmax(op):
    return getattr(getattr(op, "activation", None), "__name__", "") == "softmax"


def _is_traceable(model):
    """Functional models expose `_run_through_graph`; Sequential has `layers`."""
    if isinstance(model, keras.Sequential):
        return True
    return hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth")


class _Tracer:
    """Re-runs a model's graph on new symbolic inputs, recording every layer."""

    def __init__(self, logits_layer=None, find_logits=True, replace=None, after=None):
        self.outputs = {}  # path -> output of the first call of that layer
        self.layers = {}  # path -> layer object
        self.logits = None
        self.logits_layer = logits_layer
        self.find_logits = find_logits
        self.replace = replace  # (path, layer, args, kwargs) -> output or None
        self.after = after  # (path, layer, output) -> output

    def record(self, path, layer, output):
        if path not in self.outputs:
            self.outputs[path] = output
            self.layers[path] = layer
        if self.logits_layer is not None and path == self.logits_layer:
            self.logits = output

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
        if isinstance(op, keras.Model) and _is_traceable(op):
            inner = args[0] if len(args) == 1 else list(args)
            output = self.trace(op, inner, prefix=path + "/", is_last=is_last)
            return self._after(path, op, output)
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


def _describe_paths(paths, limit=60):
    shown = ", ".join(paths[:limit])
    if len(paths) > limit:
        shown += f", ... ({len(paths) - limit} more)"
    return shown


def _resolve(selector, paths, layers):
    """Paths (in graph order) chosen by one selector."""
    leaf = [p for p in paths if not isinstance(layers[p], keras.Model)]
    if isinstance(selector, str):
        if selector in paths:
            return [selector]
        if selector in _PRESETS:
            if selector == "inception_mixed":
                return [p for p in leaf if re.fullmatch(r"mixed\d+", p.rsplit("/", 1)[-1])]
            classes = {
                "conv": _CONV_CLASSES,
                "dense": _DENSE_CLASSES,
                "conv+dense": _CONV_CLASSES + _DENSE_CLASSES,
            }[selector]
            return [p for p in leaf if isinstance(layers[p], classes)]
        by_name = [p for p in paths if p.rsplit("/", 1)[-1] == selector]
        if len(by_name) == 1:
            return by_name
        if len(by_name) > 1:
            raise ValueError(
                f"Layer name '{selector}' is ambiguous: it matches {by_name}. "
                "Select it by its full path."
            )
        presets = ", ".join(f"'{k}'" for k in _PRESETS)
        raise ValueError(
            f"No layer '{selector}'. Layers: {_describe_paths(paths)}. Presets: {presets}."
        )
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
                f"Layers: {_describe_paths(paths)}"
            )
        return found[:1]
    if callable(selector):
        return [p for p in leaf if selector(layers[p])]
    raise TypeError(
        "Each entry of `layers` must be a layer name or path, a preset name, a "
        "layer class, a layer object or a predicate `layer -> bool`. "
        f"Received: {selector!r} of type {type(selector).__name__}"
    )


def _check_model(model):
    if isinstance(model, DetectorModel):
        model = model.base_model
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
    if not _is_traceable(model):
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


def _pool(tensor, pooling, path):
    rank = len(tensor.shape)
    safe = re.sub(r"[^0-9A-Za-z_]", "_", path)
    if pooling is None or rank <= 2:
        return tensor
    if pooling == "flatten":
        return keras.layers.Flatten(name=f"tap_flatten_{safe}")(tensor)
    layer_classes = {
        ("avg", 3): keras.layers.GlobalAveragePooling1D,
        ("avg", 4): keras.layers.GlobalAveragePooling2D,
        ("avg", 5): keras.layers.GlobalAveragePooling3D,
        ("max", 3): keras.layers.GlobalMaxPooling1D,
        ("max", 4): keras.layers.GlobalMaxPooling2D,
        ("max", 5): keras.layers.GlobalMaxPooling3D,
    }
    cls = layer_classes.get((pooling, rank))
    if cls is None:
        raise ValueError(
            f"Cannot apply pooling='{pooling}' to layer '{path}' with output rank "
            f"{rank}. Use pooling='flatten' or None."
        )
    return cls(dtype="float32", name=f"tap_{pooling}pool_{safe}")(tensor)


@keras.saving.register_keras_serializable(package="keras_advguard")
class DetectorModel(keras.Model):
    """A classifier with its internal activations exposed as outputs.

    The result is one functional `keras.Model` sharing every weight of
    `model` (nothing is copied or retrained). Called on a batch it returns a
    dict:

    - `"prediction"`: what `model` itself outputs (probabilities when it ends
      in softmax);
    - `"logits"`: the pre-softmax tensor (the output itself when the model
      does not end in softmax);
    - `"activations"`: a dict `{layer_path: tensor}` in graph order, 4-D maps
      `(B, H, W, C)` pooled as asked.

    Layers are selected by name, by path into a nested model
    (`"inception_v3/mixed5"`), by class (`keras.layers.Conv2D`), by a layer
    object, by a predicate `layer -> bool`, or by a preset: `"conv"`,
    `"dense"`, `"conv+dense"`, `"inception_mixed"`.

    Args:
        model: a built Functional or Sequential `keras.Model` with one input
            and one output. Nested models inside it are entered.
        layers: a selector or a list of selectors (see above). `None` or `[]`
            taps nothing (prediction and logits only). Defaults to `None`.
        pooling: how 3-D to 5-D outputs are reduced: `"avg"` (global average
            pooling, computed in float32), `"max"`, `"flatten"` or `None`
            (keep the map). 2-D outputs pass as they are. Defaults to `"avg"`.
        logits_layer: path of the layer whose output is the logits, for models
            whose softmax cannot be recognised (e.g. inside a custom layer).
            Defaults to `None`: the logits are found automatically: the input
            of a final `Softmax`/`Activation("softmax")`, or the
            pre-activation of a final `Dense(activation="softmax")`.
        **kwargs: `keras.Model` keyword arguments such as `name`.

    Attributes:
        base_model: the wrapped model.
        tap_names: the activation keys, in graph order.

    Raises:
        TypeError: `model` is not a Keras model, or a selector has a bad type.
        ValueError: an unknown layer (the message lists the valid ones), an
            unbuilt, subclassed, multi-input or multi-output model, a selected
            layer whose output is not a single tensor, or an unknown pooling.

    Example:

        >>> import keras
        >>> from keras_advguard import DetectorModel
        >>> inputs = keras.Input((8, 8, 1))
        >>> x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
        >>> x = keras.layers.Flatten()(x)
        >>> outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
        >>> classifier = keras.Model(inputs, outputs)
        >>> detector = DetectorModel(classifier, layers=["conv1"])
        >>> out = detector(keras.ops.zeros((2, 8, 8, 1)))
        >>> sorted(out), tuple(out["activations"]["conv1"].shape)
        (['activations', 'logits', 'prediction'], (2, 4))
    """

    def __init__(self, model, layers=None, pooling="avg", logits_layer=None, **kwargs):
        # === Checks ===
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        model = _check_model(model)
        _validation.check_choice("pooling", pooling, POOLING_MODES)
        if logits_layer is not None:
            _validation.check_type("logits_layer", logits_layer, str, "a layer path (str)")

        # === Trace the graph from a fresh input ===
        inputs = _fresh_input(model)
        tracer = _Tracer(logits_layer=logits_layer)
        prediction = tracer.trace(model, inputs)
        paths = list(tracer.outputs)
        if logits_layer is not None and logits_layer not in tracer.outputs:
            raise ValueError(
                f"No layer '{logits_layer}' (argument `logits_layer`). "
                f"Layers: {_describe_paths(paths)}"
            )
        logits = tracer.logits if tracer.logits is not None else prediction

        # === Select and pool the taps ===
        tap_names = _select(_selectors(layers), paths, tracer.layers)
        activations = {}
        for path in tap_names:
            tensor = tracer.outputs[path]
            if not isinstance(tensor, keras.KerasTensor):
                raise ValueError(
                    f"The output of layer '{path}' is not a single tensor (it is a "
                    f"{type(tensor).__name__}); it cannot be tapped."
                )
            activations[path] = _pool(tensor, pooling, path)

        # === Functional model ===
        leaf_names = {}
        for path, layer in tracer.layers.items():
            if not isinstance(layer, keras.Model):
                leaf_names.setdefault(layer.name, []).append(path)
        clashes = {n: p for n, p in leaf_names.items() if len(p) > 1}
        if clashes:
            name, where = next(iter(clashes.items()))
            raise ValueError(
                f"Layer name '{name}' is used by several nested layers ({where}). "
                "DetectorModel flattens nested models into one graph, where Keras "
                "needs unique layer names. Give the nested layers distinct names."
            )
        super().__init__(
            inputs=inputs,
            outputs={
                "prediction": prediction,
                "logits": logits,
                "activations": activations,
            },
            **kwargs,
        )

        # === Config ===
        self.base_model = model
        self.tap_names = tap_names
        self.pooling = pooling
        self.logits_layer = logits_layer
        self.has_softmax = tracer.logits is not None and logits_layer is None

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "model": keras.saving.serialize_keras_object(self.base_model),
            "layers": list(self.tap_names),
            "pooling": self.pooling,
            "logits_layer": self.logits_layer,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)

    @property
    def _input_rank(self):
        return len(self.inputs[0].shape)

    def activations(self, x, batch_size=128, verbose=0):
        """Tapped activations of `x`, computed batch by batch.

        Args:
            x: numpy array `(N, ...)` or a `tf.data.Dataset` yielding inputs or
                `(inputs, labels)` pairs (labels are ignored).
            batch_size: batch size for numpy inputs. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A dict `{layer_path: numpy array (N, ...)}` in graph order. Only
            one batch of activations is alive inside the model at a time; the
            returned (pooled) arrays grow with `N`. For maps too large to keep,
            iterate with `iter_activations`.
        """
        from keras_advguard import _batching

        _validation.check_positive_int("batch_size", batch_size)
        if not self.tap_names:
            return {}
        if _batching.is_tf_dataset(x):
            x = _batching.ensure_batched(x, batch_size, self._input_rank)
            outputs = self.predict(x, batch_size=batch_size, verbose=verbose)
            return {name: outputs["activations"][name] for name in self.tap_names}
        # Numpy: N is known, so fill preallocated arrays batch by batch. Peak
        # memory is the result plus one batch (Keras `predict` would keep every
        # batch's outputs and then concatenate them: about twice the result).
        n = len(x)
        result, start = None, 0
        for outputs, _ in self.iter_activations(x, batch_size=batch_size, verbose=verbose):
            acts = outputs["activations"]
            if result is None:
                result = {
                    name: np.empty((n,) + acts[name].shape[1:], acts[name].dtype)
                    for name in self.tap_names
                }
            stop = start + len(acts[self.tap_names[0]])
            for name in self.tap_names:
                result[name][start:stop] = acts[name]
            start = stop
        return result

    def iter_activations(self, x, batch_size=128, verbose=0):
        """Yield the outputs batch by batch: `(outputs_dict, labels_or_None)`.

        Memory stays bounded by one batch whatever the dataset size.

        Args:
            x: numpy array or `tf.data.Dataset` of inputs or `(inputs, labels)`.
            batch_size: batch size for numpy inputs and unbatched datasets.
            verbose: `0` silent, `1` a progress bar.

        Yields:
            `(outputs, y)` where `outputs` is the model's output dict as numpy
            arrays for one batch and `y` the batch's labels (or `None`).
        """
        from keras_advguard import _batching, _progress

        _validation.check_positive_int("batch_size", batch_size)
        rank = self._input_rank
        bar = _progress.progress_bar(_batching.num_batches(x, batch_size, rank), verbose=verbose)
        with_labels = _batching.is_tf_dataset(x) and _batching.has_labels(x)
        batches = _batching.iterate_batches(x, batch_size, with_labels=with_labels, input_rank=rank)
        for step, item in enumerate(batches, start=1):
            xb, yb = item if with_labels else (item, None)
            out = self.predict_on_batch(xb)
            yield keras.tree.map_structure(np.asarray, out), yb
            bar.update(step)


def _fresh_input(model):
    spec = model.inputs[0]
    return keras.Input(shape=spec.shape[1:], dtype=spec.dtype, name="inputs")


def _selectors(layers):
    if layers is None:
        return []
    return list(layers) if isinstance(layers, (list, tuple)) else [layers]


def _select(selectors, paths, layer_map):
    chosen = set()
    for selector in selectors:
        found = _resolve(selector, paths, layer_map)
        if not found:
            raise ValueError(
                f"Selector {selector!r} in `layers` matches no layer. "
                f"Layers: {_describe_paths(paths)}"
            )
        chosen.update(found)
    return [p for p in paths if p in chosen]


def resolve_layers(model, layers):
    """Paths of the layers of `model` chosen by `layers`, in graph order.

    Uses the same selectors as `DetectorModel` (names, nested paths, classes,
    layer objects, predicates, presets) and raises the same errors.

    Args:
        model: a built Functional or Sequential `keras.Model`.
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
    model = _check_model(model)
    tracer = _Tracer(find_logits=False)
    tracer.trace(model, _fresh_input(model))
    return _select(_selectors(layers), list(tracer.outputs), tracer.layers)


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
    model = _check_model(model)
    recorded = {}

    def _after(path, layer, output):
        if after is not None:
            output = after(path, layer, output)
        recorded[path] = output
        return output

    tracer = _Tracer(find_logits=False, replace=replace, after=_after)
    inputs = _fresh_input(model)
    prediction = tracer.trace(model, inputs)
    if outputs is None:
        result = prediction
    else:
        missing = [p for p in outputs if p not in recorded]
        if missing:
            raise ValueError(
                f"No layer {missing[0]!r} (argument `outputs`). "
                f"Layers: {_describe_paths(list(recorded))}"
            )
        result = {"prediction": prediction, **{p: recorded[p] for p in outputs}}
    return keras.Model(inputs, result, name=name or f"{model.name}_rebuilt")


def as_logits_fn(model):
    """A callable `x -> float32 logits` for attacks.

    Args:
        model: a Keras model (Functional or Sequential; pre-softmax logits are
            taken when it ends in softmax), a `DetectorModel`, or a callable
            already returning logits.

    Returns:
        A callable mapping a batch to a float32 logits tensor.

    Raises:
        ValueError: for a Keras model whose logits cannot be reached (a
            subclassed, unbuilt, multi-input or multi-output model).
        TypeError: for an object that is neither a Keras model nor callable.
    """
    import tensorflow as tf

    if isinstance(model, DetectorModel):
        logits_model = DetectorModel(model.base_model, logits_layer=model.logits_layer)
    elif isinstance(model, keras.Model):
        logits_model = DetectorModel(model)
    elif callable(model):
        return model
    else:
        raise TypeError(
            "Argument `model` must be a keras.Model, a DetectorModel or a callable "
            f"returning logits. Received: model of type {type(model).__name__}"
        )

    def logits_fn(x):
        return tf.cast(logits_model(x)["logits"], tf.float32)

    logits_fn.detector_model = logits_model
    return logits_fn
