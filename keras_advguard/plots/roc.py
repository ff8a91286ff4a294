"""ROC figures of detectors: one curve, the mean over folds, one curve per attack.

- `DetectionRocDisplay`: ROC curve of a detector, positive = adversarial
  (`from_scores`), or the mean ROC over cross-validation folds with a +/- 1
  standard deviation band (`from_folds`; `plot_mean_roc` is the same).
- `AttackRocDisplay`: one ROC curve per attack, sharing the clean scores
  (Amirian et al., Fig. 4b).

Displays in the scikit-learn pattern (`keras_advguard.plots._base`);
matplotlib is imported inside the drawing methods only. In scripts without a
display, select the `Agg` backend (`MPLBACKEND=Agg` or `matplotlib.use("Agg")`).
"""

import numpy as np

from keras_advguard import _validation, metrics
from keras_advguard.plots._base import DisplayMixin, check_curve, check_scores

_FPR_LABEL = "False positive rate (clean flagged as adversarial)"
_TPR_LABEL = "True positive rate (adversarial detected)"


def _check_markers(fpr_markers):
    if fpr_markers is None:
        return []
    markers = _validation.check_array("fpr_markers", fpr_markers, ndim=1, dtype_kind="fiu")
    for i, value in enumerate(markers.tolist()):
        _validation.check_number(f"fpr_markers[{i}]", value, min_value=0.0, max_value=1.0)
    return markers.tolist()


class DetectionRocDisplay(DisplayMixin):
    """ROC curve of an adversarial-example detector (positive = adversarial).

    Build it with `DetectionRocDisplay.from_scores` (or `from_folds` for
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
        self.fpr = check_curve("fpr", fpr)
        self.tpr = check_curve("tpr", tpr)
        _validation.check_same_length("fpr", self.fpr, "tpr", self.tpr)
        self.tpr_std = None
        if tpr_std is not None:
            self.tpr_std = check_curve("tpr_std", tpr_std)
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
        ax, _ = self._get_ax(ax)
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
        return self._finish(ax)

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

    @classmethod
    def from_folds(cls, folds, ax=None, name=None, *, fpr_grid=None, **kwargs):
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
            The plotted display, with `fpr` the grid (prefixed by
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
            >>> display = DetectionRocDisplay.from_folds(folds, name="kNN")
            >>> display.band_ is not None, display.fpr.size
            (True, 1002)
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
            grid = check_curve("fpr_grid", fpr_grid)
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
        display = cls(
            np.concatenate([[0.0], grid]),
            mean_tpr,
            roc_auc=float(np.mean(aucs)),
            name=name,
            tpr_std=std_tpr,
            roc_auc_std=float(np.std(aucs)),
        )
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

    Shortcut for `DetectionRocDisplay.from_folds` (see there for the
    computation).

    Args:
        folds: non-empty sequence of `(scores_clean, scores_adv)` pairs, one
            per fold.
        ax: matplotlib `Axes` to draw on; a new figure when `None`.
            Defaults to `None`.
        name: optional name of the detector for the legend.
            Defaults to `None`.
        fpr_grid: optional increasing 1-D grid of FPRs in `[0, 1]`.
            Defaults to `None` (1001 evenly spaced points).
        **kwargs: passed to `DetectionRocDisplay.plot`.

    Returns:
        The plotted `DetectionRocDisplay`.

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
    return DetectionRocDisplay.from_folds(folds, ax=ax, name=name, fpr_grid=fpr_grid, **kwargs)


class AttackRocDisplay(DisplayMixin):
    """The paper's Fig. 4b: the detector's ROC curve for each attack.

    Every curve shares the clean scores; each is a
    `DetectionRocDisplay` (positive = adversarial, higher score = more
    adversarial).

    Args:
        scores_clean: 1-D array of detector scores of clean images.
        scores_adv_by_attack: dict `{attack name: 1-D array of scores of its
            adversarial images}`.

    Attributes (set by `plot`):
        figure_, ax_: the matplotlib `Figure` and `Axes`.
        displays_: dict `{attack name: DetectionRocDisplay}`.

    Example:

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> display = AttackRocDisplay.from_scores(
        ...     [0.1, 0.4, 0.2], {"FGSM": [0.35, 0.8], "PGD": [0.5, 0.9]})
        >>> sorted(display.displays_)
        ['FGSM', 'PGD']
        >>> import matplotlib.pyplot as plt
        >>> plt.close(display.figure_)
    """

    def __init__(self, scores_clean, scores_adv_by_attack):
        self.scores_clean = check_scores("scores_clean", scores_clean)
        _validation.check_type("scores_adv_by_attack", scores_adv_by_attack, dict, "a dict")
        if not scores_adv_by_attack:
            raise ValueError(
                "Argument `scores_adv_by_attack` must hold at least one attack. "
                "Received: scores_adv_by_attack={}"
            )
        self.scores_adv_by_attack = {
            str(k): check_scores(f"scores_adv_by_attack[{k!r}]", v)
            for k, v in scores_adv_by_attack.items()
        }

    def plot(self, ax=None, *, fpr_markers=(0.01, 0.05, 0.1), **kwargs):
        """Draw one ROC curve per attack and the chance diagonal once.

        Args:
            ax: matplotlib `Axes`; a new figure when `None`. Defaults to
                `None`.
            fpr_markers: false positive rates marked by dotted lines.
                Defaults to `(0.01, 0.05, 0.1)`, the paper's.
            **kwargs: passed to each `DetectionRocDisplay.plot`.

        Returns:
            The display.
        """
        ax, _ = self._get_ax(ax)
        self.displays_ = {}
        for i, (attack, scores_adv) in enumerate(self.scores_adv_by_attack.items()):
            last = i == len(self.scores_adv_by_attack) - 1
            self.displays_[attack] = DetectionRocDisplay.from_scores(
                self.scores_clean,
                scores_adv,
                name=attack,
                ax=ax,
                plot_chance_level=last,
                fpr_markers=fpr_markers if last else None,
                **kwargs,
            )
        return self._finish(ax)

    @classmethod
    def from_scores(cls, scores_clean, scores_adv_by_attack, ax=None, **kwargs):
        """Build the display from scores and plot it.

        Args:
            scores_clean: 1-D array of detector scores of clean images.
            scores_adv_by_attack: dict `{attack name: 1-D array of scores}`.
            ax: matplotlib `Axes`; a new figure when `None`. Defaults to
                `None`.
            **kwargs: passed to `plot`.

        Returns:
            The plotted `AttackRocDisplay`.
        """
        return cls(scores_clean, scores_adv_by_attack).plot(ax=ax, **kwargs)
