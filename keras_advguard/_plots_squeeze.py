"""Layer-wise divergence of a classifier's activations, and its figures.

The analysis behind internal-layer feature squeezing (Jonas & Evans): how far
apart, layer by layer, a network's activations are for two versions of the
same inputs, measured by the cosine distance of the flattened outputs. Two
figures of the paper are drawn from it:

- Fig. 1, `LayerDivergenceDisplay.from_adversarial`: clean vs adversarial and
  clean vs random noise of the same L2 norm;
- Fig. 2, `LayerDivergenceDisplay.from_squeezer`: squeezed vs not squeezed,
  for clean and for adversarial inputs.

Each curve is the median over the inputs with a 5-95 percentile band.

Functions shared with `keras_advguard.detectors.FeatureSqueezingDetector`:

- `is_activation_layer(layer)`: the default choice of "activation layers";
- `cosine_distance(a, b)`: the per-sample distance (a `keras.ops` function,
  differentiable);
- `layer_cosine_distances(model, x, x_other)`: per-layer distances of two
  input sets, batch by batch.

matplotlib is imported inside the functions that draw.
"""

import numpy as np

from keras_advguard import _validation

#: Activations that do not count as hidden non-linearities.
_NOT_HIDDEN = frozenset({"linear", "softmax", "log_softmax"})

#: Names of the standalone Keras activation layers.
_ACTIVATION_LAYER_CLASSES = ("ReLU", "LeakyReLU", "ELU", "PReLU")


def is_activation_layer(layer):
    """Whether `layer`'s output is a hidden activation (the default taps).

    Jonas & Evans average over "all the activation layers" of the network.
    Here that is every layer whose output has just gone through a
    non-linearity other than the final softmax:

    - a standalone `ReLU`, `LeakyReLU`, `ELU` or `PReLU` layer;
    - an `Activation` layer whose function is not `linear`, `softmax` or
      `log_softmax` (DenseNet's `Activation("relu")` layers);
    - any other layer with a fused `activation` (`Conv2D(...,
      activation="relu")`, `Dense(..., activation="relu")`), except
      `linear`, `softmax` and `log_softmax`.

    So the softmax output (what Xu et al.'s output score compares) and
    linear layers (pre-activations, pooling, flatten, batch normalisation)
    are left out. Use it as a `DetectorModel` selector
    (`DetectorModel(model, layers=is_activation_layer)`), or pass your own
    selectors to the detector's `layers=`.

    Args:
        layer: a `keras.layers.Layer`.

    Returns:
        A bool.

    Example:

        >>> import keras
        >>> is_activation_layer(keras.layers.Conv2D(4, 3, activation="relu"))
        True
        >>> is_activation_layer(keras.layers.Dense(10, activation="softmax"))
        False
    """
    if type(layer).__name__ in _ACTIVATION_LAYER_CLASSES:
        return True
    activation = getattr(layer, "activation", None)
    if activation is None or not callable(activation):
        return False
    name = getattr(activation, "__name__", type(activation).__name__)
    return name not in _NOT_HIDDEN


def cosine_distance(a, b):
    """Cosine distance `1 - cos(a, b)` of each pair of flattened samples.

    Computed in float32 as `||a / ||a|| - b / ||b|| ||^2 / 2`, which equals
    `1 - a.b / (||a|| ||b||)` and keeps its precision when the distance is
    tiny. Conventions for zero vectors (a dead ReLU layer): two zero vectors
    are at distance 0 (identical); a zero and a non-zero vector at distance 1
    (cosine 0). The result is in `[0, 2]`. Differentiable with finite
    gradients (also at zero vectors).

    Args:
        a: tensor `(B, ...)`.
        b: tensor of the same shape.

    Returns:
        A float32 tensor `(B,)`.

    Example:

        >>> import keras, numpy as np
        >>> a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
        >>> b = np.array([[0.0, 2.0], [2.0, 2.0], [0.0, 0.0]])
        >>> np.round(keras.ops.convert_to_numpy(cosine_distance(a, b)), 6)
        array([1., 0., 0.], dtype=float32)
    """
    from keras import ops

    a = ops.cast(a, "float32")
    b = ops.cast(b, "float32")
    batch = ops.shape(a)[0]
    a = ops.reshape(a, (batch, -1))
    b = ops.reshape(b, (batch, -1))
    sum_a = ops.sum(ops.square(a), axis=1)
    sum_b = ops.sum(ops.square(b), axis=1)
    pos_a = sum_a > 0
    pos_b = sum_b > 0
    unit_a = a / ops.expand_dims(ops.sqrt(ops.where(pos_a, sum_a, 1.0)), 1)
    unit_b = b / ops.expand_dims(ops.sqrt(ops.where(pos_b, sum_b, 1.0)), 1)
    distance = 0.5 * ops.sum(ops.square(unit_a - unit_b), axis=1)
    one_zero = ops.cast(ops.logical_or(pos_a, pos_b), "float32")
    return ops.where(ops.logical_and(pos_a, pos_b), distance, one_zero)


def _as_base_model(model):
    from keras_advguard.detector_model import DetectorModel

    return model.base_model if isinstance(model, DetectorModel) else model


def _taps(model, layers):
    from keras_advguard.detector_model import DetectorModel

    selectors = is_activation_layer if layers is None else layers
    return DetectorModel(_as_base_model(model), layers=selectors, pooling="flatten")


def _check_inputs(name, x):
    return _validation.check_array(name, x, min_ndim=2, dtype_kind="fiu").astype("float32")


def apply_in_batches(fn, x, batch_size=128):
    """`fn` applied to `x` batch by batch, as one float32 numpy array.

    Args:
        fn: a callable `(B, ...) -> (B, ...)` (a squeezer layer, a function).
        x: numpy array `(N, ...)`.
        batch_size: samples per call. Defaults to `128`.

    Returns:
        A float32 numpy array `(N, ...)`.
    """
    import keras

    _validation.check_positive_int("batch_size", batch_size)
    x = _check_inputs("x", x)
    parts = [
        keras.ops.convert_to_numpy(fn(x[start : start + batch_size])).astype("float32")
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts, axis=0)


def layer_cosine_distances(model, x, x_other, *, layers=None, batch_size=128, verbose=0):
    """Cosine distance between the activations of `x` and `x_other`, per layer.

    For every pair `(x[i], x_other[i])` and every tapped layer `l`:
    `cosine_distance(g_l(x[i]), g_l(x_other[i]))` on the flattened outputs
    (`DetectorModel(..., pooling="flatten")`). Computed batch by batch inside
    one `tf.function`; only the distances leave it.

    Args:
        model: a Functional or Sequential `keras.Model` (or a
            `DetectorModel`, whose base model is used).
        x: inputs `(N, ...)`.
        x_other: inputs of the same shape (adversarial, noisy or squeezed
            versions of `x`).
        layers: `DetectorModel` selectors of the layers to compare. Defaults
            to `None`: `is_activation_layer`.
        batch_size: samples per batch. Defaults to `128`.
        verbose: `0` silent, `1` a progress bar. Defaults to `0`.

    Returns:
        A dict `{layer_path: float32 array (N,)}` in graph order.

    Raises:
        ValueError: if `x` and `x_other` differ in shape, are empty, or a
            selector matches no layer.
        TypeError: if they are not numeric arrays.

    Example:

        >>> import keras, numpy as np
        >>> model = keras.Sequential([
        ...     keras.Input((3,)), keras.layers.Dense(2, activation="relu", name="h"),
        ...     keras.layers.Dense(2, activation="softmax")])
        >>> x = np.ones((2, 3), "float32")
        >>> d = layer_cosine_distances(model, x, x)
        >>> list(d), d["h"].tolist()
        (['h'], [0.0, 0.0])
    """
    import tensorflow as tf

    from keras_advguard import _progress

    x = _check_inputs("x", x)
    x_other = _check_inputs("x_other", x_other)
    _validation.check_same_shape("x", x, "x_other", x_other)
    _validation.check_positive_int("batch_size", batch_size)
    taps = _taps(model, layers)

    spec = tf.TensorSpec((None,) + x.shape[1:], "float32")

    @tf.function(input_signature=[spec, spec])  # one trace for every batch size
    def distances(xa, xb):
        acts_a = taps(xa, training=False)["activations"]
        acts_b = taps(xb, training=False)["activations"]
        return {p: cosine_distance(acts_a[p], acts_b[p]) for p in taps.tap_names}

    out = {p: [] for p in taps.tap_names}
    bar = _progress.progress_bar(-(-len(x) // batch_size), verbose=verbose)
    for step, start in enumerate(range(0, len(x), batch_size), start=1):
        batch = distances(x[start : start + batch_size], x_other[start : start + batch_size])
        for p in taps.tap_names:
            out[p].append(batch[p].numpy())
        bar.update(step)
    return {p: np.concatenate(v) for p, v in out.items()}


def same_norm_noise(x, x_adv, *, seed=None, clip=None):
    """`x` plus random noise with, per sample, the L2 norm of `x_adv - x`.

    The noise direction is uniform on the sphere (a normalised standard
    Gaussian draw per sample), scaled to `||x_adv[i] - x[i]||_2`: the
    "randomly perturbed example" Jonas & Evans compare adversarial examples
    with. Not clipped by default, so the norms are equal exactly; with
    `clip=(low, high)` the result is clipped to the input range and the
    norms can only shrink.

    Args:
        x: clean inputs `(N, ...)`.
        x_adv: perturbed inputs of the same shape.
        seed: seed of `numpy.random.default_rng`. Defaults to `None`.
        clip: optional `(low, high)` range to clip the result to. Defaults to
            `None`.

    Returns:
        A float32 array shaped like `x`.

    Example:

        >>> import numpy as np
        >>> x = np.zeros((2, 4), "float32")
        >>> x_adv = np.array([[0.1, 0.1, 0.1, 0.1], [0, 0, 0, 0.5]], "float32")
        >>> noisy = same_norm_noise(x, x_adv, seed=0)
        >>> [round(float(v), 6) for v in np.linalg.norm(noisy - x, axis=1)]
        [0.2, 0.5]
    """
    x = _check_inputs("x", x)
    x_adv = _check_inputs("x_adv", x_adv)
    _validation.check_same_shape("x", x, "x_adv", x_adv)
    n = len(x)
    delta = (x_adv - x).reshape(n, -1).astype(np.float64)
    norms = np.linalg.norm(delta, axis=1, keepdims=True)
    direction = np.random.default_rng(seed).standard_normal(delta.shape)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    noisy = x + (direction * norms).reshape(x.shape).astype(np.float32)
    if clip is not None:
        low, high = clip
        noisy = np.clip(noisy, low, high)
    return noisy.astype(np.float32)


class LayerDivergenceDisplay:
    """Per-layer cosine distance curves: median with a percentile band.

    Jonas & Evans' Fig. 1 and Fig. 2. Build it with `from_adversarial`
    (Fig. 1) or `from_squeezer` (Fig. 2), or from precomputed distances; the
    constructor only stores them.

    Args:
        layer_names: the layer paths, in graph order (the x axis).
        distances: dict `{curve label: array (N, L)}`, one row per input and
            one column per layer (e.g. `np.stack(list(d.values()), axis=1)`
            for `d = layer_cosine_distances(...)`).
        title: optional axes title. Defaults to `None`.

    Attributes (set by `plot`):
        ax_: the matplotlib `Axes`.
        figure_: the matplotlib `Figure`.
        lines_: dict `{label: Line2D}` of the median curves.
        bands_: dict `{label: PolyCollection}` of the percentile bands.

    Raises:
        ValueError: if an array is not 2-D with one column per layer, or is
            empty.
        TypeError: if it is not numeric.

    Example:

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> display = LayerDivergenceDisplay(
        ...     ["conv1", "fc1"],
        ...     {"adversarial": np.array([[0.1, 0.5], [0.2, 0.7]])},
        ... ).plot()
        >>> display.lines_["adversarial"].get_ydata().tolist()
        [0.15000000000000002, 0.6]
        >>> import matplotlib.pyplot as plt
        >>> plt.close(display.figure_)
    """

    def __init__(self, layer_names, distances, *, title=None):
        self.layer_names = [str(name) for name in layer_names]
        if not isinstance(distances, dict) or not distances:
            raise TypeError(
                "Argument `distances` must be a non-empty dict {label: array (N, L)}. "
                f"Received: distances of type {type(distances).__name__}"
            )
        self.distances = {}
        for label, values in distances.items():
            array = _validation.check_array(
                f"distances[{label!r}]", values, ndim=2, dtype_kind="fiu"
            )
            if array.shape[1] != len(self.layer_names):
                raise ValueError(
                    f"Each array in `distances` must have one column per layer "
                    f"({len(self.layer_names)}). "
                    f"Received: distances[{label!r}] with shape={array.shape}"
                )
            self.distances[str(label)] = array.astype(np.float64)
        self.title = title

    def plot(self, ax=None, *, percentiles=(5, 95), colors=None, log_scale=False):
        """Draw one median curve and one percentile band per entry.

        Args:
            ax: matplotlib `Axes`; a new figure when `None`. Defaults to
                `None`.
            percentiles: the band's lower and upper percentiles. Defaults
                to `(5, 95)`.
            colors: optional dict `{label: color}`. Defaults to `None`
                (matplotlib's cycle).
            log_scale: whether to use a logarithmic y axis. Defaults to
                `False`.

        Returns:
            The display, with `ax_`, `figure_`, `lines_` and `bands_` set.

        Raises:
            ValueError: if the percentiles are not `0 <= low <= high <= 100`.
        """
        import matplotlib.pyplot as plt

        low, high = percentiles
        _validation.check_number("percentiles[0]", low, min_value=0, max_value=100)
        _validation.check_number("percentiles[1]", high, min_value=low, max_value=100)
        if ax is None:
            _, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(self.layer_names) + 2), 4))
        positions = np.arange(len(self.layer_names))
        self.lines_, self.bands_ = {}, {}
        for label, values in self.distances.items():
            color = None if colors is None else colors.get(label)
            (line,) = ax.plot(
                positions, np.median(values, axis=0), marker="o", label=label, color=color
            )
            self.lines_[label] = line
            self.bands_[label] = ax.fill_between(
                positions,
                np.percentile(values, low, axis=0),
                np.percentile(values, high, axis=0),
                color=line.get_color(),
                alpha=0.25,
                linewidth=0,
            )
        ax.set_xticks(positions)
        ax.set_xticklabels(self.layer_names, rotation=45, ha="right")
        ax.set_xlabel("Activation layer")
        ax.set_ylabel("Cosine distance")
        if log_scale:
            ax.set_yscale("log")
        if self.title:
            ax.set_title(self.title)
        ax.legend(title=f"median, {low:g}-{high:g} percentiles")
        ax.figure.tight_layout()
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_adversarial(
        cls,
        model,
        x,
        x_adv,
        *,
        layers=None,
        noise_seed=0,
        noise_clip=None,
        batch_size=128,
        ax=None,
        **plot_kwargs,
    ):
        """Fig. 1: clean vs adversarial and clean vs random noise, per layer.

        The random inputs are `same_norm_noise(x, x_adv, seed=noise_seed,
        clip=noise_clip)`: per sample, noise with the adversarial
        perturbation's L2 norm.

        Args:
            model: the classifier (`keras.Model` or `DetectorModel`).
            x: clean inputs `(N, ...)`.
            x_adv: their adversarial versions.
            layers: `DetectorModel` selectors. Defaults to `None`
                (`is_activation_layer`).
            noise_seed: seed of the random noise. Defaults to `0`.
            noise_clip: optional `(low, high)` clip of the noisy inputs.
                Defaults to `None`.
            batch_size: samples per batch. Defaults to `128`.
            ax: matplotlib `Axes`. Defaults to `None`.
            **plot_kwargs: passed to `plot`.

        Returns:
            The plotted display.
        """
        noisy = same_norm_noise(x, x_adv, seed=noise_seed, clip=noise_clip)
        adv = layer_cosine_distances(model, x, x_adv, layers=layers, batch_size=batch_size)
        rnd = layer_cosine_distances(model, x, noisy, layers=layers, batch_size=batch_size)
        names = list(adv)
        display = cls(
            names,
            {
                "clean vs adversarial": np.stack([adv[n] for n in names], axis=1),
                "clean vs random (same L2 norm)": np.stack([rnd[n] for n in names], axis=1),
            },
            title="Divergence from the clean input",
        )
        return display.plot(ax=ax, **plot_kwargs)

    @classmethod
    def from_squeezer(
        cls, model, squeezer, x, x_adv, *, layers=None, batch_size=128, ax=None, **plot_kwargs
    ):
        """Fig. 2: squeezed vs not squeezed, for clean and adversarial inputs.

        Args:
            model: the classifier (`keras.Model` or `DetectorModel`).
            squeezer: a callable `(B, ...) -> (B, ...)`, e.g. a squeezer layer.
            x: clean inputs `(N, ...)`.
            x_adv: adversarial inputs `(M, ...)` (not necessarily paired).
            layers: `DetectorModel` selectors. Defaults to `None`
                (`is_activation_layer`).
            batch_size: samples per batch. Defaults to `128`.
            ax: matplotlib `Axes`. Defaults to `None`.
            **plot_kwargs: passed to `plot`.

        Returns:
            The plotted display.
        """
        if not callable(squeezer):
            raise TypeError(
                "Argument `squeezer` must be callable (e.g. a squeezer layer). "
                f"Received: squeezer of type {type(squeezer).__name__}"
            )
        curves = {}
        for label, inputs in (("clean", x), ("adversarial", x_adv)):
            squeezed = apply_in_batches(squeezer, inputs, batch_size)
            d = layer_cosine_distances(
                model, inputs, squeezed, layers=layers, batch_size=batch_size
            )
            names = list(d)
            curves[label] = np.stack([d[n] for n in names], axis=1)
        name = getattr(squeezer, "name", type(squeezer).__name__)
        display = cls(names, curves, title=f"Squeezed ({name}) vs not squeezed")
        return display.plot(ax=ax, **plot_kwargs)
