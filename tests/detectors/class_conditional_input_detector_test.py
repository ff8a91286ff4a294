"""ClassConditionalInputDetector: scores, the training attack, asymmetric fit, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.detectors import ClassConditionalInputDetector, load_detector


def _classifier(k=3):
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(k, activation="softmax"),
        ],
        name="guarded",
    )


def _toy(n=60, k=3, seed=0):
    """Class c: a bright c-th band of rows on a dim noisy background."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = 0.1 * rng.random((n, 8, 8, 1))
    for i, c in enumerate(y):
        x[i, 2 * c : 2 * c + 2] += 0.8
    return np.clip(x, 0, 1).astype("float32"), y


@pytest.fixture(scope="module")
def fitted():
    x, y = _toy()
    classifier = _classifier()
    keras.utils.set_random_seed(4)
    detector = ClassConditionalInputDetector(
        classifier, filters=(4,), dense_units=8, eps=0.2, steps=3
    )
    detector.fit(x, y, epochs=2, batch_size=20, verbose=0)
    return detector, classifier, x, y


def test_score_is_minus_the_logit_at_the_classifiers_class(fitted):
    detector, classifier, x, _ = fitted
    logits = np.asarray(detector(x), np.float64)
    classes = np.argmax(classifier.predict(x, verbose=0), axis=1)
    expected = -logits[np.arange(len(x)), classes]
    np.testing.assert_allclose(detector.score(x, batch_size=7), expected, atol=1e-5)
    np.testing.assert_allclose(detector.detector_logits(x), logits, atol=1e-5)
    np.testing.assert_allclose(detector.score_tensor(tf.constant(x)).numpy(), expected, atol=1e-5)
    # Without a classifier: the detector's own most confident class.
    alone = ClassConditionalInputDetector.from_config(detector.get_config())
    alone.set_weights(detector.get_weights())
    np.testing.assert_allclose(alone.score(x), -logits.max(axis=1), atol=1e-5)


def test_score_tensor_gradient_flows_through_the_detector_only(fitted):
    detector, classifier, x, _ = fitted
    xt = tf.constant(x[:5])
    with tf.GradientTape() as tape:
        tape.watch(xt)
        value = detector.score_tensor(xt)
    gradient = tape.gradient(value, xt).numpy()
    classes = np.argmax(classifier.predict(x[:5], verbose=0), axis=1)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        picked = -tf.gather(detector(xt), classes, axis=1, batch_dims=1)
    np.testing.assert_allclose(gradient, tape.gradient(picked, xt).numpy(), atol=1e-6)


def test_negative_targets_differ_from_the_labels_and_follow_the_rule(fitted):
    detector, _, x, y = fitted
    for target in ("random", "easiest", "mixed"):
        clone = ClassConditionalInputDetector.from_config(
            {**detector.get_config(), "target": target}
        )
        clone.set_weights(detector.get_weights())
        t = clone.negative_targets(x, y, seed=1).numpy()
        assert t.shape == y.shape and np.all(t != y) and np.all((t >= 0) & (t < 3))
        if target == "easiest":
            logits = np.asarray(detector(x), np.float64)
            logits[np.arange(len(y)), y] = -np.inf
            np.testing.assert_array_equal(t, np.argmax(logits, axis=1))
    # Reference: `random` is uniform over the K - 1 other classes.
    clone = ClassConditionalInputDetector.from_config({**detector.get_config(), "target": "random"})
    t = clone.negative_targets(np.repeat(x[:1], 3000, 0), np.zeros(3000, int), seed=2).numpy()
    counts = np.bincount(t, minlength=3)
    assert counts[0] == 0 and abs(counts[1] - 1500) < 150 and abs(counts[2] - 1500) < 150


def test_generate_is_pgd_ascent_on_the_target_logit(fitted):
    detector, _, x, y = fitted
    clone = ClassConditionalInputDetector.from_config(
        {**detector.get_config(), "random_start": False, "steps": 4, "step_size": 0.05}
    )
    clone.set_weights(detector.get_weights())
    targets = (y + 1) % 3
    out = clone.generate(x, targets).numpy()
    # Reference: the same steps written out in numpy (gradient from a tape).
    xa = x.copy()
    for _ in range(4):
        xt = tf.constant(xa)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            value = tf.reduce_sum(tf.gather(clone(xt), targets, axis=1, batch_dims=1))
        grad = tape.gradient(value, xt).numpy()
        xa = np.clip(np.clip(xa + 0.05 * np.sign(grad), x - 0.2, x + 0.2), 0, 1)
    np.testing.assert_allclose(out, xa, atol=1e-6)
    assert np.max(np.abs(out - x)) <= 0.2 + 1e-6 and out.min() >= 0 and out.max() <= 1
    before = np.asarray(clone(x))[np.arange(len(x)), targets]
    after = np.asarray(clone(out))[np.arange(len(x)), targets]
    assert np.all(after >= before - 1e-6) and np.mean(after > before) > 0.9
    # eps = 0: the negatives are the clean images themselves.
    zero = ClassConditionalInputDetector.from_config({**detector.get_config(), "eps": 0.0})
    np.testing.assert_array_equal(zero.generate(x, targets).numpy(), x)


def test_generate_with_step_decay_shrinks_the_step_geometrically(fitted):
    detector, _, x, y = fitted
    clone = ClassConditionalInputDetector.from_config(
        {
            **detector.get_config(),
            "random_start": False,
            "steps": 5,
            "step_size": 0.08,
            "step_decay": 0.0625,
        }
    )
    clone.set_weights(detector.get_weights())
    targets = (y + 2) % 3
    out = clone.generate(x, targets).numpy()
    # Reference, worked by hand: steps 0.08, 0.04, 0.02, 0.01, 0.005
    # (0.08 * 0.0625 ** (i / 4)), each a sign step then the projection.
    xa = x.copy()
    for size in (0.08, 0.04, 0.02, 0.01, 0.005):
        xt = tf.constant(xa)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            value = tf.reduce_sum(tf.gather(clone(xt), targets, axis=1, batch_dims=1))
        grad = tape.gradient(value, xt).numpy()
        xa = np.clip(np.clip(xa + size * np.sign(grad), x - 0.2, x + 0.2), 0, 1)
    np.testing.assert_allclose(out, xa, atol=1e-6)
    # A constant step of 0.08 ends elsewhere: the schedule is applied.
    constant = ClassConditionalInputDetector.from_config({**clone.get_config(), "step_decay": 1.0})
    constant.set_weights(detector.get_weights())
    assert np.max(np.abs(constant.generate(x, targets).numpy() - out)) > 0.01
    assert ClassConditionalInputDetector.from_config(clone.get_config()).step_decay == 0.0625


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_step_decay_outside_the_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match="step_decay"):
        ClassConditionalInputDetector((8, 8, 1), num_classes=3, step_decay=bad)


def test_asymmetric_training_learns_the_classes():
    x, y = _toy(n=90)
    keras.utils.set_random_seed(0)
    detector = ClassConditionalInputDetector(
        (8, 8, 1), num_classes=3, filters=(4,), dense_units=16, eps=0.1, steps=3
    )
    history = detector.fit(x, y, epochs=15, batch_size=30, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # Yin et al.'s integrated classification: argmax of the K detectors.
    assert np.mean(np.argmax(detector.detector_logits(x), axis=1) == y) > 0.9
    # A clean image of class c scores higher at c than an image of another
    # class attacked towards c (what detector c was trained to tell apart).
    target = (y + 1) % 3
    x_neg = detector.generate(x, target).numpy()
    logits_neg = detector.detector_logits(x_neg)[np.arange(len(y)), target]
    logits_pos = detector.detector_logits(x)[np.arange(len(y)), y]
    assert np.mean(logits_pos) > np.mean(logits_neg)


@pytest.mark.slow
def test_fit_takes_one_hot_labels_datasets_and_classifier_labels(fitted):
    detector, classifier, x, y = fitted
    clone = detector.clone()
    assert clone.model is classifier and getattr(clone, "threshold_", None) is None
    h = clone.fit(x, np.eye(3)[y], epochs=1, verbose=0, validation_data=(x[:10], y[:10]))
    assert set(h.history) == {"loss", "auc", "val_loss", "val_auc"}
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    assert len(clone.fit(data, epochs=1, verbose=0).history["loss"]) == 1
    assert len(clone.fit(x, epochs=1, verbose=0).history["loss"]) == 1  # labels from classifier


def test_save_load_keras_file_and_archive(fitted, tmp_path):
    detector, classifier, x, _ = fitted
    detector.calibrate(x, fpr=0.1)
    expected = detector.score(x)
    keras_path = tmp_path / "cc.keras"
    detector.save(keras_path)
    loaded = ClassConditionalInputDetector.load(keras_path, classifier)
    np.testing.assert_allclose(loaded.score(x), expected, atol=1e-6)
    assert loaded.threshold_ == detector.threshold_ and loaded.eps == detector.eps
    archive = tmp_path / "cc.advguard"
    detector.save(archive)
    np.testing.assert_allclose(load_detector(archive).score(x), expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"model": "nope"}, TypeError, "model"),
        ({"model": (8, 8)}, ValueError, "input shape"),
        ({"model": (8, 8, 1)}, ValueError, "num_classes"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"eps": -0.1}, ValueError, "eps"),
        ({"steps": 0}, ValueError, "steps"),
        ({"norm": 3}, ValueError, "norm"),
        ({"target": "hardest"}, ValueError, "target"),
        ({"clip_min": 1.0}, ValueError, "clip_min"),
        ({"filters": ()}, ValueError, "filters"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    kwargs = {"model": _classifier(), **kwargs}
    with pytest.raises(error, match=match):
        ClassConditionalInputDetector(**kwargs)


def test_fit_refuses_bad_data(fitted):
    detector, _, x, y = fitted
    clone = detector.clone()
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clone.fit(bad, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"clip_min, clip_max"):
        clone.fit(x + 2.0, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="class indices"):
        clone.fit(x, y + 5, epochs=1, verbose=0)
    alone = ClassConditionalInputDetector((8, 8, 1), num_classes=3, filters=(2,), dense_units=4)
    with pytest.raises(ValueError, match="`y`"):
        alone.fit(x, epochs=1, verbose=0)


@pytest.mark.parametrize("cls_name", ["ClassConditionalInputDetector", "InputCNNDetector"])
def test_detector_weights_never_carry_or_overwrite_the_classifier(cls_name, tmp_path):
    """`save_weights`/`load_weights` and `.keras` files hold the detector's own weights only.

    Regression: Keras's saving walks `dir(detector)`, reached the guarded
    classifier through the `model` property, stored its weights with the
    detector's and, on `load_weights`, overwrote the user's classifier.
    """
    import h5py

    from keras_advguard import detectors

    def classifier(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential(
            [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
        )

    cls = getattr(detectors, cls_name)
    first, second = classifier(0), classifier(1)
    saved = cls(first, filters=(4,), dense_units=8)
    path = tmp_path / "detector.weights.h5"
    saved.save_weights(path)
    with h5py.File(path) as f:
        assert "model" not in f and "_classifier" not in f
    before = [w.numpy().copy() for w in second.weights]
    loaded = cls(second, filters=(4,), dense_units=8)
    loaded.load_weights(path)
    for old, new in zip(before, second.weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())  # the user's classifier, untouched
    for a, b in zip(saved.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded.model is second
