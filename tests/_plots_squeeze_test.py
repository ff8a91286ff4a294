import keras
import matplotlib
import numpy as np
import pytest
import scipy.spatial.distance
import tensorflow as tf

from keras_advguard import _plots_squeeze
from keras_advguard._plots_squeeze import (
    LayerDivergenceDisplay,
    cosine_distance,
    is_activation_layer,
    layer_cosine_distances,
    same_norm_noise,
)
from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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


def test_cosine_distance_matches_scipy_and_zero_conventions():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 3, 4))
    b = rng.normal(size=(6, 3, 4))
    b[1] = 3.0 * a[1]  # same direction
    b[2] = -a[2]  # opposite
    expected = [
        scipy.spatial.distance.cosine(u.ravel(), v.ravel()) for u, v in zip(a, b, strict=True)
    ]
    got = keras.ops.convert_to_numpy(cosine_distance(a, b))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert abs(got[1]) < 1e-6 and abs(got[2] - 2.0) < 1e-6
    zeros = np.zeros((2, 4))
    other = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(cosine_distance(zeros, other)), [0.0, 1.0]
    )


def test_cosine_distance_precision_for_tiny_distances():
    a = np.random.default_rng(1).random((1, 10_000))
    b = a + 1e-5 * np.random.default_rng(2).random((1, 10_000))
    exact = 1.0 - np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b))  # float64
    got = float(keras.ops.convert_to_numpy(cosine_distance(a, b))[0])
    assert abs(got - exact) < 1e-3 * exact + 1e-12


def test_cosine_distance_gradient_finite_at_zero_vectors():
    a = tf.zeros((2, 3))
    b = tf.constant([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        total = tf.reduce_sum(cosine_distance(a, b))
    for grad in tape.gradient(total, [a, b]):
        assert np.all(np.isfinite(grad.numpy()))


def test_is_activation_layer():
    assert is_activation_layer(keras.layers.Conv2D(2, 3, activation="relu"))
    assert is_activation_layer(keras.layers.ReLU())
    assert is_activation_layer(keras.layers.Activation("tanh"))
    assert not is_activation_layer(keras.layers.Activation("softmax"))
    assert not is_activation_layer(keras.layers.Dense(3))
    assert not is_activation_layer(keras.layers.Flatten())
    assert not is_activation_layer(keras.layers.Dense(3, activation="softmax"))


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


def test_display_from_adversarial_draws_medians(tiny_model):
    rng = np.random.default_rng(5)
    x = rng.random((9, 5, 5, 1)).astype("float32")
    x_adv = np.clip(x + rng.choice([-0.2, 0.2], size=x.shape), 0, 1).astype("float32")
    display = LayerDivergenceDisplay.from_adversarial(tiny_model, x, x_adv, noise_seed=1)
    assert display.layer_names == ["conv", "act"]
    assert set(display.lines_) == {"clean vs adversarial", "clean vs random (same L2 norm)"}
    adv = layer_cosine_distances(tiny_model, x, x_adv)
    np.testing.assert_allclose(
        display.lines_["clean vs adversarial"].get_ydata(),
        [np.median(adv["conv"]), np.median(adv["act"])],
        rtol=1e-6,
    )
    assert display.ax_.get_xticklabels()[1].get_text() == "act"
    plt.close(display.figure_)


def test_display_from_squeezer(tiny_model):
    rng = np.random.default_rng(6)
    x = rng.random((6, 5, 5, 1)).astype("float32")
    x_adv = rng.random((4, 5, 5, 1)).astype("float32")
    squeezer = BitDepthSqueezer(1)
    display = LayerDivergenceDisplay.from_squeezer(tiny_model, squeezer, x, x_adv, batch_size=4)
    squeezed = np.rint(x_adv)
    expected = layer_cosine_distances(tiny_model, x_adv, squeezed)
    np.testing.assert_allclose(
        display.distances["adversarial"],
        np.stack([expected["conv"], expected["act"]], 1),
        atol=1e-7,
    )
    assert display.distances["clean"].shape == (6, 2)
    plt.close(display.figure_)


def test_display_errors():
    with pytest.raises(ValueError, match="one column per layer"):
        LayerDivergenceDisplay(["a", "b"], {"x": np.zeros((3, 3))})
    with pytest.raises(TypeError, match="dict"):
        LayerDivergenceDisplay(["a"], np.zeros((3, 1)))
    display = LayerDivergenceDisplay(["a"], {"x": np.zeros((3, 1))})
    with pytest.raises(ValueError, match="percentiles"):
        display.plot(percentiles=(50, 10))
    with pytest.raises(TypeError, match="squeezer"):
        LayerDivergenceDisplay.from_squeezer(None, 3, np.zeros((1, 2)), np.zeros((1, 2)))


def test_apply_in_batches():
    x = np.random.default_rng(7).random((10, 3)).astype("float32")
    np.testing.assert_array_equal(
        _plots_squeeze.apply_in_batches(BitDepthSqueezer(1), x, batch_size=3), np.rint(x)
    )
