"""Offline image datasets: digits, MNIST, Fashion-MNIST and CIFAR-10.

Nothing here downloads. `"digits"` ships with scikit-learn; the other datasets
are read from the files Keras keeps in its cache (`~/.keras/datasets/`, or
`$KERAS_HOME/datasets/`) or from an explicit `path=`. Every loader returns
float32 images in `[0, 1]`, channels-last `(N, H, W, C)`, and int64 labels of
shape `(N,)`.
"""

import gzip
import hashlib
import os
import pickle
import zipfile

import numpy as np

from keras_advguard import _validation
from keras_advguard.splits import validation_split as validation_split

DATASET_NAMES = ("digits", "mnist", "fashion_mnist", "cifar10")
"""Names accepted by `load_dataset`."""

IMAGE_SHAPES = {
    "digits": (8, 8, 1),
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
}
"""Channels-last image shape of each dataset."""

NUM_CLASSES = 10
"""Number of classes of every dataset here (labels 0..9)."""

# SHA-256 of the `mnist.npz` Keras downloads (and checks) - see
# shared/data/README.md. Checked for the copy in the Keras cache.
_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

# The four IDX files, in the order Keras reads them for Fashion-MNIST.
_IDX_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)

_CIFAR10_BATCHES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
)

_DIGITS_TEST_SIZE = 360
_DIGITS_SEED = 0


def load_dataset(name, path=None):
    """Load an image-classification dataset from local files, never the network.

    Sources, in the order they are looked for:

    - `"digits"`: scikit-learn's bundled 8x8 digits (1,797 images, values
      0..16 divided by 16), split once, stratified, with a fixed seed into
      1,437 training and 360 test images. Needs no file; `path` must be `None`.
    - `"mnist"`: `path` (an `.npz` with `x_train`, `y_train`, `x_test`,
      `y_test` as Keras stores them, or a directory holding the four original
      IDX `.gz` files), else `mnist.npz` in the Keras cache directory
      `$KERAS_HOME/datasets/` (default `~/.keras/datasets/`). The cached copy
      must be the exact file Keras downloads (its SHA-256 is checked).
    - `"fashion_mnist"`: `path` (a directory holding the four IDX `.gz` files,
      or an `.npz` as above), else the directory `fashion-mnist/` in the Keras
      cache directory, where Keras keeps `train-labels-idx1-ubyte.gz`,
      `train-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz` and
      `t10k-images-idx3-ubyte.gz`.
    - `"cifar10"`: `path` (an `.npz` in the layout of
      `keras.datasets.cifar10.load_data()`: `x` `(N, 32, 32, 3)` uint8, `y`
      `(N, 1)`, or a `cifar-10-batches-py` directory of the official python
      batches), else, in the Keras cache directory, `cifar10.npz`, then
      `cifar-10-batches-py-target/cifar-10-batches-py/` (Keras 3 extraction),
      then `cifar-10-batches-py/` (older Keras). The official batches are read
      with an unpickler that only rebuilds numpy arrays.

    Args:
        name: one of `"digits"`, `"mnist"`, `"fashion_mnist"`, `"cifar10"`.
        path: optional file or directory to read instead of the Keras cache
            (see above). Defaults to `None`.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: images float32 in `[0, 1]` of
        shape `(N, H, W, C)` and labels int64 of shape `(N,)`.

    Raises:
        ValueError: unknown `name`; a `path` given for `"digits"`; a file that
            is corrupt or does not hold the expected arrays.
        TypeError: `name` or `path` of the wrong type.
        FileNotFoundError: the file is not there. The message names the file
            and the directory to put it in.

    Example:

        >>> (x_train, y_train), (x_test, y_test) = load_dataset("digits")
        >>> x_train.shape, x_test.shape
        ((1437, 8, 8, 1), (360, 8, 8, 1))
        >>> x_train.dtype.name, y_train.dtype.name
        ('float32', 'int64')
        >>> float(x_train.min()), float(x_train.max())
        (0.0, 1.0)
    """
    _validation.check_type("name", name, str)
    _validation.check_choice("name", name, DATASET_NAMES)
    if path is not None:
        _validation.check_type("path", path, (str, os.PathLike), "a str or os.PathLike")
        path = os.path.expanduser(os.fspath(path))
    if name == "digits":
        if path is not None:
            raise ValueError(
                "The 'digits' dataset is bundled with scikit-learn and reads no "
                f"file: leave `path` unset. Received: path={path!r}"
            )
        return _load_digits()
    if name == "cifar10":
        (x_train, y_train), (x_test, y_test) = _load_cifar10(path)
    else:
        (x_train, y_train), (x_test, y_test) = _load_mnist_like(name, path)
    return _to_float((x_train, y_train), name), _to_float((x_test, y_test), name)


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


def _load_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    y = y.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=_DIGITS_TEST_SIZE, stratify=y, random_state=_DIGITS_SEED
    )
    return (x_train, y_train), (x_test, y_test)


def _keras_datasets_dir():
    """The directory where Keras caches datasets, as Keras itself resolves it.

    `$KERAS_HOME/datasets` when `KERAS_HOME` is set, else `~/.keras/datasets`
    (or `/tmp/.keras/datasets` when the home directory is not writable, as in
    Keras). Read from the environment at every call.

    Returns:
        The absolute path, as a string. The directory may not exist.
    """
    home = os.environ.get("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        if not os.access(base, os.W_OK):
            base = "/tmp"
        home = os.path.join(base, ".keras")
    return os.path.abspath(os.path.join(os.path.expanduser(home), "datasets"))


def _no_download_hint(name):
    return (
        "keras_advguard never downloads data. Put the file there (any machine "
        f"that ran `keras.datasets.{name}.load_data()` has it in "
        "~/.keras/datasets/), set KERAS_HOME to the directory whose `datasets/` "
        f"holds it, or pass `load_dataset({name!r}, path=...)`."
    )


def _check_exists(path, name):
    if not os.path.exists(path):
        raise FileNotFoundError(f"No file or directory at path={path!r} for the {name!r} dataset.")


def _load_mnist_like(name, path):
    if path is not None:
        _check_exists(path, name)
        if os.path.isdir(path):
            return _read_idx_dir(path)
        return _read_npz(path)
    cache = _keras_datasets_dir()
    if name == "mnist":
        file = os.path.join(cache, "mnist.npz")
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"MNIST file 'mnist.npz' not found in directory '{cache}' "
                f"(looked for {file}). " + _no_download_hint(name)
            )
        _check_sha256(file, _MNIST_SHA256)
        return _read_npz(file)
    directory = os.path.join(cache, "fashion-mnist")
    missing = [f for f in _IDX_FILES if not os.path.isfile(os.path.join(directory, f))]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files not found in directory '{directory}': missing "
            f"{', '.join(missing)}. It must hold the four files "
            f"{', '.join(_IDX_FILES)}. " + _no_download_hint(name)
        )
    return _read_idx_dir(directory)


def _load_cifar10(path):
    if path is not None:
        _check_exists(path, "cifar10")
        if not os.path.isdir(path):
            return _read_npz(path)
        inner = os.path.join(path, "cifar-10-batches-py")
        return _read_cifar_batches(inner if os.path.isdir(inner) else path)
    cache = _keras_datasets_dir()
    npz = os.path.join(cache, "cifar10.npz")
    if os.path.isfile(npz):
        return _read_npz(npz)
    candidates = [
        os.path.join(cache, "cifar-10-batches-py-target", "cifar-10-batches-py"),
        os.path.join(cache, "cifar-10-batches-py"),
    ]
    for directory in candidates:
        if os.path.isdir(directory):
            return _read_cifar_batches(directory)
    raise FileNotFoundError(
        f"CIFAR-10 not found in directory '{cache}': looked for the file "
        f"'cifar10.npz' (arrays x_train, y_train, x_test, y_test as "
        f"keras.datasets.cifar10.load_data() returns them) and the directories "
        f"{candidates[0]} and {candidates[1]} (the official python batches "
        f"{', '.join(_CIFAR10_BATCHES)}). " + _no_download_hint("cifar10")
    )


# --------------------------------------------------------------------------
# Readers: each returns raw `(x_train, y_train), (x_test, y_test)`.
# --------------------------------------------------------------------------


def _check_sha256(file, expected):
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ValueError(
            f"The file {file} is corrupt or is not the Keras MNIST file: its "
            f"SHA-256 is {digest.hexdigest()}, expected {expected}. Replace it "
            "with the file `keras.datasets.mnist.load_data()` downloads, or pass "
            "your own arrays with `path=`."
        )


def _read_npz(file):
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(file, allow_pickle=False) as archive:
            found = sorted(archive.files)
            arrays = [archive[k] for k in keys if k in found]
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"Could not read {file} as a NumPy .npz archive of numeric arrays; it "
            f"is corrupt or not an .npz file ({type(e).__name__}: {e})."
        ) from e
    if len(arrays) != len(keys):
        raise ValueError(
            f"The .npz file {file} must hold the arrays {', '.join(keys)}. Received: arrays {found}"
        )
    x_train, y_train, x_test, y_test = arrays
    return (x_train, y_train), (x_test, y_test)


def _read_idx(file, magic, ndim):
    try:
        with gzip.open(file, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(
            f"Could not read {file} as a gzip-compressed IDX file; it is corrupt "
            f"({type(e).__name__}: {e})."
        ) from e
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise ValueError(f"The IDX file {file} is truncated: {len(data)} bytes.")
    found, *dims = np.frombuffer(data, ">u4", count=1 + ndim).tolist()
    size = int(np.prod(dims))
    if found != magic or len(data) != header + size:
        raise ValueError(
            f"The IDX file {file} is corrupt or of the wrong kind: expected magic "
            f"number {magic} and {header + size} bytes. Received: magic number "
            f"{found}, {len(data)} bytes"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _read_idx_dir(directory):
    missing = [f for f in _IDX_FILES if not os.path.isfile(os.path.join(directory, f))]
    if missing:
        raise FileNotFoundError(
            f"Files not found in directory '{directory}': missing "
            f"{', '.join(missing)}. An IDX directory must hold the four files "
            f"{', '.join(_IDX_FILES)}."
        )
    files = [os.path.join(directory, f) for f in _IDX_FILES]
    y_train = _read_idx(files[0], 2049, 1)
    x_train = _read_idx(files[1], 2051, 3)
    y_test = _read_idx(files[2], 2049, 1)
    x_test = _read_idx(files[3], 2051, 3)
    return (x_train, y_train), (x_test, y_test)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for the official CIFAR batches: rebuilds numpy arrays only."""

    _allowed = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        }
    )

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"Refusing to load `{module}.{name}` from a CIFAR-10 batch: only "
            "numpy arrays are allowed. The file is corrupt or not an official "
            "CIFAR-10 python batch."
        )


def _read_cifar_batch(file):
    try:
        with open(file, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"])
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        KeyError,
        TypeError,
        ValueError,
    ) as e:
        raise ValueError(
            f"Could not read {file} as an official CIFAR-10 python batch (a "
            f"pickled dict with b'data' (N, 3072) uint8 and b'labels'): "
            f"{type(e).__name__}: {e}"
        ) from e
    return images, labels.reshape(-1, 1)


def _read_cifar_batches(directory):
    missing = [b for b in _CIFAR10_BATCHES if not os.path.isfile(os.path.join(directory, b))]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 batches not found in directory '{directory}': missing {', '.join(missing)}."
        )
    parts = [_read_cifar_batch(os.path.join(directory, b)) for b in _CIFAR10_BATCHES]
    x_train = np.concatenate([x for x, _ in parts[:-1]])
    y_train = np.concatenate([y for _, y in parts[:-1]])
    return (x_train, y_train), parts[-1]


def _to_float(split, name):
    """Check raw uint8 images and labels; return float32 `[0, 1]` and int64."""
    x, y = split
    height, width, channels = IMAGE_SHAPES[name]
    allowed = [(height, width, channels)]
    if channels == 1:
        allowed.insert(0, (height, width))
    if x.dtype != np.uint8 or x.ndim < 3 or x.shape[1:] not in allowed:
        shapes = " or ".join(str(("N",) + s).replace("'", "") for s in allowed)
        raise ValueError(
            f"The {name!r} images must be a uint8 array of shape {shapes}. "
            f"Received: dtype={x.dtype}, shape={x.shape}"
        )
    if y.dtype.kind not in "iu" or y.shape not in ((len(x),), (len(x), 1)):
        raise ValueError(
            f"The {name!r} labels must be integers of shape ({len(x)},) or "
            f"({len(x)}, 1), one per image. Received: dtype={y.dtype}, shape={y.shape}"
        )
    y = y.reshape(-1).astype("int64")
    if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise ValueError(
            f"The {name!r} labels must lie in [0, {NUM_CLASSES - 1}]. "
            f"Received: labels in [{y.min()}, {y.max()}]"
        )
    x = x.reshape(len(x), height, width, channels).astype("float32")
    x /= 255.0
    return x, y
