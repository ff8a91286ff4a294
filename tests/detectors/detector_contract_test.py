"""The shared Detector contract test, run over every detector (like keras-hub's run_layer_test).

Each detector is built once, fitted tiny on the cached digits model, and put
through the same checks: scores (numpy and tf.data), `score_tensor`,
`calibrate`/`predict`, `save`/`load` (identical scores, refusal of other
weights, truncated files, failing saves), `clone`, and non-finite inputs.
A new detector is covered by adding one factory to `FACTORIES`.
"""

import os
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard._fingerprint import weights_fingerprint
from keras_advguard._validation import NotFittedError
from keras_advguard.datasets import load_dataset
from keras_advguard.detectors import (
    Detector,
    EntropyDetector,
    FeatureSqueezingDetector,
    KNNDetector,
    MaxSoftmaxDetector,
    load_detector,
)
from keras_advguard.detectors._base import SCORE_TENSOR_KINDS
from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer
from keras_advguard.layers.median_smoothing_squeezer import MedianSmoothingSqueezer


@pytest.fixture(scope="module")
def digits(digits_model):
    (x_train, y_train), (x_test, _) = load_dataset("digits")
    model, _ = digits_model
    rng = np.random.default_rng(0)
    # Stand-in "adversarial" inputs for the trained detectors: strong noise.
    noisy = np.clip(x_test[:60] + rng.choice([-0.4, 0.4], x_test[:60].shape), 0, 1)
    return {
        "model": model,
        "x_train": x_train[:300],
        "y_train": y_train[:300],
        "x_val": x_test[:60],
        "x": x_test[100:124],
        "x_adv": noisy.astype("float32"),
    }


def _supervised_data(d):
    x = np.concatenate([d["x_val"], d["x_adv"]])
    return x, np.r_[np.zeros(len(d["x_val"])), np.ones(len(d["x_adv"]))].astype("float32")


def _medoid_lstm(d):
    from keras_advguard.detectors import MedoidLSTMDetector

    detector = MedoidLSTMDetector.from_training_data(
        d["model"], d["x_train"], d["y_train"], lstm_units=4
    )
    detector.fit(*_supervised_data(d), epochs=1, batch_size=32, verbose=0)
    return detector


def _input_cnn(d):
    from keras_advguard.detectors import InputCNNDetector

    detector = InputCNNDetector(d["model"], filters=(4,), dense_units=8)
    detector.fit(*_supervised_data(d), epochs=1, batch_size=32, verbose=0)
    return detector


def _class_conditional_input(d):
    from keras_advguard.detectors import ClassConditionalInputDetector

    detector = ClassConditionalInputDetector(
        d["model"], filters=(4,), dense_units=8, eps=0.2, steps=2
    )
    detector.fit(d["x_train"][:120], d["y_train"][:120], epochs=1, batch_size=40, verbose=0)
    return detector


def _union(d):
    from keras_advguard.detectors import UnionDetector

    # A statistical and a Keras component: the archive holds both (and the
    # Keras one's own `.keras` member).
    components = [MaxSoftmaxDetector(d["model"]), _input_cnn(d)]
    return UnionDetector(components).fit(d["x_val"])


FACTORIES = {
    "max_softmax": lambda d: MaxSoftmaxDetector(d["model"]),
    "knn": lambda d: KNNDetector(d["model"], "fc4", n_neighbors=5).fit(d["x_train"], d["y_train"]),
    "entropy": lambda d: EntropyDetector(d["model"]),
    "feature_squeezing": lambda d: FeatureSqueezingDetector(
        d["model"], [BitDepthSqueezer(2), MedianSmoothingSqueezer(2)]
    ),
    "feature_squeezing_internal": lambda d: FeatureSqueezingDetector(
        d["model"], [BitDepthSqueezer(3)], score="internal"
    ),
    "medoid_lstm": _medoid_lstm,
    "input_cnn": _input_cnn,
    "class_conditional_input": _class_conditional_input,
    "union": _union,
}
NAMES = sorted(FACTORIES)


@pytest.fixture(scope="module")
def built(digits):
    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            cache[name] = FACTORIES[name](digits)
        return cache[name]

    return get


@pytest.fixture(params=NAMES)
def case(request, built, digits):
    return built(request.param), digits


def _other_weights(model):
    other = keras.models.clone_model(model)  # fresh initialisation
    other.build(model.inputs[0].shape)
    return other


# The classes the factories build; a new public detector must be added.
COVERED = {
    "MaxSoftmaxDetector",
    "KNNDetector",
    "EntropyDetector",
    "FeatureSqueezingDetector",
    "MedoidLSTMDetector",
    "InputCNNDetector",
    "ClassConditionalInputDetector",
    "UnionDetector",
}


def test_every_public_detector_is_covered():
    import keras_advguard.detectors as detectors

    public = {
        name
        for name in detectors.__all__
        if isinstance(getattr(detectors, name), type)
        and issubclass(getattr(detectors, name), Detector)
        and name != "Detector"
    }
    assert public == COVERED


def test_score_shape_dtype_and_finite(case):
    detector, d = case
    scores = detector.score(d["x"])
    assert isinstance(scores, np.ndarray) and scores.shape == (len(d["x"]),)
    assert scores.dtype.kind == "f" and np.all(np.isfinite(scores))
    assert detector.score(d["x"][:0]).shape == (0,)
    assert isinstance(detector.supervised, bool)
    # Another input shape, after a first successful call: refused, not garbage.
    with pytest.raises(ValueError, match="shape"):
        detector.score(np.zeros((2, 9, 9, 1), "float32"))


def test_numpy_and_tf_data_agree(case):
    detector, d = case
    x = d["x"]
    expected = detector.score(x, batch_size=8)
    labels = np.arange(len(x)) % 10
    # Float32 results may move in the last bits with the batch composition.
    for dataset in [
        tf.data.Dataset.from_tensor_slices(x).batch(5),
        tf.data.Dataset.from_tensor_slices(x),  # unbatched
        tf.data.Dataset.from_tensor_slices((x, labels)).batch(7),  # (x, y) pairs
    ]:
        np.testing.assert_allclose(detector.score(dataset), expected, rtol=0, atol=2e-5)


def test_score_tensor_gradient(case):
    detector, d = case
    assert detector.score_tensor_kind in SCORE_TENSOR_KINDS
    x = tf.constant(d["x"][:6])
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = detector.score_tensor(x)
    gradient = tape.gradient(value, x)
    assert tuple(value.shape) == (6,) and value.dtype == tf.float32
    assert gradient is not None
    gradient = gradient.numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0
    if detector.score_tensor_kind in ("exact", "bpda"):
        np.testing.assert_allclose(value.numpy(), detector.score(d["x"][:6]), atol=1e-5)


def test_calibrate_and_predict(case):
    detector, d = case
    fpr = 0.1
    assert detector.calibrate(d["x_val"], fpr=fpr) is detector
    scores = detector.score(d["x_val"])
    n = len(scores)
    # Reference: with k = floor(fpr * n) false positives allowed, the
    # threshold is the (k + 1)-th largest clean score.
    k = int(np.floor(fpr * n))
    assert isinstance(detector.threshold_, float)
    assert detector.threshold_ == pytest.approx(np.sort(scores)[::-1][k], abs=1e-7)
    assert detector.fpr_ == fpr and detector.n_calibration_ == n
    assert np.mean(scores > detector.threshold_) <= fpr
    # No lower threshold among the scores keeps the FPR: the threshold is the
    # smallest one, at or above the empirical (1 - fpr) quantile.
    assert detector.threshold_ >= np.quantile(scores, 1 - fpr, method="inverted_cdf") - 1e-7
    flags = detector.predict(d["x"])
    assert flags.dtype == bool and flags.shape == (len(d["x"]),)
    np.testing.assert_array_equal(flags, detector.score(d["x"]) > detector.threshold_)
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="fpr"):
            detector.calibrate(d["x_val"], fpr=bad)
    with pytest.raises(TypeError, match="fpr"):
        detector.calibrate(d["x_val"], fpr="5%")


def test_predict_before_calibrate(case):
    detector, d = case
    clone = detector.clone()
    if isinstance(clone, keras.Model):
        # Keras detectors keep Keras's predict (the scores) until calibrated.
        with pytest.warns(FutureWarning, match="calibrate"):
            clone.predict(d["x"][:4], verbose=0)
    else:
        with pytest.raises(NotFittedError, match="Call `calibrate"):
            clone.predict(d["x"][:4])


def test_save_load_round_trip(case, tmp_path):
    detector, d = case
    detector.calibrate(d["x_val"], fpr=0.1)
    path = tmp_path / "detector.advguard"
    detector.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.advguard"]
    expected = detector.score(d["x"])
    assert type(Detector.load(path, d["model"])) is type(detector)  # dispatches by class
    for loaded in [load_detector(path), type(detector).load(path, d["model"])]:
        assert type(loaded) is type(detector)
        assert loaded.threshold_ == detector.threshold_ and loaded.fpr_ == detector.fpr_
        np.testing.assert_allclose(loaded.score(d["x"]), expected, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(loaded.predict(d["x"]), detector.predict(d["x"]))


def test_load_refuses_a_model_with_other_weights(case, tmp_path):
    detector, d = case
    path = tmp_path / "detector.advguard"
    detector.save(path, include_model=False)
    other = _other_weights(d["model"])
    with pytest.raises(ValueError) as info:
        type(detector).load(path, other)
    message = str(info.value)
    assert weights_fingerprint(d["model"]) in message
    assert weights_fingerprint(other) in message


def test_clone_keeps_statistics_and_drops_the_threshold(case):
    detector, d = case
    detector.calibrate(d["x_val"], fpr=0.1)
    clone = detector.clone()
    assert type(clone) is type(detector) and clone is not detector
    assert getattr(clone, "threshold_", None) is None
    assert getattr(detector, "threshold_", None) is not None  # the original keeps its own
    scores = clone.score(d["x"])
    assert scores.shape == (len(d["x"]),) and np.all(np.isfinite(scores))
    if not detector.supervised and not isinstance(detector, keras.Model):
        # nothing trainable: the same scores (a Keras detector fitted on clean
        # data, ClassConditionalInputDetector, gets fresh weights)
        np.testing.assert_array_equal(scores, detector.score(d["x"]))


def test_non_finite_inputs_are_refused(case):
    detector, d = case
    x = d["x"].copy()
    x[3, 2, 2, 0] = np.nan
    x[5, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match="1 NaN and 1 infinite"):
        detector.score(x)
    with pytest.raises(ValueError, match="NaN"):
        detector.calibrate(x)
    # In a later batch of a dataset too.
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(4)
    with pytest.raises(ValueError, match="NaN"):
        detector.score(dataset)


def test_truncated_or_foreign_file_names_the_path(case, tmp_path):
    detector, _ = case
    path = tmp_path / "detector.advguard"
    detector.save(path, include_model=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="detector.advguard") as info:
        load_detector(path)
    assert "truncated" in str(info.value) or "corrupt" in str(info.value)
    garbage = tmp_path / "garbage.advguard"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="garbage.advguard"):
        type(detector).load(garbage)
    with pytest.raises(FileNotFoundError, match="missing.advguard"):
        load_detector(tmp_path / "missing.advguard")


def test_failing_save_leaves_the_old_file_and_no_temporary(case, tmp_path, monkeypatch):
    detector, d = case
    path = tmp_path / "detector.advguard"
    detector.save(path, include_model=False)
    before = path.read_bytes()
    calls = {"n": 0}
    real_writestr = zipfile.ZipFile.writestr

    def failing_writestr(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(28, "No space left on device")
        return real_writestr(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing_writestr)
    with pytest.raises(OSError, match="No space left"):
        detector.save(path, include_model=False)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.advguard"]
    assert type(detector).load(path, d["model"]).score(d["x"][:3]).shape == (3,)


def test_statistical_fit_takes_clean_inputs_and_labels(case):
    detector, d = case
    assert isinstance(detector.needs_fit, bool)
    if detector.supervised:
        return  # fit(x, is_adversarial): Keras's own fit, tested with each detector
    clone = detector.clone()
    x, y = d["x_train"][:40], d["y_train"][:40]
    result = clone.fit(x, y, batch_size=16, verbose=0)
    if isinstance(clone, keras.Model):  # a Keras detector fitted on clean data: its History
        assert isinstance(result, keras.callbacks.History)
    else:
        assert result is clone
    assert clone.score(d["x"][:5]).shape == (5,)


def test_shared_pass_features_give_the_own_scores(case):
    detector, d = case
    if detector.tap_request() is None:
        pytest.skip("scores from its own passes (tap_request() is None)")
    from keras_advguard.evaluation._shared import SharedTaps

    shared = SharedTaps(d["model"], {"detector": detector})
    assert shared.names == ["detector"]
    features = shared.features(d["x"], batch_size=8)["detector"]  # 24 inputs, chunks of 32
    np.testing.assert_allclose(detector.score_features(features), detector.score(d["x"]), atol=2e-6)
