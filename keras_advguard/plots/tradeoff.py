"""Clean against robust accuracy as a sanitizer's strength varies.

- `TradeoffDisplay` (`from_accuracies`): accuracies against the swept
  threshold (the mask's `alpha`), or robust against clean accuracy
  (a Pareto curve); `plot_tradeoff` is the same in one call.

A display in the scikit-learn pattern (`keras_advguard.plots._base`); it
draws the accuracies it is given (see `examples/sanitize_mnist.py` for the
sweep that produces them). matplotlib is imported inside `plot` only.
"""

import numpy as np

from keras_advguard import _validation
from keras_advguard.plots._base import DisplayMixin, check_curve


class TradeoffDisplay(DisplayMixin):
    """Clean and robust accuracy as a sanitizer's strength varies.

    Build it with `from_accuracies` (or `plot_tradeoff`); the constructor
    only stores data.

    Args:
        thresholds: 1-D array of the swept parameter (the mask's `alpha`).
        clean_accuracy: 1-D array, clean accuracy at each threshold.
        robust_accuracy: a 1-D array, or a dict `{label: 1-D array}` of
            robust accuracies (one curve per attack or threat model).
        chosen: optional threshold picked (on validation data), marked.

    Attributes (set by `plot`):
        ax_: the matplotlib `Axes`.
        figure_: the matplotlib `Figure`.
        lines_: dict `{label: Line2D}`, `"clean"` included.
        chosen_line_: the marker of `chosen` (`Line2D`) or `None`.
    """

    def __init__(self, thresholds, clean_accuracy, robust_accuracy, chosen=None):
        self.thresholds = check_curve("thresholds", thresholds)
        self.clean_accuracy = check_curve("clean_accuracy", clean_accuracy)
        _validation.check_same_length(
            "thresholds", self.thresholds, "clean_accuracy", self.clean_accuracy
        )
        if not isinstance(robust_accuracy, dict):
            robust_accuracy = {"robust": robust_accuracy}
        self.robust_accuracy = {}
        for label, values in robust_accuracy.items():
            values = check_curve(f"robust_accuracy[{label!r}]", values)
            _validation.check_same_length(
                "thresholds", self.thresholds, f"robust_accuracy[{label!r}]", values
            )
            self.robust_accuracy[str(label)] = values
        if chosen is not None:
            _validation.check_number("chosen", chosen)
        self.chosen = chosen

    def plot(self, ax=None, *, kind="threshold", xlabel="mask threshold alpha", title=None):
        """Draw the curves.

        Args:
            ax: matplotlib `Axes`; a new figure when `None`. Defaults to
                `None`.
            kind: `"threshold"`: accuracies against the threshold (clean
                and each robust curve); `"pareto"`: robust against clean
                accuracy, one curve per robust series, points annotated
                with their threshold. Defaults to `"threshold"`.
            xlabel: label of the threshold axis. Defaults to
                `"mask threshold alpha"`.
            title: optional axes title. Defaults to `None`.

        Returns:
            `self`.
        """
        _validation.check_choice("kind", kind, ("threshold", "pareto"))
        ax, figure = self._get_ax(ax)
        self.lines_ = {}
        self.chosen_line_ = None
        t = self.thresholds
        if kind == "threshold":
            (self.lines_["clean"],) = ax.plot(t, self.clean_accuracy, "k-o", label="clean")
            for label, values in self.robust_accuracy.items():
                (self.lines_[label],) = ax.plot(t, values, marker="s", label=label)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("accuracy")
            if self.chosen is not None:
                self.chosen_line_ = ax.axvline(
                    self.chosen, color="grey", linestyle="--", label=f"chosen ({self.chosen:g})"
                )
        else:
            for label, values in self.robust_accuracy.items():
                (self.lines_[label],) = ax.plot(
                    self.clean_accuracy, values, marker="o", label=label
                )
                for x, y, value in zip(self.clean_accuracy, values, t, strict=True):
                    ax.annotate(
                        f"{value:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7
                    )
            ax.set_xlabel("clean accuracy")
            ax.set_ylabel("robust accuracy")
            if self.chosen is not None:
                index = int(np.argmin(np.abs(t - self.chosen)))
                (self.chosen_line_,) = ax.plot(
                    [self.clean_accuracy[index]] * len(self.robust_accuracy),
                    [v[index] for v in self.robust_accuracy.values()],
                    "k*",
                    markersize=12,
                    label=f"chosen ({self.chosen:g})",
                )
        ax.grid(alpha=0.3)
        ax.legend()
        if title is not None:
            ax.set_title(title)
        figure.tight_layout()
        return self._finish(ax)

    @classmethod
    def from_accuracies(
        cls, thresholds, clean_accuracy, robust_accuracy, *, chosen=None, ax=None, **plot_kwargs
    ):
        """Build the display from a threshold sweep's accuracies and plot it.

        Args:
            thresholds: 1-D array of the swept parameter.
            clean_accuracy: 1-D array of clean accuracies, one per threshold.
            robust_accuracy: 1-D array, or dict `{label: 1-D array}`.
            chosen: optional threshold chosen on validation data, marked.
                Defaults to `None`.
            ax: matplotlib `Axes`; a new figure when `None`. Defaults to
                `None`.
            **plot_kwargs: passed to `plot` (`kind`, `xlabel`, `title`).

        Returns:
            The plotted `TradeoffDisplay`.

        Example:

            >>> import matplotlib
            >>> matplotlib.use("Agg")
            >>> display = TradeoffDisplay.from_accuracies(
            ...     [0.1, 0.5], [0.99, 0.9], [0.2, 0.6], kind="pareto")
            >>> display.lines_["robust"].get_xdata().tolist()
            [0.99, 0.9]
            >>> import matplotlib.pyplot as plt
            >>> plt.close(display.figure_)
        """
        display = cls(thresholds, clean_accuracy, robust_accuracy, chosen)
        return display.plot(ax=ax, **plot_kwargs)


def plot_tradeoff(
    thresholds,
    clean_accuracy,
    robust_accuracy,
    *,
    chosen=None,
    ax=None,
    kind="threshold",
    xlabel="mask threshold alpha",
    title=None,
):
    """Clean-vs-robust trade-off of a sanitizer over its threshold.

    Shortcut for `TradeoffDisplay.from_accuracies`.

    Args:
        thresholds: 1-D array of the swept parameter (the mask's `alpha`).
        clean_accuracy: 1-D array of clean accuracies, one per threshold.
        robust_accuracy: 1-D array, or dict `{label: 1-D array}` (e.g.
            `{"PGD, oblivious": ..., "PGD, adaptive (BPDA)": ...}`).
        chosen: optional threshold chosen on validation data, marked.
            Defaults to `None`.
        ax: matplotlib `Axes`; a new figure when `None`. Defaults to `None`.
        kind: `"threshold"` or `"pareto"` (see `TradeoffDisplay.plot`).
            Defaults to `"threshold"`.
        xlabel: label of the threshold axis. Defaults to
            `"mask threshold alpha"`.
        title: optional axes title. Defaults to `None`.

    Returns:
        A `TradeoffDisplay` with `ax_`, `figure_`, `lines_`, `chosen_line_`.

    Raises:
        ValueError: arrays of different lengths, empty, or an unknown `kind`.
        TypeError: non-numeric arrays.

    Example:

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> display = plot_tradeoff([0.1, 0.3, 0.5], [0.99, 0.98, 0.9],
        ...     {"PGD": [0.1, 0.5, 0.6]}, chosen=0.3)
        >>> sorted(display.lines_), display.chosen_line_.get_xdata()[0]
        (['PGD', 'clean'], 0.3)
        >>> import matplotlib.pyplot as plt
        >>> plt.close(display.figure_)
    """
    return TradeoffDisplay.from_accuracies(
        thresholds,
        clean_accuracy,
        robust_accuracy,
        chosen=chosen,
        ax=ax,
        kind=kind,
        xlabel=xlabel,
        title=title,
    )
