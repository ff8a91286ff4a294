import math
import re

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


@pytest.mark.ci  # 15 epochs on the digits model: ~20 s; CI runs it (`pytest -m ci`)
def test_learns_noise_vs_clean(detector, noise_problem):
    x, y = noise_problem
    half = len(x) // 2
    model = fresh_copy(detector)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x[:half], y[:half], epochs=15, batch_size=32, verbose=0)
    assert "auc" in history.history  # compile's default metric
    scores = model.score(x[half:])
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
    scores = model.score(x[:50])
    path = tmp_path / "detector.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe mode
    assert isinstance(loaded, MedoidLSTMDetector)
    assert isinstance(loaded.detector_model, DetectorModel)
    assert loaded.tap_names == model.tap_names
    assert loaded.distance.standardize and not loaded.detector_model.trainable
    np.testing.assert_array_equal(loaded.score(x[:50]), scores)
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
    from_dataset = model.score(tf.data.Dataset.from_tensor_slices(x[:40]).batch(16))
    np.testing.assert_allclose(from_dataset, model.score(x[:40]), rtol=1e-6)
    # Keras's own predict (uncalibrated) still gives the same scores, with a warning.
    with pytest.warns(FutureWarning, match="score"):
        keras_scores = model.predict(x[:40], verbose=0)
    np.testing.assert_allclose(keras_scores, from_dataset, rtol=1e-5)
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
    np.testing.assert_allclose(model.score(x[:128]), predicted, atol=1e-4)


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
    # Same medoid samples; their activations differ in the last float32 bits with
    # the batch size (200 here, 128 above), as TensorFlow's CPU kernels do.
    np.testing.assert_allclose(
        from_dataset.features(x_test[:10]), plain.features(x_test[:10]), rtol=1e-5, atol=1e-5
    )


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
    np.testing.assert_allclose(outputs["score"].numpy(), detector.score(x[:8]), atol=1e-4)


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


# ----------------------------------------------------------------------
# The detector contract, on a tiny classifier (fast)


def _tiny_classifier():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh", name="fc1"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ],
        name="tiny",
    )


@pytest.fixture(scope="module")
def tiny():
    classifier = _tiny_classifier()
    rng = np.random.default_rng(0)
    x = rng.random((90, 6)).astype("float32")
    y = np.arange(90) % 3
    keras.utils.set_random_seed(2)
    detector = MedoidLSTMDetector.from_training_data(
        classifier, x[:60], y[:60], layers=["fc1", "out"], standardize=True, lstm_units=5
    )
    is_adversarial = (x[:, 0] > 0.5).astype("float32")
    detector.fit(x, is_adversarial, epochs=3, batch_size=30, verbose=0)
    return detector, classifier, x, is_adversarial


def _numpy_lstm_score(detector, features):
    """Keras's LSTM (gates i, f, c, o; tanh / sigmoid) and the sigmoid head in numpy."""
    kernel, recurrent, bias = (np.asarray(w, np.float64) for w in detector.lstm.weights)
    w, b = (np.asarray(v, np.float64) for v in detector.head.weights)
    units = recurrent.shape[0]
    h = np.zeros((len(features), units))
    c = np.zeros_like(h)

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    for step in range(features.shape[1]):
        z = features[:, step].astype(np.float64) @ kernel + h @ recurrent + bias
        i, f, g, o = (z[:, k * units : (k + 1) * units] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
    return sigmoid(h @ w + b)[:, 0]


def test_contract_attributes(tiny):
    detector, classifier, _, _ = tiny
    from keras_advguard.detectors import Detector

    assert isinstance(detector, Detector) and isinstance(detector, keras.Model)
    assert MedoidLSTMDetector.supervised is True
    assert MedoidLSTMDetector.score_tensor_kind == "exact"
    assert detector.model is classifier


def test_score_matches_a_numpy_lstm(tiny):
    detector, _, x, _ = tiny
    scores = detector.score(x, batch_size=7)
    assert scores.shape == (90,) and scores.dtype == np.float64
    expected = _numpy_lstm_score(detector, detector.features(x))
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    # Not a constant: the reference would catch a broken head.
    assert scores.std() > 1e-3
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(90))).batch(16)
    np.testing.assert_allclose(detector.score(dataset), scores, atol=1e-6)
    assert detector.score(x[:0]).shape == (0,)


def test_score_tensor_is_exact_and_differentiable(tiny):
    detector, _, x, _ = tiny
    batch = tf.constant(x[:12])
    with tf.GradientTape() as tape:
        tape.watch(batch)
        values = detector.score_tensor(batch)
        total = tf.reduce_sum(values)
    assert values.dtype == tf.float32 and values.shape == (12,)
    # float32 LSTM in both; a batch of 12 and `score`'s batches may take other
    # oneDNN kernels (seen: 2.5e-6 apart), the same bound as against numpy above.
    np.testing.assert_allclose(values.numpy(), detector.score(x[:12]), atol=1e-5)
    grad = tape.gradient(total, batch).numpy()
    # Directional derivative against central finite differences (float64 reference).
    direction = np.random.default_rng(3).normal(size=x[:12].shape).astype("float32")
    eps = 1e-2
    plus = detector.score(x[:12] + eps * direction)
    minus = detector.score(x[:12] - eps * direction)
    numeric = (plus - minus).sum() / (2 * eps)
    analytic = float(np.sum(grad * direction))
    assert abs(analytic) > 1e-4
    np.testing.assert_allclose(analytic, numeric, rtol=0.05)


def test_calibrate_and_predict(tiny):
    detector, _, x, y = tiny
    clean = x[y == 0]
    detector = detector.clone()  # leave the shared fixture uncalibrated
    detector.fit(x, y, epochs=1, batch_size=30, verbose=0)
    assert detector.calibrate(clean, fpr=0.1) is detector
    scores = np.sort(detector.score(clean))
    n = len(scores)
    # Independent rule: at most fpr * n clean scores strictly above the threshold,
    # and the threshold is one of the scores (the smallest such).
    above = np.sum(scores > detector.threshold_)
    assert above <= 0.1 * n and detector.threshold_ in scores
    smaller = scores[scores < detector.threshold_]
    if len(smaller):
        assert np.sum(scores > smaller.max()) > 0.1 * n
    assert detector.fpr_ == 0.1 and detector.n_calibration_ == n
    decisions = detector.predict(x)
    assert decisions.dtype == bool and decisions.shape == (90,)
    np.testing.assert_array_equal(decisions, detector.score(x) > detector.threshold_)
    for fpr in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="fpr"):
            detector.calibrate(clean, fpr=fpr)


def test_clone_keeps_medoids_and_standardization_with_a_fresh_head(tiny):
    detector, _, x, y = tiny
    keras.utils.set_random_seed(7)
    clone = detector.clone()
    assert type(clone) is MedoidLSTMDetector and clone is not detector
    assert getattr(clone, "threshold_", None) is None and not clone.compiled
    assert clone.tap_names == detector.tap_names and clone.lstm_units == detector.lstm_units
    np.testing.assert_array_equal(clone.features(x), detector.features(x))
    for a, b in zip(clone.distance.weights, detector.distance.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert clone.distance.standardize
    # The trainable part is new ...
    assert not np.allclose(np.asarray(clone.lstm.weights[0]), np.asarray(detector.lstm.weights[0]))
    # ... and training it on another split leaves the original alone.
    before = [np.asarray(w).copy() for w in detector.trainable_weights]
    clone.fit(x[::-1], y[::-1], epochs=1, batch_size=30, verbose=0)
    for a, b in zip(before, detector.trainable_weights, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_save_load_keras_file_and_archive(tiny, tmp_path):
    from keras_advguard.detectors import load_detector

    detector, classifier, x, y = tiny
    detector = detector.clone()
    detector.fit(x, y, epochs=1, batch_size=30, verbose=0)
    detector.calibrate(x[y == 0], fpr=0.2)
    scores = detector.score(x)
    for name in ("detector.keras", "detector.advguard"):
        path = tmp_path / name
        assert detector.save(path) == path
        loaded = MedoidLSTMDetector.load(path)
        assert isinstance(loaded, MedoidLSTMDetector)
        np.testing.assert_array_equal(loaded.score(x), scores)
        assert loaded.threshold_ == detector.threshold_ and loaded.fpr_ == 0.2
        assert loaded.n_calibration_ == detector.n_calibration_
        np.testing.assert_array_equal(loaded.predict(x), detector.predict(x))
        # A classifier with the same weights is accepted and used ...
        twin = keras.models.clone_model(classifier)
        twin.set_weights(classifier.get_weights())
        attached = MedoidLSTMDetector.load(path, model=twin)
        assert attached.model is twin and attached.threshold_ == detector.threshold_
        np.testing.assert_allclose(attached.score(x), scores, atol=1e-6)
        # ... one with other weights is refused, naming both fingerprints.
        other = keras.models.clone_model(classifier)
        with pytest.raises(ValueError, match="SHA-256") as error:
            MedoidLSTMDetector.load(path, model=other)
        digests = set(re.findall(r"[0-9a-f]{64}", str(error.value)))
        assert len(digests) == 2 and str(path) in str(error.value)
    keras_file = keras.models.load_model(tmp_path / "detector.keras")  # safe mode
    assert keras_file.threshold_ == detector.threshold_
    assert isinstance(load_detector(tmp_path / "detector.advguard"), MedoidLSTMDetector)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.advguard", "detector.keras"]


def test_failed_save_keeps_the_old_file(tiny, tmp_path, monkeypatch):
    detector, _, x, _ = tiny
    path = tmp_path / "detector.keras"
    detector.save(path)
    expected = detector.score(x)

    def broken_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        detector.save(path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["detector.keras"]
    np.testing.assert_array_equal(MedoidLSTMDetector.load(path).score(x), expected)


def test_fit_and_score_refuse_non_finite_inputs(tiny):
    detector, _, x, y = tiny
    detector = detector.clone()
    bad = x.copy()
    bad[4, 2] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"`x`.*1 NaN and 1 infinite"):
        detector.fit(bad, y, epochs=1, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((bad, y)).batch(10)
    with pytest.raises(ValueError, match="finite"):
        detector.fit(dataset, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[0\]"):
        detector.fit(x, y, epochs=1, verbose=0, validation_data=(bad, y))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detector.fit(x, y * 2, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="same length"):
        detector.fit(x, y[:10], epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"`x`.*NaN"):
        detector.score(bad)
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        detector.score(x[:, :5])
    # Building from training data goes through the same checked pass.
    classifier = detector.base_model
    with pytest.raises(ValueError, match=r"`x`.*1 NaN"):
        MedoidLSTMDetector.from_training_data(classifier, bad, np.arange(90) % 3, layers="fc1")
    with pytest.raises(ValueError, match="must not be empty"):
        MedoidLSTMDetector.from_training_data(classifier, x[:0], np.zeros(0, int), layers="fc1")
