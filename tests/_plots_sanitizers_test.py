import os

os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_advguard._plots_sanitizers import (  # noqa: E402
    LayerDivergence,
    layer_divergence,
    plot_layer_divergence,
    plot_tradeoff,
)
from keras_advguard.layers import MaskSanitizer  # noqa: E402
from keras_advguard.sanitize import sanitize  # noqa: E402

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


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


def test_plot_layer_divergence_draws_both_curves(tmp_path):
    result = LayerDivergence(
        ["conv1", "conv2", "fc7"],
        ["conv1_sanitizer", "conv2_sanitizer", "fc7_sanitizer"],
        np.array([0.4, 0.8, 1.5]),
        np.array([0.3, 0.5, 0.6]),
        np.array([0.1, 0.1, 0.2]),
        np.array([0.1, 0.1, 0.1]),
        np.full((2, 3), 100),
    )
    display = plot_layer_divergence(result, labels=("plain", "mask"), show_std=True)
    assert display.ax_.get_legend_handles_labels()[1] == ["plain", "mask"]
    np.testing.assert_allclose(display.lines_[0].get_ydata(), [0.4, 0.8, 1.5])
    assert [t.get_text() for t in display.ax_.get_xticklabels()] == ["conv1", "conv2", "fc7"]
    display.figure_.savefig(tmp_path / "fig7.png")
    with pytest.raises(TypeError, match="divergence"):
        plot_layer_divergence({"before": [1]})


def test_plot_tradeoff_threshold_and_pareto():
    alphas = [0.0, 0.2, 0.4]
    display = plot_tradeoff(
        alphas,
        [0.99, 0.97, 0.9],
        {"PGD oblivious": [0.0, 0.6, 0.7], "PGD BPDA": [0, 0, 0.1]},
        chosen=0.2,
    )
    assert sorted(display.lines_) == ["PGD BPDA", "PGD oblivious", "clean"]
    np.testing.assert_allclose(display.lines_["clean"].get_xdata(), alphas)
    assert display.chosen_line_.get_xdata()[0] == 0.2
    pareto = plot_tradeoff(alphas, [0.99, 0.97, 0.9], [0.0, 0.6, 0.7], chosen=0.2, kind="pareto")
    np.testing.assert_allclose(pareto.lines_["robust"].get_xdata(), [0.99, 0.97, 0.9])
    np.testing.assert_allclose(pareto.chosen_line_.get_ydata(), [0.6])
    assert pareto.ax_.get_xlabel() == "clean accuracy"


def test_plot_tradeoff_errors():
    with pytest.raises(ValueError, match="same length|length"):
        plot_tradeoff([0.1, 0.2], [0.9], [0.5, 0.6])
    with pytest.raises(ValueError, match="kind"):
        plot_tradeoff([0.1], [0.9], [0.5], kind="bars")
    with pytest.raises(TypeError):
        plot_tradeoff([0.1], [0.9], ["a"])
