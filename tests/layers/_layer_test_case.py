"""A keras-hub style `run_layer_test` for the library's stateless layers.

One call checks what every keras_advguard layer promises:

1. `get_config` is the base layer config plus exactly the constructor
   arguments; it survives a JSON round trip, `from_config`, and
   `keras.saving.serialize_keras_object` under the registered name
   `"keras_advguard>ClassName"`.
2. The layer has no weights (unless `stateless=False`: a wrapper of variables).
3. Symbolic call (batch size `None`) and `compute_output_shape` give the
   expected shape; eager calls give the expected shape and
   `layer.compute_dtype`, for the full batch and a single sample.
4. `float16`, `float64` and `mixed_float16` policies give their compute
   dtype and outputs close to `float32`.
5. A tiny functional model around the layer, saved to `.keras` and reloaded
   with `keras.models.load_model(..., safe_mode=True)`, gives identical
   outputs and holds an instance of the class.
6. Optionally one training step of a small model through the layer gives a
   finite loss (the gradient flows in a compiled graph).
"""

import inspect
import json

import keras
import numpy as np

from tests._model_saving_test_case import run_model_saving_test

_PRECISIONS = ("float16", "float64", "mixed_float16")


def _named_params(function):
    params = inspect.signature(function).parameters
    return {
        name
        for name, p in params.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def _constructor_args(cls):
    # The layer's own arguments; the base Layer's (name, dtype, ...) travel
    # through **kwargs and the base config.
    return _named_params(cls.__init__) - _named_params(keras.layers.Layer.__init__)


def _check_config(cls, layer, init_kwargs):
    config = layer.get_config()
    base = keras.layers.Layer.get_config(layer)
    own = set(config) - set(base)
    expected = _constructor_args(cls)
    if own != expected:
        raise AssertionError(
            f"{cls.__name__}.get_config() adds {sorted(own)}, expected exactly the "
            f"constructor arguments {sorted(expected)}"
        )
    for name, value in init_kwargs.items():
        if config[name] != value:
            raise AssertionError(f"config[{name!r}]={config[name]!r}, expected {value!r}")

    text = json.dumps(config)
    restored = cls.from_config(json.loads(text))
    if restored.get_config() != json.loads(text):
        raise AssertionError(
            f"from_config round trip changed the config: {restored.get_config()} != {config}"
        )

    serialized = keras.saving.serialize_keras_object(layer)
    name = keras.saving.get_registered_name(cls)
    if name != f"keras_advguard>{cls.__name__}":
        raise AssertionError(f"registered name {name!r}")
    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    if type(revived) is not cls or revived.get_config() != config:
        raise AssertionError(f"serialize/deserialize gave {revived!r}")
    return restored


def _check_precision(cls, init_kwargs, input_data, reference, atol, rtol):
    for policy in _PRECISIONS:
        layer = cls(**init_kwargs, dtype=policy)
        compute = "float16" if policy == "mixed_float16" else policy
        if layer.compute_dtype != compute:
            raise AssertionError(f"{policy}: compute_dtype={layer.compute_dtype}")
        if policy == "mixed_float16" and layer.variable_dtype != "float32":
            raise AssertionError(f"{policy}: variable_dtype={layer.variable_dtype}")
        output = layer(input_data)
        dtype = keras.backend.standardize_dtype(output.dtype)
        if dtype != compute:
            raise AssertionError(f"{policy}: output dtype {dtype}, expected {compute}")
        tol = (atol, rtol) if compute == "float16" else (1e-6, 1e-6)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(output).astype("float64"),
            reference.astype("float64"),
            atol=tol[0],
            rtol=tol[1],
            err_msg=f"{cls.__name__} with dtype={policy} vs float32",
        )
        config = json.loads(json.dumps(layer.get_config()))
        if cls.from_config(config).compute_dtype != compute:
            raise AssertionError(f"{policy}: the dtype policy does not round trip")


def _check_saving(cls, init_kwargs, input_data):
    inputs = keras.Input(shape=input_data.shape[1:])
    outputs = cls(**init_kwargs)(inputs)
    model = keras.Model(inputs, outputs)
    loaded = run_model_saving_test(keras.Model, model=model, input_data=input_data, atol=0, rtol=0)
    if not any(isinstance(layer, cls) for layer in loaded.layers):
        raise AssertionError(f"the reloaded model holds no {cls.__name__}")


def _check_training(cls, init_kwargs, input_data):
    model = keras.Sequential(
        [
            keras.Input(shape=input_data.shape[1:]),
            keras.layers.Dense(input_data.shape[-1]),
            cls(**init_kwargs),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="sgd", loss="mse", jit_compile=False)
    targets = np.ones((len(input_data), 1), dtype="float32")
    loss = model.train_on_batch(input_data, targets)
    if not np.isfinite(loss):
        raise AssertionError(f"one training step gave loss={loss}")


def run_layer_test(
    cls,
    init_kwargs,
    input_data,
    expected_output_shape=None,
    expected_output=None,
    *,
    atol=1e-6,
    rtol=1e-6,
    half_atol=1e-2,
    half_rtol=1e-2,
    run_precision_checks=True,
    run_saving_check=True,
    run_training_check=True,
    stateless=True,
):
    """Run the standard checks on a stateless keras_advguard layer.

    Args:
        cls: the layer class.
        init_kwargs: constructor arguments (JSON-serializable values).
        input_data: float32 numpy input with a batch axis.
        expected_output_shape: the eager output shape. Defaults to the input
            shape.
        expected_output: if given, the expected float32 output.
        atol: absolute tolerance against `expected_output`.
        rtol: relative tolerance against `expected_output`.
        half_atol: absolute tolerance of float16 outputs against float32.
        half_rtol: relative tolerance of float16 outputs against float32.
        run_precision_checks: run the float16/float64/mixed_float16 checks.
        run_saving_check: run the `.keras` save and safe-mode reload.
        run_training_check: run one training step through the layer.
        stateless: check that the layer holds no weights. `False` for a
            layer wrapping variables (`DenseLogits`, `MedoidDistance`).

    Returns:
        The float32 eager output as a numpy array.
    """
    input_data = np.asarray(input_data, dtype="float32")
    if expected_output_shape is None:
        expected_output_shape = input_data.shape
    expected_output_shape = tuple(expected_output_shape)

    layer = cls(**init_kwargs)
    restored = _check_config(cls, layer, init_kwargs)

    symbolic = keras.KerasTensor((None,) + input_data.shape[1:], dtype="float32")
    symbolic_output = layer(symbolic)
    if tuple(symbolic_output.shape) != (None,) + expected_output_shape[1:]:
        raise AssertionError(f"symbolic output shape {symbolic_output.shape}")
    if keras.backend.standardize_dtype(symbolic_output.dtype) != layer.compute_dtype:
        raise AssertionError(f"symbolic output dtype {symbolic_output.dtype}")
    if tuple(layer.compute_output_shape(symbolic.shape)) != tuple(symbolic_output.shape):
        raise AssertionError("compute_output_shape differs from the symbolic output shape")
    if stateless and layer.weights:
        raise AssertionError(f"a stateless layer has weights: {layer.weights}")

    output = keras.ops.convert_to_numpy(layer(input_data))
    if output.shape != expected_output_shape:
        raise AssertionError(f"eager output shape {output.shape}")
    if str(output.dtype) != layer.compute_dtype:
        raise AssertionError(f"eager output dtype {output.dtype}")
    single = keras.ops.convert_to_numpy(layer(input_data[:1]))
    np.testing.assert_allclose(single, output[:1], atol=1e-6, rtol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(input_data)), output)
    if expected_output is not None:
        np.testing.assert_allclose(output, expected_output, atol=atol, rtol=rtol)

    if run_precision_checks:
        _check_precision(cls, init_kwargs, input_data, output, half_atol, half_rtol)
    if run_saving_check:
        _check_saving(cls, init_kwargs, input_data)
    if run_training_check:
        _check_training(cls, init_kwargs, input_data)
    return output
