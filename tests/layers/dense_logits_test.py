import keras
import numpy as np
import pytest

from keras_advguard.layers import DenseLogits
from tests._model_saving_test_case import run_model_saving_test
from tests.layers._layer_test_case import run_layer_test


def _dense_config(units=3):
    # Seeded initializers: every deserialized copy holds the same weights.
    dense = keras.layers.Dense(
        units,
        activation="softmax",
        kernel_initializer=keras.initializers.RandomNormal(seed=1),
        bias_initializer=keras.initializers.RandomUniform(-1.0, 1.0, seed=2),
        name="predictions",
    )
    return keras.saving.serialize_keras_object(dense)


def test_dense_logits_standard_layer_checks():
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    config = _dense_config()
    reference = keras.saving.deserialize_keras_object(config)
    reference.build((None, 4))
    kernel, bias = (np.asarray(w, dtype="float64") for w in reference.weights)
    expected = x.astype("float64") @ kernel + bias  # numpy, before the softmax

    run_layer_test(
        DenseLogits,
        {"dense": config},
        x,
        expected_output_shape=(6, 3),
        expected_output=expected,
        atol=1e-5,
        rtol=1e-5,
        stateless=False,
    )


def test_dense_logits_shares_the_dense_variables_and_inverts_its_softmax():
    dense = keras.layers.Dense(3, activation="softmax")
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    probabilities = np.asarray(dense(x))
    layer = DenseLogits(dense)
    logits = np.asarray(layer(x))
    assert [id(w) for w in layer.weights] == [id(w) for w in dense.weights]
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        shifted / shifted.sum(axis=1, keepdims=True), probabilities, atol=1e-6
    )


def test_dense_logits_refuses_other_layers():
    with pytest.raises(TypeError, match="dense"):
        DenseLogits(keras.layers.Conv2D(2, 3))


def test_dense_logits_keeps_its_registered_name():
    # Users' `.keras` files name the class "keras_advguard>DenseLogits".
    assert keras.saving.get_registered_name(DenseLogits) == "keras_advguard>DenseLogits"
    assert keras.saving.get_registered_object("keras_advguard>DenseLogits") is DenseLogits
    from keras_advguard import detector_model

    assert detector_model.DenseLogits is DenseLogits


def test_a_model_with_dense_logits_saves_and_reloads_in_safe_mode(tmp_path):
    # The wrapped Dense lives only inside DenseLogits here: a Dense also
    # called in the same graph would be serialized twice (DetectorModel never
    # saves DenseLogits itself: it rebuilds it from the base model).
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(6, activation="relu", name="hidden")(inputs)
    dense = keras.layers.Dense(3, activation="softmax", name="predictions")
    model = keras.Model(inputs, DenseLogits(dense, name="logits")(hidden))
    x = np.random.default_rng(2).normal(size=(5, 4)).astype("float32")
    loaded = run_model_saving_test(keras.Model, model=model, input_data=x, folder=str(tmp_path))
    assert isinstance(loaded.get_layer("logits"), DenseLogits)
