import json
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_advguard.datasets import load_dataset
from keras_advguard.models import (
    CIFAR_CNN_SANITIZED_LAYERS,
    DIGITS_CNN_SANITIZED_LAYERS,
    MNIST_CNN_SANITIZED_LAYERS,
    cifar_cnn,
    digits_cnn,
    load_or_train,
    mnist_cnn,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# epochs=5 with batch_size=16 reaches about 0.96 on the digits test split in
# about a second of training on 2 CPU cores.
DIGITS_RUN = dict(epochs=5, batch_size=16, seed=0)


def _needs(file):
    if not file.is_file():
        pytest.skip(f"{file} is absent")


def _check_softmax_head(model, num_classes):
    head = model.layers[-1]
    assert head.name == "predictions"
    assert isinstance(head, keras.layers.Dense)
    assert head.units == num_classes
    assert head.activation is keras.activations.softmax
    assert model.output_shape == (None, num_classes)


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


def test_mnist_cnn_is_the_carlini_wagner_network():
    model = mnist_cnn()
    names = [layer.name for layer in model.layers[1:]]
    assert names == [
        "conv1",
        "conv2",
        "pool3",
        "conv4",
        "conv5",
        "pool6",
        "flatten",
        "fc7",
        "drop7",
        "fc8",
        "predictions",
    ]
    _check_softmax_head(model, 10)
    shapes = {name: model.get_layer(name).output.shape[1:] for name in names}
    # 3x3 valid convolutions and 2x2 pools: 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4.
    assert shapes["conv1"] == (26, 26, 32) and shapes["conv2"] == (24, 24, 32)
    assert shapes["conv4"] == (10, 10, 64) and shapes["conv5"] == (8, 8, 64)
    assert shapes["flatten"] == (4 * 4 * 64,)
    assert shapes["fc7"] == (200,) and shapes["fc8"] == (200,)
    # Weights counted by hand, layer by layer.
    expected = (
        (9 * 1 * 32 + 32)
        + (9 * 32 * 32 + 32)
        + (9 * 32 * 64 + 64)
        + (9 * 64 * 64 + 64)
        + (1024 * 200 + 200)
        + (200 * 200 + 200)
        + (200 * 10 + 10)
    )
    assert model.count_params() == expected == 312202
    for name in MNIST_CNN_SANITIZED_LAYERS:
        layer = model.get_layer(name)
        assert isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
        assert layer.activation is keras.activations.relu


def test_digits_and_cifar_builders():
    digits = digits_cnn()
    assert [layer.name for layer in digits.layers[1:]] == [
        "conv1",
        "conv2",
        "pool3",
        "flatten",
        "fc4",
        "predictions",
    ]
    _check_softmax_head(digits, 10)
    assert digits.get_layer("conv2").output.shape[1:] == (8, 8, 32)  # "same"
    cifar = cifar_cnn(num_classes=7)
    _check_softmax_head(cifar, 7)
    assert cifar.get_layer("conv5").output.shape[1:] == (16, 16, 64)
    assert cifar.get_layer("flatten").output.shape[1:] == (8 * 8 * 64,)
    assert cifar.get_layer("fc7").output.shape[1:] == (128,)
    for model, names in (
        (digits, DIGITS_CNN_SANITIZED_LAYERS),
        (cifar, CIFAR_CNN_SANITIZED_LAYERS),
    ):
        for name in names:
            assert isinstance(model.get_layer(name), (keras.layers.Conv2D, keras.layers.Dense))


def test_builders_output_probabilities_for_other_shapes():
    rng = np.random.default_rng(0)
    for builder, shape in (
        (mnist_cnn, (32, 32, 3)),
        (digits_cnn, (28, 28, 1)),
        (cifar_cnn, (16, 16, 1)),
    ):
        model = builder(input_shape=shape, num_classes=3)
        x = rng.random((2,) + shape).astype("float32")
        probabilities = keras.ops.convert_to_numpy(model(x))
        assert probabilities.shape == (2, 3)
        np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)


def test_builder_argument_errors():
    with pytest.raises(ValueError, match="input_shape"):
        mnist_cnn(input_shape=(28, 28))
    with pytest.raises(ValueError, match="input_shape"):
        digits_cnn(input_shape=(8, 0, 1))
    with pytest.raises(TypeError, match="input_shape"):
        digits_cnn(input_shape=8)
    with pytest.raises(ValueError, match="num_classes"):
        cifar_cnn(num_classes=1)
    with pytest.raises(TypeError, match="num_classes"):
        cifar_cnn(num_classes="10")


# --------------------------------------------------------------------------
# load_or_train
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    cache = tmp_path_factory.mktemp("models")
    model, info = load_or_train("digits_cnn", "digits", cache_dir=cache, **DIGITS_RUN)
    return cache, model, info


def test_load_or_train_trains_caches_and_reports(trained_digits):
    cache, model, info = trained_digits
    assert info["from_cache"] is False
    assert info["test_accuracy"] >= 0.9
    assert (info["num_train"], info["num_test"]) == (1437, 360)
    # The reported accuracy is the model's accuracy on the test split.
    (_, _), (x_test, y_test) = load_dataset("digits")
    predicted = np.argmax(model.predict(x_test, verbose=0), axis=-1)
    assert info["test_accuracy"] == pytest.approx(np.mean(predicted == y_test))
    # One .keras file and its JSON sidecar, nothing else (no temporary files).
    stem = Path(info["path"]).stem
    assert stem.startswith("digits_cnn-digits-e5-b16-s0-")
    assert sorted(os.listdir(cache)) == [stem + ".json", stem + ".keras"]
    sidecar = json.loads((cache / (stem + ".json")).read_text())
    assert sidecar["test_accuracy"] == info["test_accuracy"]
    assert sidecar["epochs"] == 5 and sidecar["seed"] == 0


def test_second_call_loads_without_training(trained_digits, monkeypatch):
    cache, model, info = trained_digits

    def no_fit(*args, **kwargs):
        raise AssertionError("load_or_train retrained a cached model")

    monkeypatch.setattr(keras.Model, "fit", no_fit)
    start = time.perf_counter()
    again, again_info = load_or_train("digits_cnn", "digits", cache_dir=cache, **DIGITS_RUN)
    elapsed = time.perf_counter() - start
    assert again_info["from_cache"] is True
    assert again_info["test_accuracy"] == info["test_accuracy"]
    assert again_info["path"] == info["path"]
    assert elapsed < 10
    x = load_dataset("digits")[1][0][:50]
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    assert again.get_layer("fc4").name == "fc4"


def test_lost_sidecar_is_measured_again(trained_digits, tmp_path, monkeypatch):
    cache, _, info = trained_digits
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(info["path"], copy)
    monkeypatch.setattr(keras.Model, "fit", None)
    _, again = load_or_train("digits_cnn", "digits", cache_dir=copy, **DIGITS_RUN)
    assert again["from_cache"] is True
    assert again["test_accuracy"] == pytest.approx(info["test_accuracy"])
    assert again["train_seconds"] is None
    assert sorted(p.suffix for p in copy.iterdir()) == [".json", ".keras"]


def test_default_cache_dir_is_keras_advguard_home(trained_digits, tmp_path, monkeypatch):
    _, _, info = trained_digits
    (tmp_path / "models").mkdir()
    shutil.copy(info["path"], tmp_path / "models")
    monkeypatch.setenv("KERAS_ADVGUARD_HOME", str(tmp_path))
    monkeypatch.setattr(keras.Model, "fit", None)
    _, again = load_or_train("digits_cnn", "digits", **DIGITS_RUN)
    assert again["from_cache"] is True
    assert Path(again["path"]).parent == tmp_path / "models"


def test_cache_key_separates_runs(trained_digits, monkeypatch):
    cache, _, info = trained_digits
    fits = []
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: fits.append(k))
    for change in (dict(epochs=4), dict(seed=1), dict(batch_size=32)):
        _, other = load_or_train(
            "digits_cnn", "digits", cache_dir=cache, **dict(DIGITS_RUN, **change)
        )
        assert other["from_cache"] is False and other["path"] != info["path"]
        os.remove(other["path"])
        os.remove(other["path"][: -len(".keras")] + ".json")
    assert len(fits) == 3


def test_interrupted_save_leaves_no_file(tmp_path, monkeypatch):
    def failing_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(keras.Model, "save", failing_save)
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        load_or_train("digits_cnn", "digits", epochs=1, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cached_files_get_ordinary_permissions(tmp_path, monkeypatch):
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: None)
    old = os.umask(0o022)
    try:
        load_or_train("digits_cnn", "digits", epochs=1, cache_dir=tmp_path)
    finally:
        os.umask(old)
    modes = {p.suffix: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {".keras": 0o644, ".json": 0o644}


def test_unreadable_cached_file(tmp_path, trained_digits):
    _, _, info = trained_digits
    (tmp_path / Path(info["path"]).name).write_bytes(b"not a keras file")
    with pytest.raises(ValueError, match="Delete it"):
        load_or_train("digits_cnn", "digits", cache_dir=tmp_path, **DIGITS_RUN)


def test_load_or_train_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="architecture"):
        load_or_train("resnet", "digits", epochs=1, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="dataset"):
        load_or_train("digits_cnn", "svhn", epochs=1, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="epochs"):
        load_or_train("digits_cnn", "digits", epochs=0, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="epochs"):
        load_or_train("digits_cnn", "digits", epochs=2.0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="seed"):
        load_or_train("digits_cnn", "digits", epochs=1, seed=-1, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="verbose"):
        load_or_train("digits_cnn", "digits", epochs=1, verbose=3, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="cache_dir"):
        load_or_train("digits_cnn", "digits", epochs=1, cache_dir=3)
    with pytest.raises(ValueError, match="cannot take the 'digits' images"):
        load_or_train("mnist_cnn", "digits", epochs=1, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_or_train_missing_data_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_home"))
    with pytest.raises(FileNotFoundError, match="mnist.npz"):
        load_or_train("mnist_cnn", "mnist", epochs=1, cache_dir=tmp_path / "m")
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------
# Real datasets (slow: minutes on 2 CPU cores)
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_mnist_cnn_on_mnist(tmp_path):
    _needs(SHARED_DATA / "mnist.npz")
    _, info = load_or_train(
        "mnist_cnn",
        "mnist",
        epochs=1,
        path=SHARED_DATA / "mnist.npz",
        cache_dir=tmp_path,
    )
    assert info["test_accuracy"] >= 0.98


@pytest.mark.slow
def test_cifar_cnn_on_cifar10_subset(tmp_path):
    _needs(SHARED_DATA / "cifar10-subset.npz")
    _, info = load_or_train(
        "cifar_cnn",
        "cifar10",
        epochs=28,
        batch_size=32,
        path=SHARED_DATA / "cifar10-subset.npz",
        cache_dir=tmp_path,
    )
    assert info["num_train"] == 4000 and info["num_test"] == 20
    # Measured 0.65 (13 of 20); 2 minutes of training on 2 cores.
    assert info["test_accuracy"] >= 0.5
