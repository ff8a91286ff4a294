"""Distances of tapped activations to class medoids, as a Keras layer."""

from collections.abc import Mapping

import keras
import numpy as np
from keras import ops

from keras_advguard import _validation


@keras.saving.register_keras_serializable(package="keras_advguard")
class MedoidDistance(keras.layers.Layer):
    """Map tapped activations to their distances to every class medoid.

    For `L` tapped layers with medoids `R^l` of shape `(C, N_l)` (one row per
    class; widths may differ by layer) the output is the distance sequence

        F[b, l, c] = || a_l(x_b) - R_c^l ||_2

    of shape `(B, L, C)`: `L` steps of `C` features, ready for an LSTM. It is
    computed in float32 as `sqrt(max(0, ||a||^2 + ||R||^2 - 2 a.R) + epsilon)`
    after subtracting the mean of the layer's medoids from both sides (the
    distances do not change; the cancellation error becomes relative to the
    spread of the activations rather than their offset; near 0 the absolute
    error is about `sqrt(float32 eps) * ||a - center||`). It runs in float32
    under any dtype policy, only the output is cast to the compute dtype
    (e.g. float16 under `"mixed_float16"`). `epsilon` keeps the
    gradient finite when an activation coincides with a medoid (it adds at
    most `sqrt(epsilon)` to a distance). Gradients flow to the activations
    (adaptive attacks need them); the medoids are non-trainable weights saved
    with the model.

    With `standardize=True` each layer's distances are standardized by one
    mean and one standard deviation per layer (over all training inputs and
    all classes), `(F[:, l, :] - mean_l) / std_l`, so that deep layers with
    large activations do not dominate while the ordering of the classes within
    a step is kept. The statistics are non-trainable weights fitted by `adapt`
    or passed to `from_medoids`; until then they are the identity (0 and 1).

    Args:
        medoid_shapes: list of `(C, N_l)` pairs, one per tapped layer, in tap
            order; all with the same `C`. They fix the weights' shapes so
            that a saved layer can be rebuilt; the values come from
            `from_medoids`, `set_medoids` or a saved file.
        tap_names: names of the tapped layers (e.g. `DetectorModel.tap_names`),
            needed to read dict inputs `{name: tensor}`. Defaults to `None`
            (inputs must then be a list in tap order).
        standardize: whether to standardize each layer's distances (see
            above). Defaults to `False`.
        epsilon: non-negative constant added under the square root. Defaults
            to `1e-12`.
        **kwargs: base `keras.layers.Layer` arguments such as `name`.

    Call arguments:
        inputs: a list of `L` tensors `(B, N_l)` in tap order, or a dict
            `{tap_name: tensor}` when `tap_names` is set, or a single tensor
            when `L == 1`.

    Returns:
        A tensor `(B, L, C)` of distances (standardized if asked), in the
        layer's compute dtype.

    Raises:
        ValueError: inconsistent `medoid_shapes` (different `C` across layers,
            non-positive sizes), `tap_names` of the wrong length, inputs of the
            wrong number or width, a dict input without `tap_names` or without
            one of them.

    Example:

        >>> import numpy as np
        >>> from keras_advguard.layers.medoid_distance import MedoidDistance
        >>> medoids = [np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[1.0], [2.0]])]
        >>> layer = MedoidDistance.from_medoids(medoids)
        >>> features = layer([np.array([[0.0, 0.0]]), np.array([[4.0]])])
        >>> np.round(np.asarray(features), 4).tolist()
        [[[0.0, 5.0], [3.0, 2.0]]]

    Reference:
        R. Caldelli, R. Becarelli, F. Carrara, F. Falchi, G. Amato.
        "Exploiting CNN Layer Activations to Improve Adversarial Image
        Classification", ICIP 2019.
    """

    def __init__(self, medoid_shapes, tap_names=None, standardize=False, epsilon=1e-12, **kwargs):
        # Distances are computed in float32 under any dtype policy: neither the
        # inputs nor the weights are cast to a float16 compute dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        # === Checks ===
        shapes = _check_shapes(medoid_shapes)
        if tap_names is not None:
            if isinstance(tap_names, str) or not isinstance(tap_names, (list, tuple)):
                raise TypeError(
                    "Argument `tap_names` must be a list of layer names. "
                    f"Received: tap_names={tap_names!r}"
                )
            tap_names = [str(name) for name in tap_names]
            if len(tap_names) != len(shapes):
                raise ValueError(
                    f"Argument `tap_names` must name the {len(shapes)} layers of "
                    f"`medoid_shapes`. Received: tap_names={tap_names}"
                )
        _validation.check_type("standardize", standardize, (bool, np.bool_))
        _validation.check_number("epsilon", epsilon, min_value=0.0)

        # === Config ===
        self.medoid_shapes = shapes
        self.tap_names = tap_names
        self.standardize = bool(standardize)
        self.epsilon = float(epsilon)
        self.num_layers = len(shapes)
        self.num_classes = shapes[0][0]

        # === Weights (shapes known now: no input-dependent build) ===
        self.medoids = [
            self.add_weight(
                shape=shape,
                initializer="zeros",
                trainable=False,
                dtype="float32",
                autocast=False,
                name=f"medoids_{i}",
            )
            for i, shape in enumerate(shapes)
        ]
        if self.standardize:
            self.feature_mean = self.add_weight(
                shape=(self.num_layers,),
                initializer="zeros",
                trainable=False,
                dtype="float32",
                autocast=False,
                name="feature_mean",
            )
            self.feature_std = self.add_weight(
                shape=(self.num_layers,),
                initializer="ones",
                trainable=False,
                dtype="float32",
                autocast=False,
                name="feature_std",
            )
        self.built = True

    @classmethod
    def from_medoids(
        cls, medoids, *, tap_names=None, standardize=None, mean=None, std=None, **kwargs
    ):
        """Build the layer holding given medoids.

        Args:
            medoids: a fitted `keras_advguard.detectors.ClassMedoids` (its
                `medoids_` are used and their keys become `tap_names` when they
                are strings), a dict `{tap_name: array (C, N_l)}`, or a list of
                arrays in tap order.
            tap_names: overrides the names taken from `medoids`. Defaults to
                `None`.
            standardize: whether to standardize the distances. Defaults to
                `None`: `True` exactly when `mean` and `std` are given.
            mean: per-layer means `(L,)` of the distances. Defaults to `None`.
            std: per-layer standard deviations `(L,)`, positive. Defaults to
                `None`.
            **kwargs: other constructor arguments (`epsilon`, `name`, ...).

        Returns:
            A `MedoidDistance` layer.

        Raises:
            ValueError: medoids of inconsistent shapes, only one of `mean` and
                `std`, statistics with `standardize=False`, or non-positive
                `std`.
        """
        arrays, names = _medoid_arrays(medoids)
        if tap_names is None:
            tap_names = names
        if (mean is None) != (std is None):
            raise ValueError(
                f"Pass both `mean` and `std`, or neither. Received: mean={mean!r}, std={std!r}"
            )
        if standardize is None:
            standardize = mean is not None
        if mean is not None and not standardize:
            raise ValueError(
                "`mean` and `std` are only used with `standardize=True`. "
                f"Received: standardize={standardize}"
            )
        layer = cls(
            medoid_shapes=[a.shape for a in arrays],
            tap_names=tap_names,
            standardize=standardize,
            **kwargs,
        )
        layer.set_medoids(arrays)
        if mean is not None:
            layer.set_standardization(mean, std)
        return layer

    def set_medoids(self, medoids):
        """Assign new medoid values (same shapes as `medoid_shapes`).

        Args:
            medoids: list of arrays `(C, N_l)` in tap order, a dict keyed by
                tap name, or a fitted `ClassMedoids`.
        """
        arrays, _ = _medoid_arrays(medoids)
        if [a.shape for a in arrays] != self.medoid_shapes:
            raise ValueError(
                f"The medoids must have shapes {self.medoid_shapes}. "
                f"Received: shapes {[a.shape for a in arrays]}"
            )
        for variable, array in zip(self.medoids, arrays, strict=True):
            variable.assign(array.astype("float32"))

    def set_standardization(self, mean, std):
        """Assign the per-layer statistics used when `standardize=True`.

        Args:
            mean: array-like `(L,)`.
            std: array-like `(L,)`, positive.
        """
        if not self.standardize:
            raise ValueError(
                "This layer was built with `standardize=False`; it has no "
                "statistics to set. Received: standardize=False"
            )
        mean = _validation.check_array("mean", mean, ndim=1, dtype_kind="fiu")
        std = _validation.check_array("std", std, ndim=1, dtype_kind="fiu")
        for name, value in (("mean", mean), ("std", std)):
            if value.shape != (self.num_layers,):
                raise ValueError(
                    f"Argument `{name}` must have shape ({self.num_layers},), one "
                    f"value per layer. Received: {name} with shape={value.shape}"
                )
        if not np.all(np.isfinite(mean)) or not np.all(std > 0):
            raise ValueError(
                "Argument `mean` must be finite and `std` positive. "
                f"Received: mean={mean.tolist()}, std={std.tolist()}"
            )
        self.feature_mean.assign(mean.astype("float32"))
        self.feature_std.assign(std.astype("float32"))

    def adapt(self, activations, batch_size=4096):
        """Fit the per-layer standardization on training activations.

        The mean and standard deviation of each layer's distances (over all
        samples and classes) are accumulated batch by batch in float64; a
        zero standard deviation is replaced by 1.

        Args:
            activations: the layer's inputs for the training set: a list of
                arrays `(N, N_l)` in tap order, or a dict keyed by tap name.
            batch_size: samples per batch (memory `batch_size x (N_l + C)` floats
                per layer). Defaults to `4096` (256 cost 8x the time in op dispatch).

        Returns:
            `self`.
        """
        if not self.standardize:
            raise ValueError(
                "`adapt` fits the standardization of a layer built with "
                "`standardize=True`. Received: standardize=False"
            )
        _validation.check_positive_int("batch_size", batch_size)
        arrays = [np.asarray(a) for a in self._as_list(activations)]
        n = len(arrays[0])
        for a in arrays[1:]:
            _validation.check_same_length("activations[0]", arrays[0], "activations[l]", a)
        if n == 0:
            raise ValueError("Argument `activations` must not be empty.")
        mean, std = streamed_mean_std(
            (
                self._distances([a[start : start + batch_size] for a in arrays])
                for start in range(0, n, batch_size)
            ),
            self.num_layers,
        )
        self.feature_mean.assign(mean.astype("float32"))
        self.feature_std.assign(std.astype("float32"))
        return self

    def call(self, inputs):
        features = self._distances(self._as_list(inputs))
        if self.standardize:
            mean = ops.reshape(self.feature_mean, (1, self.num_layers, 1))
            std = ops.reshape(self.feature_std, (1, self.num_layers, 1))
            features = (features - mean) / std
        return ops.cast(features, self.compute_dtype)

    def _distances(self, tensors):
        steps = []
        for tensor, medoids in zip(tensors, self.medoids, strict=True):
            a = ops.cast(tensor, "float32")
            r = ops.convert_to_tensor(medoids)
            center = ops.mean(r, axis=0)
            a = a - center
            r = r - center
            a2 = ops.sum(ops.square(a), axis=-1, keepdims=True)  # (B, 1)
            r2 = ops.sum(ops.square(r), axis=-1)  # (C,)
            d2 = a2 + r2[None, :] - 2.0 * ops.matmul(a, ops.transpose(r))
            steps.append(ops.sqrt(ops.maximum(d2, 0.0) + self.epsilon))
        return ops.stack(steps, axis=1)

    def _as_list(self, inputs):
        if isinstance(inputs, Mapping):
            if self.tap_names is None:
                raise ValueError(
                    "Dict inputs need `tap_names` to know the layer order; pass "
                    "`tap_names` to the constructor or a list in tap order. "
                    f"Received: dict with keys {list(inputs)}"
                )
            missing = [name for name in self.tap_names if name not in inputs]
            if missing:
                raise ValueError(
                    f"No activation for tapped layer {missing[0]!r}. "
                    f"Expected keys: {self.tap_names}. Received keys: {list(inputs)}"
                )
            tensors = [inputs[name] for name in self.tap_names]
        elif isinstance(inputs, (list, tuple)):
            tensors = list(inputs)
        else:
            tensors = [inputs]
        if len(tensors) != self.num_layers:
            raise ValueError(
                f"Expected the activations of {self.num_layers} layers. "
                f"Received: {len(tensors)} inputs"
            )
        for i, (tensor, (_, width)) in enumerate(zip(tensors, self.medoid_shapes, strict=True)):
            shape = tuple(tensor.shape)
            if len(shape) != 2 or (shape[-1] is not None and shape[-1] != width):
                raise ValueError(
                    f"Input {i} must have shape (batch, {width}) to match its "
                    f"medoids. Received: shape={shape}"
                )
        return tensors

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, Mapping):
            first = next(iter(input_shape.values()))
        elif isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            first = input_shape[0]
        else:
            first = input_shape
        return (first[0], self.num_layers, self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "medoid_shapes": [list(shape) for shape in self.medoid_shapes],
                "tap_names": self.tap_names,
                "standardize": self.standardize,
                "epsilon": self.epsilon,
            }
        )
        return config


def _check_shapes(medoid_shapes):
    if not isinstance(medoid_shapes, (list, tuple)) or not medoid_shapes:
        raise ValueError(
            "Argument `medoid_shapes` must be a non-empty list of (C, N_l) pairs. "
            f"Received: medoid_shapes={medoid_shapes!r}"
        )
    shapes = []
    for shape in medoid_shapes:
        if (
            not isinstance(shape, (list, tuple))
            or len(shape) != 2
            or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
                for d in shape
            )
        ):
            raise ValueError(
                "Argument `medoid_shapes` must hold (C, N_l) pairs of positive "
                f"integers. Received: medoid_shapes={medoid_shapes!r}"
            )
        shapes.append((int(shape[0]), int(shape[1])))
    classes = {shape[0] for shape in shapes}
    if len(classes) != 1:
        raise ValueError(
            "Every layer must have one medoid per class (the same C). "
            f"Received: medoid_shapes={shapes}"
        )
    return shapes


def _medoid_arrays(medoids):
    """Arrays (C, N_l) and tap names (or None) from the accepted forms."""
    if hasattr(medoids, "fit") and not isinstance(medoids, (Mapping, list, tuple)):
        # A ClassMedoids (not imported here: detectors sit on a higher floor).
        _validation.check_is_fitted(medoids, "medoids_")
        medoids = medoids.medoids_
    if isinstance(medoids, Mapping):
        keys = list(medoids)
        names = keys if all(isinstance(k, str) for k in keys) else None
        values = list(medoids.values())
    elif isinstance(medoids, (list, tuple)):
        names, values = None, list(medoids)
    else:
        raise TypeError(
            "Argument `medoids` must be a fitted ClassMedoids, a dict "
            "{tap_name: array (C, N_l)} or a list of arrays. "
            f"Received: medoids of type {type(medoids).__name__}"
        )
    arrays = [
        _validation.check_array(f"medoids[{i}]", np.asarray(v), ndim=2, dtype_kind="fiu")
        for i, v in enumerate(values)
    ]
    return arrays, names


def streamed_mean_std(distance_batches, num_layers):
    """Per-layer mean and std of `(B, L, C)` distance batches, in one pass.

    Chan et al.'s pairwise update in float64, so batches of any size (and a
    stream that never fits in memory) give the mean and population std of
    all `B * C` values of each layer. A zero std becomes `1.0`.

    Returns:
        `(mean, std)`, float64 arrays `(num_layers,)`; `count` 0 gives
        `(None, None)`.
    """
    count, mean, m2 = 0, np.zeros(num_layers), np.zeros(num_layers)
    for batch in distance_batches:
        f = np.asarray(batch, dtype=np.float64)
        b_count = f.shape[0] * f.shape[2]
        if b_count == 0:
            continue
        b_mean = f.mean(axis=(0, 2))
        b_m2 = ((f - b_mean[None, :, None]) ** 2).sum(axis=(0, 2))
        total = count + b_count
        delta = b_mean - mean
        mean = mean + delta * b_count / total
        m2 = m2 + b_m2 + delta**2 * count * b_count / total
        count = total
    if count == 0:
        return None, None
    std = np.sqrt(m2 / count)
    std[std == 0] = 1.0
    return mean, std
