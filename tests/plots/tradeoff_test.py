"""keras_advguard.plots.tradeoff: TradeoffDisplay, plot_tradeoff."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from keras_advguard.plots.tradeoff import TradeoffDisplay, plot_tradeoff  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


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


def test_from_accuracies_on_given_ax():
    figure, ax = plt.subplots()
    display = TradeoffDisplay.from_accuracies([0.1, 0.2], [0.9, 0.8], [0.3, 0.5], ax=ax)
    assert display.ax_ is ax and display.figure_ is figure
    np.testing.assert_allclose(display.lines_["robust"].get_ydata(), [0.3, 0.5])
