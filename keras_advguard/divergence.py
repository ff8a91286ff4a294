"""Layer-wise divergence of a classifier's activations for two versions of its inputs.

Two analyses, one question: layer by layer, how far apart are a network's
activations for clean inputs and for perturbed (adversarial, noisy,
squeezed) versions of them?

- `layer_cosine_distances(model, x, x_other)`: per input and per layer, the
  cosine distance of the flattened outputs (internal-layer feature
  squeezing, Jonas & Evans, Fig. 1 and 2); `same_norm_noise` draws the
  random inputs of the same perturbation norm that Fig. 1 compares with.
- `layer_divergence(model, sanitized_model, x_clean, x_adv, layers)`: per
  layer, the normalized L2 distance `||a(x_adv) - a(x)|| / ||a(x)||` before
  and after sanitizing (the sanitizer paper's Fig. 7), as a `LayerDivergence`.

`keras_advguard.plots.LayerDivergenceDisplay` draws both (`metric="cosine"`
or `metric="relative_l2"`). This module sits on floor 2 beside
`detector_model.py` and reaches inside models only through `DetectorModel`;
TensorFlow and Keras are imported inside the functions that need them.
"""

import dataclasses

import numpy as np

from keras_advguard import _activations, _validation
from keras_advguard._fingerprint import unwrap_model


def _taps(model, layers):
    from keras_advguard.detector_model import DetectorModel

    selectors = _activations.is_activation_layer if layers is None else layers
    return DetectorModel(unwrap_model(model), layers=selectors, pooling="flatten")


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

    x = _activations.check_inputs("x", x)
    x_other = _activations.check_inputs("x_other", x_other)
    _validation.check_same_shape("x", x, "x_other", x_other)
    _validation.check_positive_int("batch_size", batch_size)
    taps = _taps(model, layers)

    spec = tf.TensorSpec((None,) + x.shape[1:], "float32")

    @tf.function(input_signature=[spec, spec])  # one trace for every batch size
    def distances(xa, xb):
        acts_a = taps(xa, training=False)["activations"]
        acts_b = taps(xb, training=False)["activations"]
        return {p: _activations.cosine_distance(acts_a[p], acts_b[p]) for p in taps.tap_names}

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
    x = _activations.check_inputs("x", x)
    x_adv = _activations.check_inputs("x_adv", x_adv)
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


@dataclasses.dataclass(eq=False)
class LayerDivergence:
    """Per-layer normalized distances between adversarial and clean activations.

    Attributes:
        layers: the layer paths of the undefended model, in graph order.
        sanitized_layers: the layers tapped in the sanitized model, one per
            entry of `layers` (the sanitizer that follows the layer, or the
            layer itself when it is not sanitized).
        before: float64 array `(L,)`, mean over the pairs of
            `||a(x_adv) - a(x)||_2 / ||a(x)||_2` in the undefended model.
        after: float64 array `(L,)`, the same in the sanitized model.
        before_std: float64 array `(L,)`, standard deviation over the pairs.
        after_std: float64 array `(L,)`.
        n_pairs: number of pairs whose distance entered each mean, int array
            `(2, L)` (row 0 before, row 1 after): a pair whose clean
            activation is all zeros has no normalized distance and is left
            out.
    """

    layers: list
    sanitized_layers: list
    before: np.ndarray
    after: np.ndarray
    before_std: np.ndarray
    after_std: np.ndarray
    n_pairs: np.ndarray


def layer_divergence(
    model,
    sanitized_model,
    x_clean,
    x_adv,
    layers,
    *,
    sanitized_layers=None,
    batch_size=128,
):
    """The paper's Fig. 7: normalized activation distance per layer.

    For every pair `(x, x_adv)` and every layer `l`,

        d_l(x, x_adv) = ||a_l(x_adv) - a_l(x)||_2 / ||a_l(x)||_2

    over the layer's whole (flattened) output, computed in `model` (before
    sanitizing) and in `sanitized_model` (after: there `a_l` is the output
    of the sanitizer that follows layer `l`, i.e. what the next layer
    receives). Returns the mean and standard deviation over the pairs.

    Args:
        model: the undefended Keras model.
        sanitized_model: the model `sanitize(model, ...)` returned (the plain
            or the BPDA variant; their forward passes agree).
        x_clean: clean inputs `(N, ...)`.
        x_adv: their adversarial versions, same shape, same order.
        layers: selector(s) of the layers of `model` to measure (names,
            classes, predicates, presets, as `resolve_layers` accepts).
        sanitized_layers: the layer paths of `sanitized_model` to compare
            with, one per layer selected by `layers`. Defaults to `None`:
            for each layer path `p`, the sanitizer `sanitizer_name(p)`
            (`"conv1_sanitizer"`) when `sanitized_model` has it, else `p`.
        batch_size: inputs per forward pass. Defaults to `128`.

    Returns:
        A `LayerDivergence`.

    Raises:
        ValueError: `x_clean` and `x_adv` of different shapes or empty,
            `sanitized_layers` of the wrong length, or an unknown layer.
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> from keras_advguard.layers import MaskSanitizer
        >>> from keras_advguard.sanitize import sanitize
        >>> model = keras.Sequential([keras.Input((3,)),
        ...     keras.layers.Dense(4, activation="relu", name="fc1"),
        ...     keras.layers.Dense(2, name="out")])
        >>> defended = sanitize(model, "fc1", MaskSanitizer(alpha=0.0))
        >>> x = np.ones((2, 3), "float32")
        >>> result = layer_divergence(model, defended, x, x + 0.1, "fc1")
        >>> result.sanitized_layers, bool(np.allclose(result.before, result.after))
        (['fc1_sanitizer'], True)
    """
    from keras_advguard._naming import sanitizer_name
    from keras_advguard.detector_model import DetectorModel, resolve_layers

    x_clean = _validation.check_array("x_clean", x_clean, min_ndim=2, dtype_kind="fiu")
    x_adv = _validation.check_array("x_adv", x_adv, min_ndim=2, dtype_kind="fiu")
    _validation.check_same_shape(
        "x_clean", x_clean, "x_adv", x_adv, hint=" (pairs in the same order)"
    )
    _validation.check_positive_int("batch_size", batch_size)
    paths = resolve_layers(model, layers)
    available = set(resolve_layers(sanitized_model, lambda layer: True))
    if sanitized_layers is None:
        sanitized_layers = [
            sanitizer_name(p) if sanitizer_name(p) in available else p for p in paths
        ]
    else:
        _validation.check_type(
            "sanitized_layers", sanitized_layers, (list, tuple), "a list of layer paths"
        )
        sanitized_layers = list(sanitized_layers)
        if len(sanitized_layers) != len(paths):
            raise ValueError(
                "Argument `sanitized_layers` must name one layer of the sanitized "
                f"model per selected layer ({len(paths)}: {paths}). "
                f"Received: sanitized_layers={sanitized_layers}"
            )
    # Resolve each sanitized tap separately: graph order may differ.
    for path in sanitized_layers:
        resolve_layers(sanitized_model, path)

    before = _distances(
        DetectorModel(model, layers=paths, pooling=None), paths, x_clean, x_adv, batch_size
    )
    after = _distances(
        DetectorModel(sanitized_model, layers=sorted(set(sanitized_layers)), pooling=None),
        sanitized_layers,
        x_clean,
        x_adv,
        batch_size,
    )
    before_mean, before_std, before_n = mean_std_over_pairs(before)
    after_mean, after_std, after_n = mean_std_over_pairs(after)
    return LayerDivergence(
        layers=paths,
        sanitized_layers=sanitized_layers,
        before=before_mean,
        after=after_mean,
        before_std=before_std,
        after_std=after_std,
        n_pairs=np.stack([before_n, after_n]),
    )


def mean_std_over_pairs(per_pair):
    """Per-layer mean and standard deviation of distances, undefined pairs left out.

    A pair whose distance is undefined (NaN: a normalized distance to an
    all-zero clean activation) does not enter its layer's statistics; a
    layer with no finite distance gets NaN.

    Args:
        per_pair: the distances of each layer, a list of `L` 1-D arrays
            `(N,)` or an array `(N, L)` (one column per layer).

    Returns:
        A tuple `(mean, std, n)`: float64 arrays `(L,)` (numpy's `ddof=0`
        standard deviation) and the int64 count of finite pairs per layer.

    Example:

        >>> import numpy as np
        >>> mean, std, n = mean_std_over_pairs(np.array([[1.0, np.nan], [3.0, np.nan]]))
        >>> mean.tolist(), std.tolist(), n.tolist()
        ([2.0, nan], [1.0, nan], [2, 0])
    """
    if isinstance(per_pair, np.ndarray) and per_pair.ndim == 2:
        per_pair = list(per_pair.T)
    columns = [np.asarray(d, dtype=np.float64) for d in per_pair]
    defined = [bool(np.isfinite(d).any()) for d in columns]
    mean = np.array(
        [np.nanmean(d) if ok else np.nan for d, ok in zip(columns, defined, strict=True)]
    )
    std = np.array([np.nanstd(d) if ok else np.nan for d, ok in zip(columns, defined, strict=True)])
    n = np.array([int(np.isfinite(d).sum()) for d in columns], dtype=np.int64)
    return mean, std, n


def _distances(detector, taps, x_clean, x_adv, batch_size):
    """Per-pair normalized distances for each tap: a list of `(N,)` arrays.

    Both inputs go through the library's one activation pass
    (`DetectorModel.iter_activations`: checked batches, bounded memory, and a
    compiled call that also runs under a `tf.distribute` strategy).
    """
    out = [[] for _ in taps]
    batches = zip(
        detector.iter_activations(x_clean, batch_size=batch_size),
        detector.iter_activations(x_adv, batch_size=batch_size),
        strict=True,
    )
    for (clean, _), (adv, _) in batches:
        for i, tap in enumerate(taps):
            a = np.asarray(clean["activations"][tap], dtype=np.float64)
            b = np.asarray(adv["activations"][tap], dtype=np.float64)
            a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
            norm = np.linalg.norm(a, axis=1)
            diff = np.linalg.norm(b - a, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[i].append(np.where(norm > 0, diff / np.where(norm > 0, norm, 1.0), np.nan))
    return [np.concatenate(d) for d in out]
