"""A save that fails half-way keeps the old file; a damaged file is reported as such.

Before the fix, Keras wrote `DetectorModel.save` and a sanitized model's
`save` in place: a full disk half-way through destroyed the old model. A
truncated `.keras` file gave Keras's "File not found" for a file that
exists. Here the disk is "full" after a few kilobytes: every `open(...,
"w...")` below the test folder returns a file whose writes fail with
`OSError(ENOSPC)` past that size.
"""

import builtins
import errno
import os

import keras
import numpy as np
import pytest

import keras_advguard
from keras_advguard import DetectorModel, MedianSanitizer, _files, sanitize


def _classifier():
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(3, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


X = np.random.default_rng(0).uniform(size=(3, 6, 6, 1)).astype("float32")


class _FullDiskFile:
    """A file object whose writes fail with ENOSPC past `limit` bytes."""

    def __init__(self, file, limit):
        self._file, self._left = file, limit

    def write(self, data):
        if len(data) > self._left:
            self._file.write(data[: self._left])
            self._left = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def __iter__(self):
        return iter(self._file)


@pytest.fixture
def full_disk(monkeypatch, tmp_path):
    """After this fixture, files opened for writing under `tmp_path` fill up at 2 kB."""
    real_open = builtins.open

    def opener(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        inside = isinstance(file, (str, os.PathLike)) and os.path.abspath(
            os.fspath(file)
        ).startswith(str(tmp_path))
        if inside and any(m in mode for m in "wax"):
            return _FullDiskFile(handle, 2048)
        return handle

    def start():
        monkeypatch.setattr(builtins, "open", opener)

    return start


def _save_kinds():
    return {
        "DetectorModel.save": lambda: DetectorModel(_classifier(), layers=["conv1"]),
        "sanitized model.save": lambda: sanitize(_classifier(), "conv1", MedianSanitizer()),
    }


@pytest.mark.parametrize("kind", sorted(_save_kinds()))
def test_a_full_disk_keeps_the_old_model(kind, tmp_path, full_disk):
    model = _save_kinds()[kind]()
    path = tmp_path / "model.keras"
    model.save(path)
    before = path.read_bytes()
    full_disk()
    with pytest.raises(OSError) as info:
        model.save(path)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.keras"]


def test_save_model_keeps_the_old_file_on_a_full_disk(tmp_path, full_disk):
    model = _classifier()
    path = tmp_path / "model.keras"
    keras_advguard.save_model(model, path)
    expected = model(X)
    full_disk()
    with pytest.raises(OSError):
        keras_advguard.save_model(_classifier(), path)
    assert os.listdir(tmp_path) == ["model.keras"]
    np.testing.assert_allclose(keras_advguard.load_model(path)(X), expected, rtol=1e-6)


def test_write_atomic_removes_its_temporary_when_the_writer_raises(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        _files.write_atomic(target, write)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "model.keras"
    stale = tmp_path / f".model.keras.{dead.pid}.{'a' * 32}.tmp.keras"
    live = tmp_path / f".model.keras.{os.getppid()}.{'b' * 32}.tmp.keras"
    other = tmp_path / f".other.keras.{dead.pid}.{'c' * 32}.tmp.keras"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    keras_advguard.save_model(_classifier(), target)
    assert sorted(os.listdir(tmp_path)) == sorted([target.name, live.name, other.name])


@pytest.mark.parametrize("cut", [0, 100, 0.5, -30])
def test_a_truncated_keras_file_names_the_path_and_the_damage(tmp_path, cut):
    path = tmp_path / "model.keras"
    keras_advguard.save_model(_classifier(), path)
    data = path.read_bytes()
    size = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
    path.write_bytes(data[:size])
    with pytest.raises(ValueError, match=r"model\.keras.*truncated or corrupt") as info:
        keras_advguard.load_model(path)
    assert "File not found" not in str(info.value)


def test_a_corrupt_member_is_reported(tmp_path):
    path = tmp_path / "model.keras"
    keras_advguard.save_model(_classifier(), path)
    data = bytearray(path.read_bytes())
    # Flip bytes in the middle of the archive (inside a member's data).
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.keras.*truncated or corrupt"):
        keras_advguard.load_model(path)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.keras"):
        keras_advguard.load_model(tmp_path / "nothing.keras")


def test_an_unknown_class_says_what_to_import(tmp_path):
    @keras.saving.register_keras_serializable(package="reliability_test")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    inputs = keras.Input((3,))
    model = keras.Model(inputs, Doubler()(inputs))
    path = tmp_path / "model.keras"
    keras_advguard.save_model(model, path)
    keras.saving.get_custom_objects().pop("reliability_test>Doubler")
    with pytest.raises(TypeError, match=r"model\.keras.*'Doubler' is unknown; import the module"):
        keras_advguard.load_model(path)


def test_save_model_checks_its_arguments(tmp_path):
    model = _classifier()
    with pytest.raises(ValueError, match=r"`filepath` must end in `\.keras`"):
        keras_advguard.save_model(model, tmp_path / "model.h5")
    with pytest.raises(TypeError, match="`model`"):
        keras_advguard.save_model("model", tmp_path / "model.keras")
    keras_advguard.save_model(model, tmp_path / "model.keras")
    with pytest.raises(FileExistsError, match="overwrite=False"):
        keras_advguard.save_model(model, tmp_path / "model.keras", overwrite=False)
    with pytest.raises(ValueError, match="zipped=False"):
        keras_advguard.save_model(model, tmp_path / "other.keras", zipped=False)
