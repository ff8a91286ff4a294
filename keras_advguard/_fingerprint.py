"""Fingerprints of a model's weights, to tie saved statistics to one classifier (floor 1).

A detector's thresholds, medoids or training activations mean something only
for the classifier they were computed on. Every detector stores
`weights_fingerprint(model)` when it is saved and refuses, on load, a model
whose fingerprint differs.
"""

import hashlib

import numpy as np


def unwrap_model(model):
    """The classifier behind a wrapper that exposes it as `base_model`.

    `DetectorModel` (and detectors built on it) share the weights of the
    model they wrap; the fingerprint is that of the wrapped classifier, so a
    detector fitted through a `DetectorModel` still accepts the plain model.
    Duck-typed (no import of `DetectorModel`: this module is on floor 1).
    """
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        inner = getattr(model, "base_model", None)
        if inner is None or inner is model:
            break
        model = inner
    return model


def weights_fingerprint(model):
    """SHA-256 of a model's weights: values, shapes and dtypes, in order.

    Two models have the same fingerprint iff they hold the same weights in
    the same order (the architecture otherwise is not hashed). A wrapper with
    a `base_model` attribute (`DetectorModel`) is fingerprinted as the model
    it wraps.

    Args:
        model: a built `keras.Model` (or anything with a `weights` list).

    Returns:
        The hex digest, a string of 64 characters.

    Example:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> len(weights_fingerprint(model))
        64
        >>> weights_fingerprint(model) == weights_fingerprint(model)
        True
    """
    model = unwrap_model(model)
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight))
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def describe_model(model):
    """A JSON description of `model`: name, input shape and weights fingerprint.

    Returns:
        A dict `{"name": str, "input_shape": list, "weights_sha256": str}`.
    """
    model = unwrap_model(model)
    inputs = getattr(model, "inputs", None) or []
    shape = list(inputs[0].shape[1:]) if inputs else None
    return {
        "name": getattr(model, "name", None),
        "input_shape": shape,
        "weights_sha256": weights_fingerprint(model),
    }
