import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.detectors import ClassMedoids
from keras_advguard.layers.medoid_distance import MedoidDistance
from tests.layers._layer_test_case import run_layer_test


def numpy_distances(activations, medoids):
    """Reference F[b, l, c] = ||a_l[b] - R_l[c]|| from direct float64 differences."""
    steps = [
        np.linalg.norm(
            np.asarray(a, np.float64)[:, None, :] - np.asarray(r, np.float64)[None],
            axis=-1,
        )
        for a, r in zip(activations, medoids, strict=True)
    ]
    return np.stack(steps, axis=1)


def make_problem(seed=0, batch=7, widths=(3, 8, 5), num_classes=4, offset=0.0):
    rng = np.random.default_rng(seed)
    medoids = [(offset + rng.normal(size=(num_classes, w))).astype(np.float32) for w in widths]
    activations = [(offset + rng.normal(size=(batch, w))).astype(np.float32) for w in widths]
    return activations, medoids


@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_matches_numpy(offset):
    activations, medoids = make_problem(offset=offset)
    activations[1][2] = medoids[1][3]  # an input exactly on a medoid
    layer = MedoidDistance.from_medoids(medoids)
    features = np.asarray(layer(activations))
    expected = numpy_distances(activations, medoids)
    assert features.shape == (7, 3, 4)
    assert features.dtype == np.float32
    # float32 cancellation near 0 costs about sqrt(eps32) * spread; centering on
    # the medoids keeps that true with a large common offset too.
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=2e-3)
    assert features[2, 1, 3] < 2e-3


def test_dict_inputs_use_tap_names():
    activations, medoids = make_problem()
    names = ["c", "a", "b"]
    layer = MedoidDistance.from_medoids(dict(zip(names, medoids, strict=True)))
    assert layer.tap_names == names
    shuffled = {"a": activations[1], "b": activations[2], "c": activations[0]}
    np.testing.assert_allclose(
        np.asarray(layer(shuffled)), numpy_distances(activations, medoids), rtol=1e-5
    )
    with pytest.raises(ValueError, match="No activation for tapped layer 'c'"):
        layer({"a": activations[1], "b": activations[2]})
    plain = MedoidDistance.from_medoids(medoids)
    with pytest.raises(ValueError, match="tap_names"):
        plain(shuffled)


def test_from_class_medoids():
    rng = np.random.default_rng(1)
    acts = {"x": rng.normal(size=(30, 4)), "y": rng.normal(size=(30, 6))}
    labels = np.arange(30) % 3
    fitted = ClassMedoids().fit(acts, labels)
    layer = MedoidDistance.from_medoids(fitted)
    assert layer.tap_names == ["x", "y"]
    assert layer.medoid_shapes == [(3, 4), (3, 6)]
    features = np.asarray(layer(acts))
    expected = numpy_distances([acts["x"], acts["y"]], [fitted.medoids_["x"], fitted.medoids_["y"]])
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=2e-3)
    # Each medoid is at distance (about) 0 from itself.
    for step, key in enumerate(["x", "y"]):
        idx = fitted.medoid_indices_[key]
        assert np.all(features[idx, step, np.arange(3)] < 2e-3)


def test_standardization_adapt_matches_numpy():
    activations, medoids = make_problem(batch=50)
    layer = MedoidDistance.from_medoids(medoids, standardize=True)
    raw = numpy_distances(activations, medoids)
    np.testing.assert_allclose(np.asarray(layer(activations)), raw, rtol=1e-5)  # identity
    layer.adapt(activations, batch_size=16)
    mean = raw.mean(axis=(0, 2))
    std = raw.std(axis=(0, 2))
    np.testing.assert_allclose(layer.feature_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(layer.feature_std.numpy(), std, rtol=1e-5)
    expected = (raw - mean[None, :, None]) / std[None, :, None]
    np.testing.assert_allclose(np.asarray(layer(activations)), expected, atol=1e-4)

    given = MedoidDistance.from_medoids(medoids, mean=mean, std=std)
    assert given.standardize
    np.testing.assert_allclose(np.asarray(given(activations)), expected, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="same C"):
        MedoidDistance(medoid_shapes=[(3, 4), (2, 4)])
    with pytest.raises(ValueError, match="positive"):
        MedoidDistance(medoid_shapes=[(3, 0)])
    with pytest.raises(ValueError, match="tap_names"):
        MedoidDistance(medoid_shapes=[(3, 4)], tap_names=["a", "b"])
    activations, medoids = make_problem()
    layer = MedoidDistance.from_medoids(medoids)
    with pytest.raises(ValueError, match="3 layers"):
        layer(activations[:2])
    with pytest.raises(ValueError, match=r"shape \(batch, 8\)"):
        layer([activations[0], activations[2], activations[2]])
    with pytest.raises(ValueError, match="shapes"):
        layer.set_medoids(medoids[:2] + [np.zeros((4, 6))])
    with pytest.raises(ValueError, match="standardize"):
        layer.adapt(activations)
    with pytest.raises(ValueError, match="both"):
        MedoidDistance.from_medoids(medoids, mean=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="positive"):
        MedoidDistance.from_medoids(medoids, mean=[0.0] * 3, std=[1.0, 0.0, 1.0])
    with pytest.raises(TypeError, match="medoids"):
        MedoidDistance.from_medoids(np.zeros((3, 4)))


def test_config_round_trip_and_symbolic_shape():
    activations, medoids = make_problem()
    layer = MedoidDistance.from_medoids(medoids, tap_names=["p", "q", "r"], epsilon=1e-8)
    config = layer.get_config()
    assert config["medoid_shapes"] == [[4, 3], [4, 8], [4, 5]]
    clone = MedoidDistance.from_config(config)
    assert clone.medoid_shapes == layer.medoid_shapes
    assert clone.tap_names == ["p", "q", "r"] and clone.epsilon == 1e-8
    assert not clone.trainable_weights and len(clone.non_trainable_weights) == 3
    inputs = [keras.Input((w,)) for w in (3, 8, 5)]
    assert tuple(layer(inputs).shape) == (None, 3, 4)


def test_save_load_in_functional_model(tmp_path):
    activations, medoids = make_problem(batch=9)
    inputs = {name: keras.Input((w,), name=name) for name, w in zip("pqr", (3, 8, 5), strict=True)}
    layer = MedoidDistance.from_medoids(dict(zip("pqr", medoids, strict=True)), standardize=True)
    layer.adapt(dict(zip("pqr", activations, strict=True)))
    features = layer(inputs)
    score = keras.layers.Dense(1, activation="sigmoid")(keras.layers.LSTM(3)(features))
    model = keras.Model(inputs, {"features": features, "score": score})
    data = dict(zip("pqr", activations, strict=True))
    before = model.predict(data, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe mode
    after = loaded.predict(data, verbose=0)
    for key in ("features", "score"):
        np.testing.assert_array_equal(after[key], before[key])
    restored = next(x for x in loaded.layers if isinstance(x, MedoidDistance))
    np.testing.assert_array_equal(restored.medoids[1].numpy(), medoids[1])
    np.testing.assert_array_equal(restored.feature_std.numpy(), layer.feature_std.numpy())


def test_gradient_reaches_activations_and_is_finite():
    activations, medoids = make_problem(seed=2)
    activations[0][0] = medoids[0][1]  # sqrt at 0: must stay finite
    layer = MedoidDistance.from_medoids(medoids)
    tensors = [tf.constant(a) for a in activations]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        total = tf.reduce_sum(layer(tensors))
    grads = tape.gradient(total, tensors)
    for grad, a, r in zip(grads, activations, medoids, strict=True):
        grad = grad.numpy()
        assert np.all(np.isfinite(grad))
        # d/da sum_c ||a - R_c|| = sum_c (a - R_c) / ||a - R_c||
        diff = a.astype(np.float64)[:, None, :] - r[None]
        norm = np.linalg.norm(diff, axis=-1, keepdims=True)
        expected = np.where(norm > 1e-3, diff / np.maximum(norm, 1e-12), 0.0).sum(axis=1)
        rows = slice(1, None) if a is activations[0] else slice(None)
        np.testing.assert_allclose(grad[rows], expected[rows], rtol=1e-3, atol=1e-3)


def test_mixed_precision_output_dtype():
    keras.mixed_precision.set_global_policy("mixed_float16")
    activations, medoids = make_problem()
    layer = MedoidDistance.from_medoids(medoids)
    features = layer(activations)
    assert features.dtype == "float16"
    assert layer.medoids[0].dtype == "float32"
    np.testing.assert_allclose(
        np.asarray(features, np.float32),
        numpy_distances(activations, medoids),
        rtol=2e-3,
    )


def test_standard_layer_checks():
    x = np.random.default_rng(5).normal(size=(4, 3)).astype("float32")
    # A new layer's medoids are zeros: every distance is the activation's norm.
    expected = np.repeat(np.linalg.norm(x, axis=1)[:, None, None], 2, axis=2)
    run_layer_test(
        MedoidDistance,
        {"medoid_shapes": [[2, 3]]},
        x,
        expected_output_shape=(4, 1, 2),
        expected_output=expected,
        atol=1e-5,
        rtol=1e-5,
        stateless=False,
    )
