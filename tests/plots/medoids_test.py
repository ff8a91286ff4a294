"""keras_advguard.plots.medoids: ActivationTsneDisplay, plot_activation_tsne."""

import keras
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from keras_advguard.detector_model import DetectorModel  # noqa: E402
from keras_advguard.plots.medoids import (  # noqa: E402
    ActivationTsneDisplay,
    plot_activation_tsne,
)


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5, 5, 1)),
            keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="relu", name="fc"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.random((45, 5, 5, 1)).astype("float32")
    return model, x, np.arange(45) % 3


def test_tsne_of_training_and_highlighted_points(tiny):
    model, x, y = tiny
    display = plot_activation_tsne(
        model,
        x,
        y,
        layers=["conv", "fc"],
        x_clean=x[:2],
        x_adv=x[2:3],
        classes=[0, 2],
        max_per_class=10,
        perplexity=5,
        seed=3,
        n_threads=1,
    )
    assert display.axes_.shape == (2,)
    assert [ax.get_title() for ax in display.axes_] == ["conv", "fc"]
    assert display.kinds == ["clean", "clean", "adversarial"]
    assert set(np.unique(display.labels)) == {0, 2} and len(display.labels) == 20
    # Two class clouds and three highlighted markers per panel.
    assert len(display.axes_[0].collections) == 5
    labels = display.axes_[1].get_legend_handles_labels()[1]
    assert labels == ["class 0", "class 2", "clean 1", "clean 2", "adversarial 1"]

    # Same points, same seed: the embedding is scikit-learn's t-SNE of the
    # chosen training points followed by the highlighted inputs.
    acts = DetectorModel(model, layers=["fc"]).activations(np.concatenate([x, x[:3]]))["fc"]
    rng = np.random.default_rng(3)
    keep = np.concatenate(
        [np.sort(rng.choice(np.flatnonzero(y == c), 10, replace=False)) for c in (0, 2)]
    )
    points = np.concatenate([acts[keep], acts[45:]]).astype(np.float64)
    with threadpool_limits(1, user_api="openmp"):
        tsne = TSNE(n_components=2, perplexity=5, init="pca", random_state=3)
        expected = tsne.fit_transform(points)
    np.testing.assert_allclose(display.embeddings[1], expected[:20], atol=1e-6)
    np.testing.assert_allclose(display.highlights[1], expected[20:], atol=1e-6)
    plt.close(display.figure_)


def test_display_on_given_axes_and_errors():
    rng = np.random.default_rng(0)
    figure, axes = plt.subplots(1, 2)
    display = ActivationTsneDisplay(
        [rng.normal(size=(6, 2)), rng.normal(size=(6, 2))], np.arange(6) % 2, titles=["a", "b"]
    ).plot(axes, legend=False)
    assert display.figure_ is figure and display.axes_[1] is axes[1]
    plt.close(figure)
    with pytest.raises(ValueError, match="shape \\(N, 2\\)"):
        ActivationTsneDisplay([np.zeros((6, 3))], np.zeros(6, int))
    with pytest.raises(ValueError, match="must be one of 'clean', 'adversarial'"):
        ActivationTsneDisplay(
            [np.zeros((6, 2))], np.zeros(6, int), highlights=[np.zeros((1, 2))], kinds=["noisy"]
        )
    with pytest.raises(ValueError, match="one array per panel"):
        ActivationTsneDisplay(
            [np.zeros((6, 2))] * 2, np.zeros(6, int), highlights=[np.zeros((1, 2))], kinds=["clean"]
        )
    with pytest.raises(ValueError, match="No activations for layer 'fc9'"):
        ActivationTsneDisplay.from_activations(
            {"fc": np.zeros((6, 3))}, np.zeros(6, int), layers="fc9"
        )
    with pytest.raises(ValueError, match="Class 5 has no training sample"):
        ActivationTsneDisplay.from_activations(
            {"fc": np.zeros((6, 3))}, np.zeros(6, int), classes=[0, 5]
        )
