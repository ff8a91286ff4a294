"""Beam pipelines on the DirectRunner: the same medoids, store and scores as in memory."""

import os

import numpy as np
import pytest

if os.environ.get("KERAS_ADVGUARD_REQUIRE_BEAM"):  # CI's Beam environment: never skip
    import apache_beam as beam
else:
    beam = pytest.importorskip(
        "apache_beam",
        reason='Apache Beam is not installed (the optional extra: pip install -e ".[test,beam]")',
    )

import keras  # noqa: E402

from keras_advguard import DetectorModel  # noqa: E402
from keras_advguard.activation_store import ActivationStore, load_medoids  # noqa: E402
from keras_advguard.detectors import (  # noqa: E402
    ClassMedoids,
    MaxSoftmaxDetector,
    MedoidLSTMDetector,
)
from keras_advguard.pipelines import beam as pipelines  # noqa: E402

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    keras.utils.set_random_seed(4)  # a classifier that predicts every class
    classifier = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6, activation="relu", name="fc1"),
            keras.layers.Dense(4, activation="tanh", name="fc2"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax", name="out"),
        ]
    )
    taps = DetectorModel(classifier, layers=["fc1", "fc2"])
    folder = tmp_path_factory.mktemp("beam")
    model_path = folder / "taps.keras"
    taps.save(model_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 5)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=90)
    return classifier, taps, model_path, x, y


def test_medoids_and_store_equal_the_in_memory_path(setup, tmp_path):
    _, taps, model_path, x, y = setup
    medoids = pipelines.run_medoids(
        model_path,
        x,
        y,
        tmp_path / "medoids.npz",
        num_classes=NUM_CLASSES,
        store_dir=tmp_path / "store",
        batch_size=16,
        shard_size=25,
    )
    # The store the pipeline wrote holds the activations it computed.
    store = ActivationStore(tmp_path / "store")
    assert store.complete and store.num_samples == len(x) and len(store.shards) >= 4
    np.testing.assert_array_equal(store.labels, y)
    np.testing.assert_array_equal(np.sort(store.sample_index), np.arange(len(x)))
    reference = taps.collect(x, batch_size=16)
    for name in taps.tap_names:
        np.testing.assert_allclose(
            store.read_layer(name), reference["activations"][name], rtol=1e-5, atol=1e-6
        )
    np.testing.assert_array_equal(store.predicted_class, reference["predicted_class"])
    # Bit for bit: ClassMedoids.fit on the same activations in memory.
    exact = ClassMedoids(num_classes=NUM_CLASSES).fit(
        {name: store.read_layer(name) for name in taps.tap_names}, y
    )
    # Float tolerance: ClassMedoids.fit on DetectorModel.collect's activations.
    in_memory = ClassMedoids(num_classes=NUM_CLASSES).fit(reference["activations"], y)
    for name in taps.tap_names:
        np.testing.assert_array_equal(medoids.medoids_[name], exact.medoids_[name])
        np.testing.assert_array_equal(medoids.medoid_indices_[name], exact.medoid_indices_[name])
        np.testing.assert_array_equal(
            medoids.medoid_indices_[name], in_memory.medoid_indices_[name]
        )
        np.testing.assert_allclose(
            medoids.medoids_[name], in_memory.medoids_[name], rtol=1e-5, atol=1e-6
        )
    np.testing.assert_array_equal(medoids.n_samples_per_class_, np.bincount(y))
    # The file loads into the detector.
    detector = MedoidLSTMDetector.from_medoids(taps, load_medoids(tmp_path / "medoids.npz"))
    expected = MedoidLSTMDetector.from_medoids(taps, in_memory)
    np.testing.assert_allclose(detector.features(x[:6]), expected.features(x[:6]), atol=1e-5)


def test_subsets_and_only_correct_as_class_medoids(setup, tmp_path):
    _, taps, model_path, x, y = setup
    options = {"only_correct": True, "max_samples_per_class": 7, "seed": 2}
    # Labels the (untrained) classifier gets right about 2 times in 3.
    predicted = taps.collect(x, batch_size=16)["predicted_class"]
    assert set(predicted) == set(range(NUM_CLASSES))
    y = np.where(np.arange(len(x)) % 3 == 0, y, predicted)
    medoids = pipelines.run_medoids(
        model_path,
        x,
        y,
        tmp_path / "m.npz",
        store_dir=tmp_path / "store",
        num_classes=NUM_CLASSES,
        batch_size=16,
        **options,
    )
    store = ActivationStore(tmp_path / "store")
    exact = ClassMedoids(num_classes=NUM_CLASSES, **options).fit(
        {name: store.read_layer(name) for name in taps.tap_names},
        y,
        predictions=store.predicted_class,
    )
    for name in taps.tap_names:
        np.testing.assert_array_equal(medoids.medoids_[name], exact.medoids_[name])
        np.testing.assert_array_equal(medoids.medoid_indices_[name], exact.medoid_indices_[name])
    np.testing.assert_array_equal(medoids.n_samples_per_class_, exact.n_samples_per_class_)


def test_a_class_without_samples_fails_the_pipeline(setup, tmp_path):
    _, _, model_path, x, y = setup
    with pytest.raises(Exception, match=r"class 3, 4, 5 has none"):
        pipelines.run_medoids(model_path, x[:20], y[:20], tmp_path / "m.npz", num_classes=6)


def test_batch_scoring_equals_score(setup, tmp_path):
    classifier, _, _, x, _ = setup
    detector = MaxSoftmaxDetector(classifier)
    path = detector.save(tmp_path / "detector.advguard")
    scores = pipelines.run_scoring(path, x, tmp_path / "scores.npy", batch_size=8)
    np.testing.assert_allclose(scores, detector.score(x), rtol=1e-6, atol=1e-7)
    # Independent reference: 1 - max softmax, from the classifier's outputs.
    probabilities = np.asarray(classifier.predict(x, verbose=0), dtype=np.float64)
    np.testing.assert_allclose(scores, 1.0 - probabilities.max(axis=1), atol=1e-6)


@pytest.mark.slow
def test_imagenet_example_on_beam(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "medoid_lstm_imagenet.py"
    command = [sys.executable, str(script), "--quick", "--store", "store", "--beam"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    proc = subprocess.run(
        command + ["--epochs", "1"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "activation store: 18 samples in" in proc.stdout
    medoids = load_medoids(tmp_path / "store" / "medoids.npz")
    store = ActivationStore(tmp_path / "store")
    expected = store.fit_medoids(num_classes=3)
    for name in store.tap_names:
        np.testing.assert_array_equal(medoids.medoids_[name], expected.medoids_[name])
