"""One activation pass of the classifier shared by the detectors of an evaluation.

Detectors whose score is a function of one forward pass of the classifier
(max-softmax: the logits; KNN: one layer; medoid LSTM: its taps) say so with
`tap_request()`. `SharedTaps` runs the classifier once per input set over
the union of their taps and hands each detector its part
(`features_from_taps`); the engine then scores (`score_features`) and, for
trained detectors, trains (`fit_features`) from those features, as often as
the splits and attacks need, without running the classifier again.
Detectors that need other passes (squeezed copies, gradients, the input
itself) keep calling `score`.
"""

import numpy as np

from keras_advguard import _fingerprint
from keras_advguard.detector_model import DetectorModel

_CHUNK_BATCHES = 4  # batches per `collect` call: bounds the raw maps held at once


def _pooled(array, pooling):
    """`DetectorModel`'s pooling of a raw activation array, in numpy."""
    if pooling is None or array.ndim <= 2:
        return array
    if pooling == "flatten":
        return array.reshape(len(array), -1)
    axes = tuple(range(1, array.ndim - 1))
    if pooling == "avg":
        return array.astype(np.float32, copy=False).mean(axis=axes, dtype=np.float32)
    return array.max(axis=axes)


class SharedTaps:
    """The union of the detectors' taps over `model`, run once per input set.

    Args:
        model: the evaluated classifier.
        detectors: `{name: detector}`. A detector takes part when its
            `tap_request()` is not `None` and it guards `model` itself.

    Attributes:
        names: the detectors that take part.
        errors: `{name: exception}` for detectors whose `features_from_taps`
            failed (they are dropped from later chunks; the caller reports
            them as failed).
    """

    def __init__(self, model, detectors):
        self.requests = {}
        for name, detector in detectors.items():
            request = _request_of(detector, model)
            if request is not None:
                self.requests[name] = request
        self.detectors = {name: detectors[name] for name in self.requests}
        layers = []
        for request in self.requests.values():
            layers.extend(p for p in request["layers"] if p not in layers)
        self.taps = DetectorModel(model, layers=layers, pooling=None) if self.requests else None
        self.errors = {}

    @property
    def names(self):
        return [name for name in self.requests if name not in self.errors]

    def features(self, x, batch_size):
        """`{name: features (N, ...)}` of every taking-part detector for inputs `x`."""
        parts = {name: [] for name in self.names}
        if self.taps is None or len(x) == 0:
            return {name: None for name in parts}
        chunk = batch_size * _CHUNK_BATCHES
        for start in range(0, len(x), chunk):
            collected = self.taps.collect(x[start : start + chunk], batch_size=batch_size)
            for name in list(parts):
                if name in self.errors:
                    parts.pop(name)
                    continue
                request = self.requests[name]
                view = dict(collected)
                view["activations"] = {
                    path: _pooled(collected["activations"][path], request["pooling"])
                    for path in request["layers"]
                }
                try:
                    parts[name].append(np.asarray(self.detectors[name].features_from_taps(view)))
                except Exception as error:  # reported by the caller as this defence's failure
                    self.errors[name] = error
                    parts.pop(name)
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _request_of(detector, model):
    """The detector's tap request when it can share `model`'s pass, else `None`."""
    try:
        request = detector.tap_request()
    except Exception:  # a detector not ready to say: it keeps its own pass
        return None
    if request is None:
        return None
    guarded = _fingerprint.unwrap_model(getattr(detector, "model", None))
    if guarded is not _fingerprint.unwrap_model(model):
        return None
    return {"layers": list(request.get("layers") or []), "pooling": request.get("pooling")}
