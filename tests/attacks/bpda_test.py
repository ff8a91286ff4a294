import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.attacks import bpda


def _value_and_grad(fn, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(y * tf.range(1.0, 1.0 + tf.size(y, tf.float32)))
    return y.numpy(), tape.gradient(loss, x)


def test_forward_exact_backward_identity():
    x = np.array([0.2, 0.7, 1.4, -0.6], dtype="float32")
    y, grad = _value_and_grad(bpda(keras.ops.round), x)
    np.testing.assert_array_equal(y, np.round(x))
    np.testing.assert_array_equal(grad.numpy(), [1.0, 2.0, 3.0, 4.0])
    # Without BPDA, rounding blocks the gradient.
    _, blocked = _value_and_grad(tf.round, x)
    assert blocked is None or not np.any(blocked.numpy())


def test_backward_fn_replaces_the_gradient():
    """Max pooling forward, average pooling's gradient backward (shape changes)."""
    x = np.random.default_rng(0).random((1, 4, 4, 1), dtype=np.float32)
    fn = bpda(keras.layers.MaxPooling2D(2), backward_fn=keras.layers.AveragePooling2D(2))
    y, grad = _value_and_grad(fn, x)
    np.testing.assert_allclose(y, keras.layers.MaxPooling2D(2)(x).numpy())
    _, expected = _value_and_grad(keras.layers.AveragePooling2D(2), x)
    np.testing.assert_allclose(grad.numpy(), expected.numpy())


def test_inside_tf_function_and_a_functional_model(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, name="dense")(bpda(keras.ops.round)(inputs))
    model = keras.Model(inputs, outputs)
    x = tf.constant(np.random.default_rng(0).random((3, 4), dtype=np.float32))

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(model(x))
        return tape.gradient(y, x)

    kernel = model.get_layer("dense").kernel.numpy()
    np.testing.assert_allclose(grad(x).numpy(), np.tile(kernel.sum(1), (3, 1)), rtol=1e-6)
    np.testing.assert_allclose(model(x).numpy(), np.round(x.numpy()) @ kernel, rtol=1e-6, atol=1e-6)
    # The functional model saves and loads in safe mode (no Lambda layer).
    model.save(tmp_path / "bpda.keras")
    loaded = keras.models.load_model(tmp_path / "bpda.keras")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_shape_change_without_backward_fn_raises():
    fn = bpda(keras.layers.MaxPooling2D(2))
    with pytest.raises(ValueError, match=r"Pass a `backward_fn`"):
        fn(tf.zeros((1, 4, 4, 1)))


def test_not_callable_raises():
    with pytest.raises(TypeError, match=r"`forward_fn` must be callable"):
        bpda(3)
    with pytest.raises(TypeError, match=r"`backward_fn` must be callable"):
        bpda(tf.round, backward_fn="identity")
