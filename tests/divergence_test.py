"""keras_advguard.divergence: layer_cosine_distances, same_norm_noise, layer_divergence."""

import keras
import numpy as np
import pytest
import scipy.spatial.distance

from keras_advguard.divergence import (
    layer_cosine_distances,
    layer_divergence,
    mean_std_over_pairs,
    same_norm_noise,
)
from keras_advguard.layers import MaskSanitizer
from keras_advguard.sanitize import sanitize

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((5, 5, 1))
    h = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(6, name="fc")(h)
    h = keras.layers.Activation("tanh", name="act")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(h)
    return keras.Model(inputs, outputs)


def numpy_layer_distances(model, x, y, names):
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    a = probe.predict(x, verbose=0)
    b = probe.predict(y, verbose=0)
    return {
        n: np.array(
            [scipy.spatial.distance.cosine(u.ravel(), v.ravel()) for u, v in zip(p, q, strict=True)]
        )
        for n, p, q in zip(names, a, b, strict=True)
    }


def test_layer_cosine_distances_match_numpy(tiny_model):
    rng = np.random.default_rng(3)
    x = rng.random((7, 5, 5, 1)).astype("float32")
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype("float32")
    got = layer_cosine_distances(tiny_model, x, y, batch_size=3)
    assert list(got) == ["conv", "act"]
    expected = numpy_layer_distances(tiny_model, x, y, ["conv", "act"])
    for name in got:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6)
    assert list(layer_cosine_distances(tiny_model, x, y, layers=["fc"])) == ["fc"]
    with pytest.raises(ValueError, match="same shape"):
        layer_cosine_distances(tiny_model, x, y[:3])


def test_same_norm_noise():
    rng = np.random.default_rng(4)
    x = rng.random((5, 4, 4, 1)).astype("float32")
    x_adv = x + rng.choice([-0.1, 0.1], size=x.shape).astype("float32")
    noisy = same_norm_noise(x, x_adv, seed=0)
    norms = lambda d: np.linalg.norm(d.reshape(5, -1), axis=1)  # noqa: E731
    np.testing.assert_allclose(norms(noisy - x), norms(x_adv - x), rtol=1e-5)
    assert not np.allclose(noisy, x_adv)
    np.testing.assert_array_equal(noisy, same_norm_noise(x, x_adv, seed=0))
    clipped = same_norm_noise(x, x_adv, seed=0, clip=(0.0, 1.0))
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0


def convnet():
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, activation="relu", name="conv1")(inputs)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(5, name="fc2")(h)  # linear: never all zero
    outputs = keras.layers.Dense(3, name="logits")(h)
    return keras.Model(inputs, outputs)


def normalized_distances(a_clean, a_adv):
    a = a_clean.reshape(len(a_clean), -1).astype(np.float64)
    b = a_adv.reshape(len(a_adv), -1).astype(np.float64)
    norm = np.linalg.norm(a, axis=1)
    diff = np.linalg.norm(b - a, axis=1)
    # An all-zero clean activation has no normalized distance: NaN, left out.
    return np.array([d / n if n > 0 else np.nan for d, n in zip(diff, norm, strict=True)])


def test_layer_divergence_matches_numpy_reference():
    model = convnet()
    defended = sanitize(model, ["conv1", "fc2"], MaskSanitizer(alpha=0.5))
    x = RNG.random((9, 6, 6, 1)).astype("float32")
    x_adv = np.clip(x + RNG.normal(0, 0.2, x.shape), 0, 1).astype("float32")
    result = layer_divergence(model, defended, x, x_adv, ["conv1", "fc2"], batch_size=4)

    def sub(m, name):
        return keras.Model(m.inputs, m.get_layer(name).output)

    expected_before = [
        normalized_distances(
            sub(model, n).predict(x, verbose=0), sub(model, n).predict(x_adv, verbose=0)
        )
        for n in ("conv1", "fc2")
    ]
    expected_after = [
        normalized_distances(
            sub(defended, n).predict(x, verbose=0), sub(defended, n).predict(x_adv, verbose=0)
        )
        for n in ("conv1_sanitizer", "fc2_sanitizer")
    ]
    assert result.layers == ["conv1", "fc2"]
    assert result.sanitized_layers == ["conv1_sanitizer", "fc2_sanitizer"]
    expected = [expected_before, expected_after]
    np.testing.assert_allclose(result.before, [np.nanmean(d) for d in expected_before], rtol=1e-5)
    np.testing.assert_allclose(result.after, [np.nanmean(d) for d in expected_after], rtol=1e-5)
    np.testing.assert_allclose(
        result.before_std, [np.nanstd(d) for d in expected_before], rtol=1e-5
    )
    np.testing.assert_array_equal(
        result.n_pairs, [[int(np.isfinite(d).sum()) for d in row] for row in expected]
    )
    assert not np.allclose(result.before, result.after)


def test_unsanitized_layer_is_compared_with_itself():
    model = convnet()
    defended = sanitize(model, "conv1", MaskSanitizer(alpha=0.5))
    x = RNG.random((4, 6, 6, 1)).astype("float32")
    x_adv = np.clip(x + 0.1, 0, 1).astype("float32")
    result = layer_divergence(model, defended, x, x_adv, ["conv1", "fc2"])
    assert result.sanitized_layers == ["conv1_sanitizer", "fc2"]


def test_identity_sanitizer_changes_nothing():
    model = convnet()
    defended = sanitize(model, ["conv1", "fc2"], MaskSanitizer(alpha=0.0), bpda=True)
    x = RNG.random((5, 6, 6, 1)).astype("float32")
    x_adv = np.clip(x + RNG.normal(0, 0.1, x.shape), 0, 1).astype("float32")
    result = layer_divergence(model, defended, x, x_adv, "conv+dense")
    # alpha=0 keeps every ReLU output: the networks compute the same thing.
    np.testing.assert_allclose(result.before[0], result.after[0], rtol=1e-5)


def test_zero_clean_activation_is_left_out():
    inputs = keras.Input((2,))
    h = keras.layers.Dense(2, activation="relu", use_bias=False, name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    model.get_layer("fc1").kernel.assign(np.eye(2, dtype="float32"))
    defended = sanitize(model, "fc1", MaskSanitizer(alpha=0.0))
    x = np.array([[0.0, 0.0], [1.0, 0.0]], "float32")  # first: all-zero activation
    x_adv = np.array([[0.5, 0.0], [1.0, 1.0]], "float32")
    result = layer_divergence(model, defended, x, x_adv, "fc1")
    np.testing.assert_array_equal(result.n_pairs, [[1], [1]])
    np.testing.assert_allclose(result.before, [1.0])


def test_layer_divergence_errors():
    model = convnet()
    defended = sanitize(model, "conv1")
    x = RNG.random((3, 6, 6, 1)).astype("float32")
    with pytest.raises(ValueError, match="same shape"):
        layer_divergence(model, defended, x, x[:2], "conv1")
    with pytest.raises(ValueError, match="one layer of the sanitized"):
        layer_divergence(model, defended, x, x, "conv1", sanitized_layers=["a", "b"])
    with pytest.raises(ValueError, match="No layer 'nope'"):
        layer_divergence(model, defended, x, x, "conv1", sanitized_layers=["nope"])
    with pytest.raises(ValueError, match="No layer 'conv7'"):
        layer_divergence(model, defended, x, x, "conv7")


def test_mean_std_over_pairs_leaves_undefined_pairs_out():
    per_pair = np.array([[1.0, np.nan, 2.0], [3.0, np.nan, np.nan], [5.0, np.nan, 4.0]])
    mean, std, n = mean_std_over_pairs(per_pair)
    np.testing.assert_allclose(mean, [3.0, np.nan, 3.0])
    np.testing.assert_allclose(std, [np.std([1.0, 3.0, 5.0]), np.nan, 1.0])
    np.testing.assert_array_equal(n, [3, 0, 2])
    same = mean_std_over_pairs(list(per_pair.T))
    for a, b in zip(same, (mean, std, n), strict=True):
        np.testing.assert_array_equal(a, b)
