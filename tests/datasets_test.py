import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from keras_advguard.datasets import DATASET_NAMES, load_dataset, validation_split

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_FILE = SHARED_DATA / "mnist.npz"
CIFAR_SUBSET = SHARED_DATA / "cifar10-subset.npz"

# Class counts published in shared/data/README.md.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR_SUBSET_TRAIN_COUNTS = [396, 366, 420, 384, 422, 393, 414, 385, 407, 413]
CIFAR_SUBSET_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]

IDX_NAMES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)


def _needs(file):
    if not file.is_file():
        pytest.skip(f"{file} is absent")


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras home: `$KERAS_HOME/datasets/` exists and is empty."""
    home = tmp_path / "keras_home"
    (home / "datasets").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def _files_under(directory):
    return sorted(str(p.relative_to(directory)) for p in Path(directory).rglob("*"))


# --------------------------------------------------------------------------
# Raw-format writers (the layouts Keras stores), used as hand-made fixtures.
# --------------------------------------------------------------------------


def _write_idx(directory, x_train, y_train, x_test, y_test):
    """Write the four gzip IDX files, headers built by hand (big-endian)."""
    directory.mkdir(parents=True, exist_ok=True)

    def labels(y):
        return (2049).to_bytes(4, "big") + len(y).to_bytes(4, "big") + y.tobytes()

    def images(x):
        n, h, w = x.shape
        header = b"".join(v.to_bytes(4, "big") for v in (2051, n, h, w))
        return header + x.tobytes()

    payloads = (labels(y_train), images(x_train), labels(y_test), images(x_test))
    for name, payload in zip(IDX_NAMES, payloads, strict=True):
        with gzip.open(directory / name, "wb") as f:
            f.write(payload)


def _small_uint8(seed, n, shape):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n,) + shape, dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.uint8)
    return x, y


def _write_cifar_batches(directory, per_batch=3):
    """Official CIFAR-10 python batches: dicts of bytes keys, rows R|G|B."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data, labels = {}, {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data[name] = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels[name] = rng.integers(0, 10, size=per_batch).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels[name],
            b"data": data[name],
            b"filenames": [b"img.png"] * per_batch,
        }
        with open(directory / name, "wb") as f:
            # Protocol 4: bytes stay bytes, as the Python 2 originals decode
            # with `encoding="bytes"` (protocol 2 from Python 3 needs _codecs).
            pickle.dump(batch, f, protocol=4)
    return data, labels


def _cifar_reference(rows):
    """Channels-last images from CIFAR rows, channel by channel."""
    images = np.empty((len(rows), 32, 32, 3), np.float32)
    for c in range(3):
        images[..., c] = rows[:, c * 1024 : (c + 1) * 1024].reshape(-1, 32, 32)
    return images / 255.0


# --------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------


def test_digits_shapes_dtypes_range():
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    assert x_train.shape == (1437, 8, 8, 1)
    assert x_test.shape == (360, 8, 8, 1)
    assert y_train.shape == (1437,) and y_test.shape == (360,)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert set(np.unique(y_train)) == set(range(10))
    assert set(np.unique(y_test)) == set(range(10))


def test_digits_is_a_stratified_partition_of_sklearn_digits():
    from sklearn.datasets import load_digits

    reference_x, reference_y = load_digits(return_X_y=True)
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    ours = np.concatenate([x_train, x_test]).reshape(-1, 64) * 16
    ours_y = np.concatenate([y_train, y_test])
    # Same multiset of (image, label) rows as scikit-learn's bundled set.
    key = np.column_stack([ours, ours_y])
    reference_key = np.column_stack([reference_x, reference_y])
    np.testing.assert_array_equal(
        key[np.lexsort(key.T[::-1])], reference_key[np.lexsort(reference_key.T[::-1])]
    )
    # Stratified: each class's share of the test set is within one image.
    expected = np.bincount(reference_y) * 360 / len(reference_y)
    assert np.all(np.abs(np.bincount(y_test) - expected) <= 1)


def test_digits_split_is_deterministic():
    (a, ya), (b, yb) = load_dataset("digits")
    (c, yc), (d, yd) = load_dataset("digits")
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(ya, yc)
    np.testing.assert_array_equal(b, d)
    np.testing.assert_array_equal(yb, yd)


def test_digits_refuses_a_path():
    with pytest.raises(ValueError, match="bundled with scikit-learn"):
        load_dataset("digits", path="/tmp/whatever.npz")


# --------------------------------------------------------------------------
# Name and argument checks
# --------------------------------------------------------------------------


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet")
    for name in DATASET_NAMES:
        assert repr(name) in str(info.value)
    assert "Received: name='imagenet'" in str(info.value)


def test_bad_types():
    with pytest.raises(TypeError, match="name"):
        load_dataset(3)
    with pytest.raises(TypeError, match="path"):
        load_dataset("mnist", path=3)


# --------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------


def test_mnist_from_explicit_path():
    _needs(MNIST_FILE)
    (x_train, y_train), (x_test, y_test) = load_dataset("mnist", path=MNIST_FILE)
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(y_test).tolist() == MNIST_TEST_COUNTS
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    # README: training-pixel mean 0.1307, standard deviation 0.3081.
    assert abs(float(x_train.mean()) - 0.1307) < 1e-4
    assert abs(float(x_train.std()) - 0.3081) < 1e-4
    with np.load(MNIST_FILE) as raw:
        np.testing.assert_array_equal(x_test[123, :, :, 0] * 255, raw["x_test"][123])


def test_mnist_from_keras_home_cache(keras_home):
    _needs(MNIST_FILE)
    os.symlink(MNIST_FILE, keras_home / "datasets" / "mnist.npz")
    before = _files_under(keras_home)
    (x_train, y_train), (x_test, y_test) = load_dataset("mnist")
    assert x_train.shape == (60000, 28, 28, 1) and y_test.shape == (10000,)
    assert np.bincount(y_test).tolist() == MNIST_TEST_COUNTS
    assert _files_under(keras_home) == before  # the cache is only read


def test_mnist_absent_names_file_and_directory(keras_home):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist")
    message = str(info.value)
    assert "'mnist.npz'" in message
    assert str(keras_home / "datasets") in message
    assert "path=" in message
    assert _files_under(keras_home) == ["datasets"]  # nothing written


def test_mnist_default_cache_is_home_dot_keras(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / ".keras" / "datasets")):
        load_dataset("mnist")
    assert list(tmp_path.iterdir()) == []


def test_mnist_explicit_path_absent(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_dataset("mnist", path=tmp_path / "nowhere.npz")


def test_mnist_corrupt_cache_file_fails_the_checksum(keras_home):
    _needs(MNIST_FILE)
    data = MNIST_FILE.read_bytes()
    (keras_home / "datasets" / "mnist.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="SHA-256"):
        load_dataset("mnist")


def test_corrupt_explicit_file(tmp_path):
    bad = tmp_path / "mnist.npz"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="corrupt"):
        load_dataset("mnist", path=bad)


def test_npz_missing_arrays(tmp_path):
    file = tmp_path / "partial.npz"
    np.savez(file, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="y_train"):
        load_dataset("mnist", path=file)


def test_npz_wrong_shapes_dtypes_and_labels(tmp_path):
    x, y = _small_uint8(0, 4, (28, 28))
    cases = {
        "shape": dict(x_train=x[:, :20], y_train=y, x_test=x, y_test=y),
        "uint8": dict(x_train=x / 255.0, y_train=y, x_test=x, y_test=y),
        "one per image": dict(x_train=x, y_train=y[:3], x_test=x, y_test=y),
        r"\[0, 9\]": dict(x_train=x, y_train=y + 10, x_test=x, y_test=y),
    }
    for match, arrays in cases.items():
        file = tmp_path / "bad.npz"
        np.savez(file, **arrays)
        with pytest.raises(ValueError, match=match):
            load_dataset("mnist", path=file)


def test_mnist_from_idx_directory_and_channel_axis(tmp_path):
    x_train, y_train = _small_uint8(1, 5, (28, 28))
    x_test, y_test = _small_uint8(2, 3, (28, 28))
    _write_idx(tmp_path / "idx", x_train, y_train, x_test, y_test)
    (a, ya), (b, yb) = load_dataset("mnist", path=tmp_path / "idx")
    np.testing.assert_array_equal(a[..., 0], x_train / np.float32(255))
    np.testing.assert_array_equal(ya, y_train)
    np.testing.assert_array_equal(b[..., 0], x_test / np.float32(255))
    np.testing.assert_array_equal(yb, y_test)
    # An .npz holding (N, 28, 28, 1) images and (N, 1) labels reads the same.
    file = tmp_path / "channels.npz"
    np.savez(
        file,
        x_train=x_train[..., None],
        y_train=y_train[:, None],
        x_test=x_test[..., None],
        y_test=y_test[:, None],
    )
    (c, yc), (d, yd) = load_dataset("mnist", path=file)
    np.testing.assert_array_equal(c, a)
    np.testing.assert_array_equal(yd, yb)


# --------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------


def test_fashion_mnist_from_keras_cache_directory(keras_home):
    x_train, y_train = _small_uint8(3, 6, (28, 28))
    x_test, y_test = _small_uint8(4, 2, (28, 28))
    _write_idx(keras_home / "datasets" / "fashion-mnist", x_train, y_train, x_test, y_test)
    (a, ya), (b, yb) = load_dataset("fashion_mnist")
    assert a.shape == (6, 28, 28, 1) and b.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(a[..., 0] * 255, x_train)
    np.testing.assert_array_equal(ya, y_train)
    np.testing.assert_array_equal(b[..., 0] * 255, x_test)
    np.testing.assert_array_equal(yb, y_test)


def test_fashion_mnist_absent_names_files_and_directory(keras_home):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion_mnist")
    message = str(info.value)
    assert str(keras_home / "datasets" / "fashion-mnist") in message
    for name in IDX_NAMES:
        assert name in message
    assert "path=" in message


def test_fashion_mnist_one_file_missing(tmp_path):
    x, y = _small_uint8(5, 2, (28, 28))
    _write_idx(tmp_path / "f", x, y, x, y)
    (tmp_path / "f" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion_mnist", path=tmp_path / "f")
    assert "missing t10k-labels-idx1-ubyte.gz" in str(info.value)


def test_fashion_mnist_truncated_idx(tmp_path):
    x, y = _small_uint8(6, 2, (28, 28))
    _write_idx(tmp_path / "f", x, y, x, y)
    with gzip.open(tmp_path / "f" / "train-images-idx3-ubyte.gz", "rb") as f:
        payload = f.read()
    with gzip.open(tmp_path / "f" / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(payload[:-10])
    with pytest.raises(ValueError, match="corrupt"):
        load_dataset("fashion_mnist", path=tmp_path / "f")
    # A file that is not gzip at all.
    (tmp_path / "f" / "train-images-idx3-ubyte.gz").write_bytes(b"plain bytes")
    with pytest.raises(ValueError, match="gzip"):
        load_dataset("fashion_mnist", path=tmp_path / "f")


# --------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------


def test_cifar10_subset_from_path():
    _needs(CIFAR_SUBSET)
    (x_train, y_train), (x_test, y_test) = load_dataset("cifar10", path=CIFAR_SUBSET)
    assert x_train.shape == (4000, 32, 32, 3) and x_test.shape == (20, 32, 32, 3)
    assert y_train.shape == (4000,) and y_test.dtype == np.int64
    assert np.bincount(y_train).tolist() == CIFAR_SUBSET_TRAIN_COUNTS
    assert y_test.tolist() == CIFAR_SUBSET_TEST_LABELS
    with np.load(CIFAR_SUBSET) as raw:
        np.testing.assert_array_equal(x_train[7] * 255, raw["x_train"][7])


def test_cifar10_npz_in_keras_cache(keras_home):
    _needs(CIFAR_SUBSET)
    os.symlink(CIFAR_SUBSET, keras_home / "datasets" / "cifar10.npz")
    (_, _), (x_test, y_test) = load_dataset("cifar10")
    assert x_test.shape == (20, 32, 32, 3)
    assert y_test.tolist() == CIFAR_SUBSET_TEST_LABELS


@pytest.mark.parametrize(
    "layout", ["cifar-10-batches-py-target/cifar-10-batches-py", "cifar-10-batches-py"]
)
def test_cifar10_official_batches_in_keras_cache(keras_home, layout):
    data, labels = _write_cifar_batches(keras_home / "datasets" / layout)
    (x_train, y_train), (x_test, y_test) = load_dataset("cifar10")
    rows = np.concatenate([data[f"data_batch_{i}"] for i in range(1, 6)])
    np.testing.assert_allclose(x_train, _cifar_reference(rows), rtol=1e-6)
    np.testing.assert_allclose(x_test, _cifar_reference(data["test_batch"]), rtol=1e-6)
    assert y_train.tolist() == sum((labels[f"data_batch_{i}"] for i in range(1, 6)), [])
    assert y_test.tolist() == labels["test_batch"]


def test_cifar10_official_batches_from_path(tmp_path):
    data, _ = _write_cifar_batches(tmp_path / "cifar-10-batches-py", per_batch=2)
    # Either the batches directory itself or its parent.
    for path in (tmp_path / "cifar-10-batches-py", tmp_path):
        (_, _), (x_test, _) = load_dataset("cifar10", path=path)
        np.testing.assert_allclose(x_test, _cifar_reference(data["test_batch"]))


class _Gadget:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_cifar10_batches_refuse_arbitrary_pickles(tmp_path):
    _write_cifar_batches(tmp_path / "b", per_batch=1)
    target = str(tmp_path / "created_by_pickle")
    with open(tmp_path / "b" / "test_batch", "wb") as f:
        pickle.dump({b"data": _Gadget(target), b"labels": [0]}, f)
    with pytest.raises(ValueError, match="Refusing to load"):
        load_dataset("cifar10", path=tmp_path / "b")
    assert not os.path.exists(target)


def test_cifar10_absent_names_files_and_directory(keras_home):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10")
    message = str(info.value)
    assert "'cifar10.npz'" in message
    assert str(keras_home / "datasets") in message
    assert "cifar-10-batches-py" in message
    assert "path=" in message


def test_cifar10_refuses_grayscale(tmp_path):
    x, y = _small_uint8(7, 3, (32, 32))
    file = tmp_path / "gray.npz"
    np.savez(file, x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match="32, 32, 3"):
        load_dataset("cifar10", path=file)


# --------------------------------------------------------------------------
# validation_split
# --------------------------------------------------------------------------


def test_validation_split_is_a_stratified_partition():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    x = np.arange(len(y) * 2).reshape(-1, 2)
    (x_fit, y_fit), (x_val, y_val) = validation_split(x, y, fraction=0.2, seed=3)
    assert len(x_val) == 20 and len(x_fit) == 80
    assert np.bincount(y_val).tolist() == [2, 4, 6, 8]
    # A partition: every row exactly once, labels still attached to their rows.
    rows = np.concatenate([x_fit, x_val])
    np.testing.assert_array_equal(np.sort(rows[:, 0]), x[:, 0])
    np.testing.assert_array_equal(np.concatenate([y_fit, y_val]), y[rows[:, 0] // 2])


def test_validation_split_is_seeded():
    y = np.tile(np.arange(5), 20)
    x = np.arange(100, dtype="float32")
    first = validation_split(x, y, fraction=0.25, seed=1)
    again = validation_split(x, y, fraction=0.25, seed=1)
    other = validation_split(x, y, fraction=0.25, seed=2)
    np.testing.assert_array_equal(first[1][0], again[1][0])
    assert not np.array_equal(np.sort(first[1][0]), np.sort(other[1][0]))


def test_validation_split_errors():
    x, y = np.zeros((10, 2)), np.arange(10) % 2
    with pytest.raises(ValueError, match="fraction"):
        validation_split(x, y, fraction=1.0)
    with pytest.raises(ValueError, match="fraction"):
        validation_split(x, y, fraction=0)
    with pytest.raises(ValueError, match="same length"):
        validation_split(x, y[:9])
    with pytest.raises(TypeError, match="y"):
        validation_split(x, y.astype("float32"))
    with pytest.raises(ValueError, match="stratified"):
        validation_split(np.zeros(3), np.array([0, 1, 1]), fraction=0.5)
