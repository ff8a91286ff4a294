import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.detectors import MaxSoftmaxDetector


def _model(softmax):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(4, activation="softmax" if softmax else None, name="out"),
        ]
    )


def _numpy_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("softmax", [True, False])
def test_score_is_one_minus_the_top_probability(softmax):
    model = _model(softmax)
    x = np.random.default_rng(1).normal(size=(30, 5)).astype("float32")
    out = np.asarray(model(x), dtype=np.float64)
    p = out if softmax else _numpy_softmax(out)  # a logits model: softmax taken here
    expected = 1.0 - p.max(axis=1)
    detector = MaxSoftmaxDetector(model)
    np.testing.assert_allclose(detector.score(x, batch_size=7), expected, atol=1e-6)
    np.testing.assert_allclose(detector.score_tensor(tf.constant(x)).numpy(), expected, atol=1e-6)
    assert detector.score_tensor_kind == "exact" and detector.supervised is False


def test_gradient_matches_finite_differences():
    model = _model(False)
    detector = MaxSoftmaxDetector(model)
    x = tf.constant(np.random.default_rng(2).normal(size=(1, 5)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = detector.score_tensor(x)
    gradient = tape.gradient(value, x).numpy()[0]
    h = 1e-3
    numeric = []
    for i in range(5):
        step = np.zeros((1, 5), "float32")
        step[0, i] = h
        plus = detector.score(x.numpy() + step)[0]
        minus = detector.score(x.numpy() - step)[0]
        numeric.append((plus - minus) / (2 * h))
    np.testing.assert_allclose(gradient, numeric, atol=2e-3)


def test_bad_model():
    with pytest.raises(TypeError, match="model"):
        MaxSoftmaxDetector(lambda x: x)
