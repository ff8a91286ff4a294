"""keras_advguard.plots._base: the Display mixin's axes and attributes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from keras_advguard.plots._base import DisplayMixin, check_scores  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_get_ax_creates_or_keeps_the_axes():
    ax, figure = DisplayMixin._get_ax(None, figsize=(3, 2))
    assert ax.figure is figure and tuple(figure.get_size_inches()) == (3, 2)
    same, same_figure = DisplayMixin._get_ax(ax, figsize=(9, 9))
    assert same is ax and same_figure is figure  # figsize only for a new figure


def test_get_axes_one_row_of_panels_or_a_grid():
    axes, figure = DisplayMixin._get_axes(None, (3,))
    assert axes.shape == (3,) and all(ax.figure is figure for ax in axes)
    assert len({round(ax.get_position().y0, 6) for ax in axes}) == 1  # one row
    grid, _ = DisplayMixin._get_axes(None, (2, 3))
    assert grid.shape == (2, 3)
    given, given_figure = DisplayMixin._get_axes(list(grid.ravel()), (3, 2))
    assert given.shape == (3, 2) and given_figure is grid[0, 0].figure
    with pytest.raises(ValueError, match="must hold 2 Axes, one per panel. Received: 3"):
        DisplayMixin._get_axes(axes, (2,))


def test_finish_stores_the_attributes():
    class Display(DisplayMixin):
        pass

    ax, figure = DisplayMixin._get_ax(None)
    display = Display()
    assert display._finish(ax) is display
    assert display.ax_ is ax and display.figure_ is figure
    axes, figure = DisplayMixin._get_axes(None, (2,))
    display._finish(axes=axes)
    assert display.axes_ is axes and display.figure_ is figure


def test_check_scores():
    assert check_scores("s", [1, 2]).dtype.name == "float64"
    with pytest.raises(ValueError, match="`s` must be a 1-D array of scores"):
        check_scores("s", [[1.0, 2.0]])
