"""AdversarialModel: the attack, the objectives, fit, saving, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.datasets import load_dataset
from keras_advguard.training import AdversarialModel


def _linear(n_in=6, n_out=4, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((n_in,)), keras.layers.Dense(n_out, activation="softmax", name="out")]
    )


def _digits_mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _numpy_pgd_linear(w, b, x, y, eps, step, steps, clip=(0.0, 1.0)):
    """Sign-gradient PGD on the cross-entropy of a linear softmax model, by hand."""
    onehot = np.eye(w.shape[1])[y]
    xa = x.copy()
    for _ in range(steps):
        p = _softmax(xa @ w + b)
        grad = (p - onehot) @ w.T  # d CE / d x
        xa = np.clip(np.clip(xa + step * np.sign(grad), x - eps, x + eps), *clip)
    return xa


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# --------------------------------------------------------------------------
# The attack
# --------------------------------------------------------------------------


def test_pgd_attack_matches_hand_computed_pgd():
    model = _linear()
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, size=(16, 6)).astype("float32")
    y = rng.integers(0, 4, size=16)
    robust = AdversarialModel(model, eps=0.1, steps=5, step_size=0.03, random_start=False)
    w, b = (v.numpy().astype("float64") for v in model.get_layer("out").weights)
    expected = _numpy_pgd_linear(w, b, x.astype("float64"), y, 0.1, 0.03, 5)
    np.testing.assert_allclose(robust.generate(x, y).numpy(), expected, atol=1e-5)


def test_pgd_attack_matches_the_library_pgd():
    from keras_advguard.attacks import pgd

    model = _linear(seed=1)
    x = np.random.default_rng(1).uniform(0.1, 0.9, size=(12, 6)).astype("float32")
    y = np.arange(12) % 4
    robust = AdversarialModel(model, eps=0.2, steps=7, step_size=0.05, random_start=False)
    reference = pgd(model, x, eps=0.2, eps_iter=0.05, nb_iter=7, rand_init=False, y=y)
    np.testing.assert_allclose(robust.generate(x, y).numpy(), reference.x_adv, atol=1e-5)


@pytest.mark.parametrize("method", ["pgd", "trades"])
@pytest.mark.parametrize("norm", ["inf", 2])
def test_attack_stays_in_the_ball_and_clip_range(method, norm):
    model = _linear()
    x = np.random.default_rng(2).uniform(size=(20, 6)).astype("float32")
    y = np.arange(20) % 4
    robust = AdversarialModel(model, method=method, eps=0.25, steps=4, norm=norm)
    x_adv = robust.generate(x, y).numpy()
    delta = (x_adv - x).reshape(20, -1)
    size = np.abs(delta).max(axis=1) if norm == "inf" else np.linalg.norm(delta, axis=1)
    assert size.max() <= 0.25 + 1e-5
    assert size.max() > 0.1  # it moved
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_attack_raises_the_loss():
    model = _linear(seed=3)
    x = np.random.default_rng(3).uniform(size=(64, 6)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)  # points it gets right
    robust = AdversarialModel(model, eps=0.3, steps=10)
    p_clean = model.predict(x, verbose=0)[np.arange(64), y]
    p_adv = model.predict(robust.generate(x, y).numpy(), verbose=0)[np.arange(64), y]
    assert np.mean(p_adv < p_clean) > 0.95


def test_step_scales_with_the_current_radius():
    model = _linear()
    x = np.full((8, 6), 0.5, dtype="float32")
    y = np.arange(8) % 4
    robust = AdversarialModel(model, eps=0.3, steps=1, step_size=0.3, random_start=False)
    robust.epsilon.assign(0.1)
    delta = np.abs(robust.generate(x, y).numpy() - x)
    np.testing.assert_allclose(delta.max(), 0.1, atol=1e-6)


def test_one_hot_labels_give_the_same_attack():
    model = _linear()
    x = np.random.default_rng(4).uniform(size=(10, 6)).astype("float32")
    y = np.arange(10) % 4
    robust = AdversarialModel(model, eps=0.2, steps=3, random_start=False)
    np.testing.assert_allclose(
        robust.generate(x, y).numpy(),
        robust.generate(x, np.eye(4, dtype="float32")[y]).numpy(),
        atol=1e-6,
    )


# --------------------------------------------------------------------------
# The objectives, by hand
# --------------------------------------------------------------------------


def _ce(p, y):
    return -np.log(p[np.arange(len(y)), y])


def test_pgd_objective_matches_numpy():
    model = _linear()
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(16, 6)).astype("float32")
    x_adv = np.clip(x + rng.uniform(-0.2, 0.2, x.shape), 0, 1).astype("float32")
    y = rng.integers(0, 4, size=16)
    robust = AdversarialModel(model, eps=0.2, clean_weight=0.3)
    robust.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    p, p_adv = model.predict(x, verbose=0), model.predict(x_adv, verbose=0)
    expected = 0.3 * _ce(p, y).mean() + 0.7 * _ce(p_adv, y).mean()
    np.testing.assert_allclose(robust.adversarial_loss(x, y, x_adv).numpy(), expected, rtol=1e-5)


def test_trades_objective_matches_numpy():
    model = _linear()
    rng = np.random.default_rng(6)
    x = rng.uniform(size=(16, 6)).astype("float32")
    x_adv = np.clip(x + rng.uniform(-0.3, 0.3, x.shape), 0, 1).astype("float32")
    y = rng.integers(0, 4, size=16)
    robust = AdversarialModel(model, method="trades", eps=0.3, beta=6.0)
    robust.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    p = model.predict(x, verbose=0).astype("float64")
    q = model.predict(x_adv, verbose=0).astype("float64")
    kl = np.sum(p * (np.log(p) - np.log(q)), axis=1)
    expected = _ce(p, y).mean() + 6.0 * kl.mean()
    np.testing.assert_allclose(robust.adversarial_loss(x, y, x_adv).numpy(), expected, rtol=1e-5)


def test_train_step_reports_the_loss_on_its_own_pgd_examples():
    model = _linear(seed=7)
    rng = np.random.default_rng(7)
    x = rng.uniform(0.2, 0.8, size=(32, 6)).astype("float32")
    y = rng.integers(0, 4, size=32)
    robust = AdversarialModel(model, eps=0.1, steps=4, step_size=0.04, random_start=False)
    robust.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    w, b = (v.numpy().astype("float64") for v in model.get_layer("out").weights)
    x_adv = _numpy_pgd_linear(w, b, x.astype("float64"), y, 0.1, 0.04, 4)
    expected = _ce(_softmax(x_adv @ w + b), y).mean()
    loss = robust.train_on_batch(x, y, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    assert not np.allclose(model.get_layer("out").weights[0].numpy(), w)  # it trained


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_eps_zero_is_standard_training(method, digits):
    (x, y), _ = digits
    x, y = x[:256], y[:256]
    plain = _digits_mlp(seed=0)
    plain.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    h_plain = plain.fit(x, y, epochs=2, batch_size=64, shuffle=False, verbose=0)
    robust = AdversarialModel(_digits_mlp(seed=0), method=method, eps=0.0, steps=2)
    robust.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    h_robust = robust.fit(x, y, epochs=2, batch_size=64, shuffle=False, verbose=0)
    np.testing.assert_allclose(h_robust.history["loss"], h_plain.history["loss"], rtol=1e-5)
    for a, b in zip(robust.model.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


# --------------------------------------------------------------------------
# fit: numpy, tf.data, callbacks, validation, mixed precision
# --------------------------------------------------------------------------


class _Epsilons(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(self.model.epsilon.numpy()))


def test_fit_numpy_with_callbacks_and_validation(digits, tmp_path):
    (x, y), (x_test, y_test) = digits
    robust = AdversarialModel(_digits_mlp(), eps=0.1, steps=2, ramp_epochs=2)
    robust.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    record = _Epsilons()
    log = tmp_path / "log.csv"
    history = robust.fit(
        x,
        y,
        epochs=1,
        batch_size=128,
        validation_data=(x_test, y_test),
        callbacks=[record, keras.callbacks.CSVLogger(str(log))],
        verbose=0,
    )
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.history)
    steps = int(np.ceil(len(x) / 128))
    expected = [0.1 * (b + 1) / steps / 2 for b in range(steps)]
    np.testing.assert_allclose(record.values, expected, rtol=1e-5)
    assert log.read_text().count("\n") == 2
    # validation is clean accuracy of the wrapped classifier
    pred = np.argmax(robust.model.predict(x_test, verbose=0), axis=1)
    np.testing.assert_allclose(history.history["val_accuracy"][0], np.mean(pred == y_test), 1e-6)


def test_fit_tf_data(digits):
    (x, y), (x_test, y_test) = digits
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(512, seed=0).batch(128)
    val = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(128)
    robust = AdversarialModel(_digits_mlp(), method="trades", eps=0.1, steps=2)
    robust.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = robust.fit(train, epochs=1, validation_data=val, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and "val_accuracy" in history.history


def test_mixed_precision_uses_loss_scaling(digits):
    (x, y), _ = digits
    keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
            keras.layers.Activation("softmax", dtype="float32"),
        ]
    )
    robust = AdversarialModel(model, eps=0.1, steps=2)
    robust.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert isinstance(robust.optimizer, keras.optimizers.LossScaleOptimizer)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = robust.fit(x[:256], y[:256], epochs=2, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][1] < history.history["loss"][0]
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
    x_adv = robust.generate(x[:8], y[:8]).numpy()
    assert x_adv.dtype == np.float32 and np.abs(x_adv - x[:8]).max() <= 0.1 + 1e-6


# --------------------------------------------------------------------------
# Robustness: the point of it all
# --------------------------------------------------------------------------


def test_pgd_training_is_more_robust_than_standard_training(digits):
    from keras_advguard.attacks import pgd

    (x, y), (x_test, y_test) = digits
    eps = 0.2

    def robust_accuracy(model):
        result = pgd(model, x_test, eps=eps, eps_iter=eps / 8, nb_iter=20, y=y_test)
        return np.mean(result.y_pred_after == y_test)

    standard = _digits_mlp(seed=0)
    standard.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    standard.fit(x, y, epochs=15, batch_size=64, verbose=0)
    robust = AdversarialModel(_digits_mlp(seed=0), eps=eps, steps=5, ramp_epochs=3)
    robust.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    robust.fit(x, y, epochs=15, batch_size=64, verbose=0)
    acc_standard, acc_robust = robust_accuracy(standard), robust_accuracy(robust.unwrap())
    assert acc_robust > acc_standard + 0.2, (acc_standard, acc_robust)


# --------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------


def test_keras_round_trip_of_wrapper_and_plain_model(digits, tmp_path):
    (x, y), (x_test, _) = digits
    robust = AdversarialModel(
        _digits_mlp(), method="trades", eps=0.15, steps=3, beta=3.0, ramp_epochs=4, norm=2
    )
    robust.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    robust.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    robust.save(tmp_path / "robust.keras")
    robust.unwrap().save(tmp_path / "plain.keras")

    loaded = keras.models.load_model(tmp_path / "robust.keras", safe_mode=True)
    plain = keras.models.load_model(tmp_path / "plain.keras", safe_mode=True)
    assert isinstance(loaded, AdversarialModel)
    config, loaded_config = robust.get_config(), loaded.get_config()
    assert config.pop("model")["class_name"] == loaded_config.pop("model")["class_name"]
    assert loaded_config == config
    assert float(loaded.epsilon.numpy()) == pytest.approx(float(robust.epsilon.numpy()))
    expected = robust.predict(x_test, verbose=0)
    np.testing.assert_array_equal(loaded.predict(x_test, verbose=0), expected)
    np.testing.assert_array_equal(loaded.unwrap().predict(x_test, verbose=0), expected)
    np.testing.assert_array_equal(plain.predict(x_test, verbose=0), expected)
    assert not isinstance(plain, AdversarialModel)
    # the loaded wrapper resumes training (optimizer state restored)
    assert int(loaded.optimizer.iterations.numpy()) == int(robust.optimizer.iterations.numpy())
    loaded.fit(x[:128], y[:128], epochs=2, initial_epoch=1, batch_size=64, verbose=0)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"eps": -0.1}, ValueError, "eps"),
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 2.5}, TypeError, "steps"),
        ({"method": "fgsm"}, ValueError, "method"),
        ({"clip_min": 1.0, "clip_max": 0.0}, ValueError, "clip_min"),
        ({"clean_weight": 1.5}, ValueError, "clean_weight"),
        ({"beta": -1.0}, ValueError, "beta"),
        ({"step_size": 0.0}, ValueError, "step_size"),
        ({"ramp_epochs": -1}, ValueError, "ramp_epochs"),
        ({"norm": 1}, ValueError, "norm"),
        ({"random_start": 1}, TypeError, "random_start"),
    ],
)
def test_bad_arguments(kwargs, error, text):
    with pytest.raises(error, match=text):
        AdversarialModel(_linear(), **kwargs)


def test_model_must_be_a_keras_model():
    with pytest.raises(TypeError, match="model"):
        AdversarialModel(lambda x: x)


def test_fit_refuses_non_finite_and_out_of_range_numpy_inputs():
    robust = AdversarialModel(_linear(), eps=0.1, steps=1)
    robust.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.full((8, 6), 0.5, dtype="float32")
    y = np.zeros(8, dtype="int64")
    bad = x.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"`x`.*1 NaN"):
        robust.fit(bad, y, verbose=0)
    with pytest.raises(ValueError, match="validation_data"):
        robust.fit(x, y, validation_data=(bad, y), verbose=0)
    with pytest.raises(ValueError, match=r"clip_min, clip_max"):
        robust.fit(x + 1.0, y, verbose=0)


def test_fit_refuses_non_finite_tf_data_batches():
    robust = AdversarialModel(_linear(), eps=0.1, steps=1)
    robust.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.full((8, 6), 0.5, dtype="float32")
    x[5, 0] = np.inf
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(8, "int64"))).batch(4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="finite"):
        robust.fit(data, verbose=0)
