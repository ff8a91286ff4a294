"""A keras-hub style `run_model_saving_test` for the library's saveable models.

One call checks what every saveable keras_advguard model promises: saved to
`.keras` (through its own `save`, atomic for the library's models), it
reloads with `keras.models.load_model(..., safe_mode=True)` as an instance of
the expected class, and gives the same outputs as the original on the same
input (every output of a dict or list structure).
"""

import os
import tempfile

import keras
import numpy as np


def _as_numpy(structure):
    return keras.tree.map_structure(keras.ops.convert_to_numpy, structure)


def run_model_saving_test(
    cls, init_kwargs=None, input_data=None, *, model=None, atol=1e-6, rtol=1e-6, folder=None
):
    """Save a model to `.keras`, reload it in safe mode and compare.

    Args:
        cls: the class the reloaded model must be an instance of.
        init_kwargs: constructor arguments: the model is `cls(**init_kwargs)`.
            Ignored when `model` is given.
        input_data: a batch for the model (numpy array).
        model: an already built model to save instead (e.g. what
            `keras_advguard.sanitize` returns).
        atol: absolute tolerance between the outputs.
        rtol: relative tolerance between the outputs.
        folder: where to write `model.keras`. Defaults to a temporary folder
            removed afterwards.

    Returns:
        The reloaded model.
    """
    if model is None:
        model = cls(**(init_kwargs or {}))
    expected = _as_numpy(model(input_data))
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(folder or scratch, "model.keras")
        model.save(path)
        restored = keras.models.load_model(path, safe_mode=True)
    if not isinstance(restored, cls):
        raise AssertionError(f"reloaded a {type(restored).__name__}, expected a {cls.__name__}")
    actual = _as_numpy(restored(input_data))
    keras.tree.assert_same_structure(actual, expected)
    for got, want in zip(keras.tree.flatten(actual), keras.tree.flatten(expected), strict=True):
        np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)
    return restored
