import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard import attacks, metrics
from keras_advguard.datasets import load_dataset
from keras_advguard.detector_model import DetectorModel
from keras_advguard.detectors.class_medoids import ClassMedoids
from keras_advguard.detectors.medoid_lstm_detector import MedoidLSTMDetector
from keras_advguard.layers.medoid_distance import MedoidDistance


def brute_force_medoids(points, labels, num_classes):
    """Reference medoid of each class: argmin of the float64 distance sums."""
    points = np.asarray(points, np.float64)
    rows = []
    for c in range(num_classes):
        members = points[labels == c]
        sums = np.linalg.norm(members[:, None] - members[None], axis=-1).sum(axis=1)
        rows.append(members[np.argmin(sums)])
    return np.stack(rows)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module", autouse=True)
def _unfreeze_shared_classifier(digits_model):
    """The detector freezes the classifier's (shared) layers: undo it for other modules."""
    yield
    digits_model[0].trainable = True


@pytest.fixture(scope="module")
def detector(digits_model, digits):
    (x_train, y_train), _ = digits
    model, _ = digits_model
    keras.utils.set_random_seed(0)
    return MedoidLSTMDetector.from_training_data(
        model, x_train, y_train, standardize=True, lstm_units=16
    )


def fresh_copy(detector, lstm_units=16):
    """Same taps and medoids, new (untrained) LSTM and head."""
    keras.utils.set_random_seed(0)
    return MedoidLSTMDetector(detector.detector_model, detector.distance, lstm_units=lstm_units)


@pytest.fixture(scope="module")
def noise_problem(digits, digits_model):
    """Clean test digits vs the same digits under uniform noise in [-1, 1] (clipped)."""
    _, (x_test, _) = digits
    model, _ = digits_model
    noisy = attacks.uniform_noise(model, x_test, eps=1.0, seed=0).x_adv
    x = np.concatenate([x_test, noisy])
    y = np.r_[np.zeros(len(x_test)), np.ones(len(noisy))].astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    return x[order], y[order]


def test_features_match_numpy_medoid_distances(detector, digits, digits_model):
    (x_train, y_train), (x_test, _) = digits
    model, _ = digits_model
    assert detector.tap_names == ["conv1", "conv2", "fc4", "predictions"]
    assert detector.num_classes == 10 and detector.base_model is model
    taps = DetectorModel(model, layers="conv+dense")
    train = taps.activations(x_train)
    test = taps.activations(x_test[:40])
    raw = []
    for name in detector.tap_names:
        medoids = brute_force_medoids(train[name], y_train, 10)
        raw.append(np.stack([np.linalg.norm(a[None, :] - medoids, axis=-1) for a in test[name]]))
        train_distances = np.linalg.norm(
            train[name].astype(np.float64)[:, None] - medoids[None], axis=-1
        )
        mean, std = train_distances.mean(), train_distances.std()
        raw[-1] = (raw[-1] - mean) / std
    expected = np.stack(raw, axis=1)  # (B, L, C), standardized per layer
    features = detector.features(x_test[:40], batch_size=16)
    assert features.shape == (40, 4, 10) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=2e-3)


def test_learns_noise_vs_clean(detector, noise_problem):
    x, y = noise_problem
    half = len(x) // 2
    model = fresh_copy(detector)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x[:half], y[:half], epochs=15, batch_size=32, verbose=0)
    assert "auc" in history.history  # compile's default metric
    scores = model.predict(x[half:], verbose=0)
    assert scores.shape == (len(x) - half,)
    assert np.all((scores >= 0) & (scores <= 1))
    y_test = y[half:].astype(bool)
    assert metrics.roc_auc(scores[~y_test], scores[y_test]) > 0.95


def test_classifier_stays_frozen(detector, noise_problem, digits_model):
    x, y = noise_problem
    model, _ = digits_model
    before = [w.copy() for w in model.get_weights()]
    medoids_before = [np.asarray(v).copy() for v in detector.distance.weights]
    trained = fresh_copy(detector, lstm_units=4)
    lstm_before = [np.asarray(w).copy() for w in trained.lstm.weights]
    trained.fit(x[:64], y[:64], epochs=2, batch_size=32, verbose=0)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(medoids_before, detector.distance.weights, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    # Only the LSTM (kernel, recurrent kernel, bias) and the head are trained ...
    assert len(trained.trainable_weights) == 5
    assert not trained.detector_model.trainable
    # ... and they did move.
    assert any(
        not np.array_equal(a, np.asarray(b))
        for a, b in zip(lstm_before, trained.lstm.weights, strict=True)
    )


def test_classifier_runs_in_inference_mode_during_training():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="fc1")(inputs)
    dropped = keras.layers.Dropout(0.9)(hidden)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(dropped)
    classifier = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).random((30, 6)).astype("float32")
    detector = MedoidLSTMDetector.from_training_data(
        classifier, x, np.arange(30) % 3, layers=["fc1", "out"], lstm_units=4
    )
    train_mode = detector.call_with_details(x, training=True)
    infer_mode = detector.call_with_details(x, training=False)
    np.testing.assert_array_equal(
        np.asarray(train_mode["features"]), np.asarray(infer_mode["features"])
    )
    np.testing.assert_allclose(
        np.asarray(train_mode["score"]), np.asarray(infer_mode["score"]), rtol=1e-6
    )


def test_paper_defaults_for_compile_and_fit(detector, noise_problem):
    x, y = noise_problem
    model = fresh_copy(detector, lstm_units=4)

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.model.stop_training = True

    record = Record()
    history = model.fit(x[:250], y[:250], verbose=0, callbacks=[record])  # compiles itself
    assert record.params["epochs"] == 100
    assert record.params["steps"] == math.ceil(250 / 100)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.optimizer.learning_rate.numpy() == pytest.approx(1e-3)
    assert model.loss == "binary_crossentropy"
    assert sorted(history.history) == ["auc", "loss"]
    bare = fresh_copy(detector, lstm_units=4)
    bare.compile(metrics=None)
    assert bare.fit(x[:10], y[:10], epochs=1, verbose=0).history.keys() == {"loss"}


def test_save_and_load_give_identical_scores(detector, noise_problem, tmp_path):
    x, y = noise_problem
    model = fresh_copy(detector, lstm_units=8)
    model.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)
    scores = model.predict(x[:50], verbose=0)
    path = tmp_path / "detector.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe mode
    assert isinstance(loaded, MedoidLSTMDetector)
    assert isinstance(loaded.detector_model, DetectorModel)
    assert loaded.tap_names == model.tap_names
    assert loaded.distance.standardize and not loaded.detector_model.trainable
    np.testing.assert_array_equal(loaded.predict(x[:50], verbose=0), scores)
    for a, b in zip(model.distance.weights, loaded.distance.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The optimizer state came back too: training can resume.
    assert loaded.compiled
    loaded.fit(x[:32], y[:32], epochs=1, verbose=0)


def test_tf_data_fit_and_predict(detector, noise_problem):
    x, y = noise_problem
    model = fresh_copy(detector, lstm_units=4)
    dataset = tf.data.Dataset.from_tensor_slices((x[:96], y[:96])).batch(32)
    validation = tf.data.Dataset.from_tensor_slices((x[96:160], y[96:160])).batch(32)
    history = model.fit(dataset, validation_data=validation, epochs=2, verbose=0)
    assert len(history.history["val_loss"]) == 2
    from_dataset = model.predict(tf.data.Dataset.from_tensor_slices(x[:40]).batch(16), verbose=0)
    np.testing.assert_allclose(from_dataset, model.predict(x[:40], verbose=0), rtol=1e-6)
    np.testing.assert_allclose(
        model.features(tf.data.Dataset.from_tensor_slices(x[:20])),
        model.features(x[:20]),
        rtol=1e-6,
    )


def test_sequence_model_shares_the_trained_weights(detector, noise_problem):
    x, y = noise_problem
    model = fresh_copy(detector, lstm_units=4)
    features = model.features(x[:128])
    sequence = model.sequence_model()
    sequence.compile(optimizer="adam", loss="binary_crossentropy")
    sequence.fit(features, y[:128] > 0.5, epochs=2, batch_size=32, verbose=0)
    predicted = sequence.predict(features, verbose=0)
    assert predicted.shape == (128,)
    np.testing.assert_allclose(model.predict(x[:128], verbose=0), predicted, atol=1e-4)


def test_from_medoids_and_dataset_training_data(digits, digits_model):
    (x_train, y_train), (x_test, _) = digits
    model, _ = digits_model
    taps = DetectorModel(model, layers=["conv2", "fc4"])
    medoids = ClassMedoids().fit(taps.activations(x_train), y_train)
    plain = MedoidLSTMDetector.from_medoids(model, medoids, lstm_units=4)
    assert plain.tap_names == ["conv2", "fc4"] and not plain.distance.standardize
    np.testing.assert_array_equal(
        np.asarray(plain.distance.medoids[1]), medoids.medoids_["fc4"].astype("float32")
    )
    dataset = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(200)
    standardized = MedoidLSTMDetector.from_medoids(
        taps, medoids, standardize=True, standardization_data=dataset, lstm_units=4
    )
    features = standardized.features(x_train)
    np.testing.assert_allclose(features.mean(axis=(0, 2)), 0.0, atol=1e-3)
    np.testing.assert_allclose(features.std(axis=(0, 2)), 1.0, rtol=1e-3)
    from_dataset = MedoidLSTMDetector.from_training_data(
        model, dataset, layers=["conv2", "fc4"], lstm_units=4
    )
    np.testing.assert_array_equal(from_dataset.features(x_test[:10]), plain.features(x_test[:10]))


def test_adaptive_loss_gradient_reaches_the_input(detector, noise_problem):
    x, _ = noise_problem
    batch = tf.constant(x[:8])
    with tf.GradientTape() as tape:
        tape.watch(batch)
        outputs = detector.call_with_details(batch)
        loss = tf.reduce_sum(outputs["score_logit"]) + tf.reduce_sum(outputs["logits"][:, 0])
    grad = tape.gradient(loss, batch).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    np.testing.assert_allclose(
        tf.sigmoid(outputs["score_logit"]).numpy(), outputs["score"].numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(
        outputs["score"].numpy(), detector.predict(x[:8], verbose=0), atol=1e-4
    )


def test_errors(detector, digits_model):
    model, _ = digits_model
    with pytest.raises(TypeError, match="MedoidDistance"):
        MedoidLSTMDetector(detector.detector_model, "not a layer")
    with pytest.raises(ValueError, match="lstm_units"):
        MedoidLSTMDetector(detector.detector_model, detector.distance, lstm_units=0)
    other_taps = DetectorModel(model, layers=["conv1", "conv2", "fc4"])
    with pytest.raises(ValueError, match="taps 3 layers but the medoids are for 4"):
        MedoidLSTMDetector(other_taps, detector.distance)
    renamed = MedoidDistance.from_medoids(
        {f"x{i}": np.asarray(w) for i, w in enumerate(detector.distance.medoids)}
    )
    with pytest.raises(ValueError, match="same order"):
        MedoidLSTMDetector(detector.detector_model, renamed)
    flat = DetectorModel(model, layers="conv+dense", pooling="max")
    assert MedoidLSTMDetector(flat, detector.distance, lstm_units=2)  # same widths: fine
    flattened = DetectorModel(model, layers="conv+dense", pooling="flatten")
    with pytest.raises(ValueError, match="pooling the medoids were computed with"):
        MedoidLSTMDetector(flattened, detector.distance)
    x = np.zeros((20, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match="Labels `y` are required"):
        MedoidLSTMDetector.from_training_data(model, x)
    medoids = {
        name: np.asarray(w)
        for name, w in zip(detector.tap_names, detector.distance.medoids, strict=True)
    }
    with pytest.raises(ValueError, match="standardization_data"):
        MedoidLSTMDetector.from_medoids(model, medoids, standardize=True)
    with pytest.raises(ValueError, match="keyed by the tapped layers"):
        MedoidLSTMDetector.from_medoids(model, list(medoids.values()))
