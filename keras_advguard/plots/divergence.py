"""Layer-wise divergence figures: one display, two metrics.

`LayerDivergenceDisplay` draws, per layer, how far a network's activations
move when its inputs are perturbed, one curve per comparison:

- `metric="cosine"`: the cosine distance of the flattened activations
  (internal-layer feature squeezing, Jonas & Evans). Each curve is the
  median over the inputs with a percentile band. Fig. 1 is
  `from_adversarial` (clean vs adversarial and vs random noise of the same
  L2 norm), Fig. 2 `from_squeezer` (squeezed vs not squeezed).
- `metric="relative_l2"`: `||a(x_adv) - a(x)||_2 / ||a(x)||_2`, before and
  after sanitizing (the sanitizer paper's Fig. 7). Each curve is the mean
  over the pairs, with optional +/- 1 standard deviation error bars.
  `from_divergence` draws a `LayerDivergence`, `from_models` computes it;
  `plot_layer_divergence` is `from_divergence` in one call.

The distances are computed by `keras_advguard.divergence`; this module only
draws them. `CosineDivergenceDisplay` is the former name of the cosine
display and the same class. matplotlib is imported inside `plot` only.
"""

import warnings

import numpy as np

from keras_advguard import _validation
from keras_advguard._activations import apply_in_batches
from keras_advguard.divergence import (
    LayerDivergence,
    layer_cosine_distances,
    layer_divergence,
    mean_std_over_pairs,
    same_norm_noise,
)
from keras_advguard.plots._base import DisplayMixin, check_curve

METRICS = ("cosine", "relative_l2")

_Y_LABELS = {
    "cosine": "Cosine distance",
    "relative_l2": r"$\|a(x_{adv}) - a(x)\|_2 \,/\, \|a(x)\|_2$ (mean over pairs)",
}
_MARKERS = ("o", "s", "^", "D", "v", "P")


class _Curves(dict):
    """dict `{label: artist}`; an integer key picks the curve at that position."""

    def __getitem__(self, key):
        if isinstance(key, int) and not isinstance(key, bool):
            return list(self.values())[key]
        return super().__getitem__(key)


def _check_label_pair(labels):
    if not isinstance(labels, (list, tuple)) or len(labels) != 2:
        raise ValueError(
            f"Argument `labels` must be a pair of strings. Received: labels={labels!r}"
        )
    if len({str(label) for label in labels}) != 2:
        raise ValueError(
            f"Argument `labels` must hold distinct strings. Received: labels={labels!r}"
        )


class LayerDivergenceDisplay(DisplayMixin):
    """Per-layer divergence curves of a network's activations.

    Build it with `from_adversarial` or `from_squeezer` (cosine distance,
    Jonas & Evans' Fig. 1 and 2), `from_divergence` or `from_models`
    (normalized L2 distance before and after sanitizing, Fig. 7 of the
    sanitizer paper); the constructor only stores the distances.

    Args:
        layer_names: the layer paths, in graph order (the x axis).
        distances: dict `{curve label: array}`. An array `(N, L)` holds one
            row per input (or pair) and one column per layer (e.g.
            `np.stack(list(d.values()), axis=1)` for
            `d = layer_cosine_distances(...)`); NaN marks an undefined
            pair, left out of the mean. With `metric="relative_l2"` an
            array `(L,)` is the per-layer mean itself.
        metric: `"cosine"` (median with a percentile band) or
            `"relative_l2"` (mean, optional standard deviation bars).
            Defaults to `"cosine"`.
        std: optional dict `{curve label: array (L,)}` of standard
            deviations for `(L,)` means (`metric="relative_l2"`).
            Defaults to `None`.
        title: optional axes title. Defaults to `None`.

    Attributes (set by `plot`):
        ax_: the matplotlib `Axes`.
        figure_: the matplotlib `Figure`.
        lines_: dict `{label: Line2D}` of the curves, in order; an integer
            index picks a curve by position (`lines_[0]`).
        bands_: dict `{label: PolyCollection}` of the percentile bands
            (empty with `metric="relative_l2"`).

    Raises:
        ValueError: if an array has not one column (or entry) per layer, is
            empty, or has a shape the metric does not take.
        TypeError: if `distances` is not a non-empty dict, or an array is
            not numeric.

    Example:

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> display = LayerDivergenceDisplay(
        ...     ["conv1", "fc1"],
        ...     {"adversarial": np.array([[0.1, 0.5], [0.2, 0.7]])},
        ... ).plot()
        >>> display.lines_["adversarial"].get_ydata().tolist()
        [0.15000000000000002, 0.6]
        >>> import matplotlib.pyplot as plt
        >>> plt.close(display.figure_)
    """

    def __init__(self, layer_names, distances=None, *, metric="cosine", std=None, title=None):
        if isinstance(layer_names, LayerDivergence):
            warnings.warn(
                "LayerDivergenceDisplay(divergence, labels) is deprecated: use "
                "LayerDivergenceDisplay.from_divergence(divergence, labels=labels).",
                DeprecationWarning,
                stacklevel=2,
            )
            labels = ("undefended", "sanitized") if distances is None else distances
            layer_names, distances, std = _divergence_curves(layer_names, labels)
            metric = "relative_l2"
        _validation.check_choice("metric", metric, METRICS)
        self.layer_names = [str(name) for name in layer_names]
        if not isinstance(distances, dict) or not distances:
            raise TypeError(
                "Argument `distances` must be a non-empty dict {label: array (N, L)}. "
                f"Received: distances of type {type(distances).__name__}"
            )
        n_layers = len(self.layer_names)
        self.distances = {}
        for label, values in distances.items():
            name = f"distances[{label!r}]"
            array = _validation.check_array(name, values, dtype_kind="fiu")
            ndims = (1, 2) if metric == "relative_l2" else (2,)
            if array.ndim not in ndims:
                raise ValueError(
                    f"Argument `{name}` must have rank {' or '.join(map(str, ndims))} "
                    f"with metric={metric!r}. Received: {name} with shape={array.shape}"
                )
            if array.shape[-1] != n_layers:
                raise ValueError(
                    f"Each array in `distances` must have one column per layer "
                    f"({n_layers}). Received: {name} with shape={array.shape}"
                )
            self.distances[str(label)] = array.astype(np.float64)
        self.std = None
        if std is not None:
            _validation.check_type("std", std, dict, "a dict {label: array (L,)}")
            self.std = {}
            for label, values in std.items():
                if str(label) not in self.distances:
                    raise ValueError(
                        f"Argument `std` has a curve {label!r} that `distances` lacks. "
                        f"Curves: {list(self.distances)}"
                    )
                values = check_curve(f"std[{label!r}]", values)
                _validation.check_same_length("layer_names", self.layer_names, "std", values)
                self.std[str(label)] = values
        self.metric = metric
        self.title = title

    def plot(
        self,
        ax=None,
        *,
        percentiles=(5, 95),
        show_std=False,
        colors=None,
        log_scale=False,
        title=None,
    ):
        """Draw one curve per entry of `distances`.

        Args:
            ax: matplotlib `Axes`; a new figure when `None`. Defaults to
                `None`.
            percentiles: the band's lower and upper percentiles
                (`metric="cosine"`). Defaults to `(5, 95)`.
            show_std: whether to draw +/- 1 standard deviation error bars
                (`metric="relative_l2"`). Defaults to `False`.
            colors: optional dict `{label: color}`. Defaults to `None`
                (matplotlib's cycle).
            log_scale: whether to use a logarithmic y axis. Defaults to
                `False`.
            title: optional axes title, overriding the constructor's.
                Defaults to `None`.

        Returns:
            The display, with `ax_`, `figure_`, `lines_` and `bands_` set.

        Raises:
            ValueError: if the percentiles are not `0 <= low <= high <= 100`.
        """
        colors = {} if colors is None else colors
        self.lines_, self.bands_ = _Curves(), _Curves()
        if self.metric == "cosine":
            ax, figure = self._plot_medians(ax, percentiles, colors)
        else:
            ax, figure = self._plot_means(ax, show_std, colors)
        if log_scale:
            ax.set_yscale("log")
        title = self.title if title is None else title
        if title:
            ax.set_title(title)
        figure.tight_layout()
        return self._finish(ax)

    def _plot_medians(self, ax, percentiles, colors):
        low, high = percentiles
        _validation.check_number("percentiles[0]", low, min_value=0, max_value=100)
        _validation.check_number("percentiles[1]", high, min_value=low, max_value=100)
        ax, figure = self._get_ax(ax, figsize=(max(6.0, 0.45 * len(self.layer_names) + 2), 4))
        positions = np.arange(len(self.layer_names))
        for label, values in self.distances.items():
            (line,) = ax.plot(
                positions,
                np.median(values, axis=0),
                marker="o",
                label=label,
                color=colors.get(label),
            )
            self.lines_[label] = line
            self.bands_[label] = ax.fill_between(
                positions,
                np.percentile(values, low, axis=0),
                np.percentile(values, high, axis=0),
                color=line.get_color(),
                alpha=0.25,
                linewidth=0,
            )
        self._layer_axis(ax, positions, "Activation layer", rotation=45)
        ax.legend(title=f"median, {low:g}-{high:g} percentiles")
        return ax, figure

    def _plot_means(self, ax, show_std, colors):
        ax, figure = self._get_ax(ax)
        positions = np.arange(len(self.layer_names))
        for i, (label, values) in enumerate(self.distances.items()):
            if values.ndim == 2:
                mean, std, _ = mean_std_over_pairs(values)
            else:
                mean = values
                std = None if self.std is None else self.std.get(label)
            marker = _MARKERS[i % len(_MARKERS)]
            if show_std and std is not None:
                container = ax.errorbar(
                    positions,
                    mean,
                    yerr=std,
                    marker=marker,
                    capsize=3,
                    label=label,
                    color=colors.get(label),
                )
                self.lines_[label] = container.lines[0]
            else:
                (self.lines_[label],) = ax.plot(
                    positions, mean, marker=marker, label=label, color=colors.get(label)
                )
        self._layer_axis(ax, positions, "layer", rotation=30)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
        return ax, figure

    def _layer_axis(self, ax, positions, xlabel, rotation):
        ax.set_xticks(positions)
        ax.set_xticklabels(self.layer_names, rotation=rotation, ha="right")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_Y_LABELS[self.metric])

    @classmethod
    def from_adversarial(
        cls,
        model,
        x,
        x_adv,
        *,
        layers=None,
        noise_seed=0,
        noise_clip=None,
        batch_size=128,
        ax=None,
        **plot_kwargs,
    ):
        """Fig. 1: clean vs adversarial and clean vs random noise, per layer.

        The random inputs are `same_norm_noise(x, x_adv, seed=noise_seed,
        clip=noise_clip)`: per sample, noise with the adversarial
        perturbation's L2 norm. Cosine distances
        (`keras_advguard.divergence.layer_cosine_distances`).

        Args:
            model: the classifier (`keras.Model` or `DetectorModel`).
            x: clean inputs `(N, ...)`.
            x_adv: their adversarial versions.
            layers: `DetectorModel` selectors. Defaults to `None`
                (`is_activation_layer`).
            noise_seed: seed of the random noise. Defaults to `0`.
            noise_clip: optional `(low, high)` clip of the noisy inputs.
                Defaults to `None`.
            batch_size: samples per batch. Defaults to `128`.
            ax: matplotlib `Axes`. Defaults to `None`.
            **plot_kwargs: passed to `plot`.

        Returns:
            The plotted display.
        """
        noisy = same_norm_noise(x, x_adv, seed=noise_seed, clip=noise_clip)
        adv = layer_cosine_distances(model, x, x_adv, layers=layers, batch_size=batch_size)
        rnd = layer_cosine_distances(model, x, noisy, layers=layers, batch_size=batch_size)
        names = list(adv)
        display = cls(
            names,
            {
                "clean vs adversarial": np.stack([adv[n] for n in names], axis=1),
                "clean vs random (same L2 norm)": np.stack([rnd[n] for n in names], axis=1),
            },
            title="Divergence from the clean input",
        )
        return display.plot(ax=ax, **plot_kwargs)

    @classmethod
    def from_squeezer(
        cls, model, squeezer, x, x_adv, *, layers=None, batch_size=128, ax=None, **plot_kwargs
    ):
        """Fig. 2: squeezed vs not squeezed, for clean and adversarial inputs.

        Args:
            model: the classifier (`keras.Model` or `DetectorModel`).
            squeezer: a callable `(B, ...) -> (B, ...)`, e.g. a squeezer layer.
            x: clean inputs `(N, ...)`.
            x_adv: adversarial inputs `(M, ...)` (not necessarily paired).
            layers: `DetectorModel` selectors. Defaults to `None`
                (`is_activation_layer`).
            batch_size: samples per batch. Defaults to `128`.
            ax: matplotlib `Axes`. Defaults to `None`.
            **plot_kwargs: passed to `plot`.

        Returns:
            The plotted display.

        Raises:
            TypeError: if `squeezer` is not callable.
        """
        if not callable(squeezer):
            raise TypeError(
                "Argument `squeezer` must be callable (e.g. a squeezer layer). "
                f"Received: squeezer of type {type(squeezer).__name__}"
            )
        curves = {}
        for label, inputs in (("clean", x), ("adversarial", x_adv)):
            squeezed = apply_in_batches(squeezer, inputs, batch_size)
            d = layer_cosine_distances(
                model, inputs, squeezed, layers=layers, batch_size=batch_size
            )
            names = list(d)
            curves[label] = np.stack([d[n] for n in names], axis=1)
        name = getattr(squeezer, "name", type(squeezer).__name__)
        display = cls(names, curves, title=f"Squeezed ({name}) vs not squeezed")
        return display.plot(ax=ax, **plot_kwargs)

    @classmethod
    def from_divergence(
        cls, divergence, labels=("undefended", "sanitized"), *, title=None, ax=None, **plot_kwargs
    ):
        """Fig. 7 of the sanitizer paper: a `LayerDivergence`, before and after.

        Args:
            divergence: a `LayerDivergence` (from
                `keras_advguard.divergence.layer_divergence`).
            labels: legend labels of the undefended and sanitized curves.
                Defaults to `("undefended", "sanitized")`.
            title: optional axes title. Defaults to `None`.
            ax: matplotlib `Axes`; a new figure when `None`. Defaults to
                `None`.
            **plot_kwargs: passed to `plot` (`show_std`, `colors`,
                `log_scale`).

        Returns:
            The plotted display (`metric="relative_l2"`), with `divergence`
            and `labels` stored.

        Raises:
            TypeError: if `divergence` is not a `LayerDivergence`.
            ValueError: if `labels` is not a pair of distinct strings.
        """
        layer_names, distances, std = _divergence_curves(divergence, labels)
        display = cls(layer_names, distances, metric="relative_l2", std=std, title=title)
        display.divergence, display.labels = divergence, tuple(labels)
        return display.plot(ax=ax, **plot_kwargs)

    @classmethod
    def from_models(
        cls,
        model,
        sanitized_model,
        x_clean,
        x_adv,
        layers,
        *,
        sanitized_layers=None,
        batch_size=128,
        labels=("undefended", "sanitized"),
        title=None,
        ax=None,
        **plot_kwargs,
    ):
        """Compute `layer_divergence(model, sanitized_model, ...)` and plot it.

        Args:
            model: the undefended Keras model.
            sanitized_model: the model `sanitize(model, ...)` returned.
            x_clean: clean inputs `(N, ...)`.
            x_adv: their adversarial versions, same shape, same order.
            layers: selector(s) of the layers of `model` to measure.
            sanitized_layers: the layer paths of `sanitized_model` to
                compare with. Defaults to `None` (see `layer_divergence`).
            batch_size: inputs per forward pass. Defaults to `128`.
            labels: legend labels. Defaults to `("undefended", "sanitized")`.
            title: optional axes title. Defaults to `None`.
            ax: matplotlib `Axes`. Defaults to `None`.
            **plot_kwargs: passed to `plot`.

        Returns:
            The plotted display, as `from_divergence` returns it.
        """
        divergence = layer_divergence(
            model,
            sanitized_model,
            x_clean,
            x_adv,
            layers,
            sanitized_layers=sanitized_layers,
            batch_size=batch_size,
        )
        return cls.from_divergence(divergence, labels, title=title, ax=ax, **plot_kwargs)


def _divergence_curves(divergence, labels):
    """`(layer_names, means, stds)` of a `LayerDivergence`'s two curves."""
    _validation.check_type("divergence", divergence, LayerDivergence)
    _check_label_pair(labels)
    before, after = (str(label) for label in labels)
    return (
        divergence.layers,
        {before: divergence.before, after: divergence.after},
        {before: divergence.before_std, after: divergence.after_std},
    )


#: The former name of the cosine-distance display (the same class).
CosineDivergenceDisplay = LayerDivergenceDisplay


def plot_layer_divergence(
    divergence, ax=None, *, labels=("undefended", "sanitized"), show_std=False, title=None
):
    """Draw a `LayerDivergence` (the sanitizer paper's Fig. 7).

    Shortcut for `LayerDivergenceDisplay.from_divergence`.

    Args:
        divergence: the result of `keras_advguard.divergence.layer_divergence`.
        ax: matplotlib `Axes`; a new figure when `None`. Defaults to `None`.
        labels: legend labels of the undefended and sanitized curves.
            Defaults to `("undefended", "sanitized")`.
        show_std: draw +/- 1 standard deviation error bars. Defaults to
            `False`.
        title: optional axes title. Defaults to `None`.

    Returns:
        A `LayerDivergenceDisplay` with `ax_`, `figure_`, `lines_`.

    Raises:
        TypeError: if `divergence` is not a `LayerDivergence`.

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
    return LayerDivergenceDisplay.from_divergence(
        divergence, labels, title=title, ax=ax, show_std=show_std
    )
