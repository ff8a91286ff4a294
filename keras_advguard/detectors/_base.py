"""The Detector contract shared by every detector, and its one on-disk format.

Every detector of `keras_advguard.detectors` inherits `Detector`: one
threshold rule, one `calibrate`/`predict`, one `save`/`load` format, one
refusal of a classifier with other weights. A detector class provides
`score` and `score_tensor` and describes its state through a few hooks
(`_get_config`, `_get_state`, `_set_state`); everything else comes from
here.

The file format (`Detector.save`): one zip archive, written atomically
(temporary file beside the target, then `os.replace`), holding

- `detector.json`: format and library version, class name, constructor
  configuration (JSON, no pickle), fitted scalars, the decision threshold,
  and a description of the classifier (name, input shape, SHA-256 of its
  weights);
- `arrays.npz`: the fitted arrays (read back with `allow_pickle=False`);
- `model.keras`: the classifier itself, with `include_model=True` (loaded
  in Keras safe mode);
- any further files a detector writes (`_write_members`), e.g. a Keras
  detector's own `.keras` file.

Everything is validated before the target file is touched, so a failed save
leaves the previous file as it was and no temporary file behind.
"""

import io
import json
import numbers
import os
import shutil
import tempfile
import warnings
import zipfile
import zlib

import numpy as np

from keras_advguard import _batching, _files, _fingerprint, _progress, _validation
from keras_advguard._files import write_atomic
from keras_advguard._validation import NotFittedError

FORMAT = "keras_advguard.detector"
FORMAT_VERSION = 1
SCORE_TENSOR_KINDS = ("exact", "surrogate", "bpda")
THRESHOLD_ATTRIBUTES = ("threshold_", "fpr_", "n_calibration_")
_DOCUMENT = "detector.json"
_ARRAYS = "arrays.npz"
_MODEL = "model.keras"

# class name -> class, filled by `Detector.__init_subclass__`.
_REGISTRY = {}


# ----------------------------------------------------------------------
# The threshold rule (one for all detectors)


def check_fpr(fpr, name="fpr"):
    """Check a target false positive rate: a real number in `(0, 1)`; return it as float.

    Raises:
        TypeError: `fpr` is not a real number.
        ValueError: `fpr` is NaN, `<= 0` or `>= 1`.
    """
    _validation.check_number(
        name, fpr, min_value=0.0, max_value=1.0, min_inclusive=False, max_inclusive=False
    )
    return float(fpr)


def threshold_from_scores(clean_scores, fpr, name="x_clean_validation"):
    """The decision threshold at `fpr` from clean validation scores.

    `metrics.threshold_at_fpr`: the smallest `t` such that at most a
    fraction `fpr` of the clean scores lie strictly above it; an input is
    flagged iff `score > t`.

    Args:
        clean_scores: 1-D scores of clean validation inputs.
        fpr: target false positive rate in `(0, 1)`.
        name: the argument the scores came from, for error messages.

    Returns:
        The threshold, a Python float.

    Example:

        >>> threshold_from_scores([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], 0.2)
        0.7
    """
    from keras_advguard import metrics

    fpr = check_fpr(fpr)
    scores = np.asarray(clean_scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError(
            f"Argument `{name}` must not be empty: a threshold needs at least one "
            f"clean input. Received: {name} with 0 inputs"
        )
    _validation.check_finite(f"score({name})", scores)
    return float(metrics.threshold_at_fpr(scores, fpr))


def fpr_from_fit_arguments(y, fpr):
    """Tell `fit(x, y)` (the contract) from `fit(x, fpr)` (calibration-only detectors).

    `EntropyDetector.fit` and `FeatureSqueezingDetector.fit` calibrate, and
    used to take the rate as their second positional argument; the contract's
    `fit(x_clean, y=None)` passes labels there. A real number, or a list of
    Python floats, is a rate; anything else (labels) is ignored.

    Returns:
        The rate(s) to use: `y` when it is one, else `fpr`.
    """
    if y is None:
        return fpr
    is_rate = isinstance(y, numbers.Real) and not isinstance(y, (bool, np.bool_))
    is_rate_list = (
        isinstance(y, (list, tuple)) and len(y) > 0 and all(isinstance(v, float) for v in y)
    )
    if is_rate or is_rate_list:
        if fpr is not None:
            raise TypeError(
                "`fit` got the false positive rate twice (second positional argument "
                f"and `fpr=`). Received: {y!r} and fpr={fpr!r}"
            )
        return y
    return fpr


def check_calibrated(detector):
    """Raise `NotFittedError` ("Call `calibrate`") unless `detector.threshold_` is set."""
    if getattr(detector, "threshold_", None) is None:
        raise NotFittedError(
            f"This {type(detector).__name__} instance has no decision threshold yet. "
            "Call `calibrate(x_clean_validation, fpr)` before `predict`."
        )


# ----------------------------------------------------------------------
# Input batches (numpy or tf.data), checked batch by batch


def _shape_matches(shape, expected):
    return len(shape) == len(expected) and all(
        e is None or s == e for s, e in zip(shape, expected, strict=True)
    )


def iterate_inputs(x, input_shape, *, batch_size=128, verbose=0, with_labels=False, name="x"):
    """Yield float32 batches of `x`, checking their shape and finiteness on every batch.

    Args:
        x: numpy array (or array-like) `(N, *input_shape[1:])`, or a
            `tf.data.Dataset` of inputs or `(inputs, labels)` pairs, batched
            or not.
        input_shape: the model's input shape including the batch axis
            (`model.inputs[0].shape`, `None` entries match anything).
        batch_size: inputs per batch (numpy inputs and unbatched datasets).
        verbose: `0` silent, `1` a progress bar.
        with_labels: yield `(x_batch, y_batch_or_None)` pairs.
        name: the argument's name, for error messages.

    Yields:
        `x_batch` (float32 numpy), or `(x_batch, y_batch)` with `with_labels`
        (`y_batch` is `None` unless `x` is a dataset of pairs).

    Raises:
        ValueError: inputs of another shape than the model's, or NaN/inf.
    """
    _validation.check_positive_int("batch_size", batch_size)
    _validation.check_choice("verbose", verbose, (0, 1, 2))
    input_shape = tuple(input_shape)
    rank = len(input_shape)
    expected = input_shape[1:]
    labelled = False
    if _batching.is_tf_dataset(x):
        labelled = _batching.has_labels(x)
    else:
        x = _validation.check_array(name, x, dtype_kind="fiub", allow_empty=True)
        if x.ndim == 0 or not _shape_matches(x.shape[1:], expected):
            raise ValueError(
                f"Argument `{name}` must have shape (N, {', '.join(map(str, expected))}) "
                f"like the model's input. Received: {name} with shape={x.shape}"
            )
    total = _batching.num_batches(x, batch_size, rank)
    bar = _progress.progress_bar(total, verbose=verbose)
    batches = _batching.iterate_batches(x, batch_size, with_labels=labelled, input_rank=rank)
    for step, item in enumerate(batches, start=1):
        xb, yb = item if labelled else (item, None)
        xb = np.asarray(xb)
        if not _shape_matches(xb.shape[1:], expected):
            raise ValueError(
                f"Argument `{name}` must hold inputs of shape "
                f"({', '.join(map(str, expected))}) like the model's input. "
                f"Received: a batch of shape={xb.shape}"
            )
        _validation.check_finite(name, xb)
        xb = xb.astype(np.float32, copy=False)
        yield (xb, yb) if with_labels else xb
        bar.update(step)


# ----------------------------------------------------------------------
# JSON helpers


def _to_json(value, where):
    """`value` with numpy scalars/arrays made Python; TypeError naming `where` otherwise."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not np.isfinite(value):
            raise ValueError(
                f"Cannot save `{where}`: it must be a finite number. Received: {where}={value}"
            )
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"Cannot save `{where}`: its keys must be strings. Received: key {key!r}"
                )
            out[key] = _to_json(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    text = repr(value)
    text = text if len(text) <= 200 else text[:197] + "..."
    raise TypeError(
        f"Cannot save `{where}`: it is not JSON-serializable (a number, string, "
        f"bool, None, list or dict). Received: {where}={text} of type {type(value).__name__}"
    )


def _check_arrays(arrays):
    checked = {}
    for key, value in arrays.items():
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"Cannot save the array `{key}`: only bool, integer and float arrays are "
                f"saved (no pickle). Received: dtype={array.dtype}"
            )
        checked[key] = array
    return checked


# ----------------------------------------------------------------------
# Reading an archive


def _bad_file(path, what):
    return ValueError(f"Cannot load the detector file {path!r}: {what}")


def _is_json_file(path):
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    return head.startswith(b"{")


def read_document(path):
    """Read `detector.json` of a saved detector (or a legacy JSON file).

    Returns:
        `(document, legacy)`: the dict, and whether the file is a legacy
        single-JSON save (before the archive format).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, corrupt or not a detector file;
            the message names the path.
    """
    path = os.fspath(path)
    _files.remove_stale_temporaries(path)  # what an interrupted save left beside it
    if not os.path.exists(path):
        raise FileNotFoundError(f"No detector file at {path!r}.")
    if os.path.isdir(path):
        raise _bad_file(path, "it is a directory, not a file written by `Detector.save`.")
    if _is_json_file(path):
        try:
            with open(path, encoding="utf-8") as f:
                document = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _bad_file(path, f"it is not valid JSON (truncated or corrupt?): {e}") from e
        if not isinstance(document, dict):
            raise _bad_file(path, "it does not hold a saved detector.")
        return document, True
    try:
        with zipfile.ZipFile(path) as archive:
            return _read_json_member(path, archive), False
    except zipfile.BadZipFile as e:
        raise _bad_file(
            path,
            f"it is not a complete detector archive (truncated or corrupt?): {e}",
        ) from e


def _read_json_member(path, archive):
    names = archive.namelist()
    if _DOCUMENT not in names:
        raise _bad_file(
            path,
            f"the archive holds no {_DOCUMENT!r}; it is not a saved detector. "
            f"Members: {names[:10]}",
        )
    try:
        document = json.loads(archive.read(_DOCUMENT).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _bad_file(path, f"its {_DOCUMENT!r} is not valid JSON: {e}") from e
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _bad_file(path, f"its {_DOCUMENT!r} is not a keras_advguard detector description.")
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _bad_file(
            path,
            f"format_version={version!r}; this version of keras_advguard reads "
            f"format_version <= {FORMAT_VERSION}. Upgrade keras_advguard.",
        )
    for key in ("class_name", "config"):
        if key not in document:
            raise _bad_file(path, f"its {_DOCUMENT!r} lacks the entry {key!r}.")
    return document


def _legacy_class_name(document):
    if document.get("format") == "keras_advguard.EntropyDetector":
        return "EntropyDetector"
    return document.get("class_name")


def saved_class_name(path):
    """The class name stored in a saved detector file."""
    document, legacy = read_document(path)
    return _legacy_class_name(document) if legacy else document["class_name"]


def _load_model_file(path, file):
    import keras

    # Register the library's Keras classes (layers, DetectorModel) before loading.
    import keras_advguard.detector_model  # noqa: F401
    import keras_advguard.layers  # noqa: F401

    try:
        return keras.models.load_model(file, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        raise _bad_file(
            path, f"its classifier ({_MODEL!r}) cannot be loaded: {type(e).__name__}: {e}"
        ) from e


def check_fingerprint(path, document, model):
    """Refuse `model` unless its weights are those the detector was fitted on."""
    stored = document.get("model") or {}
    expected = stored.get("weights_sha256")
    if expected is None:
        return
    found = _fingerprint.weights_fingerprint(model)
    if found != expected:
        raise ValueError(
            f"The model's weights (SHA-256 {found}) are not those the detector in "
            f"{path!r} was fitted on (SHA-256 {expected}, model "
            f"{stored.get('name')!r}, input shape {stored.get('input_shape')}). "
            "Pass the classifier it was fitted on (or `check_weights=False` to use "
            "its statistics anyway)."
        )


def load_detector(path, model=None, **kwargs):
    """Load any detector written by `Detector.save`, by the class name stored in it.

    Args:
        path: the file `save` wrote.
        model: the classifier to attach. Defaults to `None`: the one saved in
            the file (`include_model=True`), or none.
        **kwargs: passed to the class's `load` (e.g. `check_weights=False`).

    Returns:
        The detector, of the class it was saved from.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated, corrupt or foreign file, an unknown class, or
            a model whose weights differ from the fitted one.

    Example:

        >>> import os, tempfile
        >>> import keras
        >>> from keras_advguard.detectors import MaxSoftmaxDetector
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> path = os.path.join(tempfile.mkdtemp(), "baseline.advguard")
        >>> _ = MaxSoftmaxDetector(model).save(path, include_model=False)
        >>> type(load_detector(path, model)).__name__
        'MaxSoftmaxDetector'
    """
    name = saved_class_name(path)
    if not isinstance(name, str):
        raise _bad_file(os.fspath(path), "it does not hold a saved keras_advguard detector.")
    # Importing this module imports the package first, whose `__init__`
    # imports every detector module: the registry is complete here.
    cls = _REGISTRY.get(name)
    if cls is None:
        raise _bad_file(
            os.fspath(path),
            f"it holds a {name!r}, which is not a known detector. Known: "
            f"{', '.join(sorted(_REGISTRY))}",
        )
    return cls.load(path, model, **kwargs)


# ----------------------------------------------------------------------
# The mixin


class Detector:
    """The contract every detector implements (a mixin).

    A detector guards one classifier (`model`) and maps inputs to scores,
    higher meaning more adversarial. Statistical detectors
    (`supervised = False`) are fitted on clean data only; trained ones
    (`supervised = True`, `keras.Model`s) with `fit(x, is_adversarial)`.
    All share:

    - `score(x, *, batch_size=128, verbose=0)`: float numpy `(N,)`; `x`
      numpy or a `tf.data.Dataset` (of inputs or `(inputs, labels)` pairs);
    - `score_tensor(x)`: the score of a batch tensor as a differentiable
      float32 tensor `(B,)`, for adaptive attacks; `score_tensor_kind` says
      whether it is `"exact"` (the same values and their true gradient),
      a `"surrogate"` (a smooth stand-in, values differ) or `"bpda"`
      (exact values, gradient through a documented approximation);
    - `calibrate(x_clean_validation, fpr=0.05)`: sets `threshold_`, `fpr_`,
      `n_calibration_`; `predict(x)`: bool `score(x) > threshold_`;
    - `clone()`: same configuration and fitted statistics, no threshold;
    - `save(path)` / `load(path, model=None)`: one single-file format,
      written atomically, refusing a classifier whose weights differ.

    Subclasses implement `score`, `score_tensor`, and the state hooks
    `_get_config` (JSON constructor arguments except the model),
    `_get_state` / `_set_state` (fitted scalars and arrays), and, when the
    constructor is not `cls(model, **config)`, `_from_saved`.
    """

    supervised = False
    score_tensor_kind = "exact"
    # Whether `fit` learns anything besides the threshold. False: `fit` only
    # calibrates (or does nothing), so an evaluation calls `calibrate` alone.
    needs_fit = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Concrete detectors only (a mixin such as a Keras-detector base that
        # does not implement `score` is not a detector one can load).
        if not cls.__name__.startswith("_") and cls.score is not Detector.score:
            _REGISTRY[cls.__name__] = cls

    # --- to implement --------------------------------------------------

    def score(self, x, *, batch_size=128, verbose=0):
        """Adversarial scores of `x`: float numpy `(N,)`, higher = more adversarial."""
        raise NotImplementedError(f"{type(self).__name__} does not implement `score`.")

    def score_tensor(self, x):
        """The score of a batch tensor, differentiable w.r.t. `x`: float32 `(B,)`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement `score_tensor`.")

    # --- optional: scoring from a shared activation pass ----------------
    #
    # An evaluation scores several detectors on the same inputs. A detector
    # whose score is a function of the classifier's forward pass (activations
    # of some layers, logits, prediction) says which taps it needs; the
    # caller runs ONE pass for all such detectors (`DetectorModel.collect`
    # of the union of their taps) and hands each its part.

    def tap_request(self):
        """The taps this detector's score is computed from, or `None`.

        Returns:
            `None` when the score needs more than one forward pass of the
            classifier (squeezed copies, gradients, the raw input), else a
            dict `{"layers": [tap paths], "pooling": pooling}` of
            `DetectorModel` arguments (`"layers": []` for logits and
            prediction only).
        """
        return None

    def features_from_taps(self, collected):
        """Per-input features from one batch of a shared pass.

        Args:
            collected: `DetectorModel.collect`'s dict for a batch of `B`
                inputs, its `"activations"` holding (at least) the taps of
                `tap_request()`, pooled as asked.

        Returns:
            A numpy array `(B, ...)`: what `score_features` (and, for
            trained detectors, `fit_features`) take.
        """
        raise NotImplementedError(
            f"{type(self).__name__} scores from its own pass (`tap_request()` is None)."
        )

    def score_features(self, features):
        """Scores `(N,)` from `features_from_taps` outputs (by default they are the scores)."""
        return np.asarray(features, dtype=np.float64).reshape(-1)

    def _guarded_model(self):
        """The classifier this detector guards (`None` if it has none)."""
        return getattr(self, "model", None)

    def _get_config(self):
        """The constructor arguments other than the model, as JSON types."""
        return {}

    def _get_state(self):
        """The fitted statistics: `(scalars: JSON dict, arrays: {name: ndarray})`."""
        return {}, {}

    def _set_state(self, scalars, arrays):
        """Restore what `_get_state` returned (on a freshly constructed detector)."""

    @classmethod
    def _from_saved(cls, model, config, folder=None):
        """A new, unfitted detector from `_get_config()`; `folder` holds extra members."""
        return cls(model, **config)

    def _write_members(self, folder):
        """Write extra files into `folder` to be stored in the archive (none by default)."""

    # --- threshold -----------------------------------------------------

    def calibrate(self, x_clean_validation, fpr=0.05, *, batch_size=128, verbose=0):
        """Set the decision threshold from clean validation inputs.

        `threshold_` is the smallest value that at most a fraction `fpr` of
        the clean scores exceed (`metrics.threshold_at_fpr`). Use clean
        **validation** inputs, never the test set the detector is evaluated
        on.

        Args:
            x_clean_validation: clean inputs, numpy or a `tf.data.Dataset`.
            fpr: target false positive rate in `(0, 1)`. Defaults to `0.05`.
            batch_size: inputs per batch. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            `self`, with `threshold_` (float), `fpr_` (float) and
            `n_calibration_` (int) set.

        Raises:
            ValueError: `fpr` outside `(0, 1)`, no inputs, non-finite inputs.
        """
        fpr = check_fpr(fpr)
        scores = self.score(x_clean_validation, batch_size=batch_size, verbose=verbose)
        return self._set_threshold(scores, fpr)

    def _set_threshold(self, clean_scores, fpr, name="x_clean_validation"):
        threshold = threshold_from_scores(clean_scores, fpr, name=name)
        self.threshold_ = threshold
        self.fpr_ = float(fpr)
        self.n_calibration_ = int(np.asarray(clean_scores).size)
        return self

    def _clear_threshold(self):
        for name in THRESHOLD_ATTRIBUTES:
            self.__dict__.pop(name, None)

    def predict(self, x, *, batch_size=128, verbose=0):
        """Flag adversarial inputs: bool numpy `(N,)`, `score(x) > threshold_`.

        Raises:
            NotFittedError: `calibrate` was not called.
        """
        check_calibrated(self)
        scores = self.score(x, batch_size=batch_size, verbose=verbose)
        return np.asarray(scores) > self.threshold_

    # --- clone ---------------------------------------------------------

    def clone(self):
        """A new detector with the same configuration and fitted statistics, no threshold."""
        clone = type(self)._from_saved(self._guarded_model(), self._get_config())
        scalars, arrays = self._get_state()
        clone._set_state(dict(scalars), {k: np.array(v, copy=True) for k, v in arrays.items()})
        clone._clear_threshold()
        return clone

    # --- save / load ---------------------------------------------------

    def save(self, path, *, include_model=True):
        """Save the detector to one file, atomically.

        The file is a zip archive (see the module docstring): the detector's
        configuration and fitted statistics (JSON and `.npz`, no pickle), its
        threshold, the weights fingerprint of its classifier and, with
        `include_model=True`, the classifier itself (`.keras`). Everything is
        validated before anything is written: a failed save leaves the old
        file unchanged. Any path works; `.advguard` is the conventional
        extension.

        Args:
            path: the file to write.
            include_model: store the classifier too, so `load(path)` needs no
                model. Defaults to `True`.

        Returns:
            `path`.

        Raises:
            TypeError: a configuration value that cannot be saved as JSON
                (the message names it).
            ValueError: `path` is a directory.
        """
        _validation.check_type("include_model", include_model, bool)
        path_str = os.fspath(path)
        if os.path.isdir(path_str):
            raise ValueError(
                f"Argument `path` must be a file name, not a directory. Received: path={path_str!r}"
            )
        folder = os.path.dirname(os.path.abspath(path_str))
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"The folder of `path` does not exist. Received: path={path_str!r}"
            )
        name = type(self).__name__
        from keras_advguard.version import __version__

        model = self._guarded_model()
        scalars, arrays = self._get_state()
        threshold = None
        if getattr(self, "threshold_", None) is not None:
            threshold = {a: getattr(self, a, None) for a in THRESHOLD_ATTRIBUTES}
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "class_name": name,
            "keras_advguard_version": __version__,
            "config": _to_json(self._get_config(), f"{name} config"),
            "state": _to_json(scalars, f"{name} state"),
            "threshold": _to_json(threshold, f"{name} threshold"),
            "model": None if model is None else _fingerprint.describe_model(model),
            "model_file": _MODEL if (include_model and model is not None) else None,
        }
        arrays = _check_arrays(arrays)
        text = json.dumps(document, indent=2, allow_nan=False)

        # The members are assembled in a temporary folder beside the target
        # (named like `write_atomic`'s temporaries, so what a killed save
        # leaves is swept by the next save or load of the same file).
        _files.remove_stale_temporaries(path_str)
        members = _files.temporary_name(path_str, ".d")
        os.mkdir(members)
        try:
            if document["model_file"]:
                _fingerprint.unwrap_model(model).save(os.path.join(members, _MODEL))
            self._write_members(members)
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            payload = buffer.getvalue()

            def write(tmp):
                with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                    archive.writestr(_DOCUMENT, text)
                    archive.writestr(_ARRAYS, payload)
                    for member in sorted(os.listdir(members)):
                        archive.write(
                            os.path.join(members, member),
                            member,
                            compress_type=zipfile.ZIP_STORED,
                        )

            write_atomic(path_str, write)
        finally:
            shutil.rmtree(members, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path, model=None, *, check_weights=True):
        """Load a detector written by `save`.

        Args:
            path: the file `save` wrote.
            model: the classifier. Defaults to `None`: the one stored in the
                file (`include_model=True`), or none.
            check_weights: refuse a `model` whose weights' SHA-256 differs
                from the one the detector was fitted on. Defaults to `True`.

        Returns:
            The detector (of this class; `Detector.load` and `load_detector`
            accept any).

        Raises:
            FileNotFoundError: no such file.
            ValueError: a truncated, corrupt or foreign file (the message
                names the path and what is wrong), a file holding another
                detector class, no model given for a file saved without one
                when the detector needs it, or a model whose weights differ
                (naming both fingerprints).
        """
        path = os.fspath(path)
        _validation.check_type("check_weights", check_weights, bool)
        if model is not None:
            import keras

            _validation.check_type("model", model, keras.Model, "a keras.Model or None")
        document, legacy = read_document(path)
        stored = _legacy_class_name(document) if legacy else document["class_name"]
        if not isinstance(stored, str):
            raise _bad_file(path, "it does not hold a saved keras_advguard detector.")
        if cls is Detector:
            return load_detector(path, model, check_weights=check_weights)
        if stored != cls.__name__:
            raise _bad_file(
                path,
                f"it holds a {stored!r}, not a {cls.__name__}. Use "
                "`keras_advguard.detectors.load_detector` to load any detector.",
            )
        if legacy:
            loader = getattr(cls, "_load_legacy", None)
            if loader is None:
                raise _bad_file(path, f"{cls.__name__} has no reader for this legacy file.")
            warnings.warn(
                f"{path!r} is a legacy {cls.__name__} JSON save; it still loads, but "
                "save it again with `save` (one archive file) before this reader "
                "is removed.",
                DeprecationWarning,
                stacklevel=2,
            )
            return loader(path, model, check_weights=check_weights)
        try:
            with (
                zipfile.ZipFile(path) as archive,
                tempfile.TemporaryDirectory(prefix="advguard-load-") as folder,
            ):
                archive.extractall(folder)
                return cls._restore(path, document, folder, model, check_weights)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise _bad_file(path, f"the archive is corrupt: {e}") from e

    @classmethod
    def _restore(cls, path, document, folder, model, check_weights):
        if model is None and document.get("model_file"):
            model_file = os.path.join(folder, document["model_file"])
            if not os.path.exists(model_file):
                raise _bad_file(path, f"the archive lacks its classifier {_MODEL!r}.")
            model = _load_model_file(path, model_file)
        if model is not None and check_weights:
            check_fingerprint(path, document, model)
        arrays_file = os.path.join(folder, _ARRAYS)
        arrays = {}
        if os.path.exists(arrays_file):
            try:
                with np.load(arrays_file, allow_pickle=False) as data:
                    arrays = {key: data[key] for key in data.files}
            except Exception as e:  # noqa: BLE001 - re-raised with the path
                raise _bad_file(path, f"its {_ARRAYS!r} cannot be read: {e}") from e
        if model is None and document.get("model") is not None:
            raise _bad_file(
                path,
                "it was saved without its classifier (include_model=False); pass "
                "`model=` (the classifier it was fitted on).",
            )
        detector = cls._from_saved(model, dict(document["config"]), folder)
        detector._set_state(dict(document.get("state") or {}), arrays)
        threshold = document.get("threshold")
        if threshold:
            detector.threshold_ = float(threshold["threshold_"])
            detector.fpr_ = float(threshold["fpr_"])
            n = threshold.get("n_calibration_")
            detector.n_calibration_ = None if n is None else int(n)
        return detector


def read_legacy_document(path, class_name, format_version):
    """The JSON document of a keras_advguard <= 0.1 save (deprecated formats).

    Raises:
        ValueError: another format version.
    """
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    if document.get("format_version") != format_version:
        raise ValueError(
            f"Unsupported {class_name} file format in {path!r}. Expected "
            f"format_version={format_version}. Received: "
            f"format_version={document.get('format_version')!r}"
        )
    return document
