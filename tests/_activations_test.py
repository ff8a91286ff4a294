"""keras_advguard._activations: is_activation_layer, cosine_distance, apply_in_batches."""

import keras
import numpy as np
import scipy.spatial.distance
import tensorflow as tf

from keras_advguard._activations import apply_in_batches, cosine_distance, is_activation_layer
from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer


def test_cosine_distance_matches_scipy_and_zero_conventions():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 3, 4))
    b = rng.normal(size=(6, 3, 4))
    b[1] = 3.0 * a[1]  # same direction
    b[2] = -a[2]  # opposite
    expected = [
        scipy.spatial.distance.cosine(u.ravel(), v.ravel()) for u, v in zip(a, b, strict=True)
    ]
    got = keras.ops.convert_to_numpy(cosine_distance(a, b))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert abs(got[1]) < 1e-6 and abs(got[2] - 2.0) < 1e-6
    zeros = np.zeros((2, 4))
    other = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(cosine_distance(zeros, other)), [0.0, 1.0]
    )


def test_cosine_distance_precision_for_tiny_distances():
    a = np.random.default_rng(1).random((1, 10_000))
    b = a + 1e-5 * np.random.default_rng(2).random((1, 10_000))
    exact = 1.0 - np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b))  # float64
    got = float(keras.ops.convert_to_numpy(cosine_distance(a, b))[0])
    assert abs(got - exact) < 1e-3 * exact + 1e-12


def test_cosine_distance_gradient_finite_at_zero_vectors():
    a = tf.zeros((2, 3))
    b = tf.constant([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        total = tf.reduce_sum(cosine_distance(a, b))
    for grad in tape.gradient(total, [a, b]):
        assert np.all(np.isfinite(grad.numpy()))


def test_is_activation_layer():
    assert is_activation_layer(keras.layers.Conv2D(2, 3, activation="relu"))
    assert is_activation_layer(keras.layers.ReLU())
    assert is_activation_layer(keras.layers.Activation("tanh"))
    assert not is_activation_layer(keras.layers.Activation("softmax"))
    assert not is_activation_layer(keras.layers.Dense(3))
    assert not is_activation_layer(keras.layers.Flatten())
    assert not is_activation_layer(keras.layers.Dense(3, activation="softmax"))


def test_apply_in_batches():
    x = np.random.default_rng(7).random((10, 3)).astype("float32")
    np.testing.assert_array_equal(
        apply_in_batches(BitDepthSqueezer(1), x, batch_size=3), np.rint(x)
    )
