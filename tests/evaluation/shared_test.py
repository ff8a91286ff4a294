"""The shared activation pass of `evaluate` against each detector's own pass."""

import keras
import numpy as np
import pytest

from keras_advguard.datasets import load_dataset
from keras_advguard.detectors import (
    EntropyDetector,
    KNNDetector,
    MaxSoftmaxDetector,
    MedoidLSTMDetector,
)
from keras_advguard.evaluation import _shared, evaluate


class OwnPassLSTM(MedoidLSTMDetector):
    """The same detector, but it does not take part in a shared pass."""

    def tap_request(self):
        return None


@pytest.fixture(scope="module")
def setup(digits_model):
    model, _ = digits_model
    (x_train, y_train), (x_test, _) = load_dataset("digits")
    knn = KNNDetector(model, layer="fc4", n_neighbors=5).fit(x_train[:200], y_train[:200])
    lstm = MedoidLSTMDetector.from_training_data(
        model, x_train[:200], y_train[:200], lstm_units=4, layers="conv+dense"
    )
    return model, (x_train, y_train), x_test[:70], knn, lstm


def test_shared_features_score_like_each_detector_alone(setup):
    model, _, x, knn, lstm = setup
    detectors = {
        "max_softmax": MaxSoftmaxDetector(model),
        "knn": knn,
        "medoid_lstm": lstm,
        "entropy": EntropyDetector(model),  # needs gradients: keeps its own pass
    }
    shared = _shared.SharedTaps(model, detectors)
    assert shared.names == ["max_softmax", "knn", "medoid_lstm"]
    union = set(lstm.tap_names) | {knn.layer_path_}
    assert set(shared.taps.tap_names) == union
    # batch_size 8: 70 inputs arrive in three chunks of the pass
    features = shared.features(x, batch_size=8)
    for name in shared.names:
        detector = detectors[name]
        own = detector.score(x)
        np.testing.assert_allclose(detector.score_features(features[name]), own, atol=2e-6)
    assert features["medoid_lstm"].shape == (70, len(lstm.tap_names), 10)


def test_a_detector_of_another_model_keeps_its_own_pass(setup, digits_model):
    model, *_ = setup
    other = keras.models.clone_model(model)
    shared = _shared.SharedTaps(model, {"other": MaxSoftmaxDetector(other)})
    assert shared.names == [] and shared.taps is None


def test_fit_features_trains_exactly_like_fit(setup):
    _, _, x, _, lstm = setup
    x = x[:32]
    y = (np.arange(len(x)) % 2).astype("float32")
    on_images, on_features = lstm.clone(), lstm.clone()
    for layer in ("lstm", "head"):
        getattr(on_features, layer).set_weights(getattr(on_images, layer).get_weights())
    keras.utils.set_random_seed(3)
    on_images.fit(x, y, epochs=2, batch_size=16, verbose=0)
    keras.utils.set_random_seed(3)
    on_features.fit_features(lstm.features(x), y, epochs=2, batch_size=16, verbose=0)
    trained = on_images.score(x)
    assert np.abs(trained - lstm.score(x)).max() > 1e-3  # training moved the scores
    np.testing.assert_allclose(on_features.score(x), trained, atol=1e-5)


def test_fit_features_refuses_bad_features(setup):
    _, _, x, _, lstm = setup
    with pytest.raises(ValueError, match="features"):
        lstm.clone().fit_features(np.zeros((4, 2, 10)), np.zeros(4))
    bad = lstm.features(x[:4])
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="features"):
        lstm.clone().fit_features(bad, np.zeros(4))


@pytest.mark.slow  # two evaluate runs (~60 s on 2 idle cores)
def test_evaluate_gives_the_same_figures_with_and_without_the_shared_pass(setup, tmp_path):
    model, train, _, _, lstm = setup
    test = load_dataset("digits")[1]
    own = OwnPassLSTM(lstm.detector_model, lstm.distance, lstm_units=lstm.lstm_units)
    kwargs = dict(
        attacks=["fgsm"],
        threat_models=("oblivious",),
        num_images=60,
        splits=2,
        quick=True,
        cache_dir=str(tmp_path),
        verbose=0,
    )
    shared = evaluate(model, train, test, defences=[lstm], **kwargs)
    alone = evaluate(model, train, test, defences=[own], **kwargs)
    a = shared.detectors["MedoidLSTMDetector"]
    b = alone.detectors["OwnPassLSTM"]
    assert a["shared_taps"] and not b["shared_taps"]
    for label in ("fgsm", "mixed"):
        for key in ("auc", "tpr"):
            np.testing.assert_allclose(
                a["oblivious"][label][key], b["oblivious"][label][key], atol=1e-6
            )
    assert shared.detectors["max_softmax"]["shared_taps"]
    assert not shared.detectors["input_cnn"]["shared_taps"]


def test_read_dataset_keeps_a_seeded_uniform_sample_in_order():
    import tensorflow as tf

    from keras_advguard.evaluation._arguments import read_dataset

    x = np.arange(100, dtype="float32").reshape(100, 1, 1, 1)
    y = np.arange(100) % 10
    ds = tf.data.Dataset.from_tensor_slices((x, keras.utils.to_categorical(y, 10))).batch(7)
    xs, ys = read_dataset("test", ds, 4)
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(ys, y)  # one-hot labels become class ids
    a, ya = read_dataset("test", ds, 4, limit=20, seed=1)
    b, _ = read_dataset("test", ds.unbatch(), 4, limit=20, seed=1)
    assert a.shape == (20, 1, 1, 1) and np.all(np.diff(a.ravel()) > 0)  # dataset order
    np.testing.assert_array_equal(ya, a.ravel().astype(int) % 10)  # pairs stay pairs
    assert len(np.unique(a)) == 20 and not np.array_equal(a, x[:20])
    c, _ = read_dataset("test", ds, 4, limit=20, seed=2)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="pairs"):
        read_dataset("test", tf.data.Dataset.from_tensor_slices(x), 4)
    del b


def test_evaluate_arguments_read_tf_data(digits_model):
    import tensorflow as tf

    from keras_advguard.evaluation._arguments import check_arguments

    model, _ = digits_model
    train, test = load_dataset("digits")
    args = dict(
        defences=None,
        attacks=["fgsm"],
        threat_models=("oblivious",),
        fpr=0.05,
        splits=2,
        seed=0,
        cache_dir=False,
        verbose=0,
        eps=None,
        clip=None,
        quick=True,
        epochs=None,
        batch_size=32,
    )
    config = check_arguments(
        model,
        tf.data.Dataset.from_tensor_slices(train).batch(64),
        tf.data.Dataset.from_tensor_slices(test),
        num_images=40,
        **args,
    )
    np.testing.assert_array_equal(config["train"][0], train[0])
    assert len(config["test"][0]) == 40 and config["num_images"] == 40
    bad = tf.data.Dataset.from_tensor_slices((np.full((3, 8, 8, 1), np.nan, "float32"), [0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        check_arguments(model, bad, test, num_images=None, **args)


@pytest.mark.slow  # a whole (quick) evaluate run
def test_evaluate_takes_tf_data(digits_model):
    import tensorflow as tf

    model, _ = digits_model
    train, test = load_dataset("digits")
    report = evaluate(
        model,
        tf.data.Dataset.from_tensor_slices(train).batch(64),
        tf.data.Dataset.from_tensor_slices(test),
        defences=["max_softmax"],
        attacks=["fgsm"],
        threat_models=("oblivious",),
        num_images=40,
        splits=2,
        quick=True,
        cache_dir=False,
        verbose=0,
    )
    assert report.meta["n_images"] == 40 and report.meta["n_train"] == len(train[0])
    assert report.detectors["max_softmax"]["oblivious"]["mixed"] is not None
