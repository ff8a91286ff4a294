"""EpsilonRamp: the radius schedule, batch by batch, resumed, unknown steps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.training import AdversarialModel, EpsilonRamp


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(self.model.epsilon.numpy()))


def _robust(eps=0.4, ramp_epochs=0):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    robust = AdversarialModel(model, eps=eps, steps=1, ramp_epochs=ramp_epochs)
    robust.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return robust


X = np.full((12, 3), 0.5, dtype="float32")
Y = np.arange(12) % 2


def test_linear_per_batch_then_flat():
    robust, record = _robust(ramp_epochs=2), _Record()
    robust.fit(X, Y, epochs=3, batch_size=4, callbacks=[record], verbose=0)
    # 3 batches per epoch, 6 ramp batches: 0.4 * k / 6 for k = 1..6, then 0.4
    expected = [0.4 * k / 6 for k in range(1, 7)] + [0.4] * 3
    np.testing.assert_allclose(record.values, expected, rtol=1e-6)


def test_starts_at_zero_and_resumes_with_initial_epoch():
    robust, record = _robust(ramp_epochs=4), _Record()
    assert float(robust.epsilon.numpy()) == 0.0
    robust.fit(X, Y, epochs=3, initial_epoch=2, batch_size=6, callbacks=[record], verbose=0)
    np.testing.assert_allclose(record.values, [0.4 * 2.5 / 4, 0.4 * 3 / 4], rtol=1e-6)


def test_explicit_callback_replaces_the_default():
    robust, record = _robust(ramp_epochs=100), _Record()
    robust.fit(X, Y, epochs=1, batch_size=12, callbacks=[EpsilonRamp(1), record], verbose=0)
    np.testing.assert_allclose(record.values, [0.4], rtol=1e-6)


def test_unknown_steps_per_epoch_ramps_per_epoch():
    def gen():
        for i in range(12):
            yield X[i], Y[i]

    spec = (tf.TensorSpec((3,), tf.float32), tf.TensorSpec((), tf.int64))
    data = tf.data.Dataset.from_generator(gen, output_signature=spec).batch(4)
    robust, record = _robust(ramp_epochs=2), _Record()
    robust.fit(data, epochs=2, callbacks=[record], verbose=0)
    # the first epoch does not know its length; the second does (Keras learns it)
    assert record.values[:3] == pytest.approx([0.2, 0.2, 0.2])
    assert record.values[-1] == pytest.approx(0.4)


def test_no_ramp_is_the_full_radius():
    robust, record = _robust(ramp_epochs=0), _Record()
    robust.fit(X, Y, epochs=1, batch_size=6, callbacks=[record], verbose=0)
    np.testing.assert_allclose(record.values, [0.4, 0.4], rtol=1e-6)


@pytest.mark.parametrize("value, error", [(0, ValueError), (1.5, TypeError)])
def test_bad_ramp_epochs(value, error):
    with pytest.raises(error, match="ramp_epochs"):
        EpsilonRamp(value)


def test_needs_an_adversarial_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="epsilon"):
        model.fit(X, Y, callbacks=[EpsilonRamp(2)], verbose=0)
