"""Feature responses by guided backpropagation (Springenberg et al.; Amirian et al.).

The feature response of an input is what the last convolutional layer
"looks at": its activations `A` are computed, then `A` itself is propagated
back to the input, i.e. the gradient of `sum(A * stop_gradient(A))`, with
the guided ReLU rule: a ReLU passes gradient only where its input is
positive **and** the incoming gradient is positive.

The user's model is not touched. `rebuild_model` traces its graph again,
calling the same layer objects (same variables), and each ReLU on the way is
replaced in the traced copy only:

- a layer with a fused ReLU (`Conv2D(activation="relu")`,
  `Dense(activation="relu")`, `Activation("relu")`, any layer whose
  `activation` attribute is the ReLU function) is called through
  `_GuidedCall`, which swaps the layer's `activation` for the guided ReLU for
  the duration of that one call and restores it (`try`/`finally`);
- a `keras.layers.ReLU()` layer (default arguments) is replaced by the
  guided ReLU applied to its input.
"""

import keras
import numpy as np

from keras_advguard import _batching, _graph, _memo, _progress, _selectors, _validation

_BATCH_NORM = (keras.layers.BatchNormalization,)


def _relu_functions():
    import tensorflow as tf

    return (keras.activations.relu, keras.ops.relu, tf.nn.relu)


def _guided_relu(x):
    """ReLU forward; backward passes `dy` only where `x > 0` and `dy > 0`."""
    import tensorflow as tf

    @tf.custom_gradient
    def _guided(x):
        def grad(dy):
            keep = tf.logical_and(x > 0, dy > 0)
            return tf.where(keep, dy, tf.zeros_like(dy))

        return tf.nn.relu(x), grad

    return _guided(x)


def _has_fused_relu(layer):
    activation = getattr(layer, "activation", None)
    return activation is not None and any(activation is f for f in _relu_functions())


def _is_plain_relu_layer(layer):
    if not isinstance(layer, keras.layers.ReLU):
        return False
    return (
        layer.max_value is None
        and float(layer.negative_slope) == 0.0
        and float(layer.threshold) == 0.0
    )


class _GuidedCall(keras.layers.Layer):
    """Calls `layer` with its `activation` swapped for the guided ReLU.

    The swap lasts for this call only and is undone in a `finally` block, so
    the user's layer keeps its activation; the layer's own variables are used.
    Not serializable: it lives only inside the traced guided model.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(dtype=layer.dtype_policy, **kwargs)
        self.wrapped = layer

    def call(self, inputs, **kwargs):
        saved = self.wrapped.activation
        # object.__setattr__: no Keras attribute tracking on the user's layer.
        object.__setattr__(self.wrapped, "activation", _guided_relu)
        try:
            return self.wrapped(inputs, **kwargs)
        finally:
            object.__setattr__(self.wrapped, "activation", saved)

    def compute_output_shape(self, input_shape):
        return self.wrapped.compute_output_shape(input_shape)


class _GuidedReLU(keras.layers.Layer):
    """`keras.layers.ReLU()` with the guided gradient rule."""

    def call(self, inputs):
        return _guided_relu(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


def _target_path(model, layer):
    """The path whose output is `A`: the chosen layer, or its ReLU."""
    selector = "conv" if layer is None else layer
    try:
        graph = _graph.trace(model)  # one trace: the selection and the consumers
        paths = _selectors.resolve_layers(graph, selector)
    except ValueError as e:
        if layer is None:
            raise ValueError(
                f"Model '{model.name}' has no convolutional layer, so it has no "
                "'last convolutional layer' to take the feature response of. "
                "Pass `layer=` (a layer name or path) to choose the layer."
            ) from e
        raise
    if not paths:  # a class selector matching nothing
        raise ValueError(f"Selector {layer!r} in `layer` matches no layer.")
    path = paths[-1]
    if layer is not None:
        return path
    # Default: a convolution without a fused ReLU whose activation is a
    # separate ReLU layer (possibly after a BatchNormalization) is tapped at
    # that ReLU, so fused and separate ReLUs give the same response.
    layers, consumers = graph.layers, graph.consumers
    if _has_fused_relu(layers[path]):
        return path
    current = path
    while True:
        following = consumers.get(current, [])
        if len(following) != 1:
            return path
        nxt = following[0]
        if _has_fused_relu(layers[nxt]) and isinstance(layers[nxt], keras.layers.Activation):
            return nxt
        if _is_plain_relu_layer(layers[nxt]):
            return nxt
        if not isinstance(layers[nxt], _BATCH_NORM):
            return path
        current = nxt


class _GuidedBackprop:
    """The guided model of a classifier and its feature-response function.

    Built once per (model, layer); `feature_response` and `EntropyDetector`
    use it. Calling it on a batch tensor returns the responses as a tensor,
    differentiable (second order) with respect to the input, for adaptive
    attacks.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        layer: selector of the layer whose activations are propagated back
            (see `feature_response`). Defaults to `None`.

    Attributes:
        layer_path: the path of the layer whose output is `A`.
        guided_model: the traced `keras.Model` with guided ReLUs, returning
            `{"prediction": ..., layer_path: A}`.
    """

    def __init__(self, model, layer=None):
        if not isinstance(model, keras.Model):
            raise TypeError(
                "Argument `model` must be a keras.Model (Functional or Sequential). "
                f"Received: model of type {type(model).__name__}"
            )
        self.model = model
        self.layer_path = _target_path(model, layer)
        counter = [0]

        def replace(path, layer, args, kwargs):
            if _has_fused_relu(layer):
                counter[0] += 1
                wrapper = _GuidedCall(layer, name=f"guided_call_{counter[0]}")
                return wrapper(*args, **kwargs)
            if _is_plain_relu_layer(layer):
                counter[0] += 1
                return _GuidedReLU(dtype=layer.dtype_policy, name=f"guided_relu_{counter[0]}")(
                    args[0]
                )
            return None

        self.guided_model = _graph.rebuild_model(
            model,
            replace=replace,
            outputs=[self.layer_path],
            name=f"{model.name}_guided",
        )

    def __call__(self, x):
        """Feature responses of a batch tensor `x` (same shape, float32)."""
        import tensorflow as tf

        x = tf.cast(x, self.guided_model.inputs[0].dtype)
        with tf.GradientTape() as tape:
            tape.watch(x)
            activations = self.guided_model(x, training=False)[self.layer_path]
            activations = tf.cast(activations, tf.float32)
        # The gradient of sum(A * stop_gradient(A)): A seeds the backward
        # pass. Passed as `output_gradients` (not stopped), an outer tape
        # still sees how A moves with x: through ReLUs the Jacobian is
        # piecewise constant, so A is the only path of second-order
        # gradients (adaptive attacks).
        gradient = tape.gradient(activations, x, output_gradients=activations)
        if gradient is None:
            gradient = tf.zeros_like(x)
        return tf.cast(gradient, tf.float32)

    def compiled(self):
        """`__call__` compiled with `tf.function` (built once)."""
        import tensorflow as tf

        return _memo.memo(
            self, "compiled", lambda: tf.function(self.__call__, reduce_retracing=True)
        )

    def responses(self, x, batch_size=128, verbose=0):
        """Feature responses of `x` as one numpy array, batch by batch."""
        _validation.check_positive_int("batch_size", batch_size)
        rank = len(self.guided_model.inputs[0].shape)
        if not _batching.is_tf_dataset(x):
            x = _check_inputs(x, self.guided_model.inputs[0].shape)
        fn = self.compiled()
        bar = _progress.progress_bar(_batching.num_batches(x, batch_size, rank), verbose=verbose)
        out = []
        for step, xb in enumerate(
            _batching.iterate_batches(x, batch_size, input_rank=rank), start=1
        ):
            out.append(np.asarray(fn(np.asarray(xb, dtype=np.float32))))
            bar.update(step)
        if not out:
            return np.zeros((0,) + tuple(self.guided_model.inputs[0].shape[1:]), "float32")
        return np.concatenate(out, axis=0)


def _check_inputs(x, input_shape):
    x = _validation.check_array("x", x, dtype_kind="fiu")
    expected = tuple(input_shape[1:])
    if x.ndim != len(input_shape) or any(
        e is not None and e != s for e, s in zip(expected, x.shape[1:], strict=True)
    ):
        raise ValueError(
            f"Argument `x` must be a batch of model inputs of shape (N, "
            f"{', '.join(str(d) for d in expected)}). Received: x with shape={x.shape}"
        )
    return x


def feature_response(model, x, layer=None, batch_size=128, verbose=0):
    """Guided-backpropagation feature responses of a classifier's inputs.

    For each input `x`, with `A` the activations of the chosen layer:

        R(x) = d/dx sum(A(x) * stop_gradient(A(x)))

    computed with the guided ReLU rule at every ReLU between the input and
    that layer: a ReLU passes gradient only where its input > 0 and the
    incoming gradient > 0 (Springenberg et al.). Max pooling passes it to the
    maximum ("switches"), as ordinary backpropagation does. Works for ReLUs
    fused in `Conv2D`/`Dense` (`activation="relu"`) and for `ReLU` /
    `Activation("relu")` layers, in Sequential, Functional and nested models.
    Only the plain ReLU gets the guided rule: other nonlinearities (a
    clipped or leaky `ReLU` layer, tanh, ...) are differentiated as usual.
    The user's model object is not modified: a traced copy sharing its
    variables is built (`rebuild_model`), in which each ReLU is swapped for
    the guided one only while the copy runs.

    Args:
        model: a built Functional or Sequential `keras.Model` (nested models
            inside are entered).
        x: inputs `(N, ...)` of the model's input shape (numpy array), or a
            `tf.data.Dataset` of inputs.
        layer: the layer whose activations `A` are propagated back: a name,
            a path into a nested model (`"backbone/conv5"`), a layer object,
            a class or a preset of `resolve_layers` (the last selected layer
            in graph order is used). Defaults to `None`: the last
            convolutional layer in graph order, taken after its ReLU (fused,
            or a `ReLU`/`Activation("relu")` layer right after it, possibly
            behind a `BatchNormalization`), the paper's choice.
        batch_size: inputs per gradient computation. Defaults to `128`.
        verbose: `0` silent, `1` a progress bar. Defaults to `0`.

    Returns:
        A float32 numpy array of the shape of `x`: the response per input
        element (channels kept; `response_to_gray` makes the gray map).

    Raises:
        ValueError: a model without a convolutional layer (and no `layer`),
            an unknown `layer` (the message lists the layers), `x` not of the
            model's input shape, an unbuilt or subclassed model.
        TypeError: `model` not a Keras model, `x` not numeric.

    Example:

        >>> import keras, numpy as np
        >>> model = keras.Sequential([
        ...     keras.Input((6, 6, 1)),
        ...     keras.layers.Conv2D(2, 3, activation="relu", name="conv"),
        ...     keras.layers.Flatten(),
        ...     keras.layers.Dense(3, activation="softmax"),
        ... ])
        >>> x = np.random.default_rng(0).uniform(size=(4, 6, 6, 1)).astype("float32")
        >>> response = feature_response(model, x)
        >>> response.shape, response.dtype
        ((4, 6, 6, 1), dtype('float32'))

    Reference:
        J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller. "Striving
        for Simplicity: The All Convolutional Net", ICLR 2015 workshop.
        H. Amirian, A. Hosseini Mehr, F. Marquez, S. Pirk. "Trace and Detect
        Adversarial Attacks on CNNs Using Feature Response Maps", ANNPR 2018.
    """
    return _GuidedBackprop(model, layer).responses(x, batch_size, verbose)
