"""Evaluating sanitized models: layer-wise divergence and the trade-off curve.

Two figures of the "sanitizing hidden activations" defence, drawn from the
library's own outputs as Display objects (`ax_`, `figure_`, matplotlib
imported inside the functions that draw):

- Fig. 7, `layer_divergence` + `plot_layer_divergence`: per layer, how far
  the activations of adversarial inputs are from those of their clean
  originals, in the undefended and in the sanitized network;
- `plot_tradeoff`: clean against robust accuracy as the sanitizer's
  strength (the mask threshold) varies.

This module works on models `keras_advguard.sanitize.sanitize` returns; it
sits beside `sanitize` (floor 3) and reaches inside models only through
`DetectorModel`.
"""

import dataclasses

import numpy as np

from keras_advguard import _validation


@dataclasses.dataclass(eq=False)
class LayerDivergence:
    """Per-layer normalized distances between adversarial and clean activations.

    Attributes:
        layers: the layer paths of the undefended model, in graph order.
        sanitized_layers: the layers tapped in the sanitized model, one per
            entry of `layers` (the sanitizer that follows the layer, or the
            layer itself when it is not sanitized).
        before: float64 array `(L,)`, mean over the pairs of
            `||a(x_adv) - a(x)||_2 / ||a(x)||_2` in the undefended model.
        after: float64 array `(L,)`, the same in the sanitized model.
        before_std: float64 array `(L,)`, standard deviation over the pairs.
        after_std: float64 array `(L,)`.
        n_pairs: number of pairs whose distance entered each mean, int array
            `(2, L)` (row 0 before, row 1 after): a pair whose clean
            activation is all zeros has no normalized distance and is left
            out.
    """

    layers: list
    sanitized_layers: list
    before: np.ndarray
    after: np.ndarray
    before_std: np.ndarray
    after_std: np.ndarray
    n_pairs: np.ndarray


def layer_divergence(
    model,
    sanitized_model,
    x_clean,
    x_adv,
    layers,
    *,
    sanitized_layers=None,
    batch_size=128,
):
    """The paper's Fig. 7: normalized activation distance per layer.

    For every pair `(x, x_adv)` and every layer `l`,

        d_l(x, x_adv) = ||a_l(x_adv) - a_l(x)||_2 / ||a_l(x)||_2

    over the layer's whole (flattened) output, computed in `model` (before
    sanitizing) and in `sanitized_model` (after: there `a_l` is the output
    of the sanitizer that follows layer `l`, i.e. what the next layer
    receives). Returns the mean and standard deviation over the pairs.

    Args:
        model: the undefended Keras model.
        sanitized_model: the model `sanitize(model, ...)` returned (the plain
            or the BPDA variant; their forward passes agree).
        x_clean: clean inputs `(N, ...)`.
        x_adv: their adversarial versions, same shape, same order.
        layers: selector(s) of the layers of `model` to measure (names,
            classes, predicates, presets, as `resolve_layers` accepts).
        sanitized_layers: the layer paths of `sanitized_model` to compare
            with, one per layer selected by `layers`. Defaults to `None`:
            for each layer path `p`, the sanitizer `sanitizer_name(p)`
            (`"conv1_sanitizer"`) when `sanitized_model` has it, else `p`.
        batch_size: inputs per forward pass. Defaults to `128`.

    Returns:
        A `LayerDivergence`.

    Raises:
        ValueError: `x_clean` and `x_adv` of different shapes or empty,
            `sanitized_layers` of the wrong length, or an unknown layer.
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> from keras_advguard.layers import MaskSanitizer
        >>> from keras_advguard.sanitize import sanitize
        >>> model = keras.Sequential([keras.Input((3,)),
        ...     keras.layers.Dense(4, activation="relu", name="fc1"),
        ...     keras.layers.Dense(2, name="out")])
        >>> defended = sanitize(model, "fc1", MaskSanitizer(alpha=0.0))
        >>> x = np.ones((2, 3), "float32")
        >>> result = layer_divergence(model, defended, x, x + 0.1, "fc1")
        >>> result.sanitized_layers, bool(np.allclose(result.before, result.after))
        (['fc1_sanitizer'], True)
    """
    from keras_advguard._naming import sanitizer_name
    from keras_advguard.detector_model import DetectorModel, resolve_layers

    x_clean = _validation.check_array("x_clean", x_clean, min_ndim=2, dtype_kind="fiu")
    x_adv = _validation.check_array("x_adv", x_adv, min_ndim=2, dtype_kind="fiu")
    _validation.check_same_shape(
        "x_clean", x_clean, "x_adv", x_adv, hint=" (pairs in the same order)"
    )
    _validation.check_positive_int("batch_size", batch_size)
    paths = resolve_layers(model, layers)
    available = set(resolve_layers(sanitized_model, lambda layer: True))
    if sanitized_layers is None:
        sanitized_layers = [
            sanitizer_name(p) if sanitizer_name(p) in available else p for p in paths
        ]
    else:
        _validation.check_type(
            "sanitized_layers", sanitized_layers, (list, tuple), "a list of layer paths"
        )
        sanitized_layers = list(sanitized_layers)
        if len(sanitized_layers) != len(paths):
            raise ValueError(
                "Argument `sanitized_layers` must name one layer of the sanitized "
                f"model per selected layer ({len(paths)}: {paths}). "
                f"Received: sanitized_layers={sanitized_layers}"
            )
    # Resolve each sanitized tap separately: graph order may differ.
    for path in sanitized_layers:
        resolve_layers(sanitized_model, path)

    before = _distances(
        DetectorModel(model, layers=paths, pooling=None), paths, x_clean, x_adv, batch_size
    )
    after = _distances(
        DetectorModel(sanitized_model, layers=sorted(set(sanitized_layers)), pooling=None),
        sanitized_layers,
        x_clean,
        x_adv,
        batch_size,
    )
    return LayerDivergence(
        layers=paths,
        sanitized_layers=sanitized_layers,
        before=np.array([np.nanmean(d) if np.isfinite(d).any() else np.nan for d in before]),
        after=np.array([np.nanmean(d) if np.isfinite(d).any() else np.nan for d in after]),
        before_std=np.array([np.nanstd(d) if np.isfinite(d).any() else np.nan for d in before]),
        after_std=np.array([np.nanstd(d) if np.isfinite(d).any() else np.nan for d in after]),
        n_pairs=np.array(
            [
                [int(np.isfinite(d).sum()) for d in before],
                [int(np.isfinite(d).sum()) for d in after],
            ]
        ),
    )


def _distances(detector, taps, x_clean, x_adv, batch_size):
    """Per-pair normalized distances for each tap: a list of `(N,)` arrays."""
    out = [[] for _ in taps]
    for start in range(0, len(x_clean), batch_size):
        clean = detector.predict_on_batch(x_clean[start : start + batch_size])
        adv = detector.predict_on_batch(x_adv[start : start + batch_size])
        for i, tap in enumerate(taps):
            a = np.asarray(clean["activations"][tap], dtype=np.float64)
            b = np.asarray(adv["activations"][tap], dtype=np.float64)
            a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
            norm = np.linalg.norm(a, axis=1)
            diff = np.linalg.norm(b - a, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[i].append(np.where(norm > 0, diff / np.where(norm > 0, norm, 1.0), np.nan))
    return [np.concatenate(d) for d in out]


def _get_ax(ax):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    return ax, ax.figure


class LayerDivergenceDisplay:
    """The paper's Fig. 7: divergence per layer, undefended and sanitized.

    Build it with `plot_layer_divergence`; the constructor only stores data.

    Args:
        divergence: a `LayerDivergence` (from `layer_divergence`).
        labels: legend labels of the two curves. Defaults to
            `("undefended", "sanitized")`.

    Attributes (set by `plot`):
        ax_: the matplotlib `Axes`.
        figure_: the matplotlib `Figure`.
        lines_: the two `Line2D` curves, before and after.
    """

    def __init__(self, divergence, labels=("undefended", "sanitized")):
        _validation.check_type("divergence", divergence, LayerDivergence)
        _check_labels(labels, 2)
        self.divergence = divergence
        self.labels = tuple(labels)

    def plot(self, ax=None, *, show_std=False, title=None):
        """Draw both curves against the layers.

        Args:
            ax: matplotlib `Axes`; a new figure when `None`. Defaults to
                `None`.
            show_std: whether to draw +/- 1 standard deviation error bars.
                Defaults to `False`.
            title: optional axes title. Defaults to `None`.

        Returns:
            `self`.
        """
        ax, figure = _get_ax(ax)
        d = self.divergence
        positions = np.arange(len(d.layers))
        self.lines_ = []
        for values, std, label, marker in (
            (d.before, d.before_std, self.labels[0], "o"),
            (d.after, d.after_std, self.labels[1], "s"),
        ):
            if show_std:
                container = ax.errorbar(
                    positions, values, yerr=std, marker=marker, capsize=3, label=label
                )
                self.lines_.append(container.lines[0])
            else:
                (line,) = ax.plot(positions, values, marker=marker, label=label)
                self.lines_.append(line)
        ax.set_xticks(positions)
        ax.set_xticklabels(d.layers, rotation=30, ha="right")
        ax.set_xlabel("layer")
        ax.set_ylabel(r"$\|a(x_{adv}) - a(x)\|_2 \,/\, \|a(x)\|_2$ (mean over pairs)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
        if title is not None:
            ax.set_title(title)
        figure.tight_layout()
        self.ax_, self.figure_ = ax, figure
        return self


def plot_layer_divergence(
    divergence, ax=None, *, labels=("undefended", "sanitized"), show_std=False, title=None
):
    """Draw a `LayerDivergence` (the paper's Fig. 7).

    Args:
        divergence: the result of `layer_divergence`.
        ax: matplotlib `Axes`; a new figure when `None`. Defaults to `None`.
        labels: legend labels of the undefended and sanitized curves.
            Defaults to `("undefended", "sanitized")`.
        show_std: draw +/- 1 standard deviation error bars. Defaults to
            `False`.
        title: optional axes title. Defaults to `None`.

    Returns:
        A `LayerDivergenceDisplay` with `ax_`, `figure_`, `lines_`.

    Example:

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> result = LayerDivergence(["conv1", "fc7"], ["conv1_sanitizer", "fc7_sanitizer"],
        ...     np.array([0.5, 1.2]), np.array([0.3, 0.4]), np.zeros(2), np.zeros(2),
        ...     np.array([[100, 100], [100, 100]]))
        >>> display = plot_layer_divergence(result)
        >>> display.lines_[1].get_ydata().tolist()
        [0.3, 0.4]
        >>> import matplotlib.pyplot as plt
        >>> plt.close(display.figure_)
    """
    return LayerDivergenceDisplay(divergence, labels).plot(ax=ax, show_std=show_std, title=title)


class TradeoffDisplay:
    """Clean and robust accuracy as a sanitizer's strength varies.

    Build it with `plot_tradeoff`; the constructor only stores data.

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
        self.thresholds = _curve("thresholds", thresholds)
        self.clean_accuracy = _curve("clean_accuracy", clean_accuracy)
        _validation.check_same_length(
            "thresholds", self.thresholds, "clean_accuracy", self.clean_accuracy
        )
        if not isinstance(robust_accuracy, dict):
            robust_accuracy = {"robust": robust_accuracy}
        self.robust_accuracy = {}
        for label, values in robust_accuracy.items():
            values = _curve(f"robust_accuracy[{label!r}]", values)
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
        ax, figure = _get_ax(ax)
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
        self.ax_, self.figure_ = ax, figure
        return self


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
    return TradeoffDisplay(thresholds, clean_accuracy, robust_accuracy, chosen).plot(
        ax=ax, kind=kind, xlabel=xlabel, title=title
    )


def _curve(name, value):
    return _validation.check_array(name, value, ndim=1, dtype_kind="fiu").astype(np.float64)


def _check_labels(labels, n):
    if not isinstance(labels, (list, tuple)) or len(labels) != n:
        raise ValueError(
            f"Argument `labels` must be a pair of strings. Received: labels={labels!r}"
        )
