"""ActivationStore: streaming shards, resume, one class at a time, medoids as in memory."""

import json
import os
import tracemalloc

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard import DetectorModel
from keras_advguard.activation_store import ActivationStore, load_medoids, save_medoids
from keras_advguard.detectors import ClassMedoids, MedoidLSTMDetector
from keras_advguard.layers import MedoidDistance

NUM_CLASSES = 4


def _classifier(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, activation="relu", name="fc1"),
            keras.layers.Dense(7, activation="tanh", name="fc2"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax", name="out"),
        ]
    )


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(230, 6)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=230)
    taps = DetectorModel(_classifier(), layers=["fc1", "fc2"])
    return taps, x, y, taps.collect(x, batch_size=16)


def test_rows_equal_the_in_memory_pass(setup, tmp_path):
    taps, x, y, reference = setup
    store = ActivationStore.extract(tmp_path, taps, x, y, shard_size=50, batch_size=16)
    assert store.complete and store.num_samples == len(x)
    assert [s["rows"] for s in store.shards] == [64, 64, 64, 38]  # whole batches of 16
    for name in taps.tap_names:
        np.testing.assert_array_equal(store.read_layer(name), reference["activations"][name])
    np.testing.assert_array_equal(store.labels, y)
    np.testing.assert_array_equal(store.predicted_class, reference["predicted_class"])
    # One class of one layer: exactly the numpy selection, in input order.
    rows, where = store.read_class("fc2", 2)
    np.testing.assert_array_equal(where, np.flatnonzero(y == 2))
    np.testing.assert_array_equal(rows, reference["activations"]["fc2"][y == 2])
    rows, where = store.read_class(0, 1, by="predicted_class", only_correct=True)
    expected = np.flatnonzero((reference["predicted_class"] == 1) & (y == 1))
    np.testing.assert_array_equal(where, expected)
    # The documented layout: an index and .npy files per shard and layer.
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["format"] == "keras_advguard.activation_store" and index["complete"]
    assert [layer["shape"] for layer in index["layers"]] == [[5], [7]]
    first = np.load(tmp_path / "shards" / "000000.layer001.npy")
    np.testing.assert_array_equal(first, reference["activations"]["fc2"][:64])


def test_dataset_with_labels_and_one_hot(setup, tmp_path):
    taps, x, y, reference = setup
    one_hot = np.eye(NUM_CLASSES)[y]
    dataset = tf.data.Dataset.from_tensor_slices((x, one_hot)).batch(16)  # as `setup`
    store = ActivationStore.extract(tmp_path, taps, dataset, shard_size=64)
    np.testing.assert_array_equal(store.labels, y)
    np.testing.assert_array_equal(store.read_layer("fc1"), reference["activations"]["fc1"])


@pytest.mark.parametrize(
    "options",
    [{}, {"only_correct": True}, {"max_samples_per_class": 20, "seed": 3}, {"block_size": 7}],
)
def test_medoids_from_the_store_equal_class_medoids_fit(setup, tmp_path, options):
    taps, x, y, reference = setup
    store = ActivationStore.extract(tmp_path, taps, x, y, shard_size=30, batch_size=16)
    fitted = store.fit_medoids(num_classes=NUM_CLASSES, **options)
    expected = ClassMedoids(num_classes=NUM_CLASSES, **options).fit(
        reference["activations"], y, predictions=reference["predicted_class"]
    )
    for name in taps.tap_names:
        np.testing.assert_array_equal(fitted.medoids_[name], expected.medoids_[name])
        np.testing.assert_array_equal(fitted.medoid_indices_[name], expected.medoid_indices_[name])
    np.testing.assert_array_equal(fitted.n_samples_per_class_, expected.n_samples_per_class_)
    # And against a brute force (numpy): the argmin of the distance sums.
    if not options:
        acts = reference["activations"]["fc2"].astype(np.float64)
        for c in range(NUM_CLASSES):
            members = np.flatnonzero(y == c)
            points = acts[members]
            sums = np.linalg.norm(points[:, None] - points[None], axis=-1).sum(axis=1)
            assert fitted.medoid_indices_["fc2"][c] == members[np.argmin(sums)]


def test_a_killed_run_resumes_after_its_complete_shards(setup, tmp_path, monkeypatch):
    taps, x, y, reference = setup
    written = []
    real = ActivationStore.write_shard

    def dies_on_the_third(directory, shard_id, *args, **kwargs):
        if len(written) == 2:
            # A half-written file of the shard being written when the run died.
            (tmp_path / "shards" / f"{shard_id}.layer000.npy").write_bytes(b"garbage")
            raise KeyboardInterrupt("killed")
        written.append(shard_id)
        return real(directory, shard_id, *args, **kwargs)

    monkeypatch.setattr(ActivationStore, "write_shard", staticmethod(dies_on_the_third))
    with pytest.raises(KeyboardInterrupt):
        ActivationStore.extract(tmp_path, taps, x, y, shard_size=32, batch_size=16)
    partial = ActivationStore(tmp_path)
    assert not partial.complete and partial.num_samples == 64  # two shards of 2 batches
    np.testing.assert_array_equal(partial.read_layer("fc1"), reference["activations"]["fc1"][:64])

    monkeypatch.setattr(ActivationStore, "write_shard", staticmethod(real))
    seen = []
    original = taps.iter_activations

    def counting(xs, **kwargs):
        seen.append(len(xs))
        return original(xs, **kwargs)

    monkeypatch.setattr(taps, "iter_activations", counting)
    store = ActivationStore.extract(tmp_path, taps, x, y, shard_size=32, batch_size=16)
    assert seen == [len(x) - 64]  # only the samples not stored yet
    assert store.complete
    for name in taps.tap_names:
        np.testing.assert_array_equal(store.read_layer(name), reference["activations"][name])
    # A finished store is returned as it is.
    assert ActivationStore.extract(tmp_path, taps, x, y, shard_size=32, batch_size=16).complete
    assert len(seen) == 1


def test_refuses_a_folder_of_another_store(setup, tmp_path):
    taps, x, y, _ = setup
    ActivationStore.extract(tmp_path, taps, x[:20], y[:20], shard_size=8, batch_size=8)
    other = DetectorModel(_classifier(seed=1), layers=["fc1", "fc2"])
    with pytest.raises(ValueError, match="classifier"):
        ActivationStore.extract(tmp_path, other, x[:20], y[:20], shard_size=8, batch_size=8)
    with pytest.raises(ValueError, match="shard_size"):
        ActivationStore.extract(tmp_path, taps, x[:20], y[:20], shard_size=9, batch_size=8)
    with pytest.raises(ValueError, match="index.json"):
        ActivationStore(tmp_path / "nothing")


def test_errors_name_the_argument(setup, tmp_path):
    taps, x, y, _ = setup
    with pytest.raises(ValueError, match="taps no layer"):
        ActivationStore.extract(tmp_path, DetectorModel(_classifier()), x, y)
    with pytest.raises(ValueError, match="`x`.*`y`|x.*y"):
        ActivationStore.extract(tmp_path, taps, x, y[:-1])
    store = ActivationStore.extract(tmp_path / "nolabels", taps, x[:30], shard_size=10)
    with pytest.raises(ValueError, match="holds none"):
        store.fit_medoids()
    with pytest.raises(ValueError, match="stored layers"):
        store.read_layer("nope")
    labelled = ActivationStore.extract(tmp_path / "few", taps, x[:30], y[:30] % 2, shard_size=10)
    with pytest.raises(ValueError, match="class 2 has none"):
        labelled.fit_medoids(num_classes=3)


def test_reading_one_class_reads_only_that_class(tmp_path):
    width, per_class, classes = 256, 200, 10
    inputs = keras.Input((width,))
    outputs = keras.layers.Dense(classes, activation="softmax", name="out")(
        keras.layers.Identity(name="wide")(inputs)
    )
    taps = DetectorModel(keras.Model(inputs, outputs), layers=["wide"])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(per_class * classes, width)).astype("float32")
    y = np.tile(np.arange(classes), per_class)  # every shard mixes all classes
    store = ActivationStore.extract(tmp_path, taps, x, y, shard_size=256, batch_size=128)
    class_bytes = per_class * width * 4
    tracemalloc.start()
    rows, _ = store.read_class("wide", 3)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(rows, x[y == 3])
    assert peak < 2 * class_bytes + 64 * 1024, (peak, class_bytes, x.nbytes)


def test_medoids_file_loads_into_the_detector(setup, tmp_path):
    taps, x, y, reference = setup
    store = ActivationStore.extract(tmp_path / "store", taps, x, y, shard_size=64, batch_size=16)
    medoids = store.fit_medoids(num_classes=NUM_CLASSES)
    path = save_medoids(tmp_path / "medoids.npz", medoids)
    loaded = load_medoids(path)
    for name in taps.tap_names:
        np.testing.assert_array_equal(loaded.medoids_[name], medoids.medoids_[name])
        np.testing.assert_array_equal(loaded.medoid_indices_[name], medoids.medoid_indices_[name])
    detector = MedoidLSTMDetector.from_medoids(taps, loaded)
    expected = MedoidLSTMDetector.from_medoids(taps, medoids)
    np.testing.assert_array_equal(detector.features(x[:8]), expected.features(x[:8]))
    layer = MedoidDistance.from_medoids(loaded)
    assert layer.tap_names == taps.tap_names
    with pytest.raises(ValueError, match="medoids file"):
        np.savez(tmp_path / "other.npz", a=np.zeros(2))
        load_medoids(tmp_path / "other.npz")


def test_streaming_standardization_equals_adapt(setup, tmp_path):
    taps, x, y, reference = setup
    store = ActivationStore.extract(tmp_path, taps, x, y, shard_size=64, batch_size=16)
    medoids = store.fit_medoids(num_classes=NUM_CLASSES)
    from_store = store.adapt(MedoidDistance.from_medoids(medoids, standardize=True), batch_size=50)
    in_memory = MedoidDistance.from_medoids(medoids, standardize=True).adapt(
        reference["activations"]
    )
    # Independent reference: numpy distances to the medoids.
    per_layer = []
    for name in taps.tap_names:
        a = reference["activations"][name].astype(np.float64)
        per_layer.append(np.linalg.norm(a[:, None] - medoids.medoids_[name][None], axis=-1))
    np.testing.assert_allclose(
        np.asarray(from_store.feature_mean), [d.mean() for d in per_layer], rtol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(from_store.feature_std), np.asarray(in_memory.feature_std), rtol=1e-5
    )


def test_shards_are_written_atomically(setup, tmp_path, monkeypatch):
    from keras_advguard import _files

    taps, x, y, _ = setup
    targets = []
    real = _files.write_atomic

    def spy(file, write, suffix=""):
        targets.append(os.path.basename(file))
        return real(file, write, suffix)

    monkeypatch.setattr(_files, "write_atomic", spy)
    ActivationStore.extract(tmp_path, taps, x[:20], y[:20], shard_size=10, batch_size=10)
    npy = sorted(t for t in targets if t.endswith(".npy"))
    assert npy == sorted(
        f"{shard}.{key}.npy"
        for shard in ("000000", "000001")
        for key in ("sample_index", "labels", "predicted_class", "layer000", "layer001")
    )
    assert "index.json" in targets


KILLED_WRITER = """
import sys, time
import keras, numpy as np
from keras_advguard import DetectorModel
from keras_advguard.activation_store import ActivationStore

keras.utils.set_random_seed(0)
classifier = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="fc"),
                               keras.layers.Dense(3, activation="softmax")])
taps = DetectorModel(classifier, layers=["fc"])
x = np.random.default_rng(0).normal(size=(400, 6)).astype("float32")
real = taps.iter_activations
def slow(*args, **kwargs):
    for item in real(*args, **kwargs):
        time.sleep(0.05)  # slow enough to be killed in the middle
        yield item
taps.iter_activations = slow
classifier.save(sys.argv[2])
ActivationStore.extract(sys.argv[1], taps, x, np.arange(400) % 3, shard_size=20, batch_size=10)
"""


@pytest.mark.slow
def test_sigkill_leaves_complete_shards_and_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    folder, model_file = tmp_path / "store", tmp_path / "classifier.keras"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(folder), str(model_file)],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        index = folder / "index.json"
        if index.exists() and len(json.loads(index.read_text())["shards"]) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = ActivationStore(folder)
    assert not partial.complete and 3 <= len(partial.shards) < 20
    classifier = keras.models.load_model(model_file)
    taps = DetectorModel(classifier, layers=["fc"])
    x = np.random.default_rng(0).normal(size=(400, 6)).astype("float32")
    reference = taps.collect(x, batch_size=10)["activations"]["fc"]
    stored = partial.read_layer("fc")
    np.testing.assert_array_equal(stored, reference[: len(stored)])
    store = ActivationStore.extract(
        folder, taps, x, np.arange(400) % 3, shard_size=20, batch_size=10
    )
    assert store.complete and store.num_samples == 400
    np.testing.assert_array_equal(store.read_layer("fc"), reference)


@pytest.mark.slow
def test_imagenet_example_with_a_store(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "medoid_lstm_imagenet.py"
    command = [sys.executable, str(script), "--quick", "--store", "store", "--epochs", "1"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "activation store: 18 samples in 1 shards" in proc.stdout
    store = ActivationStore(tmp_path / "store")
    assert store.complete and len(store.tap_names) == 11
    np.testing.assert_array_equal(store.labels, np.repeat(np.arange(3), 6))
