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
    """

    name: str
    kind: str
    detector: object = None
    model: object = None
    adaptive_model: object = None
    fit: bool = True


def available_detectors():
    """The detector names whose class can be imported now."""
    from keras_advguard import detectors

    return tuple(n for n in DETECTOR_NAMES if hasattr(detectors, _CLASSES[n]))


def check_defences(defences):
    """Validate the `defences` argument; return it as a list (no detector built)."""
    if defences is None:
        return None
    if isinstance(defences, str) or not isinstance(defences, list | tuple):
        defences = [defences]
    if not defences:
        raise ValueError("Argument `defences` must not be empty. Received: defences=[]")
    for item in defences:
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
                "`score`, `score_tensor`, `calibrate` and `fit`) or a sanitizer layer. "
                f"Received: an entry of type {type(item).__name__}"
            )
    return list(defences)


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


def build(item, model, *, quick, seed):
    """Turn one entry of `defences` into a `Defence`."""
    from keras_advguard import detectors
    from keras_advguard.sanitize import sanitize

    if _is_detector(item):
        return Defence(name=default_name(item), kind="detector", detector=item)
    if kind_of(item) == "sanitizer":
        layer = item if _is_layer(item) else _sanitizer(item)
        after = sanitized_layers(model)
        return Defence(
            name=default_name(item),
            kind="sanitizer",
            model=sanitize(model, after, layer),
            adaptive_model=sanitize(model, after, layer, bpda=True),
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
