"""keras_advguard.plots.divergence: LayerDivergenceDisplay (cosine and relative_l2)."""

import keras
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from keras_advguard import plots  # noqa: E402
from keras_advguard.divergence import (  # noqa: E402
    LayerDivergence,
    layer_cosine_distances,
    layer_divergence,
)
from keras_advguard.layers import MaskSanitizer  # noqa: E402
from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer  # noqa: E402
from keras_advguard.plots.divergence import (  # noqa: E402
    LayerDivergenceDisplay,
    plot_layer_divergence,
)
from keras_advguard.sanitize import sanitize  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


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


def _divergence():
    return LayerDivergence(
        ["conv1", "fc7"],
        ["conv1_sanitizer", "fc7_sanitizer"],
        np.array([0.5, 1.2]),
        np.array([0.3, 0.4]),
        np.array([0.1, 0.2]),
        np.array([0.05, 0.05]),
        np.full((2, 2), 10),
    )


def test_relative_l2_from_per_pair_distances_draws_nan_aware_means():
    per_pair = np.array([[0.2, 1.0], [0.4, np.nan], [0.9, 3.0]])
    display = LayerDivergenceDisplay(
        ["conv1", "fc7"], {"plain": per_pair}, metric="relative_l2"
    ).plot(show_std=True)
    # Reference: numpy over the defined pairs of each layer.
    np.testing.assert_allclose(display.lines_["plain"].get_ydata(), [0.5, 2.0])
    np.testing.assert_allclose(display.lines_[0].get_ydata(), [0.5, 2.0])
    assert display.bands_ == {}
    assert display.ax_.get_ylim()[0] == 0
    assert "a(x)" in display.ax_.get_ylabel()


def test_metric_argument_is_checked():
    with pytest.raises(ValueError, match="metric"):
        LayerDivergenceDisplay(["a"], {"x": np.zeros((3, 1))}, metric="l1")
    with pytest.raises(ValueError, match="rank 2"):
        LayerDivergenceDisplay(["a", "b"], {"x": np.zeros(2)})  # cosine needs (N, L)
    with pytest.raises(ValueError, match="one column per layer"):
        LayerDivergenceDisplay(["a", "b"], {"x": np.zeros(3)}, metric="relative_l2")
    with pytest.raises(ValueError, match="std"):
        LayerDivergenceDisplay(
            ["a"], {"x": np.zeros(1)}, metric="relative_l2", std={"y": np.zeros(1)}
        )
    with pytest.raises(ValueError, match="distinct"):
        plot_layer_divergence(_divergence(), labels=("same", "same"))


def test_from_divergence_is_plot_layer_divergence():
    a = plot_layer_divergence(_divergence(), labels=("plain", "mask"), title="Fig. 7")
    b = LayerDivergenceDisplay.from_divergence(_divergence(), ("plain", "mask"), title="Fig. 7")
    for display in (a, b):
        assert display.metric == "relative_l2" and display.labels == ("plain", "mask")
        np.testing.assert_allclose(display.lines_["mask"].get_ydata(), [0.3, 0.4])
        assert display.ax_.get_title() == "Fig. 7"


def test_old_constructor_and_name_still_work():
    with pytest.warns(DeprecationWarning, match="from_divergence"):
        old = LayerDivergenceDisplay(_divergence(), ("plain", "mask"))
    np.testing.assert_allclose(old.plot().lines_[1].get_ydata(), [0.3, 0.4])
    assert plots.CosineDivergenceDisplay is plots.LayerDivergenceDisplay
    assert plots.LayerDivergenceDisplay is LayerDivergenceDisplay


def test_from_models_computes_layer_divergence():
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, activation="relu", name="conv1")(inputs)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc2")(h))
    defended = sanitize(model, ["conv1", "fc2"], MaskSanitizer(alpha=0.5))
    rng = np.random.default_rng(1)
    x = rng.random((5, 6, 6, 1)).astype("float32")
    x_adv = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype("float32")
    display = LayerDivergenceDisplay.from_models(model, defended, x, x_adv, ["conv1", "fc2"])
    expected = layer_divergence(model, defended, x, x_adv, ["conv1", "fc2"])
    np.testing.assert_allclose(display.lines_["undefended"].get_ydata(), expected.before)
    np.testing.assert_allclose(display.lines_["sanitized"].get_ydata(), expected.after)
