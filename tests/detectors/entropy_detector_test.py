import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from skimage.filters.rank import entropy as skimage_entropy

from keras_advguard import attacks, metrics
from keras_advguard._validation import NotFittedError
from keras_advguard.detectors.entropy_detector import EntropyDetector
from keras_advguard.detectors.feature_response import feature_response
from keras_advguard.detectors.local_spatial_entropy import response_to_gray

SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist.npz"


def small_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(6, 3, activation="relu", name="c2"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ],
        name="small_cnn",
    )


@pytest.fixture(scope="module")
def model():
    return small_cnn()


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 12, 12, 1)).astype("float32")


def test_score_is_the_mean_skimage_entropy_of_the_gray_response(model):
    x = images(6)
    gray = response_to_gray(feature_response(model, x)).numpy().astype(np.uint8)
    expected = np.array([skimage_entropy(g, np.ones((3, 3))).mean() for g in gray])
    detector = EntropyDetector(model)
    np.testing.assert_allclose(detector.mean_entropy(x), expected, atol=1e-12)
    np.testing.assert_allclose(detector.score(x), expected, atol=1e-12)
    maps = detector.entropy_maps(x)
    assert maps.shape == (6, 12, 12)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), expected, atol=1e-12)
    np.testing.assert_array_equal(detector.gray_maps(x), gray.astype(np.float32))


def test_fit_calibrates_on_clean_scores_at_each_fpr(model):
    x_val = images(60, seed=1)
    detector = EntropyDetector(model, batch_size=16)
    assert detector.fit(x_val) is detector
    scores = detector.score(x_val)
    assert list(detector.thresholds_) == [0.01, 0.05, 0.1]
    for fpr, threshold in detector.thresholds_.items():
        assert threshold == metrics.threshold_at_fpr(scores, fpr)
        assert np.mean(detector.predict(x_val, fpr=fpr)) <= fpr
    assert detector.threshold_ == detector.thresholds_[0.05]
    assert detector.n_calibration_ == 60 and detector.layer_path_ == "c2"
    x_test = images(20, seed=2)
    np.testing.assert_array_equal(
        detector.predict(x_test), detector.score(x_test) > detector.threshold_
    )
    flagged = detector.predict(x_test)
    assert flagged.dtype == bool and flagged.shape == (20,)


def test_fpr_list_and_operating_point(model):
    detector = EntropyDetector(model, fpr=0.2).fit(images(30), fpr=[0.01, 0.1])
    assert list(detector.thresholds_) == [0.01, 0.1, 0.2]
    assert detector.threshold_ == detector.thresholds_[0.2]
    assert detector.predict(images(3), fpr=0.1).shape == (3,)
    with pytest.raises(ValueError, match="No threshold calibrated for fpr=0.3"):
        detector.predict(images(3), fpr=0.3)
    single = EntropyDetector(model).fit(images(30), fpr=0.05)
    assert list(single.thresholds_) == [0.05]


def test_direction_lower_flips_the_score_and_the_side(model):
    x_val, x = images(40, seed=3), images(10, seed=4)
    higher = EntropyDetector(model).fit(x_val)
    lower = EntropyDetector(model, direction="lower").fit(x_val)
    np.testing.assert_allclose(lower.score(x), -higher.score(x))
    np.testing.assert_allclose(lower.mean_entropy(x), higher.mean_entropy(x))
    # "lower" flags the lowest clean entropies.
    entropy = higher.mean_entropy(x_val)
    flagged = lower.predict(x_val, fpr=0.1)
    assert flagged.sum() >= 1
    assert entropy[flagged].max() < np.sort(entropy)[flagged.sum()]


def test_fgsm_raises_the_score_on_mnist():
    """The paper's side (adversarial = higher entropy), checked on real data."""
    from keras_advguard.datasets import load_dataset

    # MNIST lies in ../shared/data beside the checkout (here and in CI): a
    # missing file is a broken setup, reported, not a silent skip.
    assert SHARED_MNIST.exists(), f"MNIST is missing: expected it at {SHARED_MNIST}"
    (x_train, y_train), (x_test, y_test) = load_dataset("mnist", path=str(SHARED_MNIST))
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    net.compile("adam", "sparse_categorical_crossentropy")
    net.fit(x_train[:3000], y_train[:3000], epochs=2, batch_size=64, verbose=0)
    x, y = x_test[:150], y_test[:150]
    result = attacks.fgsm(net, x, eps=0.2, y=y)
    sets = metrics.evaluation_sets(y, result.y_pred_before, result.y_pred_after)
    assert sets.n_adversarial >= 30
    detector = EntropyDetector(net)
    clean = detector.score(x[sets.clean_index])
    adv = detector.score(result.x_adv[sets.adversarial_index])
    assert adv.mean() > clean.mean()
    assert metrics.roc_auc(clean, adv) > 0.8


def test_differentiable_score_value_and_gradient(model):
    detector = EntropyDetector(model)
    x = tf.constant(images(4, seed=5))
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = detector.differentiable_score(x)
    np.testing.assert_allclose(value.numpy(), detector.score(x.numpy()), atol=1e-12)
    grad = tape.gradient(value, x).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_save_load_round_trip(model, tmp_path):
    detector = EntropyDetector(model, patch=5, fpr=0.1, batch_size=7).fit(images(30))
    path = tmp_path / "detector.advguard"
    detector.save(path)
    with zipfile.ZipFile(path) as archive:
        document = json.loads(archive.read("detector.json"))
    assert document["state"]["layer_path"] == "c2"
    loaded = EntropyDetector.load(path, model)
    assert loaded.thresholds_ == detector.thresholds_
    assert loaded.threshold_ == detector.threshold_ and loaded.fpr_ == 0.1
    assert (loaded.patch, loaded.fpr, loaded.batch_size) == (5, 0.1, 7)
    x = images(9, seed=6)
    np.testing.assert_allclose(loaded.score(x), detector.score(x), atol=1e-12)
    np.testing.assert_array_equal(loaded.predict(x), detector.predict(x))
    # The model is stored too (include_model=True): load without it.
    np.testing.assert_allclose(EntropyDetector.load(path).score(x), detector.score(x), atol=1e-12)


def test_legacy_json_file_still_loads(model, tmp_path):
    from keras_advguard._fingerprint import weights_fingerprint

    detector = EntropyDetector(model, fpr=0.1).fit(images(20))
    legacy = {
        "format": "keras_advguard.EntropyDetector",
        "format_version": 1,
        "config": detector.get_config(),
        "fitted": {
            "layer_path": "c2",
            "thresholds": [[f, t] for f, t in sorted(detector.thresholds_.items())],
            "n_calibration": 20,
        },
        "model": {
            "name": model.name,
            "input_shape": [12, 12, 1],
            "weights_sha256": weights_fingerprint(model),
        },
    }
    (tmp_path / "old.json").write_text(json.dumps(legacy))
    with pytest.warns(DeprecationWarning, match="legacy EntropyDetector"):
        loaded = EntropyDetector.load(tmp_path / "old.json", model)
    assert loaded.thresholds_ == detector.thresholds_ and loaded.threshold_ == detector.threshold_
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="SHA-256"):
        EntropyDetector.load(tmp_path / "old.json", small_cnn(seed=1))


def test_save_resolves_a_layer_object_to_its_path(model, tmp_path):
    detector = EntropyDetector(model, layer=model.get_layer("c1")).fit(images(20))
    detector.save(tmp_path / "d.advguard")
    loaded = EntropyDetector.load(tmp_path / "d.advguard", model)
    assert loaded.layer == "c1"
    np.testing.assert_allclose(loaded.score(images(3)), detector.score(images(3)))


def test_load_refuses_another_model_and_other_files(model, tmp_path):
    detector = EntropyDetector(model).fit(images(20))
    detector.save(tmp_path / "d.advguard", include_model=False)
    other = small_cnn(seed=1)
    with pytest.raises(ValueError, match="not those the detector"):
        EntropyDetector.load(tmp_path / "d.advguard", other)
    loaded = EntropyDetector.load(tmp_path / "d.advguard", other, check_weights=False)
    assert loaded.thresholds_ == detector.thresholds_
    (tmp_path / "x.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="does not hold a saved keras_advguard detector"):
        EntropyDetector.load(tmp_path / "x.json", model)


def test_unfitted_detector_raises(model, tmp_path):
    detector = EntropyDetector(model)
    with pytest.raises(NotFittedError, match="Call `calibrate"):
        detector.predict(images(2))
    assert detector.score(images(2)).shape == (2,)  # scoring needs no fit
    # An unfitted detector saves and loads unfitted.
    detector.save(tmp_path / "d.advguard", include_model=False)
    assert getattr(EntropyDetector.load(tmp_path / "d.advguard", model), "threshold_", None) is None


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"fpr": 1.0}, ValueError),
        ({"fpr": -0.1}, ValueError),
        ({"fpr": "5%"}, TypeError),
        ({"patch": 0}, ValueError),
        ({"direction": "up"}, ValueError),
        ({"levels": 1}, ValueError),
        ({"batch_size": 0}, ValueError),
    ],
)
def test_bad_parameters(model, kwargs, error):
    with pytest.raises(error):
        EntropyDetector(model, **kwargs).fit(images(10))


def test_bad_fit_fpr_and_inputs(model):
    detector = EntropyDetector(model)
    with pytest.raises(ValueError, match="fpr"):
        detector.fit(images(10), fpr=[0.05, 1.5])
    with pytest.raises(ValueError, match="empty"):
        detector.fit(images(10), fpr=[])
    with pytest.raises(ValueError, match=r"shape \(N, 12, 12, 1\)"):
        detector.fit(np.zeros((5, 12, 11, 1), "float32"))
    with pytest.raises(ValueError, match="must not be empty"):
        detector.fit(np.zeros((0, 12, 12, 1), "float32"))
    fitted = detector.fit(images(10))
    with pytest.raises(ValueError, match="shape"):
        fitted.score(np.zeros((12, 12, 1), "float32"))


def test_model_without_conv_layer_and_non_models():
    dense = keras.Sequential(
        [keras.Input((12, 12, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    with pytest.raises(ValueError, match="no convolutional layer"):
        EntropyDetector(dense).fit(images(5))
    with pytest.raises(TypeError, match="keras.Model"):
        EntropyDetector(lambda x: x).fit(images(5))
