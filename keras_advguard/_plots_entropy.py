"""Figures of the feature-response entropy detector (Amirian et al., Fig. 3 and 4).

Display objects in the scikit-learn pattern (see `keras_advguard.plots`): the
constructor stores the data, `.plot(...)` draws it and stores the matplotlib
objects in trailing-underscore attributes (`figure_`, `ax_` / `axes_`), and
`from_*` class methods compute the data from the library's own outputs.
matplotlib is imported inside the drawing methods only.

- `FeatureResponseDisplay` (Fig. 3): image, feature response and local
  spatial entropy, clean and adversarial side by side.
- `EntropyHistogramDisplay` (Fig. 4a): distribution of the mean local
  spatial entropy of clean (green) and adversarial (red) images.
- `AttackRocDisplay` (Fig. 4b): one ROC curve per attack, drawn with
  `plots.DetectionRocDisplay`.
"""

import numpy as np

from keras_advguard import _validation

_ROW_TITLES = ("Image", "Feature response", "Local spatial entropy")


def _scores(name, value):
    array = _validation.check_array(name, value, dtype_kind="fiu")
    if array.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must be a 1-D array of scores. "
            f"Received: {name} with shape={array.shape}"
        )
    return array.astype(np.float64)


def _image_for_display(image):
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0], "gray"
    if image.ndim == 2:
        return image, "gray"
    return np.clip(image, 0.0, 1.0), None


class FeatureResponseDisplay:
    """The paper's Fig. 3: image, feature response, local spatial entropy.

    Three rows (image, gray map of the feature response, local spatial
    entropy map) and one column per image, clean and adversarial images
    alternating (`from_detector` puts each clean image next to its
    adversarial version).

    Args:
        images: images `(K, H, W, C)` (or `(K, H, W)`), values in `[0, 1]`.
        responses: gray maps of their feature responses `(K, H, W)`
            (`response_to_gray`).
        entropy_maps: local spatial entropy maps `(K, H, W)` in bits.
        titles: optional list of `K` column titles. Defaults to `None`.

    Attributes (set by `plot`):
        figure_: the matplotlib `Figure`.
        axes_: `(3, K)` numpy array of `Axes`.
        images_: `(3, K)` numpy array of the `AxesImage` objects.

    Raises:
        ValueError: inputs of different lengths or spatial shapes.

    Example:

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> zeros = np.zeros((2, 4, 4))
        >>> display = FeatureResponseDisplay(
        ...     zeros, zeros, zeros, titles=["Original", "Adversarial"]).plot()
        >>> display.axes_.shape
        (3, 2)
        >>> import matplotlib.pyplot as plt
        >>> plt.close(display.figure_)
    """

    def __init__(self, images, responses, entropy_maps, titles=None):
        self.images = _validation.check_array("images", images, dtype_kind="fiub")
        self.responses = _validation.check_array("responses", responses, ndim=3)
        self.entropy_maps = _validation.check_array("entropy_maps", entropy_maps, ndim=3)
        if self.images.ndim not in (3, 4):
            raise ValueError(
                "Argument `images` must have shape (K, H, W, C) or (K, H, W). "
                f"Received: images with shape={self.images.shape}"
            )
        _validation.check_same_length("images", self.images, "responses", self.responses)
        _validation.check_same_length("images", self.images, "entropy_maps", self.entropy_maps)
        spatial = {
            "images": self.images.shape[1:3],
            "responses": self.responses.shape[1:3],
            "entropy_maps": self.entropy_maps.shape[1:3],
        }
        if len(set(spatial.values())) != 1:
            raise ValueError(
                "Arguments `images`, `responses` and `entropy_maps` must have the "
                f"same height and width. Received: {spatial}"
            )
        if titles is not None:
            titles = [str(t) for t in titles]
            _validation.check_same_length("images", self.images, "titles", titles)
        self.titles = titles

    def plot(self, axes=None, *, response_cmap="gray", entropy_cmap="viridis"):
        """Draw the grid.

        Args:
            axes: optional `(3, K)` array of `Axes`. Defaults to `None`: a new
                figure.
            response_cmap: colormap of the feature responses. Defaults to
                `"gray"`.
            entropy_cmap: colormap of the entropy maps. Defaults to
                `"viridis"`.

        Returns:
            The display, with `figure_`, `axes_` and `images_` set.
        """
        import matplotlib.pyplot as plt

        k = len(self.images)
        if axes is None:
            figure, axes = plt.subplots(3, k, figsize=(1.8 * k + 1.2, 5.6), squeeze=False)
        else:
            axes = np.asarray(axes, dtype=object).reshape(3, k)
            figure = axes[0, 0].figure
        vmax = float(np.log2(9.0))
        if self.entropy_maps.size:
            vmax = max(vmax, float(np.max(self.entropy_maps)))
        drawn = np.empty((3, k), dtype=object)
        for j in range(k):
            image, cmap = _image_for_display(self.images[j])
            drawn[0, j] = axes[0, j].imshow(image, cmap=cmap, vmin=0.0, vmax=1.0)
            drawn[1, j] = axes[1, j].imshow(self.responses[j], cmap=response_cmap)
            drawn[2, j] = axes[2, j].imshow(
                self.entropy_maps[j], cmap=entropy_cmap, vmin=0.0, vmax=vmax
            )
            if self.titles is not None:
                axes[0, j].set_title(self.titles[j], fontsize=9)
            for i in range(3):
                axes[i, j].set_xticks([])
                axes[i, j].set_yticks([])
        for i, title in enumerate(_ROW_TITLES):
            axes[i, 0].set_ylabel(title, fontsize=9)
        self.figure_ = figure
        self.axes_ = axes
        self.images_ = drawn
        return self

    @classmethod
    def from_detector(cls, detector, x_clean, x_adv, *, titles=None, **kwargs):
        """Compute responses and entropy maps with `detector` and plot them.

        Args:
            detector: an `EntropyDetector` (need not be fitted).
            x_clean: clean images `(K, H, W, C)`.
            x_adv: their adversarial versions, same shape.
            titles: optional `2K` column titles. Defaults to `None`:
                "Original" / "Adversarial".
            **kwargs: passed to `plot`.

        Returns:
            The plotted display.
        """
        x_clean = np.asarray(x_clean, dtype=np.float32)
        x_adv = np.asarray(x_adv, dtype=np.float32)
        _validation.check_same_shape("x_clean", x_clean, "x_adv", x_adv)
        images = np.empty((2 * len(x_clean),) + x_clean.shape[1:], np.float32)
        images[0::2], images[1::2] = x_clean, x_adv
        gray = detector.gray_maps(images)
        maps = detector.entropy_maps(images)
        if titles is None:
            titles = ["Original", "Adversarial"] * len(x_clean)
        return cls(images, gray, maps, titles=titles).plot(**kwargs)


class EntropyHistogramDisplay:
    """The paper's Fig. 4a: mean local spatial entropy, clean vs adversarial.

    Args:
        scores_clean: 1-D array of mean entropies of clean images.
        scores_adv: 1-D array of mean entropies of adversarial images.
        threshold: optional decision threshold drawn as a vertical line.
            Defaults to `None`.
        name: optional name of the adversarial set (legend). Defaults to
            `None` ("Adversarial").

    Attributes (set by `plot`):
        figure_, ax_: the matplotlib `Figure` and `Axes`.
        bars_clean_, bars_adv_: the `BarContainer`s of the histograms.
        threshold_line_: the `Line2D` of the threshold, or `None`.

    Example:

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> display = EntropyHistogramDisplay([1.0, 1.2, 1.1], [1.8, 2.0],
        ...                                   threshold=1.5).plot(bins=5)
        >>> display.ax_.get_xlabel()
        'Mean local spatial entropy (bits)'
        >>> import matplotlib.pyplot as plt
        >>> plt.close(display.figure_)
    """

    def __init__(self, scores_clean, scores_adv, threshold=None, name=None):
        self.scores_clean = _scores("scores_clean", scores_clean)
        self.scores_adv = _scores("scores_adv", scores_adv)
        if threshold is not None:
            _validation.check_number("threshold", threshold)
        self.threshold = threshold
        self.name = name

    def plot(self, ax=None, *, bins=30, density=True):
        """Draw both histograms on shared bins.

        Args:
            ax: matplotlib `Axes`; a new figure when `None`. Defaults to
                `None`.
            bins: number of bins, or bin edges. Defaults to `30`.
            density: normalize each histogram to unit area. Defaults to
                `True`.

        Returns:
            The display.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        both = np.concatenate([self.scores_clean, self.scores_adv])
        edges = np.histogram_bin_edges(both, bins=bins)
        _, _, self.bars_clean_ = ax.hist(
            self.scores_clean,
            bins=edges,
            density=density,
            color="tab:green",
            alpha=0.6,
            label=f"Clean (n = {self.scores_clean.size})",
        )
        name = self.name or "Adversarial"
        _, _, self.bars_adv_ = ax.hist(
            self.scores_adv,
            bins=edges,
            density=density,
            color="tab:red",
            alpha=0.6,
            label=f"{name} (n = {self.scores_adv.size})",
        )
        self.threshold_line_ = None
        if self.threshold is not None:
            self.threshold_line_ = ax.axvline(
                self.threshold,
                color="k",
                linestyle="--",
                linewidth=1,
                label="Threshold",
            )
        ax.set_xlabel("Mean local spatial entropy (bits)")
        ax.set_ylabel("Density" if density else "Images")
        ax.legend(loc="best")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_detector(cls, detector, x_clean, x_adv, *, fpr=None, name=None, **kwargs):
        """Score both sets with `detector` and plot their histograms.

        Args:
            detector: an `EntropyDetector`; when fitted, its threshold at
                `fpr` (default: its operating rate) is drawn, in entropy
                units.
            x_clean: clean images.
            x_adv: adversarial images.
            fpr: which calibrated threshold to draw. Defaults to `None`.
            name: name of the adversarial set. Defaults to `None`.
            **kwargs: passed to `plot`.

        Returns:
            The plotted display.
        """
        threshold = None
        if getattr(detector, "thresholds_", None) is not None:
            threshold = detector._threshold(fpr) * detector._sign()
        return cls(
            detector.mean_entropy(x_clean),
            detector.mean_entropy(x_adv),
            threshold=threshold,
            name=name,
        ).plot(**kwargs)


class AttackRocDisplay:
    """The paper's Fig. 4b: the detector's ROC curve for each attack.

    Every curve shares the clean scores; each is a
    `plots.DetectionRocDisplay` (positive = adversarial, higher score = more
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
        self.scores_clean = _scores("scores_clean", scores_clean)
        _validation.check_type("scores_adv_by_attack", scores_adv_by_attack, dict, "a dict")
        if not scores_adv_by_attack:
            raise ValueError(
                "Argument `scores_adv_by_attack` must hold at least one attack. "
                "Received: scores_adv_by_attack={}"
            )
        self.scores_adv_by_attack = {
            str(k): _scores(f"scores_adv_by_attack[{k!r}]", v)
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
        import matplotlib.pyplot as plt

        from keras_advguard.plots import DetectionRocDisplay

        if ax is None:
            _, ax = plt.subplots()
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
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_scores(cls, scores_clean, scores_adv_by_attack, ax=None, **kwargs):
        """Build the display from scores and plot it."""
        return cls(scores_clean, scores_adv_by_attack).plot(ax=ax, **kwargs)
