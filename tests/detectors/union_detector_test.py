"""UnionDetector: the OR of several detectors of one classifier, checked against numpy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard._validation import NotFittedError
from keras_advguard.datasets import load_dataset
from keras_advguard.detectors import (
    EntropyDetector,
    KNNDetector,
    MaxSoftmaxDetector,
    UnionDetector,
    load_detector,
)


@pytest.fixture(scope="module")
def parts(digits_model):
    model, _ = digits_model
    (x_train, y_train), (x_test, _) = load_dataset("digits")
    knn = KNNDetector(model, "fc4", n_neighbors=5).fit(x_train[:300], y_train[:300])
    return {
        "model": model,
        "components": [MaxSoftmaxDetector(model), knn],
        "x_fit": x_test[:80],
        "x_val": x_test[80:160],
        "x": x_test[160:200],
    }


def _kth_largest_rule(scores, fpr):
    """The threshold rule worked independently: the (floor(fpr n) + 1)-th largest score."""
    ordered = np.sort(np.asarray(scores, np.float64))[::-1]
    return ordered[int(np.floor(fpr * len(ordered)))]


def test_score_is_the_largest_normalized_component_score(parts):
    union = UnionDetector(parts["components"], anchor_fpr=0.1).fit(parts["x_fit"])
    expected_columns = []
    for detector in parts["components"]:
        clean = detector.score(parts["x_fit"])
        center, anchor = np.median(clean), _kth_largest_rule(clean, 0.1)
        expected_columns.append((detector.score(parts["x"]) - center) / (anchor - center))
    expected = np.max(np.stack(expected_columns, axis=1), axis=1)
    np.testing.assert_allclose(union.score(parts["x"]), expected, rtol=1e-12)
    np.testing.assert_allclose(
        union.component_scores(parts["x"]), np.stack(expected_columns, axis=1), rtol=1e-12
    )
    # Both components decide somewhere (else the test would not test the maximum).
    assert set(np.argmax(union.component_scores(parts["x_val"]), axis=1)) == {0, 1}


def test_above_one_iff_some_component_flags_at_its_anchor_threshold(parts):
    union = UnionDetector(parts["components"], anchor_fpr=0.1).fit(parts["x_fit"])
    flags = [
        d.clone().calibrate(parts["x_fit"], fpr=0.1).predict(parts["x_val"])
        for d in parts["components"]
    ]
    np.testing.assert_array_equal(union.score(parts["x_val"]) > 1.0, np.logical_or(*flags))


def test_calibrate_sets_the_unions_own_rate(parts):
    union = (
        UnionDetector(parts["components"]).fit(parts["x_fit"]).calibrate(parts["x_val"], fpr=0.1)
    )
    scores = union.score(parts["x_val"])
    assert union.threshold_ == pytest.approx(_kth_largest_rule(scores, 0.1))
    assert union.predict(parts["x_val"]).mean() <= 0.1
    assert union.n_calibration_ == len(parts["x_val"])


def test_score_tensor_gradient_is_the_top_components(parts):
    from keras_advguard.detectors import InputCNNDetector

    keras.utils.set_random_seed(0)
    cnn = InputCNNDetector(parts["model"], filters=(4,), dense_units=8)
    rng = np.random.default_rng(0)
    noisy = np.clip(parts["x_fit"] + rng.choice([-0.4, 0.4], parts["x_fit"].shape), 0, 1)
    labels = np.r_[np.zeros(len(noisy)), np.ones(len(noisy))].astype("float32")
    cnn.fit(np.concatenate([parts["x_fit"], noisy]).astype("float32"), labels, epochs=1, verbose=0)
    union = UnionDetector([MaxSoftmaxDetector(parts["model"]), cnn]).fit(parts["x_fit"])
    assert union.score_tensor_kind == "exact"
    x = tf.constant(parts["x"][:8])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        value = union.score_tensor(x)
        columns = [
            (d.score_tensor(x) - m) / s
            for d, m, s in zip(union.detectors, union.centers_, union.scales_, strict=True)
        ]
    np.testing.assert_allclose(value.numpy(), union.score(parts["x"][:8]), atol=1e-5)
    gradient = tape.gradient(value, x).numpy()
    # Row i of the gradient of a column's sum is d column_k,i / dx_i (rows are independent).
    per_column = [tape.gradient(column, x).numpy() for column in columns]
    top = np.argmax(union.component_scores(parts["x"][:8]), axis=1)
    assert set(top) == {0, 1}  # both components decide some rows
    for i, k in enumerate(top):
        np.testing.assert_allclose(gradient[i], per_column[k][i], rtol=1e-5, atol=1e-8)


def test_least_exact_component_sets_the_kind(parts):
    soft, knn = parts["components"]
    entropy = EntropyDetector(parts["model"])
    assert knn.score_tensor_kind == "surrogate" and entropy.score_tensor_kind == "bpda"
    assert UnionDetector([soft, entropy]).score_tensor_kind == "bpda"
    assert UnionDetector([soft, knn]).score_tensor_kind == "surrogate"
    assert UnionDetector([entropy, knn]).score_tensor_kind == "surrogate"


def test_save_load_keeps_components_normalization_and_threshold(parts, tmp_path):
    union = UnionDetector(parts["components"]).fit(parts["x_fit"]).calibrate(parts["x_val"])
    path = tmp_path / "union.advguard"
    union.save(path)
    loaded = load_detector(path)
    assert type(loaded) is UnionDetector
    assert [type(d) for d in loaded.detectors] == [MaxSoftmaxDetector, KNNDetector]
    assert loaded.threshold_ == union.threshold_ and loaded.anchor_fpr == union.anchor_fpr
    np.testing.assert_array_equal(loaded.centers_, union.centers_)
    np.testing.assert_allclose(loaded.score(parts["x"]), union.score(parts["x"]), atol=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["union.advguard"]


def test_clone_shares_the_components_and_drops_the_threshold(parts):
    union = UnionDetector(parts["components"]).fit(parts["x_fit"]).calibrate(parts["x_val"])
    clone = union.clone()
    assert clone.detectors[1] is union.detectors[1]
    assert getattr(clone, "threshold_", None) is None
    np.testing.assert_array_equal(clone.score(parts["x"]), union.score(parts["x"]))


def test_errors_name_the_argument(parts):
    model = parts["model"]
    soft, knn = parts["components"]
    with pytest.raises(TypeError, match="list of at least two"):
        UnionDetector(soft)
    with pytest.raises(ValueError, match="at least two"):
        UnionDetector([soft])
    with pytest.raises(TypeError, match=r"detectors\[1\]"):
        UnionDetector([soft, "knn"])
    with pytest.raises(ValueError, match="anchor_fpr"):
        UnionDetector([soft, knn], anchor_fpr=1.0)
    with pytest.raises(NotFittedError, match="fit"):
        UnionDetector([soft, knn]).score(parts["x"])
    other = keras.models.clone_model(model)  # fresh weights
    other.build(model.inputs[0].shape)
    with pytest.raises(ValueError, match="same classifier"):
        UnionDetector([soft, MaxSoftmaxDetector(other)])
    # The same weights in another object are the same classifier.
    other.set_weights(model.get_weights())
    UnionDetector([soft, MaxSoftmaxDetector(other)])
    with pytest.raises(ValueError, match="NaN"):
        UnionDetector([soft, knn]).fit(np.full_like(parts["x_fit"][:4], np.nan))


def test_a_constant_component_cannot_be_normalized(parts):
    class _Constant(MaxSoftmaxDetector):  # "_": not registered as a loadable detector
        def score(self, x, *, batch_size=128, verbose=0):
            return np.zeros(len(x))

    with pytest.raises(ValueError, match=r"detectors\[1\] \(_Constant\)"):
        UnionDetector([parts["components"][0], _Constant(parts["model"])]).fit(parts["x_fit"])


def test_evaluate_attacks_the_union_as_one_detector(parts):
    from keras_advguard.evaluation import evaluate

    train, test = load_dataset("digits")
    union = UnionDetector(parts["components"]).fit(parts["x_fit"])
    report = evaluate(
        parts["model"],
        train,
        test,
        defences=[("union", union, {"fit": False})],
        attacks=["fgsm"],
        num_images=60,
        splits=2,
        quick=True,
        adaptive_steps=5,
        baselines=False,
        cache_dir=False,
        verbose=0,
    )
    entry = report.detectors["union"]
    assert entry["class"] == "UnionDetector" and entry["score_tensor_kind"] == "surrogate"
    adaptive = entry["adaptive"]
    assert "error" not in adaptive and adaptive["n_sources"] > 0
    assert 0.0 <= adaptive["sr_at_fpr"][1] <= adaptive["success_rate"]
    # Used as given: the normalization the user fitted is the one attacked.
    np.testing.assert_array_equal(
        union.centers_, UnionDetector(parts["components"]).fit(parts["x_fit"]).centers_
    )


def test_shared_pass_gives_the_own_scores(parts):
    from keras_advguard.evaluation._shared import SharedTaps

    union = UnionDetector(parts["components"]).fit(parts["x_fit"])
    assert union.tap_request() == {"layers": ["fc4"], "pooling": parts["components"][1].pooling}
    shared = SharedTaps(parts["model"], {"union": union})
    features = shared.features(parts["x"], batch_size=8)["union"]
    assert features.shape == (len(parts["x"]), 2)
    np.testing.assert_allclose(union.score_features(features), union.score(parts["x"]), atol=2e-6)
    # A component with passes of its own: the union keeps its own pass too.
    entropy = EntropyDetector(parts["model"])
    assert UnionDetector([parts["components"][0], entropy]).tap_request() is None
