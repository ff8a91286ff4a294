import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard import DetectorModel
from keras_advguard._validation import NotFittedError
from keras_advguard.detectors import ClassMedoids
from keras_advguard.detectors import class_medoids as class_medoids_module
from keras_advguard.layers.medoid_distance import MedoidDistance


def brute_force_medoid(points):
    """Reference: float64 pairwise distances, numpy argmin (lowest index on ties)."""
    points = np.asarray(points, dtype=np.float64)
    distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    return int(np.argmin(distances.sum(axis=1)))


def brute_force_fit(activations, labels, num_classes, keep=None):
    keep = np.ones(len(labels), bool) if keep is None else keep
    indices = {}
    for key, values in activations.items():
        indices[key] = []
        for c in range(num_classes):
            members = np.flatnonzero((labels == c) & keep)
            indices[key].append(members[brute_force_medoid(values[members])])
    return indices


def naive_float32_medoid(points):
    """The textbook float32 expansion without centering or refinement."""
    y = np.asarray(points, dtype=np.float32)
    sq = (y * y).sum(axis=1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * y @ y.T, 0))
    return int(np.argmin(d.sum(axis=1, dtype=np.float64)))


def random_problem(seed, n=90, num_classes=4, widths=(5, 17)):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(num_classes), rng.integers(0, num_classes, n)])
    activations = {
        f"layer{i}": np.abs(rng.normal(size=(len(labels), w))).astype(np.float32)
        for i, w in enumerate(widths)
    }
    return activations, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_data(seed):
    activations, labels = random_problem(seed)
    fitted = ClassMedoids(block_size=16).fit(activations, labels)
    expected = brute_force_fit(activations, labels, 4)
    assert list(fitted.medoids_) == ["layer0", "layer1"]
    for key, values in activations.items():
        np.testing.assert_array_equal(fitted.medoid_indices_[key], expected[key])
        np.testing.assert_array_equal(fitted.medoids_[key], values[expected[key]])
        assert fitted.medoids_[key].shape == (4, values.shape[1])
        assert fitted.medoids_[key].dtype == np.float32
    np.testing.assert_array_equal(fitted.classes_, np.arange(4))
    np.testing.assert_array_equal(fitted.n_samples_per_class_, np.bincount(labels))


@pytest.mark.parametrize("block_size", [1, 2, 5, 64])
def test_block_size_does_not_change_the_answer(block_size):
    activations, labels = random_problem(3, n=60, widths=(9,))
    reference = ClassMedoids(block_size=1000).fit(activations, labels)
    fitted = ClassMedoids(block_size=block_size).fit(activations, labels)
    np.testing.assert_array_equal(
        fitted.medoid_indices_["layer0"], reference.medoid_indices_["layer0"]
    )


def test_duplicates_resolve_to_lowest_index():
    # Hand-worked: the sample 5 (rows 1 and 3) has sum 5 + 5 + 0 = 10, the
    # others 20; the duplicate tie goes to row 1.
    points = np.array([[0.0], [5.0], [10.0], [5.0]])
    fitted = ClassMedoids().fit([points], np.zeros(4, int))
    assert fitted.medoid_indices_[0].tolist() == [1]
    # Many duplicates in random data: same answer as the brute force.
    rng = np.random.default_rng(4)
    base = rng.normal(size=(6, 8))
    points = base[rng.integers(0, 6, 40)]
    for block_size in (1, 3, 512):
        fitted = ClassMedoids(block_size=block_size).fit([points], np.zeros(40, int))
        assert fitted.medoid_indices_[0][0] == brute_force_medoid(points)
    # Every sample identical.
    fitted = ClassMedoids().fit([np.ones((7, 3))], np.zeros(7, int))
    assert fitted.medoid_indices_[0].tolist() == [0]


def test_exact_ties_resolve_to_lowest_index():
    # 0, 1, 2, 3 on a line: sums 6, 4, 4, 6, a tie between rows 1 and 2.
    points = np.array([[3.0], [1.0], [2.0], [0.0]])
    fitted = ClassMedoids(block_size=2).fit([points], np.zeros(4, int))
    assert fitted.medoid_indices_[0].tolist() == [1]
    assert brute_force_medoid(points) == 1


def test_class_with_one_sample():
    activations = {"a": np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0], [9.0, 9.0]])}
    labels = np.array([0, 1, 0, 0])
    fitted = ClassMedoids().fit(activations, labels)
    assert fitted.medoid_indices_["a"].tolist() == [2, 1]
    np.testing.assert_array_equal(fitted.medoids_["a"][1], [3.0, 4.0])
    assert fitted.n_samples_per_class_.tolist() == [3, 1]


@pytest.mark.parametrize(
    "offset, step, dtype", [(1.0, 1e-4, np.float64), (100.0, 1e-2, np.float32)]
)
def test_exact_where_float32_cancellation_misleads(offset, step, dtype):
    # A large common offset with a tiny spread: the plain float32 expansion
    # picks a wrong medoid; centering plus the float64 refinement must not.
    rng = np.random.default_rng(0)
    points = (offset + rng.integers(0, 3, (20, 16)) * step).astype(dtype)
    expected = brute_force_medoid(points)
    assert naive_float32_medoid(points) != expected  # the case is really hard
    for block_size in (3, 512):
        fitted = ClassMedoids(block_size=block_size).fit([points], np.zeros(20, int))
        assert fitted.medoid_indices_[0][0] == expected


def test_random_stress_against_brute_force():
    rng = np.random.default_rng(5)
    for trial in range(60):
        k, dim = int(rng.integers(1, 30)), int(rng.integers(1, 24))
        kind = trial % 4
        if kind == 0:
            points = rng.normal(size=(k, dim))
        elif kind == 1:
            points = rng.integers(0, 3, (k, dim)).astype(np.float32)
        elif kind == 2:
            points = (100 + 1e-3 * rng.normal(size=(k, dim))).astype(np.float32)
        else:
            points = np.round(4 * rng.normal(size=(k, dim))) / 4
        expected = brute_force_medoid(points)
        for block_size in (1, 4, 512):
            assert class_medoids_module._medoid_index(points, block_size) == expected


def cdist_sums(points):
    """Reference: scipy's float64 Euclidean distances, summed per row."""
    from scipy.spatial.distance import cdist

    points = np.asarray(points, dtype=np.float64)
    return cdist(points, points).sum(axis=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block", [7, 64])
def test_distance_sums_are_within_their_bound(dtype, block):
    # Both stages (float32, float64): every sum within its rigorous bound of
    # scipy's, the bound far from vacuous; the rows mode equals the symmetric one.
    rng = np.random.default_rng(11)
    points = (3.0 + rng.normal(size=(150, 13)) * rng.uniform(0.1, 2.0, 13)).astype(np.float32)
    expected = cdist_sums(points)
    k, dim = points.shape
    if dtype == np.float32:
        y = class_medoids_module._centered_float32(points, block)
        ratio = float(np.max(np.abs(y))) / float(np.max(np.abs(points - points.mean(0))))
        scale = 2.0 ** round(np.log2(ratio))  # the power of two it scaled by
        u = class_medoids_module._U32
        norm_error, sum_terms = 1.01 * u, block
    else:
        y = points.astype(np.float64) - points[0]
        scale = 2.0 ** -np.frexp(np.max(np.abs(y)))[1]
        y = y * scale
        u, norm_error = class_medoids_module._U64, class_medoids_module._gamma(dim, 2.0**-53)
        sum_terms = 2 * k + 2
    norms = np.einsum("ij,ij->i", y, y, dtype=np.float64)
    left, right = class_medoids_module._augmented(y, norms, dtype)
    sums = class_medoids_module._distance_sums(left, right, block)
    bound = class_medoids_module._sum_bound(norms, sums, dim, sum_terms, u, norm_error)
    error = np.abs(sums / scale - expected)
    assert np.all(error <= bound / scale)
    assert np.all(bound < (3e-3 if dtype == np.float32 else 1e-6) * sums)
    rows = np.array([0, 5, 77, 149])
    np.testing.assert_allclose(
        class_medoids_module._distance_sums(left, right, block, rows=rows), sums[rows], rtol=1e-5
    )


def test_near_duplicates_need_the_float64_stage():
    # Softmax-like rows: most samples within ~1e-7 of one vertex (float32
    # cannot rank them), a few far ones; the medoid is scipy's argmin.
    rng = np.random.default_rng(12)
    vertex = np.eye(10)[3]
    near = vertex + rng.uniform(0, 1e-6, (300, 10)) * rng.random((300, 10)) ** 8
    far = rng.dirichlet(np.ones(10), 30)
    points = np.concatenate([near, far])[rng.permutation(330)].astype(np.float32)
    expected = int(np.argmin(cdist_sums(points)))
    assert naive_float32_medoid(points) != expected  # float32 alone is not enough
    for block_size in (16, 512):
        assert class_medoids_module._medoid_index(points, block_size) == expected
    fitted = ClassMedoids().fit({"p": points, "q": points[:, ::-1]}, np.zeros(330, int))
    assert fitted.medoid_indices_["p"].tolist() == [expected]
    assert fitted.medoid_indices_["q"].tolist() == [expected]


def test_fit_restores_the_blas_threads():
    from threadpoolctl import threadpool_info

    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    activations, labels = random_problem(13, n=40)
    ClassMedoids().fit(activations, labels)
    after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert after == before


def test_only_correct_uses_correct_samples_only():
    activations, labels = random_problem(6, n=80)
    rng = np.random.default_rng(7)
    predictions = np.where(rng.random(len(labels)) < 0.3, (labels + 1) % 4, labels)
    predictions[:4] = labels[:4]  # every class keeps a correct sample
    keep = predictions == labels
    fitted = ClassMedoids(only_correct=True).fit(activations, labels, predictions=predictions)
    expected = brute_force_fit(activations, labels, 4, keep=keep)
    unfiltered = brute_force_fit(activations, labels, 4)
    for key in activations:
        np.testing.assert_array_equal(fitted.medoid_indices_[key], expected[key])
    assert any(
        not np.array_equal(expected[key], unfiltered[key]) for key in activations
    )  # the filter matters on this data
    np.testing.assert_array_equal(
        fitted.n_samples_per_class_, np.bincount(labels[keep], minlength=4)
    )
    # Scores (N, C) are accepted as predictions.
    scores = np.eye(4)[predictions]
    again = ClassMedoids(only_correct=True).fit(activations, labels, predictions=scores)
    np.testing.assert_array_equal(again.medoid_indices_["layer0"], expected["layer0"])
    with pytest.raises(ValueError, match="predictions"):
        ClassMedoids(only_correct=True).fit(activations, labels)


def test_max_samples_per_class_is_a_seeded_subset():
    activations, labels = random_problem(8, n=200, num_classes=3, widths=(6,))
    values = activations["layer0"]
    cap = 10
    fitted = ClassMedoids(max_samples_per_class=cap, seed=3).fit(activations, labels)
    again = ClassMedoids(max_samples_per_class=cap, seed=3).fit(activations, labels)
    np.testing.assert_array_equal(fitted.medoid_indices_["layer0"], again.medoid_indices_["layer0"])
    assert fitted.n_samples_per_class_.tolist() == [cap] * 3
    for c in range(3):
        members = np.flatnonzero(labels == c)
        subset = np.sort(np.random.default_rng([3, c]).choice(members, cap, replace=False))
        expected = subset[brute_force_medoid(values[subset])]
        assert fitted.medoid_indices_["layer0"][c] == expected
    others = [
        ClassMedoids(max_samples_per_class=cap, seed=s).fit(activations, labels) for s in (4, 5)
    ]
    assert any(
        not np.array_equal(o.medoid_indices_["layer0"], fitted.medoid_indices_["layer0"])
        for o in others
    )
    # A cap above every class size changes nothing.
    full = ClassMedoids().fit(activations, labels)
    big = ClassMedoids(max_samples_per_class=1000).fit(activations, labels)
    np.testing.assert_array_equal(full.medoid_indices_["layer0"], big.medoid_indices_["layer0"])


def test_class_without_samples_is_named():
    activations = {"a": np.arange(8, dtype=np.float32).reshape(4, 2)}
    with pytest.raises(ValueError, match="class 2 has none"):
        ClassMedoids(num_classes=4).fit(activations, np.array([0, 1, 3, 3]))
    with pytest.raises(ValueError, match=r"class 1 has none among the correctly"):
        ClassMedoids(only_correct=True).fit(
            activations, np.array([0, 1, 1, 0]), predictions=np.array([0, 0, 0, 0])
        )


def test_bad_inputs():
    good = {"a": np.zeros((4, 2)), "b": np.zeros((4, 3))}
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="same length"):
        ClassMedoids().fit({"a": np.zeros((4, 2)), "b": np.zeros((5, 3))}, labels)
    with pytest.raises(ValueError, match="same length"):
        ClassMedoids().fit(good, labels[:3])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        ClassMedoids(num_classes=2).fit(good, np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        ClassMedoids().fit(good, np.array([0, 1, -1, 1]))
    with pytest.raises(ValueError, match="rank 2"):
        ClassMedoids().fit({"a": np.zeros((4, 2, 2))}, labels)
    with pytest.raises(ValueError, match="finite"):
        ClassMedoids().fit({"a": np.array([[0.0], [np.nan], [1.0], [2.0]])}, labels)
    with pytest.raises(TypeError, match="activations_by_layer"):
        ClassMedoids().fit(np.zeros((4, 2)), labels)
    with pytest.raises(TypeError, match="labels"):
        ClassMedoids().fit(good, labels.astype(float))
    with pytest.raises(ValueError, match="block_size"):
        ClassMedoids(block_size=0).fit(good, labels)


def test_not_fitted_error():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        MedoidDistance.from_medoids(ClassMedoids())


def _tiny_detector(num_classes=3):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs)
    # Hidden = relu of the first 5 inputs; the prediction = argmax of the first 3.
    model.get_layer("hidden").set_weights([np.eye(6, 5), np.zeros(5)])
    model.get_layer("out").set_weights([np.eye(5, num_classes), np.zeros(num_classes)])
    return DetectorModel(model, layers=["hidden", "out"])


def test_fit_from_model_matches_fit_on_activations(tmp_path):
    detector = _tiny_detector()
    rng = np.random.default_rng(9)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    y = np.concatenate([np.arange(3), rng.integers(0, 3, 47)])
    activations = detector.activations(x, batch_size=16)
    expected = ClassMedoids().fit(activations, y)

    from_arrays = ClassMedoids().fit_from_model(detector, x, y, batch_size=16)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    from_dataset = ClassMedoids().fit_from_model(detector, dataset, batch_size=7)
    from_disk = ClassMedoids().fit_from_model(
        detector, x, np.eye(3)[y], batch_size=16, cache_dir=str(tmp_path)
    )
    assert list(tmp_path.iterdir()) == []  # temporary files removed
    for fitted in (from_arrays, from_dataset, from_disk):
        assert list(fitted.medoids_) == detector.tap_names
        for key in detector.tap_names:
            np.testing.assert_array_equal(
                fitted.medoid_indices_[key], expected.medoid_indices_[key]
            )
            np.testing.assert_allclose(fitted.medoids_[key], expected.medoids_[key], rtol=1e-6)


def test_fit_from_model_only_correct_uses_the_model_predictions():
    detector = _tiny_detector()
    rng = np.random.default_rng(10)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    activations = detector.activations(x)
    predicted = np.argmax(detector.predict(x, verbose=0)["prediction"], axis=1)
    y = predicted.copy()
    wrong = rng.random(60) < 0.4
    y[wrong] = (y[wrong] + 1) % 3
    counts = np.bincount(y[~wrong], minlength=3)
    assert np.all(counts > 0)
    fitted = ClassMedoids(only_correct=True).fit_from_model(detector, x, y)
    expected = ClassMedoids(only_correct=True).fit(activations, y, predictions=predicted)
    for key in detector.tap_names:
        np.testing.assert_array_equal(fitted.medoid_indices_[key], expected.medoid_indices_[key])
    np.testing.assert_array_equal(fitted.n_samples_per_class_, counts)


def test_fit_from_model_errors():
    detector = _tiny_detector()
    x = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match="required"):
        ClassMedoids().fit_from_model(detector, x)
    dataset = tf.data.Dataset.from_tensor_slices(x)
    with pytest.raises(ValueError, match=r"\(x, y\) pairs"):
        ClassMedoids().fit_from_model(detector, dataset)
    pairs = tf.data.Dataset.from_tensor_slices((x, np.zeros(4, int)))
    with pytest.raises(ValueError, match="must be None"):
        ClassMedoids().fit_from_model(detector, pairs, np.zeros(4, int))
    with pytest.raises(ValueError, match="taps no layer"):
        ClassMedoids().fit_from_model(DetectorModel(detector.base_model), x, np.zeros(4, int))
    # The activation pass (DetectorModel.collect) checks the inputs themselves:
    # a ReLU would otherwise turn NaN pixels into finite activations.
    bad = np.ones((4, 6), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"`x`.*1 NaN"):
        ClassMedoids().fit_from_model(detector, bad, np.arange(4) % 3)
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        ClassMedoids().fit_from_model(detector, np.ones((4, 7), np.float32), np.arange(4) % 3)
    empty = tf.data.Dataset.from_tensor_slices((x[:0], np.zeros(0, int)))
    with pytest.raises(ValueError, match="must not be empty"):
        ClassMedoids().fit_from_model(detector, empty)
