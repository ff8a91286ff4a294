"""Figure of the distance-space detector (Caldelli et al., Fig. 2): t-SNE of layer activations.

- `ActivationTsneDisplay`: one panel per tapped layer; each panel is a 2-D
  t-SNE embedding of training activations coloured by class, with chosen
  clean and adversarial test inputs highlighted.
- `plot_activation_tsne`: compute and draw it in one call
  (`ActivationTsneDisplay.from_model`).

A display in the scikit-learn pattern (`keras_advguard.plots._base`).
matplotlib and scikit-learn are imported inside the functions that need them.
"""

import numpy as np

from keras_advguard import _validation
from keras_advguard.plots._base import DisplayMixin

KINDS = ("clean", "adversarial")
# Marker styles of the highlighted inputs, after the paper's Fig. 2 (clean:
# a circle and a square in bright colours; adversarial: black rhombus).
_CLEAN_STYLES = (("o", "gold"), ("s", "cyan"), ("^", "magenta"), ("v", "lime"), ("P", "orange"))
_ADV_STYLES = (("D", "black"), ("X", "dimgray"), ("*", "black"), ("p", "dimgray"))


def _embedding(name, value, n=None):
    array = _validation.check_array(name, value, ndim=2, dtype_kind="fiu", allow_empty=True)
    if array.shape[1] != 2:
        raise ValueError(
            f"Argument `{name}` must have shape (N, 2) (a 2-D embedding). "
            f"Received: {name} with shape={array.shape}"
        )
    if n is not None and len(array) != n:
        raise ValueError(
            f"Argument `{name}` must hold {n} points. Received: {name} with shape={array.shape}"
        )
    return array.astype(np.float64)


class ActivationTsneDisplay(DisplayMixin):
    """The paper's Fig. 2: t-SNE of a layer's activations, per class, with test inputs.

    One panel per layer. Training activations are drawn as small dots
    coloured by class; each highlighted test input is a large marker:
    clean inputs as coloured circles/squares, adversarial ones as black
    rhombi, so one sees whether an adversarial input sits in the cloud of
    its source class at early layers and jumps to another class's cloud
    later.

    Args:
        embeddings: list of `(N, 2)` arrays, the training points of each
            panel (same `N` in every panel).
        labels: int `(N,)` class of each training point.
        highlights: list of `(K, 2)` arrays, the highlighted inputs in each
            panel. Defaults to `None` (none).
        kinds: `K` strings, `"clean"` or `"adversarial"`. Required with
            `highlights`.
        names: optional `K` legend labels of the highlighted inputs.
            Defaults to `None` (e.g. "clean 1", "adversarial 1").
        titles: optional panel titles (layer names). Defaults to `None`.
        class_names: optional mapping or list, class id -> legend name.
            Defaults to `None` (the ids).

    Attributes (set by `plot`):
        figure_: the matplotlib `Figure`.
        axes_: 1-D numpy array of `Axes`, one per panel.

    Raises:
        ValueError: embeddings that are not `(N, 2)`, inconsistent counts, a
            kind other than `"clean"`/`"adversarial"`.

    Example:

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> display = ActivationTsneDisplay(
        ...     [rng.normal(size=(20, 2))] * 2, np.arange(20) % 2,
        ...     highlights=[np.zeros((2, 2))] * 2, kinds=["clean", "adversarial"],
        ...     titles=["conv1", "fc7"]).plot()
        >>> display.axes_.shape
        (2,)
        >>> import matplotlib.pyplot as plt
        >>> plt.close(display.figure_)
    """

    def __init__(
        self,
        embeddings,
        labels,
        highlights=None,
        kinds=None,
        names=None,
        titles=None,
        class_names=None,
    ):
        _validation.check_type("embeddings", embeddings, (list, tuple), "a list of (N, 2) arrays")
        if not embeddings:
            raise ValueError("Argument `embeddings` must hold at least one panel. Received: []")
        self.labels = _validation.check_array("labels", labels, ndim=1, dtype_kind="iu")
        n = len(self.labels)
        self.embeddings = [_embedding(f"embeddings[{i}]", e, n) for i, e in enumerate(embeddings)]
        if highlights is None:
            if kinds is not None:
                raise ValueError("Argument `kinds` needs `highlights`. Received: highlights=None")
            self.highlights, self.kinds = None, []
        else:
            _validation.check_type("highlights", highlights, (list, tuple), "a list of arrays")
            if len(highlights) != len(self.embeddings):
                raise ValueError(
                    f"Argument `highlights` must hold one array per panel "
                    f"({len(self.embeddings)}). Received: {len(highlights)} arrays"
                )
            if kinds is None:
                raise ValueError("Argument `kinds` is required with `highlights`.")
            self.kinds = [str(k) for k in kinds]
            for kind in self.kinds:
                _validation.check_choice("kinds", kind, KINDS)
            k = len(self.kinds)
            self.highlights = [
                _embedding(f"highlights[{i}]", h, k) for i, h in enumerate(highlights)
            ]
        if names is not None:
            names = [str(name) for name in names]
            _validation.check_same_length("kinds", self.kinds, "names", names)
        self.names = names
        if titles is not None:
            titles = [str(t) for t in titles]
            _validation.check_same_length("embeddings", self.embeddings, "titles", titles)
        self.titles = titles
        self.class_names = class_names

    def _class_name(self, c):
        if self.class_names is None:
            return str(c)
        return str(self.class_names[c])

    def plot(self, axes=None, *, cmap="tab10", point_size=6.0, legend=True):
        """Draw the panels.

        Args:
            axes: optional sequence of `Axes`, one per panel. Defaults to
                `None`: a new figure with the panels in a row.
            cmap: colormap of the classes. Defaults to `"tab10"`.
            point_size: marker area of the training points. Defaults to `6.0`.
            legend: whether to add a legend (in the last panel). Defaults
                to `True`.

        Returns:
            The display, with `figure_` and `axes_` set.
        """
        import matplotlib.pyplot as plt

        panels = len(self.embeddings)
        created = axes is None
        axes, figure = self._get_axes(axes, (panels,), figsize=(4.2 * panels, 4.2))
        colormap = plt.get_cmap(cmap)
        classes = np.unique(self.labels)
        for p, ax in enumerate(axes):
            points = self.embeddings[p]
            for i, c in enumerate(classes):
                mask = self.labels == c
                ax.scatter(
                    points[mask, 0],
                    points[mask, 1],
                    s=point_size,
                    color=colormap(i % colormap.N),
                    alpha=0.6,
                    linewidths=0,
                    label=f"class {self._class_name(c)}",
                )
            if self.highlights is not None:
                clean_seen = adv_seen = 0
                for j, kind in enumerate(self.kinds):
                    if kind == "clean":
                        marker, color = _CLEAN_STYLES[clean_seen % len(_CLEAN_STYLES)]
                        clean_seen += 1
                        default = f"clean {clean_seen}"
                    else:
                        marker, color = _ADV_STYLES[adv_seen % len(_ADV_STYLES)]
                        adv_seen += 1
                        default = f"adversarial {adv_seen}"
                    ax.scatter(
                        self.highlights[p][j, 0],
                        self.highlights[p][j, 1],
                        s=90,
                        marker=marker,
                        color=color,
                        edgecolors="black",
                        linewidths=1.0,
                        zorder=3,
                        label=default if self.names is None else self.names[j],
                    )
            if self.titles is not None:
                ax.set_title(self.titles[p])
            ax.set_xticks([])
            ax.set_yticks([])
        if legend:
            axes[-1].legend(loc="best", fontsize="small", markerscale=1.0, framealpha=0.8)
        if created:
            figure.tight_layout()
        return self._finish(axes=axes, figure=figure)

    @classmethod
    def from_activations(
        cls,
        train_activations,
        train_labels,
        highlight_activations=None,
        kinds=None,
        *,
        layers=None,
        classes=None,
        max_per_class=200,
        perplexity=30.0,
        seed=0,
        n_threads=None,
        names=None,
        class_names=None,
        axes=None,
        **kwargs,
    ):
        """Embed activations with t-SNE (scikit-learn) and plot them.

        Per layer, the chosen training points and the highlighted inputs are
        embedded *together* (t-SNE has no out-of-sample transform) with
        `sklearn.manifold.TSNE(init="pca", random_state=seed)`.

        Args:
            train_activations: dict `{layer: (N, D_l)}`
                (`DetectorModel.activations` of training inputs).
            train_labels: int `(N,)` or one-hot `(N, C)` ground-truth labels.
            highlight_activations: dict `{layer: (K, D_l)}` of the inputs to
                highlight. Defaults to `None`.
            kinds: `K` strings `"clean"`/`"adversarial"`. Defaults to `None`.
            layers: the layers to draw, one panel each. Defaults to `None`
                (every layer of `train_activations`).
            classes: the classes whose training points are drawn. Defaults
                to `None` (all).
            max_per_class: training points per class (a seeded random
                subset when a class has more). Defaults to `200`.
            perplexity: t-SNE perplexity, lowered to `(n - 1) / 3` for few
                points. Defaults to `30.0`.
            seed: seed of the subset and of t-SNE. Defaults to `0`.
            n_threads: OpenMP threads of t-SNE's gradient descent
                (`threadpoolctl`). Defaults to `None` (scikit-learn's
                default, all cores). On a busy machine `1` can be much
                faster: OpenMP threads wait for each other at every step.
            names: optional legend labels of the highlighted inputs.
            class_names: optional class id -> name.
            axes: optional `Axes`, one per layer.
            **kwargs: passed to `plot`.

        Returns:
            The plotted `ActivationTsneDisplay`.
        """
        from contextlib import nullcontext

        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        _validation.check_type("train_activations", train_activations, dict, "a dict")
        if layers is None:
            layers = list(train_activations)
        elif isinstance(layers, str):
            layers = [layers]
        for layer in layers:
            if layer not in train_activations:
                raise ValueError(
                    f"No activations for layer {layer!r}. Layers: {list(train_activations)}"
                )
            if highlight_activations is not None and layer not in highlight_activations:
                raise ValueError(
                    f"No highlighted activations for layer {layer!r}. "
                    f"Layers: {list(highlight_activations)}"
                )
        labels = np.asarray(train_labels)
        if labels.ndim == 2:
            labels = np.argmax(labels, axis=1)
        labels = _validation.check_array("train_labels", labels, ndim=1, dtype_kind="iu")
        _validation.check_positive_int("max_per_class", max_per_class)
        _validation.check_number("perplexity", perplexity, min_value=0.0, min_inclusive=False)
        if n_threads is not None:
            _validation.check_positive_int("n_threads", n_threads)
        chosen = np.unique(labels) if classes is None else np.asarray(classes)
        rng = np.random.default_rng(seed)
        keep = []
        for c in chosen:
            members = np.flatnonzero(labels == c)
            if members.size == 0:
                raise ValueError(
                    f"Class {c} has no training sample. Received: classes={list(chosen)}"
                )
            if members.size > max_per_class:
                members = np.sort(rng.choice(members, size=max_per_class, replace=False))
            keep.append(members)
        keep = np.concatenate(keep)
        n_highlight = 0 if kinds is None else len(kinds)
        embeddings, highlights = [], []
        for layer in layers:
            points = np.asarray(train_activations[layer])
            _validation.check_same_length(
                f"train_activations[{layer!r}]", points, "train_labels", labels
            )
            points = points[keep].reshape(len(keep), -1)
            if highlight_activations is not None:
                extra = np.asarray(highlight_activations[layer]).reshape(n_highlight, -1)
                points = np.concatenate([points, extra])
            n = len(points)
            tsne = TSNE(
                n_components=2,
                perplexity=min(float(perplexity), max((n - 1) / 3.0, 1.0)),
                init="pca",
                random_state=seed,
            )
            limits = (
                nullcontext()
                if n_threads is None
                else threadpool_limits(int(n_threads), user_api="openmp")
            )
            with limits:
                embedded = tsne.fit_transform(points.astype(np.float64))
            embeddings.append(embedded[: len(keep)])
            highlights.append(embedded[len(keep) :])
        display = cls(
            embeddings,
            labels[keep],
            highlights=highlights if highlight_activations is not None else None,
            kinds=kinds if highlight_activations is not None else None,
            names=names,
            titles=[str(layer) for layer in layers],
            class_names=class_names,
        )
        return display.plot(axes, **kwargs)

    @classmethod
    def from_model(
        cls,
        model,
        x_train,
        y_train,
        *,
        layers,
        x_clean=None,
        x_adv=None,
        pooling="avg",
        batch_size=128,
        **kwargs,
    ):
        """Tap `model` at `layers`, embed and plot (see `from_activations`).

        Args:
            model: the classifier (`keras.Model` or `DetectorModel`; its base
                model is tapped).
            x_train: training inputs (numpy).
            y_train: their labels.
            layers: `DetectorModel` selectors of the layers, one panel each.
            x_clean: clean test inputs to highlight. Defaults to `None`.
            x_adv: adversarial test inputs to highlight. Defaults to `None`.
            pooling: pooling of 4-D maps. Defaults to `"avg"`.
            batch_size: batch size of the forward passes. Defaults to `128`.
            **kwargs: passed to `from_activations` (`classes`,
                `max_per_class`, `perplexity`, `seed`, `names`, `axes`, ...).

        Returns:
            The plotted `ActivationTsneDisplay`.
        """
        from keras_advguard._fingerprint import unwrap_model
        from keras_advguard.detector_model import DetectorModel

        taps = DetectorModel(unwrap_model(model), layers=layers, pooling=pooling)
        train = taps.activations(x_train, batch_size=batch_size)
        parts, kinds = [], []
        for kind, x in (("clean", x_clean), ("adversarial", x_adv)):
            if x is not None and len(x):
                parts.append(np.asarray(x))
                kinds += [kind] * len(x)
        highlight = None
        if parts:
            highlight = taps.activations(np.concatenate(parts), batch_size=batch_size)
        return cls.from_activations(
            train,
            y_train,
            highlight,
            kinds if parts else None,
            **kwargs,
        )


def plot_activation_tsne(
    model,
    x_train,
    y_train,
    *,
    layers,
    x_clean=None,
    x_adv=None,
    classes=None,
    max_per_class=200,
    perplexity=30.0,
    seed=0,
    pooling="avg",
    axes=None,
    **kwargs,
):
    """Draw the paper's Fig. 2: t-SNE of training activations with test inputs highlighted.

    Shortcut for `ActivationTsneDisplay.from_model`.

    Args:
        model: the classifier (`keras.Model` or `DetectorModel`).
        x_train: training inputs (numpy), e.g. a subset of the set the
            medoids came from.
        y_train: their labels, int `(N,)` or one-hot.
        layers: the layers to show (names, paths or any `DetectorModel`
            selector), one panel each.
        x_clean: clean inputs to highlight. Defaults to `None`.
        x_adv: adversarial inputs to highlight. Defaults to `None`.
        classes: classes whose training clouds are drawn, e.g. the source
            and target classes of `x_adv`. Defaults to `None` (all).
        max_per_class: training points per class. Defaults to `200`.
        perplexity: t-SNE perplexity. Defaults to `30.0`.
        seed: seed of the subset and of t-SNE. Defaults to `0`.
        pooling: pooling of 4-D maps. Defaults to `"avg"`.
        axes: optional `Axes`, one per layer. Defaults to `None`.
        **kwargs: passed to `ActivationTsneDisplay.from_activations` and
            `plot` (`n_threads`, `names`, `class_names`, `cmap`,
            `point_size`, `legend`).

    Returns:
        The plotted `ActivationTsneDisplay`.

    Example:

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import keras, numpy as np
        >>> model = keras.Sequential([
        ...     keras.Input((4,)), keras.layers.Dense(5, activation="relu", name="fc"),
        ...     keras.layers.Dense(2, activation="softmax", name="out")])
        >>> rng = np.random.default_rng(0)
        >>> x = rng.random((30, 4)).astype("float32")
        >>> display = plot_activation_tsne(
        ...     model, x, np.arange(30) % 2, layers=["fc", "out"],
        ...     x_clean=x[:1], x_adv=x[1:2], perplexity=5, n_threads=1)
        >>> [ax.get_title() for ax in display.axes_]
        ['fc', 'out']
        >>> import matplotlib.pyplot as plt
        >>> plt.close(display.figure_)

    Reference:
        R. Caldelli, R. Becarelli, F. Carrara, F. Falchi, G. Amato.
        "Exploiting CNN Layer Activations to Improve Adversarial Image
        Classification", ICIP 2019 (Fig. 2).
    """
    return ActivationTsneDisplay.from_model(
        model,
        x_train,
        y_train,
        layers=layers,
        x_clean=x_clean,
        x_adv=x_adv,
        classes=classes,
        max_per_class=max_per_class,
        perplexity=perplexity,
        seed=seed,
        pooling=pooling,
        axes=axes,
        **kwargs,
    )
