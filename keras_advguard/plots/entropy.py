"""Figures of the feature-response entropy detector (Amirian et al., Fig. 3 and 4a).

- `FeatureResponseDisplay` (Fig. 3): image, feature response and local
  spatial entropy, clean and adversarial side by side.
- `EntropyHistogramDisplay` (Fig. 4a): distribution of the mean local
  spatial entropy of clean (green) and adversarial (red) images.

Fig. 4b, one ROC curve per attack, is `keras_advguard.plots.AttackRocDisplay`
(`plots/roc.py`). Displays in the scikit-learn pattern
(`keras_advguard.plots._base`); matplotlib is imported inside the drawing
methods only.
"""

import numpy as np

from keras_advguard import _validation
from keras_advguard.plots._base import DisplayMixin, check_scores

_ROW_TITLES = ("Image", "Feature response", "Local spatial entropy")


def _image_for_display(image):
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0], "gray"
    if image.ndim == 2:
        return image, "gray"
    return np.clip(image, 0.0, 1.0), None


class FeatureResponseDisplay(DisplayMixin):
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
        k = len(self.images)
        axes, _ = self._get_axes(axes, (3, k), "a (3, K) grid", figsize=(1.8 * k + 1.2, 5.6))
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
        self.images_ = drawn
        return self._finish(axes=axes)

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


class EntropyHistogramDisplay(DisplayMixin):
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
        self.scores_clean = check_scores("scores_clean", scores_clean)
        self.scores_adv = check_scores("scores_adv", scores_adv)
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
        ax, _ = self._get_ax(ax)
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
        return self._finish(ax)

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
