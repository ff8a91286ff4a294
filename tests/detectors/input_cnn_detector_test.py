import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard import attacks
from keras_advguard.datasets import load_dataset
from keras_advguard.detectors import Detector, InputCNNDetector, load_detector


def _classifier():
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="guarded",
    )


@pytest.fixture(scope="module")
def toy():
    """Clean images in [0, 0.5] vs the same images shifted up by 0.5."""
    rng = np.random.default_rng(0)
    clean = rng.random((60, 8, 8, 1), dtype=np.float32) * 0.5
    x = np.concatenate([clean, clean + 0.5])
    y = np.r_[np.zeros(60), np.ones(60)].astype("float32")
    classifier = _classifier()
    keras.utils.set_random_seed(4)
    detector = InputCNNDetector(classifier, filters=(4, 8), dense_units=8)
    detector.fit(x, y, epochs=2, batch_size=20, verbose=0)
    return detector, classifier, x, y


def _numpy_forward(detector, x):
    """The documented network (same-padded conv + relu, 2x2 max pool, dense) in numpy."""
    h = np.asarray(x, np.float64)
    for i in range(len(detector.filters)):
        kernel, bias = (np.asarray(w, np.float64) for w in detector.blocks[2 * i].weights)
        k = kernel.shape[0]
        lo = (k - 1) // 2
        padded = np.pad(h, ((0, 0), (lo, k - 1 - lo), (lo, k - 1 - lo), (0, 0)))
        out = np.zeros(h.shape[:3] + (kernel.shape[-1],))
        for a in range(k):
            for b in range(k):
                window = padded[:, a : a + h.shape[1], b : b + h.shape[2], :]
                out += window @ kernel[a, b]
        h = np.maximum(out + bias, 0.0)
        rows, cols = -(-h.shape[1] // 2), -(-h.shape[2] // 2)
        padded = np.full((len(h), 2 * rows, 2 * cols, h.shape[3]), -np.inf)
        padded[:, : h.shape[1], : h.shape[2]] = h
        h = padded.reshape(len(h), rows, 2, cols, 2, h.shape[3]).max(axis=(2, 4))
    flat = h.reshape(len(h), -1)
    w1, b1 = (np.asarray(w, np.float64) for w in detector.hidden.weights)
    w2, b2 = (np.asarray(w, np.float64) for w in detector.head.weights)
    hidden = np.maximum(flat @ w1 + b1, 0.0)
    return 1.0 / (1.0 + np.exp(-(hidden @ w2 + b2)[:, 0]))


def test_score_matches_the_documented_network_in_numpy(toy):
    detector, classifier, x, _ = toy
    assert isinstance(detector, Detector) and isinstance(detector, keras.Model)
    assert InputCNNDetector.supervised and InputCNNDetector.score_tensor_kind == "exact"
    assert detector.model is classifier
    scores = detector.score(x, batch_size=32)
    assert scores.shape == (120,) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, _numpy_forward(detector, x), atol=1e-5)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(120))).batch(25)
    np.testing.assert_allclose(detector.score(dataset), scores, atol=1e-6)
    values = detector.score_tensor(tf.constant(x[:10]))
    assert values.dtype == tf.float32
    np.testing.assert_allclose(values.numpy(), scores[:10], atol=1e-6)


def test_score_tensor_gradient_matches_finite_differences(toy):
    detector, _, x, _ = toy
    batch = tf.constant(x[:8])
    with tf.GradientTape() as tape:
        tape.watch(batch)
        total = tf.reduce_sum(detector.score_tensor(batch))
    grad = tape.gradient(total, batch).numpy()
    direction = np.random.default_rng(1).normal(size=grad.shape).astype("float32")
    eps = 1e-5  # float64 reference: small steps cross few ReLU / max-pool kinks
    numeric = (
        _numpy_forward(detector, x[:8] + eps * direction).sum()
        - _numpy_forward(detector, x[:8] - eps * direction).sum()
    ) / (2 * eps)
    analytic = float(np.sum(grad * direction))
    assert abs(analytic) > 1e-4
    np.testing.assert_allclose(analytic, numeric, rtol=0.05, atol=1e-4)


def test_learns_fgsm_on_digits(digits_model):
    """FGSM (eps 0.1) vs clean digits: far better than chance after a few epochs."""
    from sklearn.metrics import roc_auc_score

    model, _ = digits_model
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    adv_train = attacks.fgsm(model, x_train, eps=0.1, y=y_train).x_adv
    adv_test = attacks.fgsm(model, x_test, eps=0.1, y=y_test).x_adv
    keras.utils.set_random_seed(0)
    detector = InputCNNDetector(model, filters=(8, 16), dense_units=16)
    detector.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = detector.fit(
        np.concatenate([x_train, adv_train]),
        np.r_[np.zeros(len(x_train)), np.ones(len(adv_train))],
        epochs=3,
        batch_size=128,
        verbose=0,
    )
    assert "auc" in history.history  # compile's default metric
    scores = detector.score(np.concatenate([x_test, adv_test]))
    auc = roc_auc_score(np.r_[np.zeros(len(x_test)), np.ones(len(adv_test))], scores)
    assert auc > 0.9


def test_calibrate_predict_and_keras_predict(toy):
    detector, _, x, y = toy
    detector = detector.clone()
    detector.fit(x, y, epochs=1, batch_size=20, verbose=0)
    with pytest.warns(FutureWarning, match="score"):
        keras_scores = detector.predict(x, verbose=0)
    np.testing.assert_allclose(keras_scores, detector.score(x), atol=1e-6)
    clean = x[y == 0]
    detector.calibrate(clean, fpr=0.1)
    scores = detector.score(clean)
    assert np.sum(scores > detector.threshold_) <= 0.1 * len(clean)
    assert detector.threshold_ in scores
    decisions = detector.predict(x)
    assert decisions.dtype == bool
    np.testing.assert_array_equal(decisions, detector.score(x) > detector.threshold_)


def test_clone_has_fresh_weights_and_no_threshold(toy):
    detector, classifier, x, _ = toy
    keras.utils.set_random_seed(9)
    clone = detector.clone()
    assert type(clone) is InputCNNDetector and clone.model is classifier
    assert clone.filters == detector.filters and clone.dense_units == detector.dense_units
    assert clone.weights_sha256 == detector.weights_sha256
    assert getattr(clone, "threshold_", None) is None and not clone.compiled
    assert not np.allclose(np.asarray(clone.head.kernel), np.asarray(detector.head.kernel))


def test_keras_file_and_archive_round_trips(toy, tmp_path):
    detector, classifier, x, y = toy
    detector = detector.clone()
    detector.fit(x, y, epochs=1, batch_size=20, verbose=0)
    detector.calibrate(x[y == 0], fpr=0.2)
    scores = detector.score(x)
    keras_path = tmp_path / "cnn.keras"
    detector.save(keras_path)
    loaded = keras.models.load_model(keras_path)  # safe mode
    assert isinstance(loaded, InputCNNDetector) and loaded.model is None
    np.testing.assert_array_equal(loaded.score(x), scores)
    assert loaded.threshold_ == detector.threshold_
    archive = tmp_path / "cnn.advguard"
    detector.save(archive)
    from_archive = load_detector(archive)
    assert isinstance(from_archive, InputCNNDetector) and from_archive.model is not None
    np.testing.assert_array_equal(from_archive.score(x), scores)
    np.testing.assert_array_equal(from_archive.predict(x), detector.predict(x))
    for path in (keras_path, archive):
        assert InputCNNDetector.load(path, model=classifier).model is classifier
        other = keras.models.clone_model(classifier)
        with pytest.raises(ValueError, match="SHA-256") as error:
            InputCNNDetector.load(path, model=other)
        assert len(set(re.findall(r"[0-9a-f]{64}", str(error.value)))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.advguard", "cnn.keras"]
    # Keras's own callbacks save through `save(filepath, overwrite=True)`.
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt.keras"))
    detector.fit(x, y, epochs=1, batch_size=40, verbose=0, callbacks=[checkpoint])
    restored = keras.models.load_model(tmp_path / "ckpt.keras")
    np.testing.assert_allclose(restored.score(x), detector.score(x), atol=1e-7)
    (tmp_path / "ckpt.keras").unlink()
    # Built from a shape, it guards no classifier and accepts any.
    free = InputCNNDetector((8, 8, 1), filters=(2,), dense_units=4)
    free.save(tmp_path / "free.keras")
    assert InputCNNDetector.load(tmp_path / "free.keras", model=_classifier()).model is not None


def test_config_round_trip_and_mixed_precision(toy, tmp_path):
    detector, _, x, y = toy
    config = detector.get_config()
    assert config["model"] == [8, 8, 1] and config["filters"] == [4, 8]
    rebuilt = InputCNNDetector.from_config(config)
    assert rebuilt.count_params() == detector.count_params()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = InputCNNDetector((8, 8, 1), filters=(4,), dense_units=8)
        assert mixed.blocks[0].compute_dtype == "float16"
        assert mixed.score_tensor(tf.constant(x[:4])).dtype == tf.float32
        mixed.fit(x, y, epochs=1, batch_size=40, verbose=0)
        scores = mixed.score(x)
        assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
        mixed.save(tmp_path / "mixed.keras")
        loaded = keras.models.load_model(tmp_path / "mixed.keras")
        np.testing.assert_array_equal(loaded.score(x), scores)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_errors(toy):
    detector, _, x, y = toy
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        InputCNNDetector((64,))
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        InputCNNDetector(keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)]))
    with pytest.raises(TypeError, match="keras.Model"):
        InputCNNDetector("model")
    with pytest.raises(ValueError, match="filters"):
        InputCNNDetector((8, 8, 1), filters=())
    with pytest.raises(ValueError, match="dense_units"):
        InputCNNDetector((8, 8, 1), dense_units=0)
    fresh = detector.clone()
    bad = x.copy()
    bad[3, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"`x`.*1 NaN"):
        fresh.fit(bad, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="finite"):
        fresh.fit(tf.data.Dataset.from_tensor_slices((bad, y)).batch(16), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fresh.fit(x, y + 1, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="NaN"):
        detector.score(bad)
    with pytest.raises(ValueError, match="shape"):
        detector.score(np.zeros((2, 10, 10, 1), "float32"))
