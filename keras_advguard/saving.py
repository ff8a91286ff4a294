"""`save_model` and `load_model`: `.keras` files written atomically, read with clear errors.

Keras writes a `.keras` archive in place: a process killed during
`model.save(path)` leaves `path` truncated, and the old model is lost.
`save_model` writes the archive beside `path` under a temporary name and
moves it into place (`keras_advguard._files.write_atomic`), so `path` holds
either the old or the new model, complete. `DetectorModel.save` and the
`save` of a model returned by `keras_advguard.sanitize` use it; call it for
any other model (a user's classifier, a model reloaded from disk).

`load_model` is `keras.saving.load_model` in safe mode, with errors that
name the file and what is wrong with it (Keras reports a truncated archive
as "File not found").
"""

import os
import re
import zipfile

import keras

from keras_advguard import _files, _validation

_MISSING_CLASS = re.compile(r"Could not locate (?:class|function) '([^']+)'")


def save_model(model, filepath, overwrite=True, **kwargs):
    """Save a Keras model to a `.keras` file atomically.

    Same archive as `model.save(filepath)` / `keras.saving.save_model`, but
    written to a temporary file in the same folder, flushed to disk and moved
    over `filepath` with `os.replace`. If the process dies or the disk fills
    up half-way, `filepath` still holds the previous model, and the
    temporary file is removed (by this call when it fails, by the next save
    or `load_model` of `filepath` when the process was killed).

    Args:
        model: a `keras.Model`.
        filepath: the target, a path ending in `.keras`.
        overwrite: whether to replace an existing file. Defaults to `True`.
        **kwargs: further `keras.saving.save_model` arguments
            (`include_optimizer`). `zipped=False` (a folder) is refused: a
            folder cannot be replaced atomically.

    Returns:
        `filepath`.

    Raises:
        TypeError: `model` is not a Keras model, or `overwrite` not a bool.
        ValueError: `filepath` does not end in `.keras`, or `zipped=False`.
        FileExistsError: `filepath` exists and `overwrite=False`.
        OSError: the write failed (the old file is left as it was).

    Example:

        >>> import os, tempfile, keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> folder = tempfile.mkdtemp()
        >>> path = save_model(model, os.path.join(folder, "model.keras"))
        >>> os.listdir(folder)
        ['model.keras']
        >>> x = np.ones((1, 4), "float32")
        >>> bool(np.allclose(load_model(path)(x), model(x)))
        True
    """
    _validation.check_type("model", model, keras.Model, "a keras.Model")
    _validation.check_type("overwrite", overwrite, bool)
    path = _check_path(filepath)
    if kwargs.get("zipped", True) is False:
        raise ValueError(
            "`save_model` writes one `.keras` archive; `zipped=False` (a folder) "
            "cannot be replaced atomically. Received: zipped=False"
        )
    kwargs.pop("zipped", None)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(
            f"The file {path!r} exists and `overwrite=False`. Received: filepath={path!r}"
        )

    def write(tmp):
        keras.saving.save_model(model, tmp, **kwargs)

    _files.write_atomic(path, write, ".keras")
    return filepath


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Load a `.keras` file, reporting what is wrong with a damaged one.

    `keras.saving.load_model`; the library's layers and models are
    registered (importing any part of `keras_advguard` imports them all).
    Before loading, stale
    temporary files of `filepath` left by a killed `save_model` are removed.

    Keras reports a truncated or otherwise damaged archive as "File not
    found" and a class it does not know as "Could not locate class". Here:

    - a missing file: `FileNotFoundError` naming it;
    - a truncated or corrupt archive (not a complete zip, a member failing
      its CRC check): `ValueError` naming the file and the damage;
    - a class that is not registered: `TypeError` saying which class and
      what to import (a `keras_advguard` class this version lacks, or the
      user's module to import before loading).

    Args:
        filepath: a `.keras` file.
        custom_objects: as in `keras.saving.load_model`. Defaults to `None`.
        compile: as in `keras.saving.load_model`. Defaults to `True`.
        safe_mode: as in `keras.saving.load_model`; keep it `True` for files
            you did not write. Defaults to `True`.

    Returns:
        The model.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated or corrupt file.
        TypeError: a class that cannot be found.
    """
    path = os.fspath(filepath)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: {path!r} (argument `filepath`)")
    _files.remove_stale_temporaries(path)
    damage = _archive_damage(path, full=False)
    if damage:
        raise ValueError(f"Cannot load {path!r}: the file is truncated or corrupt ({damage}).")
    try:
        return keras.saving.load_model(
            path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
        )
    except TypeError as error:
        match = _MISSING_CLASS.search(str(error))
        if match is None:
            raise
        raise TypeError(_missing_class_message(path, match.group(1), str(error))) from error
    except Exception as error:
        damage = _archive_damage(path, full=True)
        if damage:
            raise ValueError(
                f"Cannot load {path!r}: the file is truncated or corrupt ({damage})."
            ) from error
        raise


def make_save_atomic(model):
    """Give `model` (this one object) a `save` method that is `save_model`.

    For the models the library builds as plain functional `keras.Model`s
    (`keras_advguard.sanitize`): their `model.save(path)`, also when Keras
    calls it (`keras.callbacks.ModelCheckpoint`), writes atomically. A model
    loaded back from the file is a plain Keras model again: save it with
    `save_model`.

    Returns:
        `model`.
    """

    def save(filepath, overwrite=True, **kwargs):
        return save_model(model, filepath, overwrite=overwrite, **kwargs)

    save.__doc__ = "Save to a `.keras` file atomically (`keras_advguard.save_model`)."
    model.save = save
    return model


def _check_path(filepath):
    if not isinstance(filepath, (str, os.PathLike)):
        raise TypeError(
            "Argument `filepath` must be a path (str or os.PathLike). "
            f"Received: filepath of type {type(filepath).__name__}"
        )
    path = os.fspath(filepath)
    if not str(path).endswith(".keras"):
        raise ValueError(f"Argument `filepath` must end in `.keras`. Received: filepath={path!r}")
    return path


def _archive_damage(path, full):
    """What is wrong with the zip archive at `path`, or `None`.

    Cheap check (`full=False`): the end-of-archive record is there (a
    truncated write lacks it). Full check: every member's CRC too.
    """
    size = os.path.getsize(path)
    if size == 0:
        return "it is empty (0 bytes)"
    if not zipfile.is_zipfile(path):
        return f"not a complete zip archive ({size} bytes; the end of the archive is missing)"
    if not full:
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        return f"the zip archive cannot be read: {error}"
    if bad is not None:
        return f"its member {bad!r} fails its CRC check"
    return None


def _missing_class_message(path, name, keras_message):
    registered = None
    match = re.search(r"'registered_name': '([^']+)'", keras_message)
    if match:
        registered = match.group(1)
    if registered and registered.startswith("keras_advguard>"):
        from keras_advguard.version import __version__

        hint = (
            f"it is a keras_advguard class that this version ({__version__}) does "
            "not define: load it with the keras_advguard version that wrote it"
        )
    else:
        hint = (
            "import the module that defines it (and register it with "
            "`@keras.saving.register_keras_serializable`) before loading, or pass "
            "it in `custom_objects`"
        )
    return f"Cannot load {path!r}: class {name!r} is unknown; {hint}. Keras: {keras_message}"
