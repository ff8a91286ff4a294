"""Defences by name: the library's detectors and sanitizers with evaluation defaults.

This is the only module of `evaluation/` that knows the detectors'
constructors; everything else uses the Detector contract (`supervised`,
`fit`, `score`, `score_tensor`, `calibrate`, `threshold_`, `clone`).
"""

import dataclasses

from keras_advguard import _validation

DETECTOR_NAMES = ("max_softmax", "input_cnn", "medoid_lstm", "knn", "entropy", "squeeze")
"""Detector names `evaluate` accepts in `defences`."""

SANITIZER_NAMES = ("mask", "median", "nl_means")
"""Sanitizer names `evaluate` accepts in `defences` (inserted with `sanitize`)."""

BASELINES = ("max_softmax", "input_cnn")
"""Baselines every report shows, so each method is measured against them."""

DEFENCE_NAMES = DETECTOR_NAMES + SANITIZER_NAMES

_CLASSES = {
    "max_softmax": "MaxSoftmaxDetector",
    "input_cnn": "InputCNNDetector",
    "medoid_lstm": "MedoidLSTMDetector",
    "knn": "KNNDetector",
    "entropy": "EntropyDetector",
    "squeeze": "FeatureSqueezingDetector",
}


@dataclasses.dataclass
class Defence:
    """A defence ready to evaluate.

    Attributes:
        name: the name in the report.
        kind: `"detector"` or `"sanitizer"`.
        detector: the detector (kind `"detector"`), unfitted or fitted.
        model: the sanitized model (kind `"sanitizer"`).
        adaptive_model: the sanitized model with BPDA on every sanitizer
            (what the adaptive attack differentiates).
        fit: whether `evaluate` fits the (unsupervised) detector on the
            clean training images.
        after: the layer paths the sanitizer follows (kind `"sanitizer"`).
    """

    name: str
    kind: str
    detector: object = None
    model: object = None
    adaptive_model: object = None
    fit: bool = True
    after: list = None


def available_detectors():
    """The detector names whose class can be imported now."""
    from keras_advguard import detectors

    return tuple(n for n in DETECTOR_NAMES if hasattr(detectors, _CLASSES[n]))


SANITIZER_OPTIONS = ("after",)
"""Keys of the options of a `(name, sanitizer, options)` entry of `defences`."""

DETECTOR_OPTIONS = ("fit",)
"""Keys of the options of a `(name, detector, options)` entry of `defences`."""


def check_defences(defences):
    """Validate the `defences` argument; return it as a list (no detector built).

    An entry is a name, a detector, a sanitizer layer, a `(name, defence)`
    pair naming one of those in the report, a `(name, sanitizer,
    {"after": layers})` triple that also says where the sanitizer goes, or a
    `(name, detector, {"fit": False})` triple: a statistical detector used
    as given (already fitted), not fitted on the training images.
    Explicit names must be unique (see `report_names`).
    """
    if defences is None:
        return None
    if isinstance(defences, str) or not isinstance(defences, list | tuple):
        defences = [defences]
    if not defences:
        raise ValueError("Argument `defences` must not be empty. Received: defences=[]")
    for item in defences:
        if isinstance(item, list | tuple):
            _check_named(item)
        else:
            _check_item(item)
    return list(defences)


def _check_item(item):
    if isinstance(item, str):
        _validation.check_choice("defences", item, DEFENCE_NAMES)
        if item in DETECTOR_NAMES and item not in available_detectors():
            raise ValueError(
                f"The defence {item!r} needs `keras_advguard.detectors."
                f"{_CLASSES[item]}`, which this installation lacks. "
                f"Available: {', '.join(available_detectors() + SANITIZER_NAMES)}"
            )
    elif not (_is_detector(item) or _is_layer(item)):
        raise TypeError(
            "Each entry of `defences` must be a name "
            f"({', '.join(DEFENCE_NAMES)}), a detector (an object with "
            "`score`, `score_tensor`, `calibrate` and `fit`), a sanitizer layer, "
            "or a pair (name, defence) or triple (name, sanitizer, options) of them. "
            f"Received: an entry of type {type(item).__name__}"
        )


def _check_named(entry):
    """Check a `(name, defence)` or `(name, sanitizer, options)` entry of `defences`."""
    if len(entry) not in (2, 3) or not isinstance(entry[0], str):
        raise TypeError(
            "A tuple in `defences` must be a pair (name, defence) or a triple "
            "(name, sanitizer, options) whose name is a string. "
            f"Received: {_short(entry)}"
        )
    name, item = entry[0], entry[1]
    if not name.strip():
        raise ValueError(
            f"The name of an entry of `defences` must not be empty. Received: {_short(entry)}"
        )
    if isinstance(item, list | tuple):
        raise TypeError(
            f"The defence of the entry {name!r} of `defences` must be a name, a detector or "
            f"a sanitizer layer, not another tuple. Received: {_short(entry)}"
        )
    _check_item(item)
    if len(entry) == 3:
        options = entry[2]
        if not isinstance(options, dict):
            raise TypeError(
                f"The options of the entry {name!r} of `defences` must be a dict such as "
                f"{{'after': ['conv1']}}. Received: options of type {type(options).__name__}"
            )
        kind = kind_of(item)
        allowed = SANITIZER_OPTIONS if kind == "sanitizer" else DETECTOR_OPTIONS
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"The options of the {kind} {name!r} in `defences` take only "
                f"{', '.join(map(repr, allowed))}. Received: unknown keys {unknown}"
            )
        if "fit" in options:
            _check_fit_option(name, item, options["fit"])


def _check_fit_option(name, item, fit):
    if not isinstance(fit, bool):
        raise TypeError(
            f"The option 'fit' of the detector {name!r} in `defences` must be True or False. "
            f"Received: fit={fit!r}"
        )
    if not fit and isinstance(item, str):
        raise ValueError(
            f"The option fit=False of the entry {name!r} in `defences` needs a detector "
            f"instance (already fitted), not the name {item!r}: a named detector is built "
            "here, unfitted."
        )
    if not fit and getattr(item, "supervised", False):
        raise ValueError(
            f"The option fit=False of the entry {name!r} in `defences` applies to "
            "statistical detectors (`supervised = False`); a trained detector is cloned and "
            f"fitted on each split. Received: a {type(item).__name__}"
        )


def _short(value):
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def unpack(entry):
    """`(explicit name or None, defence, options)` of one entry of `defences`."""
    if isinstance(entry, list | tuple):
        return entry[0], entry[1], dict(entry[2]) if len(entry) == 3 else {}
    return None, entry, {}


def report_names(entries):
    """The report name of each entry: its explicit name, else `default_name` (`_2`... on repeats).

    Raises:
        ValueError: two entries with the same name (explicit names, or an
            explicit name equal to another entry's automatic one).
    """
    explicit = [unpack(e)[0] for e in entries]
    auto = iter(
        unique_names([default_name(unpack(e)[1]) for e, n in zip(entries, explicit) if n is None])
    )
    names = [n if n is not None else next(auto) for n in explicit]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            "Every defence needs its own name in the report; these names are given to more "
            f"than one entry of `defences` (baselines included): {', '.join(map(repr, repeated))}. "
            "Name the entries with (name, defence) pairs. "
            f"Received: names {names}"
        )
    return names


def unique_names(names):
    """`names` with `_2`, `_3`... appended to repeats."""
    seen, out = {}, []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def check_after(model, name, after):
    """The layer paths a sanitizer's `after` selects in `model`.

    Raises:
        ValueError: selectors (layer names, presets...) that match no layer
            of `model`, all named at once, with the model's layers.
    """
    from keras_advguard import _graph
    from keras_advguard.detector_model import resolve_layers

    graph = _graph.trace(model)
    selectors = list(after) if isinstance(after, list | tuple) else [after]
    if not selectors:
        raise ValueError(
            f"The option `after` of the sanitizer {name!r} in `defences` must select at least "
            "one layer. Received: after=[]"
        )
    unknown = []
    for selector in selectors:
        try:
            resolve_layers(graph, selector)
        except ValueError:
            unknown.append(selector)
    if unknown:
        raise ValueError(
            f"The option `after` of the sanitizer {name!r} in `defences` names layers the "
            f"model does not have: {', '.join(map(repr, unknown))}. "
            f"Layers: {_graph.describe_paths(graph.paths)}. Received: after={after!r}"
        )
    return resolve_layers(graph, selectors)


def _is_detector(obj):
    return all(callable(getattr(obj, m, None)) for m in ("score", "score_tensor", "calibrate"))


def _is_layer(obj):
    import keras

    return isinstance(obj, keras.layers.Layer) and not isinstance(obj, keras.Model)


def with_baselines(defences):
    """`defences` (default: every available one) with the baselines first."""
    if defences is None:
        return list(available_detectors()) + list(SANITIZER_NAMES)
    names = [d for d in defences if isinstance(d, str)]
    baselines = [b for b in BASELINES if b in available_detectors() and b not in names]
    return baselines + list(defences)


def without_baselines(defences):
    """`defences` as given (default: every available non-baseline one), no baseline added."""
    if defences is None:
        return [d for d in available_detectors() if d not in BASELINES] + list(SANITIZER_NAMES)
    return list(defences)


def kind_of(item):
    """`"sanitizer"` or `"detector"`, without building anything."""
    named = isinstance(item, str) and item in SANITIZER_NAMES
    return "sanitizer" if named or _is_layer(item) else "detector"


def default_name(item):
    """The report name of an entry of `defences`: its name, or its class name."""
    return item if isinstance(item, str) else type(item).__name__


def sanitized_layers(model):
    """Every convolution and hidden dense layer (the output layer excluded)."""
    from keras_advguard.detector_model import resolve_layers

    paths = resolve_layers(model, "conv+dense")
    last = model.layers[-1].name if model.layers else None
    return [p for p in paths if p != last] or paths


def build(item, model, *, quick, seed, after=None):
    """Turn one defence (a name, a detector or a sanitizer layer) into a `Defence`.

    `after`: the layer paths a sanitizer goes after. Defaults to `None`:
    `sanitized_layers(model)`.
    """
    from keras_advguard import detectors
    from keras_advguard.sanitize import sanitize

    if _is_detector(item):
        return Defence(name=default_name(item), kind="detector", detector=item)
    if kind_of(item) == "sanitizer":
        layer = item if _is_layer(item) else _sanitizer(item)
        after = sanitized_layers(model) if after is None else list(after)
        return Defence(
            name=default_name(item),
            kind="sanitizer",
            model=sanitize(model, after, layer),
            adaptive_model=sanitize(model, after, layer, bpda=True),
            after=after,
        )
    cls = getattr(detectors, _CLASSES[item])
    if item == "knn":
        detector = cls(model, layer=sanitized_layers(model)[-1])
    elif item == "squeeze":
        from keras_advguard.layers import BitDepthSqueezer, MedianSmoothingSqueezer

        detector = cls(model, [BitDepthSqueezer(4), MedianSmoothingSqueezer(2)])
    elif item == "medoid_lstm":
        detector = None  # needs the training images: built by `build_lstm`
    else:
        detector = cls(model)
    return Defence(name=item, kind="detector", detector=detector)


def build_lstm(model, x_train, y_train, *, quick, seed):
    """The medoid LSTM detector, its medoids fitted on the training images."""
    from keras_advguard import detectors

    return detectors.MedoidLSTMDetector.from_training_data(
        model,
        x_train,
        y_train,
        max_samples_per_class=50 if quick else None,
        seed=seed,
        lstm_units=16 if quick else 100,
    )


def _sanitizer(name):
    from keras_advguard import layers

    return {
        "mask": layers.MaskSanitizer,
        "median": layers.MedianSanitizer,
        "nl_means": layers.NLMeansSanitizer,
    }[name]()
