import io
import json
import zipfile

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from keras_advguard import metrics
from keras_advguard._validation import NotFittedError
from keras_advguard.datasets import load_dataset
from keras_advguard.detector_model import DetectorModel
from keras_advguard.detectors.knn_detector import KNNDetector


def brute_force_scores(train, labels, queries, predicted, k, weights="uniform"):
    """1 - weighted share of the k nearest training points labelled as predicted."""
    train = np.asarray(train, np.float64)
    scores = []
    for q, c in zip(np.asarray(queries, np.float64), predicted, strict=True):
        d = np.sqrt(((train - q) ** 2).sum(axis=1))
        nearest = np.argsort(d, kind="stable")[:k]
        if weights == "uniform":
            w = np.ones(k)
        elif np.any(d[nearest] == 0):
            w = (d[nearest] == 0).astype(float)
        else:
            w = 1.0 / d[nearest]
        scores.append(1.0 - np.sum(w * (labels[nearest] == c)) / np.sum(w))
    return np.array(scores)


def random_problem(seed=0, n=300, dim=6, classes=4, queries=40):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(classes, dim))
    labels = rng.integers(0, classes, n)
    train = (centers[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    query = (centers[rng.integers(0, classes, queries)] + rng.normal(size=(queries, dim))).astype(
        np.float32
    )
    predicted = rng.integers(0, classes, queries)
    return train, labels, query, predicted


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("k", [1, 7, 30])
def test_scores_match_brute_force(weights, k):
    train, labels, query, predicted = random_problem()
    knn = KNNDetector(n_neighbors=k, weights=weights).fit_activations(train, labels)
    expected = brute_force_scores(train, labels, query, predicted, k, weights)
    np.testing.assert_allclose(knn.score_activations(query, predicted), expected, atol=1e-9)
    # One-hot / probability predictions are reduced by argmax.
    one_hot = np.eye(4)[predicted]
    np.testing.assert_allclose(knn.score_activations(query, one_hot), expected, atol=1e-9)


def test_distance_weights_with_exact_matches():
    train = np.array([[0.0], [0.0], [1.0], [2.0]])
    labels = np.array([0, 1, 1, 1])
    knn = KNNDetector(n_neighbors=4, weights="distance").fit_activations(train, labels)
    # Two neighbours coincide with the query: only they count (one of two is class 0).
    assert knn.score_activations(np.array([[0.0]]), np.array([0])).tolist() == [0.5]
    # At 0.5: three neighbours at distance 0.5 (one of class 0), one at 1.5.
    expected = 1.0 - (1 / 0.5) / (3 / 0.5 + 1 / 1.5)
    np.testing.assert_allclose(
        knn.score_activations(np.array([[0.5]]), np.array([0])), [expected], atol=1e-12
    )


def test_scores_by_k_is_one_search_for_many_k():
    train, labels, query, predicted = random_problem(seed=1)
    knn = KNNDetector().fit_activations(train, labels)
    by_k = knn.scores_by_k(query, predicted, [5, 1, 20])
    assert list(by_k) == [1, 5, 20]
    for k, scores in by_k.items():
        np.testing.assert_allclose(
            scores, brute_force_scores(train, labels, query, predicted, k), atol=1e-9
        )


def test_select_k_maximizes_validation_auc_and_sets_the_threshold():
    train, labels, query, _ = random_problem(seed=2, queries=80)
    rng = np.random.default_rng(3)
    # Clean validation points are predicted as their nearest class; adversarial
    # ones get a random other class.
    nearest = labels[np.argmin(((query[:, None] - train[None]) ** 2).sum(axis=-1), axis=1)]
    is_adv = np.arange(80) % 2 == 1
    predicted = np.where(is_adv, (nearest + rng.integers(1, 4, 80)) % 4, nearest)
    candidates = [1, 3, 10, 50]
    knn = KNNDetector().fit_activations(train, labels)
    assert knn.select_k_activations(query, predicted, is_adv, candidates, fpr=0.1) is knn
    aucs = {
        k: roc_auc_score(is_adv, brute_force_scores(train, labels, query, predicted, k))
        for k in candidates
    }
    best = max(candidates, key=lambda k: (aucs[k], -k))
    assert knn.n_neighbors_ == best
    for k in candidates:
        assert knn.validation_auc_[k] == pytest.approx(aucs[k])
    clean_scores = brute_force_scores(train, labels, query, predicted, best)[~is_adv]
    assert knn.threshold_ == metrics.threshold_at_fpr(clean_scores, 0.1)
    assert knn.fpr_ == 0.1


@pytest.fixture(scope="module")
def digits_knn(digits_model):
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    model, _ = digits_model
    return model, x_train, y_train, x_test, y_test


def test_inputs_path_matches_activations_path(digits_knn, tmp_path):
    model, x_train, y_train, x_test, _ = digits_knn
    x_adv = np.clip(1.0 - x_test[:60], 0.0, 1.0)  # inverted digits: far off the data
    x_val = np.concatenate([x_test[:60], x_adv])
    is_adv = np.r_[np.zeros(60), np.ones(60)]
    knn = KNNDetector(model, "fc4").fit(
        x_train, y_train, validation_data=(x_val, is_adv), k_candidates=[1, 5, 20]
    )
    assert knn.layer_path_ == "fc4" and knn.n_neighbors_ in (1, 5, 20)
    taps = DetectorModel(model, layers=["fc4"])
    train_acts = taps.activations(x_train)["fc4"]
    out = taps.predict(x_test[60:120], verbose=0)
    reference = KNNDetector(n_neighbors=knn.n_neighbors_).fit_activations(train_acts, y_train)
    expected = reference.score_activations(out["activations"]["fc4"], out["prediction"])
    np.testing.assert_allclose(knn.score(x_test[60:120]), expected, atol=1e-12)
    flags = knn.predict(x_test[60:120])
    np.testing.assert_array_equal(flags, knn.score(x_test[60:120]) > knn.threshold_)
    assert knn.calibrate(x_test[:60], fpr=0.2) is knn and knn.fpr_ == 0.2

    # One archive (JSON + npz + .keras), no pickle.
    path = tmp_path / "knn.advguard"
    assert knn.save(path) == path
    with zipfile.ZipFile(path) as archive:
        document = json.loads(archive.read("detector.json"))
        assert sorted(archive.namelist()) == ["arrays.npz", "detector.json", "model.keras"]
        with np.load(io.BytesIO(archive.read("arrays.npz")), allow_pickle=False) as arrays:
            np.testing.assert_array_equal(arrays["train_labels"], y_train)
    assert document["config"]["layer"] == "fc4"
    assert document["class_name"] == "KNNDetector"
    loaded = KNNDetector.load(path)
    assert isinstance(loaded.model, keras.Model)
    assert loaded.n_neighbors_ == knn.n_neighbors_ and loaded.threshold_ == knn.threshold_
    assert loaded.n_calibration_ == knn.n_calibration_ == 60
    assert loaded.validation_auc_ == knn.validation_auc_
    np.testing.assert_array_equal(loaded.score(x_test[60:90]), knn.score(x_test[60:90]))
    no_model = tmp_path / "bare.advguard"
    knn.save(no_model, include_model=False)
    assert KNNDetector.load(no_model, model=model).score(x_test[:5]).shape == (5,)
    with pytest.raises(ValueError, match="saved without its classifier"):
        KNNDetector.load(no_model)


def test_scores_on_a_dataset_of_pairs_use_the_predictions_not_the_labels(digits_knn):
    import tensorflow as tf

    model, x_train, y_train, x_test, y_test = digits_knn
    knn = KNNDetector(model, "fc4", n_neighbors=5).fit(x_train[:400], y_train[:400])
    knn.calibrate(x_test[:100], fpr=0.1)
    x = x_test[100:160]
    expected = knn.score(x)
    # Reference: the vote of the 5 nearest training activations against the
    # classifier's own predicted class (brute force, numpy).
    train_acts, _ = knn.activations(x_train[:400])
    acts, predicted = knn.activations(x)
    np.testing.assert_allclose(
        expected, brute_force_scores(train_acts, y_train[:400], acts, predicted, 5), atol=1e-9
    )
    # Labels that are all wrong: a detector voting against the labels would
    # score the correctly classified inputs as adversarial.
    wrong = (y_test[100:160] + 1) % 10
    assert np.mean(predicted == wrong) < 0.2
    for dataset in [
        tf.data.Dataset.from_tensor_slices((x, wrong)).batch(16),
        tf.data.Dataset.from_tensor_slices((x, wrong)),  # unbatched
    ]:
        np.testing.assert_array_equal(knn.score(dataset), expected)
        np.testing.assert_array_equal(knn.predict(dataset), expected > knn.threshold_)


def test_legacy_json_files_still_load(digits_knn, tmp_path):
    model, x_train, y_train, x_test, _ = digits_knn
    knn = KNNDetector(model, "fc4", n_neighbors=3).fit(x_train[:200], y_train[:200])
    acts, _ = knn.activations(x_train[:200])
    # The files keras_advguard 0.1 wrote: JSON + .npz beside it.
    np.savez(tmp_path / "old.npz", train_activations=acts, train_labels=y_train[:200])
    document = {
        "class_name": "KNNDetector",
        "format_version": 1,
        "params": knn.get_params(),
        "arrays_file": "old.npz",
        "model_file": None,
        "fitted": {"n_neighbors_": 3, "threshold_": 0.5, "fpr_": 0.1},
    }
    (tmp_path / "old.json").write_text(json.dumps(document))
    with pytest.warns(DeprecationWarning, match="legacy KNNDetector"):
        loaded = KNNDetector.load(tmp_path / "old.json", model)
    assert loaded.threshold_ == 0.5 and loaded.n_neighbors_ == 3
    np.testing.assert_array_equal(loaded.score(x_test[:20]), knn.score(x_test[:20]))


def test_save_validates_before_replacing_the_file(digits_knn, tmp_path):
    model, x_train, y_train, x_test, _ = digits_knn
    # numpy scalars are saved as Python numbers (the n_jobs=np.int64(1)).
    knn = KNNDetector(model, "fc4", n_neighbors=np.int64(3), n_jobs=np.int64(1))
    knn.fit(x_train[:200], y_train[:200])
    path = tmp_path / "knn.advguard"
    knn.save(path)
    before = path.read_bytes()
    assert KNNDetector.load(path).n_jobs == 1
    knn.n_jobs = object()  # not JSON-serializable: refused before anything is written
    with pytest.raises(TypeError, match="n_jobs"):
        knn.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["knn.advguard"]


def test_fit_on_a_dataset_of_pairs(digits_knn):
    import tensorflow as tf

    model, x_train, y_train, x_test, _ = digits_knn
    dataset = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(100)
    from_dataset = KNNDetector(model, "conv2", n_neighbors=7).fit(dataset)
    from_arrays = KNNDetector(model, "conv2", n_neighbors=7).fit(x_train, y_train)
    np.testing.assert_array_equal(from_dataset.train_labels_, y_train)
    np.testing.assert_array_equal(from_dataset.score(x_test[:30]), from_arrays.score(x_test[:30]))
    with pytest.raises(ValueError, match="`y` must be None"):
        KNNDetector(model, "conv2").fit(dataset, y_train)
    with pytest.raises(ValueError, match="Labels `y` are required"):
        KNNDetector(model, "conv2").fit(x_train)


def test_errors(digits_knn, tmp_path):
    model, x_train, y_train, x_test, _ = digits_knn
    train, labels, query, predicted = random_problem()
    with pytest.raises(NotFittedError, match="not fitted yet"):
        KNNDetector().score_activations(query, predicted)
    fitted = KNNDetector(n_neighbors=3).fit_activations(train, labels)
    with pytest.raises(NotFittedError, match="Call `calibrate"):
        fitted.predict(query)  # no threshold yet
    with pytest.raises(ValueError, match="`fpr` must be < 1"):
        fitted.calibrate_activations(query, predicted, fpr=1.0)
    with pytest.raises(ValueError, match="NaN"):
        fitted.score_activations(np.full_like(query, np.nan), predicted)
    with pytest.raises(ValueError, match="has no model"):
        fitted.score(x_test[:2])
    with pytest.raises(ValueError, match="k cannot exceed the 300 training samples"):
        fitted.scores_by_k(query, predicted, [301])
    with pytest.raises(ValueError, match="6 features"):
        fitted.score_activations(query[:, :3], predicted)
    with pytest.raises(ValueError, match="clean \\(0\\) and adversarial \\(1\\)"):
        fitted.select_k_activations(query, predicted, np.ones(len(query)))
    with pytest.raises(ValueError, match="0 \\(clean\\) and 1 \\(adversarial\\) only"):
        fitted.select_k_activations(query, predicted, np.full(len(query), 2))
    with pytest.raises(ValueError, match="weights"):
        KNNDetector(weights="cosine").fit_activations(train, labels)
    with pytest.raises(ValueError, match="n_neighbors"):
        KNNDetector(n_neighbors=0).fit_activations(train, labels)
    with pytest.raises(ValueError, match="exactly one layer"):
        KNNDetector(model, "conv+dense").fit(x_train, y_train)
    with pytest.raises(ValueError, match="`layer` is required"):
        KNNDetector(model).fit(x_train, y_train)
    with pytest.raises(ValueError, match="validation_data"):
        KNNDetector(model, "fc4").fit(x_train, y_train, k_candidates=[1, 2])
    with pytest.raises(ValueError, match="NaN"):
        KNNDetector(model, "fc4").fit(np.full_like(x_train[:4], np.nan), y_train[:4])


def test_score_tensor_first_called_inside_a_tf_function_works_again_later(digits_knn):
    # The training tensors are cached on the first call; made inside a traced
    # function they used to be graph tensors, and every later call (eager or in
    # another function) failed with an out-of-scope error.
    import tensorflow as tf

    model, x_train, y_train, x_test, _ = digits_knn
    knn = KNNDetector(model, "fc4", n_neighbors=5).fit(x_train[:300], y_train[:300])
    x = tf.constant(x_test[:8], "float32")
    traced = tf.function(lambda batch: knn.score_tensor(batch))(x)
    eager = knn.score_tensor(x)
    again = tf.function(lambda batch: knn.score_tensor(batch))(x)
    # The scores are `1 - (a weighted fraction)` in float32: their resolution is
    # eps(1.0) = 1.2e-7, and a traced graph may sum in another order (seen: one ulp).
    np.testing.assert_allclose(np.asarray(traced), np.asarray(eager), rtol=1e-6, atol=5e-7)
    np.testing.assert_allclose(np.asarray(again), np.asarray(eager), rtol=1e-6, atol=5e-7)


def test_cached_taps_and_tensors_follow_a_refit_and_a_new_layer(digits_knn):
    # `_memo`: the DetectorModel and the training tensors are rebuilt when
    # what they were built from changes, so a refitted (or re-tapped) detector
    # scores like a fresh one.
    import tensorflow as tf

    model, x_train, y_train, x_test, _ = digits_knn
    x = tf.constant(x_test[:8], "float32")
    knn = KNNDetector(model, "fc4", n_neighbors=5).fit(x_train[:100], y_train[:100])
    first = np.asarray(knn.score_tensor(x))
    knn.fit(x_train[100:300], y_train[100:300])
    fresh = KNNDetector(model, "fc4", n_neighbors=5).fit(x_train[100:300], y_train[100:300])
    np.testing.assert_allclose(knn.score_tensor(x), fresh.score_tensor(x), rtol=1e-6, atol=1e-7)
    assert not np.allclose(first, fresh.score_tensor(x))  # the check can fail
    knn.layer = "conv2"
    knn.fit(x_train[:100], y_train[:100])
    conv = KNNDetector(model, "conv2", n_neighbors=5).fit(x_train[:100], y_train[:100])
    assert knn.layer_path_ == "conv2"
    np.testing.assert_allclose(knn.score_tensor(x), conv.score_tensor(x), rtol=1e-6, atol=1e-7)
