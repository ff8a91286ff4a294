"""Figures drawn from the library's own outputs, as Display objects.

Each figure follows scikit-learn's Display pattern
(`sklearn.metrics.RocCurveDisplay`): a class that stores the data to draw,
a `.plot(ax=None, ...)` method that draws it and stores the matplotlib
artists in trailing-underscore attributes (`ax_`, `figure_`, `line_`, ...),
and `from_*` class methods that compute the data and plot in one call.

matplotlib is imported inside the functions that draw, so importing this
module does not import it. In scripts without a display, select the `Agg`
backend (`MPLBACKEND=Agg` or `matplotlib.use("Agg")`).

Contents:

- `DetectionRocDisplay`: ROC curve of a detector, positive = adversarial.
- `plot_mean_roc`: mean ROC over cross-validation folds, with a +/- 1
  standard deviation band.
"""

import numpy as np

from keras_advguard import _validation, metrics

_FPR_LABEL = "False positive rate (clean flagged as adversarial)"
_TPR_LABEL = "True positive rate (adversarial detected)"


def _get_ax(ax):
    """Return `(ax, figure)`, creating a figure when `ax` is `None`."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    return ax, ax.figure


def _check_curve(name, value):
    array = _validation.check_array(name, value, ndim=1, dtype_kind="fiu")
    return array.astype(np.float64)


def _check_markers(fpr_markers):
    if fpr_markers is None:
        return []
    markers = _validation.check_array("fpr_markers", fpr_markers, ndim=1, dtype_kind="fiu")
    for i, value in enumerate(markers.tolist()):
        _validation.check_number(f"fpr_markers[{i}]", value, min_value=0.0, max_value=1.0)
    return markers.tolist()


class DetectionRocDisplay:
    """ROC curve of an adversarial-example detector (positive = adversarial).

    Build it with `DetectionRocDisplay.from_scores` (or `plot_mean_roc` for
    cross-validation folds); the constructor only stores the curve.

    Args:
        fpr: 1-D array of false positive rates (x axis).
        tpr: 1-D array of true positive rates (y axis), same length.
        roc_auc: optional area under the curve, shown in the legend.
            Defaults to `None`.
        name: optional name of the detector, shown in the legend.
            Defaults to `None`.
        tpr_std: optional 1-D array of standard deviations of `tpr` (across
            folds), drawn as a band. Defaults to `None`.
        roc_auc_std: optional standard deviation of the AUC, shown in the
            legend. Defaults to `None`.

    Attributes (set by `plot`):
        ax_: the matplotlib `Axes`.
        figure_: the matplotlib `Figure`.
        line_: the `Line2D` of the curve.
        band_: the `PolyCollection` of the +/- 1 std band, or `None`.
        chance_level_: the `Line2D` of the chance diagonal, or `None`.
        fpr_markers_: list of the vertical `Line2D` markers (maybe empty).

    Raises:
        ValueError: if `fpr` and `tpr` (or `tpr_std`) differ in length or
            are empty.
        TypeError: if they are not numeric.

    Example:

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> display = DetectionRocDisplay.from_scores(
        ...     [0.1, 0.4, 0.2], [0.35, 0.8], name="kNN"
        ... )
        >>> display.line_.get_label()
        'kNN (AUC = 0.83)'
        >>> import matplotlib.pyplot as plt
        >>> plt.close(display.figure_)
    """

    def __init__(self, fpr, tpr, roc_auc=None, name=None, *, tpr_std=None, roc_auc_std=None):
        self.fpr = _check_curve("fpr", fpr)
        self.tpr = _check_curve("tpr", tpr)
        _validation.check_same_length("fpr", self.fpr, "tpr", self.tpr)
        self.tpr_std = None
        if tpr_std is not None:
            self.tpr_std = _check_curve("tpr_std", tpr_std)
            _validation.check_same_length("tpr", self.tpr, "tpr_std", self.tpr_std)
        self.roc_auc = roc_auc
        self.name = name
        self.roc_auc_std = roc_auc_std

    def _label(self, name):
        if self.roc_auc is None:
            return name
        auc = f"AUC = {self.roc_auc:.2f}"
        if self.roc_auc_std is not None:
            auc += f" $\\pm$ {self.roc_auc_std:.2f}"
        return auc if name is None else f"{name} ({auc})"

    def plot(self, ax=None, name=None, *, plot_chance_level=True, fpr_markers=None, **kwargs):
        """Draw the curve.

        Args:
            ax: matplotlib `Axes` to draw on; a new figure when `None`.
                Defaults to `None`.
            name: name for the legend, overriding the one given at
                construction. Defaults to `None`.
            plot_chance_level: whether to draw the chance diagonal
                (a detector that flags at random). Defaults to `True`.
            fpr_markers: optional false positive rates at which to draw
                dotted vertical lines, e.g. `(0.01, 0.05, 0.1)`.
                Defaults to `None`.
            **kwargs: passed to `Axes.plot` for the curve.

        Returns:
            The display itself, with `ax_`, `figure_`, `line_`, `band_`,
            `chance_level_` and `fpr_markers_` set.

        Raises:
            ValueError: if a marker is outside `[0, 1]`.
        """
        markers = _check_markers(fpr_markers)
        ax, figure = _get_ax(ax)
        name = self.name if name is None else name

        line_kwargs = {}
        label = self._label(name)
        if label is not None:
            line_kwargs["label"] = label
        line_kwargs.update(kwargs)
        (self.line_,) = ax.plot(self.fpr, self.tpr, **line_kwargs)

        self.band_ = None
        if self.tpr_std is not None:
            self.band_ = ax.fill_between(
                self.fpr,
                np.clip(self.tpr - self.tpr_std, 0.0, 1.0),
                np.clip(self.tpr + self.tpr_std, 0.0, 1.0),
                color=self.line_.get_color(),
                alpha=0.2,
                linewidth=0,
                label=r"$\pm$ 1 std. dev.",
            )

        self.chance_level_ = None
        if plot_chance_level:
            (self.chance_level_,) = ax.plot(
                (0, 1),
                (0, 1),
                linestyle="--",
                color="k",
                linewidth=1,
                label="Chance level (AUC = 0.5)",
            )

        self.fpr_markers_ = [
            ax.axvline(f, linestyle=":", color="0.5", linewidth=1) for f in markers
        ]

        ax.set(
            xlabel=_FPR_LABEL,
            ylabel=_TPR_LABEL,
            xlim=(-0.01, 1.01),
            ylim=(-0.01, 1.01),
            aspect="equal",
        )
        if ax.get_legend_handles_labels()[1]:
            ax.legend(loc="lower right")
        self.ax_ = ax
        self.figure_ = figure
        return self

    @classmethod
    def from_scores(cls, scores_clean, scores_adv, name=None, ax=None, **kwargs):
        """Compute the ROC curve of detector scores and plot it.

        Uses `keras_advguard.metrics.roc_curve` and `roc_auc`
        (positive = adversarial, higher score = more adversarial).

        Args:
            scores_clean: 1-D array of detector scores of clean inputs.
            scores_adv: 1-D array of detector scores of adversarial inputs.
            name: optional name of the detector for the legend.
                Defaults to `None`.
            ax: matplotlib `Axes` to draw on; a new figure when `None`.
                Defaults to `None`.
            **kwargs: passed to `plot` (`plot_chance_level`, `fpr_markers`,
                and line properties for `Axes.plot`).

        Returns:
            The plotted `DetectionRocDisplay`.

        Raises:
            ValueError: if a score set is empty or holds NaN or infinite values.
            TypeError: if the scores are not numeric.
        """
        fpr, tpr, _ = metrics.roc_curve(scores_clean, scores_adv)
        auc = metrics.roc_auc(scores_clean, scores_adv)
        display = cls(fpr, tpr, roc_auc=auc, name=name)
        return display.plot(ax=ax, **kwargs)


def _interp_roc(fpr, tpr, grid):
    """Evaluate an ROC polyline at `grid` points.

    `fpr` is non-decreasing and may repeat (vertical segments). At an `x`
    equal to a vertex abscissa, the highest TPR there is returned (the top of
    a vertical segment); between vertices, the segment from the last point
    at the lower abscissa to the first point at the higher one is followed,
    so the polyline (and its trapezoidal area) is reproduced exactly.
    """
    last = np.searchsorted(fpr, grid, side="right") - 1
    last = np.clip(last, 0, fpr.size - 1)
    nxt = np.minimum(last + 1, fpr.size - 1)
    x0, x1 = fpr[last], fpr[nxt]
    y0, y1 = tpr[last], tpr[nxt]
    width = x1 - x0
    safe = np.where(width > 0, width, 1.0)
    slope = np.where(width > 0, (y1 - y0) / safe, 0.0)
    return y0 + slope * (grid - x0)


def plot_mean_roc(folds, ax=None, name=None, *, fpr_grid=None, **kwargs):
    """Plot the mean ROC curve over folds with a +/- 1 std band.

    Each fold's ROC polyline (`keras_advguard.metrics.roc_curve`) is
    evaluated on a common FPR grid; the curve drawn is the mean TPR and the
    band the standard deviation (numpy's default, `ddof=0`) across folds,
    clipped to `[0, 1]`. The curve starts at `(0, 0)`. The AUC in the legend
    is the mean and standard deviation of the per-fold AUCs.

    Args:
        folds: non-empty sequence of `(scores_clean, scores_adv)` pairs, one
            per fold (e.g. the test folds of `metrics.stratified_kfold`).
        ax: matplotlib `Axes` to draw on; a new figure when `None`.
            Defaults to `None`.
        name: optional name of the detector for the legend.
            Defaults to `None`.
        fpr_grid: optional increasing 1-D grid of FPRs in `[0, 1]`.
            Defaults to `None`, i.e. 1001 evenly spaced points
            (step 0.001, fine enough for the 1% operating point).
        **kwargs: passed to `DetectionRocDisplay.plot` (`plot_chance_level`,
            `fpr_markers`, and line properties for `Axes.plot`).

    Returns:
        The plotted `DetectionRocDisplay`, with `fpr` the grid (prefixed by
        0), `tpr` the mean TPR, `tpr_std` its standard deviation, `roc_auc`
        the mean AUC and `roc_auc_std` the AUC standard deviation.

    Raises:
        ValueError: if `folds` is empty, a fold is not a pair, or a score set
            is empty or holds NaN or infinite values.
        TypeError: if `folds` is not a sequence or the scores are not numeric.

    Example:

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> rng = np.random.default_rng(0)
        >>> folds = [(rng.normal(0, 1, 50), rng.normal(2, 1, 50)) for _ in range(3)]
        >>> display = plot_mean_roc(folds, name="detector", fpr_markers=(0.05,))
        >>> print(round(display.roc_auc, 2), round(display.roc_auc_std, 2))
        0.91 0.02
        >>> import matplotlib.pyplot as plt
        >>> plt.close(display.figure_)
    """
    _validation.check_type("folds", folds, (list, tuple), "a list of pairs")
    if not folds:
        raise ValueError(
            "Argument `folds` must hold at least one (scores_clean, scores_adv) "
            "pair. Received: folds=[]"
        )
    if fpr_grid is None:
        grid = np.linspace(0.0, 1.0, 1001)
    else:
        grid = _check_curve("fpr_grid", fpr_grid)
        if np.any(np.diff(grid) <= 0) or grid[0] < 0 or grid[-1] > 1:
            raise ValueError(
                "Argument `fpr_grid` must be strictly increasing within [0, 1]. "
                f"Received: fpr_grid with min={grid.min()}, max={grid.max()}"
            )
    tprs, aucs = [], []
    for i, fold in enumerate(folds):
        if not isinstance(fold, list | tuple) or len(fold) != 2:
            raise ValueError(
                f"Argument `folds` must hold (scores_clean, scores_adv) pairs. "
                f"Received: folds[{i}] of type {type(fold).__name__}"
            )
        scores_clean, scores_adv = fold
        fpr, tpr, _ = metrics.roc_curve(scores_clean, scores_adv)
        tprs.append(_interp_roc(fpr, tpr, grid))
        aucs.append(metrics.roc_auc(scores_clean, scores_adv))
    tprs = np.stack(tprs)
    mean_tpr = np.concatenate([[0.0], tprs.mean(axis=0)])
    std_tpr = np.concatenate([[0.0], tprs.std(axis=0)])
    display = DetectionRocDisplay(
        np.concatenate([[0.0], grid]),
        mean_tpr,
        roc_auc=float(np.mean(aucs)),
        name=name,
        tpr_std=std_tpr,
        roc_auc_std=float(np.std(aucs)),
    )
    return display.plot(ax=ax, **kwargs)


# ---------------------------------------------------------------------------
# The papers' figures (one module per method, matplotlib imported lazily).
# ---------------------------------------------------------------------------

from keras_advguard._plots_entropy import AttackRocDisplay as AttackRocDisplay  # noqa: E402
from keras_advguard._plots_entropy import (  # noqa: E402
    EntropyHistogramDisplay as EntropyHistogramDisplay,
)
from keras_advguard._plots_entropy import (  # noqa: E402
    FeatureResponseDisplay as FeatureResponseDisplay,
)
from keras_advguard._plots_medoids import (  # noqa: E402
    ActivationTsneDisplay as ActivationTsneDisplay,
)
from keras_advguard._plots_medoids import plot_activation_tsne as plot_activation_tsne  # noqa: E402
from keras_advguard._plots_sanitizers import LayerDivergence as LayerDivergence  # noqa: E402
from keras_advguard._plots_sanitizers import (  # noqa: E402
    LayerDivergenceDisplay as LayerDivergenceDisplay,
)
from keras_advguard._plots_sanitizers import TradeoffDisplay as TradeoffDisplay  # noqa: E402
from keras_advguard._plots_sanitizers import layer_divergence as layer_divergence  # noqa: E402
from keras_advguard._plots_sanitizers import (  # noqa: E402
    plot_layer_divergence as plot_layer_divergence,
)
from keras_advguard._plots_sanitizers import plot_tradeoff as plot_tradeoff  # noqa: E402
from keras_advguard._plots_squeeze import (  # noqa: E402, F401 - public, renamed
    LayerDivergenceDisplay as CosineDivergenceDisplay,
)
from keras_advguard._plots_squeeze import (  # noqa: E402
    layer_cosine_distances as layer_cosine_distances,
)
from keras_advguard._plots_squeeze import same_norm_noise as same_norm_noise  # noqa: E402
