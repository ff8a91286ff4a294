"""What every figure of `keras_advguard.plots` shares: the Display mixin.

scikit-learn's Display pattern (`sklearn.metrics.RocCurveDisplay`): the
constructor stores the arrays to draw, `.plot(ax=None, ...)` draws them and
stores the matplotlib objects in trailing-underscore attributes (`ax_` or
`axes_`, `figure_`, ...), and `from_*` class methods build the display from
the library's outputs and plot it in one call.

`DisplayMixin` holds the two steps every `plot` repeats: getting the axes
(a new figure when none is given) and storing them on the display.
matplotlib is imported inside those methods only, so importing a plot
module does not import it.
"""

import numpy as np

from keras_advguard import _validation


class DisplayMixin:
    """Axis creation and the `ax_`/`axes_`/`figure_` attributes of a Display."""

    @staticmethod
    def _get_ax(ax, **subplots_kwargs):
        """Return `(ax, figure)`, creating a figure when `ax` is `None`.

        `subplots_kwargs` (e.g. `figsize`) only apply to a new figure.
        """
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(**subplots_kwargs)
        return ax, ax.figure

    @staticmethod
    def _get_axes(axes, shape, what="one per panel", **subplots_kwargs):
        """Return `(axes, figure)`: a `shape` numpy array of `Axes`.

        A new figure when `axes` is `None` (a `(rows, cols)` grid, or one row
        of panels for a 1-D `shape`); otherwise the given `Axes`, which must
        number `prod(shape)` (`what` says how, in the error message).

        Raises:
            ValueError: if `axes` holds another number of `Axes`.
        """
        if axes is None:
            import matplotlib.pyplot as plt

            grid = tuple(shape) if len(shape) == 2 else (1, int(np.prod(shape)))
            figure, axes = plt.subplots(*grid, squeeze=False, **subplots_kwargs)
            return np.asarray(axes, dtype=object).reshape(shape), figure
        axes = np.asarray(axes, dtype=object)
        if axes.size != int(np.prod(shape)):
            raise ValueError(
                f"Argument `axes` must hold {int(np.prod(shape))} Axes, {what}. "
                f"Received: {axes.size}"
            )
        axes = axes.reshape(shape)
        return axes, axes.flat[0].figure

    def _finish(self, ax=None, *, axes=None, figure=None):
        """Store `ax_` (one panel) or `axes_` (several) and `figure_`; return `self`."""
        if ax is not None:
            self.ax_ = ax
            figure = ax.figure if figure is None else figure
        if axes is not None:
            self.axes_ = axes
            figure = np.asarray(axes, dtype=object).flat[0].figure if figure is None else figure
        self.figure_ = figure
        return self


def check_curve(name, value):
    """`value` as a float64 1-D numeric array (a curve's coordinates)."""
    return _validation.check_array(name, value, ndim=1, dtype_kind="fiu").astype(np.float64)


def check_scores(name, value):
    """`value` as a non-empty float64 1-D array of detector scores."""
    array = _validation.check_array(name, value, dtype_kind="fiu")
    if array.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must be a 1-D array of scores. "
            f"Received: {name} with shape={array.shape}"
        )
    return array.astype(np.float64)
