"""Reference classifiers of the papers, and a cache of trained ones.

Three builders return uncompiled Keras 3 functional models whose last layer is
`Dense(num_classes, activation="softmax", name="predictions")`:
`mnist_cnn` (the Carlini & Wagner MNIST network the sanitizer paper uses),
`digits_cnn` (a seconds-to-train net for scikit-learn's 8x8 digits) and
`cifar_cnn` (a small VGG-like net). `load_or_train` trains one of them on a
`load_dataset` dataset once and keeps the result as a `.keras` file.
"""

import hashlib
import json
import os
import time

import keras
import numpy as np

from keras_advguard import _validation
from keras_advguard._files import write_atomic, write_json
from keras_advguard.datasets import DATASET_NAMES, NUM_CLASSES, load_dataset

MNIST_CNN_SANITIZED_LAYERS = ("conv1", "conv2", "conv4", "conv5", "fc7", "fc8")
"""Layers of `mnist_cnn` the sanitizer paper sanitizes (CONV1..FC8)."""

CIFAR_CNN_SANITIZED_LAYERS = ("conv1", "conv2", "conv4", "conv5", "fc7")
"""The same choice for `cifar_cnn`: every convolution and hidden dense layer."""

DIGITS_CNN_SANITIZED_LAYERS = ("conv1", "conv2", "fc4")
"""The same choice for `digits_cnn`: every convolution and hidden dense layer."""

ARCHITECTURES = ("mnist_cnn", "digits_cnn", "cifar_cnn")
"""Architecture names accepted by `load_or_train`."""


def mnist_cnn(input_shape=(28, 28, 1), num_classes=10):
    """The Carlini & Wagner MNIST classifier.

    conv32-conv32-pool-conv64-conv64-pool-fc200-(dropout 0.5)-fc200-softmax,
    3x3 "valid" convolutions and 2x2 max pooling, ReLU everywhere. The layer
    names follow the paper's numbering (`conv1`, `conv2`, `pool3`, `conv4`,
    `conv5`, `pool6`, `fc7`, `fc8`, `predictions`), so the layers it sanitizes
    are `MNIST_CNN_SANITIZED_LAYERS`. The dropout layer (`drop7`, between
    `fc7` and `fc8` as in Carlini & Wagner's code) is inactive at inference.

    Args:
        input_shape: channels-last image shape `(H, W, C)`. Defaults to
            `(28, 28, 1)`.
        num_classes: number of classes. Defaults to `10`.

    Returns:
        An uncompiled functional `keras.Model` named `"mnist_cnn"` ending in
        `Dense(num_classes, activation="softmax", name="predictions")`.

    Raises:
        ValueError: `input_shape` not 3 positive integers, `num_classes` < 2.
        TypeError: arguments of the wrong type.

    Example:

        >>> model = mnist_cnn()
        >>> model.output_shape
        (None, 10)
        >>> [model.get_layer(n).output.shape[-1] for n in MNIST_CNN_SANITIZED_LAYERS]
        [32, 32, 64, 64, 200, 200]

    Reference:
        N. Carlini and D. Wagner, "Towards Evaluating the Robustness of Neural
        Networks", IEEE S&P 2017 (Table 1, MNIST model).
    """
    inputs, num_classes = _check_builder_args(input_shape, num_classes)
    layers = keras.layers
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool3")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv4")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv5")(x)
    x = layers.MaxPooling2D(2, name="pool6")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(200, activation="relu", name="fc7")(x)
    x = layers.Dropout(0.5, name="drop7")(x)
    x = layers.Dense(200, activation="relu", name="fc8")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def digits_cnn(input_shape=(8, 8, 1), num_classes=10):
    """A small convnet for scikit-learn's 8x8 digits; trains in seconds on a CPU.

    conv16-conv32-pool-fc64-softmax, 3x3 "same" convolutions, ReLU. Layer
    names: `conv1`, `conv2`, `pool3`, `flatten`, `fc4`, `predictions`.

    Args:
        input_shape: channels-last image shape `(H, W, C)`. Defaults to
            `(8, 8, 1)`.
        num_classes: number of classes. Defaults to `10`.

    Returns:
        An uncompiled functional `keras.Model` named `"digits_cnn"` ending in
        `Dense(num_classes, activation="softmax", name="predictions")`.

    Raises:
        ValueError: `input_shape` not 3 positive integers, `num_classes` < 2.
        TypeError: arguments of the wrong type.

    Example:

        >>> model = digits_cnn()
        >>> model.output_shape, model.layers[-1].name
        ((None, 10), 'predictions')
    """
    inputs, num_classes = _check_builder_args(input_shape, num_classes)
    layers = keras.layers
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="fc4")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def cifar_cnn(input_shape=(32, 32, 3), num_classes=10):
    """A small VGG-like convnet for CIFAR-10.

    conv32-conv32-pool-conv64-conv64-pool-fc128-(dropout 0.5)-softmax, 3x3
    "same" convolutions, ReLU. Layer names: `conv1`, `conv2`, `pool3`,
    `conv4`, `conv5`, `pool6`, `flatten`, `fc7`, `drop7`, `predictions`.

    Args:
        input_shape: channels-last image shape `(H, W, C)`. Defaults to
            `(32, 32, 3)`.
        num_classes: number of classes. Defaults to `10`.

    Returns:
        An uncompiled functional `keras.Model` named `"cifar_cnn"` ending in
        `Dense(num_classes, activation="softmax", name="predictions")`.

    Raises:
        ValueError: `input_shape` not 3 positive integers, `num_classes` < 2.
        TypeError: arguments of the wrong type.

    Example:

        >>> model = cifar_cnn()
        >>> model.input_shape, model.output_shape
        ((None, 32, 32, 3), (None, 10))
    """
    inputs, num_classes = _check_builder_args(input_shape, num_classes)
    layers = keras.layers
    x = inputs
    for index, filters in ((1, 32), (2, 32), (4, 64), (5, 64)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{index}")(x)
        if index in (2, 5):
            x = layers.MaxPooling2D(2, name=f"pool{index + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc7")(x)
    x = layers.Dropout(0.5, name="drop7")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="cifar_cnn")


_BUILDERS = {"mnist_cnn": mnist_cnn, "digits_cnn": digits_cnn, "cifar_cnn": cifar_cnn}


def load_or_train(
    architecture,
    dataset,
    *,
    epochs,
    seed=0,
    batch_size=128,
    cache_dir=None,
    verbose=0,
    path=None,
):
    """Return a trained classifier, training it only if no cached copy exists.

    Builds `architecture` for the images of `dataset` (from `load_dataset`),
    trains it with Adam (learning rate 1e-3) on sparse categorical
    cross-entropy after `keras.utils.set_random_seed(seed)`, measures its
    accuracy on the test split and saves it in `cache_dir` as
    `{architecture}-{dataset}-e{epochs}-b{batch_size}-s{seed}-{data}.keras`,
    where `{data}` is the first 12 hex digits of a SHA-256 of the training
    arrays (so a CIFAR-10 subset and the full set never share a file). A JSON
    sidecar of the same name holds the information returned in `info`. Both
    files are written to a temporary file in the same directory and moved in
    place with `os.replace`, so an interrupted run never leaves a half-written
    file. When the `.keras` file exists it is loaded with
    `keras.models.load_model` (safe mode) and nothing is trained.

    Args:
        architecture: one of `"mnist_cnn"`, `"digits_cnn"`, `"cifar_cnn"`.
        dataset: a `load_dataset` name (`"digits"`, `"mnist"`,
            `"fashion_mnist"`, `"cifar10"`).
        epochs: number of training epochs, >= 1 (keyword only).
        seed: integer seed >= 0 of weights and shuffling. Defaults to `0`.
        batch_size: training batch size. Defaults to `128`.
        cache_dir: directory of the cached models. Defaults to
            `$KERAS_ADVGUARD_HOME/models` when `KERAS_ADVGUARD_HOME` is set,
            else `~/.keras_advguard/models`.
        verbose: `fit` verbosity, 0, 1 or 2. Defaults to `0`.
        path: forwarded to `load_dataset` (a local data file or directory).
            Defaults to `None` (the Keras cache).

    Returns:
        A tuple `(model, info)`: the trained, compiled `keras.Model` and a
        dict with keys `"architecture"`, `"dataset"`, `"epochs"`,
        `"batch_size"`, `"seed"`, `"data_sha256"`, `"num_train"`,
        `"num_test"`, `"test_accuracy"` (float in [0, 1]), `"train_seconds"`,
        `"keras_version"`, `"path"` (the `.keras` file) and `"from_cache"`
        (whether the model was loaded instead of trained).

    Raises:
        ValueError: unknown `architecture` or `dataset`, bad numbers, an
            architecture that cannot take the dataset's image shape, or a
            cached file that cannot be loaded (delete it to retrain).
        TypeError: arguments of the wrong type.
        FileNotFoundError: the dataset's file is absent (see `load_dataset`).

    Example:

        >>> import tempfile
        >>> model, info = load_or_train(
        ...     "digits_cnn", "digits", epochs=1, cache_dir=tempfile.mkdtemp()
        ... )
        >>> info["from_cache"], info["num_test"], model.output_shape
        (False, 360, (None, 10))
    """
    _validation.check_choice("architecture", architecture, ARCHITECTURES)
    _validation.check_choice("dataset", dataset, DATASET_NAMES)
    _validation.check_positive_int("epochs", epochs)
    _validation.check_number("seed", seed, min_value=0, integer=True)
    _validation.check_positive_int("batch_size", batch_size)
    _validation.check_choice("verbose", verbose, (0, 1, 2))
    cache_dir = _resolve_cache_dir(cache_dir)

    (x_train, y_train), (x_test, y_test) = load_dataset(dataset, path=path)
    data_sha256 = _fingerprint(x_train, y_train)
    stem = f"{architecture}-{dataset}-e{epochs}-b{batch_size}-s{seed}-{data_sha256[:12]}"
    model_file = os.path.join(cache_dir, stem + ".keras")
    info_file = os.path.join(cache_dir, stem + ".json")
    base_info = {
        "architecture": architecture,
        "dataset": dataset,
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "data_sha256": data_sha256,
        "num_train": len(x_train),
        "num_test": len(x_test),
        "keras_version": keras.__version__,
    }

    if os.path.isfile(model_file):
        try:
            model = keras.models.load_model(model_file)
        except Exception as e:  # noqa: BLE001 - re-raised with the remedy
            raise ValueError(
                f"The cached model {model_file} cannot be loaded "
                f"({type(e).__name__}: {e}). Delete it to train the model again."
            ) from e
        info = _read_info(info_file)
        if info is None:  # sidecar lost: measure again, keep the model
            info = dict(
                base_info,
                test_accuracy=_accuracy(model, x_test, y_test),
                train_seconds=None,
            )
            write_json(info_file, info, sort_keys=True)
        return model, dict(info, path=model_file, from_cache=True)

    keras.utils.set_random_seed(int(seed))
    try:
        model = _BUILDERS[architecture](
            input_shape=tuple(x_train.shape[1:]), num_classes=NUM_CLASSES
        )
    except ValueError as e:
        raise ValueError(
            f"Architecture {architecture!r} cannot take the {dataset!r} images "
            f"of shape {tuple(x_train.shape[1:])}: {e}"
        ) from e
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=verbose,
    )
    train_seconds = round(time.perf_counter() - start, 2)
    info = dict(
        base_info,
        test_accuracy=_accuracy(model, x_test, y_test),
        train_seconds=train_seconds,
    )
    os.makedirs(cache_dir, exist_ok=True)
    write_atomic(model_file, model.save, ".keras")
    write_json(info_file, info, sort_keys=True)
    return model, dict(info, path=model_file, from_cache=False)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _check_builder_args(input_shape, num_classes):
    _validation.check_type("input_shape", input_shape, (tuple, list), "a tuple")
    if len(input_shape) != 3 or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in input_shape
    ):
        raise ValueError(
            "Argument `input_shape` must be 3 positive integers (height, width, "
            f"channels), channels last. Received: input_shape={input_shape!r}"
        )
    _validation.check_number("num_classes", num_classes, min_value=2, integer=True)
    shape = tuple(int(d) for d in input_shape)
    return keras.Input(shape=shape, name="image"), int(num_classes)


def _resolve_cache_dir(cache_dir):
    if cache_dir is None:
        home = os.environ.get("KERAS_ADVGUARD_HOME")
        if home:
            return os.path.abspath(os.path.join(os.path.expanduser(home), "models"))
        return os.path.abspath(os.path.expanduser("~/.keras_advguard/models"))
    _validation.check_type("cache_dir", cache_dir, (str, os.PathLike), "a str or os.PathLike")
    return os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))


def _fingerprint(x, y):
    digest = hashlib.sha256()
    for array in (x, y):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _accuracy(model, x, y):
    probabilities = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(probabilities, axis=-1) == y))


def _read_info(file):
    try:
        with open(file, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
