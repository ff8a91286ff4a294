"""`DetectorModel`: one functional model exposing a classifier's insides.

`DetectorModel` owns "run a model and collect what detectors need":
activations of chosen layers (pooled), the prediction, the logits behind a
softmax and the labels, over numpy arrays or `tf.data` datasets with bounded
memory. Attacks, sanitizers and detectors go through `DetectorModel`; the
attacks' logits callable, `as_logits_fn`, lives beside their batch loop in
`keras_advguard.attacks._common` (exported as `keras_advguard.as_logits_fn`).

The graph itself is walked by `keras_advguard._graph` (the one module reading
Keras internals); layers are chosen by `keras_advguard._selectors`. The chosen
outputs of the traced graph become extra outputs of one functional model that
calls the *same* layer objects (every weight shared, nothing copied).
"""

import os
import re
import uuid

import keras
import numpy as np

from keras_advguard import _graph, _selectors, _validation
from keras_advguard._graph import rebuild_model as rebuild_model
from keras_advguard._selectors import resolve_layers as resolve_layers
from keras_advguard.layers.dense_logits import DenseLogits as DenseLogits

POOLING_MODES = ("avg", "max", "flatten", None)


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
        model = _graph.check_model(model)
        _validation.check_choice("pooling", pooling, POOLING_MODES)
        if logits_layer is not None:
            _validation.check_type("logits_layer", logits_layer, str, "a layer path (str)")

        # === Trace the graph from a fresh input ===
        graph = _graph.trace(model, logits_layer=logits_layer, find_logits=True)
        inputs, prediction, paths = graph.inputs, graph.prediction, graph.paths
        if logits_layer is not None and logits_layer not in graph.outputs:
            raise ValueError(
                f"No layer '{logits_layer}' (argument `logits_layer`). "
                f"Layers: {_graph.describe_paths(paths)}"
            )
        logits = graph.logits if graph.logits is not None else prediction

        # === Select and pool the taps ===
        tap_names = _selectors.select(_selectors.as_list(layers), paths, graph.layers)
        activations = {}
        for path in tap_names:
            tensor = graph.outputs[path]
            if not isinstance(tensor, keras.KerasTensor):
                raise ValueError(
                    f"The output of layer '{path}' is not a single tensor (it is a "
                    f"{type(tensor).__name__}); it cannot be tapped."
                )
            activations[path] = _pool(tensor, pooling, path)

        # === Functional model ===
        leaf_names = {}
        for path, layer in graph.layers.items():
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
        self.has_softmax = graph.logits is not None and logits_layer is None

    def save(self, filepath, overwrite=True, **kwargs):
        """Save to a `.keras` file atomically (`keras_advguard.save_model`)."""
        from keras_advguard.saving import save_model

        return save_model(self, filepath, overwrite=overwrite, **kwargs)

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

    def collect(self, x, *, batch_size=128, verbose=0, cache_dir=None):
        """Run the model once over `x` and collect what detectors need.

        The one activation pass of the library: every detector fits and
        scores through it. Each batch is checked before it reaches the model:
        its shape against the model's input shape (on every call, also after
        the model was compiled for another shape) and its values (NaN and
        infinite pixels are refused, batch by batch, without a second pass
        over the data).

        Memory: numpy inputs (and unbatched datasets of known size) fill
        arrays preallocated for the `N` samples, so the peak is the result
        plus one batch; other datasets keep the per-batch arrays until the
        end. With `cache_dir`, the activations go to memory-mapped `.npy`
        files there instead of memory.

        Args:
            x: numpy array `(N, *input_shape)`, or a `tf.data.Dataset` (batched
                or not) yielding inputs or `(inputs, labels)` pairs.
            batch_size: batch size for numpy inputs and unbatched datasets.
                Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.
            cache_dir: an existing folder for the activation files (the
                caller deletes them; keep the folder until the arrays are no
                longer used). Defaults to `None` (in memory).

        Returns:
            A dict:
            `"activations"`: `{tap_path: array (N, ...)}` in graph order;
            `"logits"`: `(N, C)`, the pre-softmax output;
            `"prediction"`: `(N, C)`, what the model outputs (probabilities
            when it ends in softmax);
            `"predicted_class"`: int64 `(N,)`, the argmax of the prediction;
            `"labels"`: int64 `(N,)`, the dataset's labels (one-hot labels
            are turned into class ids) when `x` is a dataset of
            `(inputs, labels)` pairs, else `None`.
            An empty `x` gives arrays of length 0 with the right trailing
            shapes and dtypes.

        Raises:
            ValueError: an input whose shape does not fit the model, an input
                with NaN or infinite values (the message names `x` and counts
                them), labels that are not class ids or one-hot rows.
            TypeError: an input that is not numeric.

        Example:

            >>> import keras, numpy as np
            >>> from keras_advguard import DetectorModel
            >>> classifier = keras.Sequential([
            ...     keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="fc"),
            ...     keras.layers.Dense(3, activation="softmax", name="out")])
            >>> out = DetectorModel(classifier, layers="fc").collect(np.ones((5, 4)))
            >>> out["activations"]["fc"].shape, out["logits"].shape, out["labels"]
            ((5, 8), (5, 3), None)
            >>> out["predicted_class"].dtype
            dtype('int64')
        """
        from keras_advguard import _batching

        _validation.check_positive_int("batch_size", batch_size)
        if cache_dir is not None and not os.path.isdir(cache_dir):
            raise ValueError(
                "Argument `cache_dir` must be an existing folder. "
                f"Received: cache_dir={cache_dir!r}"
            )
        x = self._check_inputs(x)
        is_dataset = _batching.is_tf_dataset(x)
        with_labels = is_dataset and _batching.has_labels(x)
        n = _known_length(x, self._input_rank)
        shapes = self._output_shapes()
        token = uuid.uuid4().hex[:12]  # two calls may share a cache_dir
        stores = {key: _Store(n, cache_dir, f"{token}_{i:04d}") for i, key in enumerate(shapes)}
        if with_labels:
            stores["labels"] = _Store(n, None, "labels")
        for outputs, yb in self.iter_activations(x, batch_size=batch_size, verbose=verbose):
            flat = {f"activations/{name}": outputs["activations"][name] for name in self.tap_names}
            flat["logits"] = outputs["logits"]
            flat["prediction"] = outputs["prediction"]
            flat["predicted_class"] = np.argmax(outputs["prediction"], axis=-1).astype(np.int64)
            if with_labels:
                flat["labels"] = _as_labels(yb, len(flat["logits"]))
            for key, value in flat.items():
                stores[key].append(value)
        empty = {key: (shape, dtype) for key, (shape, dtype) in shapes.items()}
        empty["labels"] = ((), np.int64)
        result = {key: store.finish(*empty[key]) for key, store in stores.items()}
        return {
            "activations": {name: result[f"activations/{name}"] for name in self.tap_names},
            "logits": result["logits"],
            "prediction": result["prediction"],
            "predicted_class": result["predicted_class"],
            "labels": result["labels"] if with_labels else None,
        }

    def activations(self, x, batch_size=128, verbose=0):
        """Tapped activations of `x`, computed batch by batch.

        The `"activations"` part of `collect` (same checks, same memory
        bound).

        Args:
            x: numpy array `(N, ...)` or a `tf.data.Dataset` yielding inputs or
                `(inputs, labels)` pairs (labels are ignored).
            batch_size: batch size for numpy inputs. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A dict `{layer_path: numpy array (N, ...)}` in graph order (arrays
            of length 0 for an empty `x`). Only one batch of activations is
            alive inside the model at a time; the returned (pooled) arrays
            grow with `N`. For maps too large to keep, iterate with
            `iter_activations`.

        Raises:
            ValueError: as `collect`.
        """
        return self.collect(x, batch_size=batch_size, verbose=verbose)["activations"]

    def iter_activations(self, x, batch_size=128, verbose=0):
        """Yield the outputs batch by batch: `(outputs_dict, labels_or_None)`.

        Memory stays bounded by one batch whatever the dataset size. Every
        batch is checked as in `collect` (input shape, finite values).

        Args:
            x: numpy array or `tf.data.Dataset` of inputs or `(inputs, labels)`.
            batch_size: batch size for numpy inputs and unbatched datasets.
            verbose: `0` silent, `1` a progress bar.

        Yields:
            `(outputs, y)` where `outputs` is the model's output dict as numpy
            arrays for one batch and `y` the batch's labels (or `None`).

        Raises:
            ValueError: as `collect`.
        """
        from keras_advguard import _batching, _progress

        _validation.check_positive_int("batch_size", batch_size)
        x = self._check_inputs(x)
        rank = self._input_rank
        bar = _progress.progress_bar(_batching.num_batches(x, batch_size, rank), verbose=verbose)
        with_labels = _batching.is_tf_dataset(x) and _batching.has_labels(x)
        batches = _batching.iterate_batches(x, batch_size, with_labels=with_labels, input_rank=rank)
        start = 0
        for step, item in enumerate(batches, start=1):
            xb, yb = item if with_labels else (item, None)
            self._check_batch(xb, start)
            if self.distribute_strategy.num_replicas_in_sync == 1:
                out = self.predict_on_batch(xb)
            else:  # Keras's predict_on_batch runs the whole batch on every replica
                out = self.predict(xb, batch_size=len(xb), verbose=0)
            start += len(xb)
            yield keras.tree.map_structure(np.asarray, out), yb
            bar.update(step)

    # ------------------------------------------------------------------
    # Input checks shared by collect / activations / iter_activations

    def _input_shape_text(self):
        return "(N, " + ", ".join(str(d) for d in self.inputs[0].shape[1:]) + ")"

    def _fits_input_shape(self, shape):
        expected = tuple(self.inputs[0].shape[1:])
        if len(shape) != len(expected) + 1:
            return False
        return all(e is None or s is None or s == e for s, e in zip(shape[1:], expected))

    def _check_inputs(self, x):
        """Numpy conversion and the up-front shape check (datasets: their spec)."""
        from keras_advguard import _batching

        if _batching.is_tf_dataset(x):
            spec = _batching._input_spec(x)
            shape = tuple(spec.shape)
            if len(shape) == self._input_rank - 1:  # unbatched elements
                shape = (None,) + shape
            if not self._fits_input_shape(shape):
                raise ValueError(
                    f"The dataset's inputs must fit the model's input shape "
                    f"{self._input_shape_text()}. Received: a dataset yielding inputs of "
                    f"shape {spec.shape}"
                )
            return x
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except Exception as e:  # noqa: BLE001 - re-raised with context
                raise TypeError(
                    "Argument `x` must be a numpy array or a tf.data.Dataset. "
                    f"Received: x of type {type(x).__name__}"
                ) from e
        if x.dtype.kind not in "biuf":
            raise TypeError(
                "Argument `x` must hold numbers. "
                f"Received: x with dtype={x.dtype} (type {type(x).__name__})"
            )
        if not self._fits_input_shape(x.shape):
            raise ValueError(
                f"Argument `x` must have shape {self._input_shape_text()} (the model's "
                f"input shape). Received: x with shape={x.shape}"
            )
        return x

    def _check_batch(self, xb, start):
        if not self._fits_input_shape(xb.shape):
            raise ValueError(
                f"Argument `x` must have shape {self._input_shape_text()} (the model's "
                f"input shape). Received: a batch of x with shape={xb.shape} "
                f"(samples {start}..{start + len(xb) - 1})"
            )
        try:
            _validation.check_finite("x", xb)
        except ValueError as e:
            raise ValueError(f"{e}, in samples {start}..{start + len(xb) - 1}") from None

    def _output_shapes(self):
        """`{key: (trailing shape, dtype)}` of `collect`'s arrays, from the graph."""
        out = self.output

        def spec(tensor):
            return tuple(d or 0 for d in tensor.shape[1:]), np.dtype(tensor.dtype)

        shapes = {f"activations/{n}": spec(out["activations"][n]) for n in self.tap_names}
        shapes["logits"] = spec(out["logits"])
        shapes["prediction"] = spec(out["prediction"])
        shapes["predicted_class"] = ((), np.dtype(np.int64))
        return shapes


def as_detector_model(model, **kwargs):
    """`model` when it is already a `DetectorModel`, else `DetectorModel(model, **kwargs)`.

    The one place where "a classifier or its `DetectorModel`" arguments are
    told apart (the taps of a given `DetectorModel` are kept as they are).

    Example:

        >>> import keras
        >>> classifier = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
        >>> taps = as_detector_model(classifier, layers="d")
        >>> as_detector_model(taps, layers=None) is taps, taps.tap_names
        (True, ['d'])
    """
    if isinstance(model, DetectorModel):
        return model
    return DetectorModel(model, **kwargs)


def _known_length(x, input_rank):
    """`N` when it is known before the pass (numpy, unbatched finite datasets)."""
    from keras_advguard import _batching

    if not _batching.is_tf_dataset(x):
        return len(x)
    n = int(x.cardinality())
    if n < 0 or _batching.is_batched(x, input_rank):
        return None
    return n


def _as_labels(yb, n):
    """A batch of labels as int64 class ids (one-hot rows -> argmax)."""
    y = np.asarray(yb)
    if y.ndim == 2 and y.shape[1] > 1:
        y = np.argmax(y, axis=1)
    elif y.ndim == 2:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n or y.dtype.kind not in "biuf":
        raise ValueError(
            "The dataset's labels must be class ids `(B,)` or one-hot rows `(B, C)`, one "
            f"per input. Received: labels of shape {y.shape} and dtype {y.dtype} for a "
            f"batch of {n} inputs"
        )
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(
                "The dataset's labels must be integer class ids. Received: labels "
                f"{y[:5].tolist()}..."
            )
    return y.astype(np.int64)


class _Store:
    """The batches of one output: a preallocated array (or `.npy` memory map) or chunks."""

    def __init__(self, n, folder, stem):
        self.n = n
        self.folder = folder
        self.stem = stem
        self.array = None
        self.chunks = []
        self.raw = None
        self.rows = 0
        self.tail = None

    def append(self, value):
        value = np.asarray(value)
        if self.tail is None:
            self.tail = (value.shape[1:], value.dtype)
        stop = self.rows + len(value)
        if self.n is not None:
            if self.array is None:
                shape = (self.n,) + value.shape[1:]
                if self.folder is None:
                    self.array = np.empty(shape, value.dtype)
                else:
                    path = os.path.join(self.folder, f"{self.stem}.npy")
                    self.array = np.lib.format.open_memmap(
                        path, mode="w+", dtype=value.dtype, shape=shape
                    )
            self.array[self.rows : stop] = value
        elif self.folder is None:
            self.chunks.append(value)
        else:
            self.raw = os.path.join(self.folder, f"{self.stem}.bin")
            with open(self.raw, "ab") as f:
                f.write(np.ascontiguousarray(value, dtype=self.tail[1]).tobytes())
        self.rows = stop

    def finish(self, shape, dtype):
        if self.rows == 0:
            return np.empty((0,) + tuple(shape), dtype)
        if self.array is not None:
            if isinstance(self.array, np.memmap):
                self.array.flush()
            return self.array[: self.rows]
        if self.raw is not None:
            tail_shape, tail_dtype = self.tail
            return np.memmap(
                self.raw, dtype=tail_dtype, mode="r", shape=(self.rows,) + tuple(tail_shape)
            )
        return np.concatenate(self.chunks)


def __getattr__(name):
    # `as_logits_fn` moved beside the attacks' runner (`keras_advguard.attacks`,
    # floor 3). The old import path keeps working, with a DeprecationWarning; it
    # is resolved on first use only, so this floor-2 module does not depend on
    # the attacks.
    if name == "as_logits_fn":
        import importlib
        import warnings

        warnings.warn(
            "`keras_advguard.detector_model.as_logits_fn` moved beside the attacks: "
            "import it as `keras_advguard.as_logits_fn`.",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module("keras_advguard.attacks._common").as_logits_fn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
