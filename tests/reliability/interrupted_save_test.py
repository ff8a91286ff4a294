"""Saves killed half-way (SIGKILL) keep the old file loadable and leave no temporary.

Every kind of object the library saves is built in a child process that
writes it over an existing file again and again; the test SIGKILLs the
child at a random moment, then checks that the file loads and holds one of
the two complete versions (the old one, or the new one when a save had
finished before the kill), and that no temporary file remains once the file
is loaded or saved again.

The harness is generic over `Kind(build, save, load, outputs)`. Importing
TensorFlow takes seconds, so one helper process (this file run as a script)
imports the library once and `fork`s a fresh writer per try before any
TensorFlow op has run in it (the forked child starts TensorFlow itself).

The default run kills `FAST_TRIES` writers of each of `FAST_KINDS` (one kind
per save code path, about a minute); `-m slow` kills `SLOW_TRIES` (>= 10)
writers of every kind, each detector included (several minutes).

Before the fix (Keras writing `.keras` archives in place), every kill during
`DetectorModel.save` or a sanitized model's `save` left a truncated file.
"""

import dataclasses
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

FAST_TRIES = 2
SLOW_TRIES = 12
# The default run: each save code path once (Keras archives through
# `save_model`; `Detector.save`; a Keras detector's own `.keras` member).
FAST_KINDS = [
    "detector_model",
    "knn_detector",
    "medoid_lstm_detector",
    "sanitized_model",
    "save_model",
]


# ----------------------------------------------------------------------
# The kinds of saveable objects


@dataclasses.dataclass
class Kind:
    build: object  # seed -> object (deterministic: seed 0 old, seed 1 new)
    save: object  # (object, path) -> None
    load: object  # path -> object
    outputs: object  # object -> 1-D float array that identifies the version
    extension: str = ".keras"
    load_sweeps: bool = True  # `load` itself removes stale temporaries


def _classifier(seed=0):
    """A small conv classifier with weights drawn by numpy (same in every process)."""
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(8, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="classifier")
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.weights])
    return model


def _images(seed, n=24):
    return np.random.default_rng(100 + seed).uniform(size=(n, 8, 8, 1)).astype("float32")


PROBE = np.random.default_rng(7).uniform(size=(3, 8, 8, 1)).astype("float32")


def _flat(tree):
    import keras

    leaves = keras.tree.flatten(tree)
    return np.concatenate([np.asarray(v, dtype="float64").ravel() for v in leaves])


def _keras_load(path):
    from keras_advguard import load_model

    return load_model(path)


def _build_detector_model(seed):
    from keras_advguard import DetectorModel

    return DetectorModel(_classifier(seed), layers=["conv1", "fc1"])


def _build_sanitized(seed):
    from keras_advguard import MedianSanitizer, sanitize

    return sanitize(_classifier(seed), after="conv1", sanitizer=MedianSanitizer())


def _detector_outputs(detector):
    threshold = getattr(detector, "threshold_", None)
    return np.concatenate([detector.score(PROBE).astype("float64"), [threshold or 0.0]])


def _detector_load(path):
    from keras_advguard.detectors import load_detector

    return load_detector(path)


def _detector_save(detector, path):
    detector.save(path)


def _build_knn(seed):
    from keras_advguard import KNNDetector

    detector = KNNDetector(_classifier(0), layer="fc1", n_neighbors=3)
    detector.fit(_images(seed), np.arange(24) % 3)
    return detector.calibrate(_images(seed + 10), fpr=0.2)


def _build_max_softmax(seed):
    from keras_advguard.detectors import MaxSoftmaxDetector

    return MaxSoftmaxDetector(_classifier(0)).calibrate(_images(seed), fpr=0.2)


def _build_feature_squeezing(seed):
    from keras_advguard import BitDepthSqueezer, FeatureSqueezingDetector

    detector = FeatureSqueezingDetector(_classifier(0), [BitDepthSqueezer(bits=2)])
    return detector.calibrate(_images(seed), fpr=0.2)


def _build_medoid_lstm(seed):
    import keras

    from keras_advguard import MedoidLSTMDetector

    keras.utils.set_random_seed(seed)
    x = _images(seed, n=30)
    y = np.arange(30) % 3
    detector = MedoidLSTMDetector.from_training_data(
        _classifier(0), x, y, layers=["conv1", "fc1"], lstm_units=3
    )
    return detector.calibrate(_images(seed + 10), fpr=0.2)


def _build_entropy(seed):
    from keras_advguard import EntropyDetector

    detector = EntropyDetector(_classifier(0), layer="conv1")
    return detector.calibrate(_images(seed, n=8), fpr=0.2)


def _build_input_cnn(seed):
    import keras

    from keras_advguard.detectors import InputCNNDetector

    keras.utils.set_random_seed(seed)
    detector = InputCNNDetector(_classifier(0), filters=(2,), dense_units=4)
    x = _images(seed, n=16)
    detector.fit(np.concatenate([x, 1 - x]), np.r_[np.zeros(16), np.ones(16)], epochs=1, verbose=0)
    return detector.calibrate(_images(seed + 10), fpr=0.2)


def _detector_kind(build):
    return Kind(build, _detector_save, _detector_load, _detector_outputs, ".advguard", False)


KINDS = {
    "detector_model": Kind(
        _build_detector_model, lambda m, p: m.save(p), _keras_load, lambda m: _flat(m(PROBE))
    ),
    "sanitized_model": Kind(
        _build_sanitized, lambda m, p: m.save(p), _keras_load, lambda m: _flat(m(PROBE))
    ),
    "save_model": Kind(
        _classifier,
        lambda m, p: __import__("keras_advguard").save_model(m, p),
        _keras_load,
        lambda m: _flat(m(PROBE)),
    ),
    "entropy_detector": _detector_kind(_build_entropy),
    "feature_squeezing_detector": _detector_kind(_build_feature_squeezing),
    "input_cnn_detector": _detector_kind(_build_input_cnn),
    "knn_detector": _detector_kind(_build_knn),
    "max_softmax_detector": _detector_kind(_build_max_softmax),
    "medoid_lstm_detector": _detector_kind(_build_medoid_lstm),
}


# ----------------------------------------------------------------------
# The helper process: imports once, forks one writer per request


def _serve():
    import keras_advguard  # noqa: F401 - the slow import, once

    for line in sys.stdin:
        kind, path, seed = line.split()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the writer: build, then save until killed
            code = 1
            try:
                obj = KINDS[kind].build(int(seed))
                print(f"READY {os.getpid()}", flush=True)
                while True:
                    KINDS[kind].save(obj, path)
            except BaseException as error:  # noqa: BLE001 - reported to the test
                print(f"ERROR {type(error).__name__}: {error}".replace("\n", " "), flush=True)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(f"DONE {pid} {status}", flush=True)


def _read_line(process, prefix, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([process.stdout], [], [], left)[0]:
            raise TimeoutError(f"the helper process sent no {prefix!r} line in {timeout} s")
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the helper process ended (code {process.poll()})")
        if line.startswith("ERROR"):
            raise RuntimeError(f"the writer failed: {line.strip()}")
        if line.startswith(prefix):
            return line.split()


@pytest.fixture(scope="module")
def writer_factory(tmp_path_factory):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    # The library's own scratch folders (tempfile) go here, to be counted.
    scratch = tmp_path_factory.mktemp("writer_tmp")
    env["TMPDIR"] = str(scratch)
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    process.scratch = scratch
    yield process
    process.stdin.close()
    try:
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:  # idle, only slow to shut TensorFlow down
        process.kill()
        process.wait()


def _temporaries(folder, name):
    return sorted(e for e in os.listdir(folder) if e != name)


def kill_during_saves(process, kind_name, folder, tries, seed=0):
    """Kill `tries` writers of `kind_name` mid-save.

    Returns:
        How many kills interrupted a save: a temporary file was left beside
        the target, or a scratch folder in the writer's `TMPDIR` (a detector
        assembles its archive there before writing it beside the target).
    """
    kind = KINDS[kind_name]
    path = os.path.join(folder, f"{kind_name}{kind.extension}")
    old = kind.build(0)
    kind.save(old, path)
    start = time.perf_counter()
    kind.save(old, path)
    seconds_per_save = time.perf_counter() - start
    expected_old = kind.outputs(kind.load(path))
    expected_new = kind.outputs(kind.build(1))
    assert not np.allclose(expected_old, expected_new), "the two versions must differ"

    rng = random.Random(seed)
    interrupted = 0
    for _ in range(tries):
        process.stdin.write(f"{kind_name} {path} 1\n")
        process.stdin.flush()
        pid = int(_read_line(process, "READY")[1])
        # A random moment within the writer's first few saves (after the
        # first one has begun).
        time.sleep(rng.uniform(0.2, 3.0) * seconds_per_save)
        os.kill(pid, signal.SIGKILL)
        _read_line(process, "DONE")
        scratch = os.listdir(process.scratch)
        interrupted += bool(_temporaries(folder, os.path.basename(path)) or scratch)
        for entry in scratch:  # left by the killed writer outside the target folder
            shutil.rmtree(os.path.join(process.scratch, entry), ignore_errors=True)

        outputs = kind.outputs(kind.load(path))  # complete: the old or the new version
        assert np.allclose(outputs, expected_old) or np.allclose(outputs, expected_new)
        if kind.load_sweeps:
            assert _temporaries(folder, os.path.basename(path)) == []
        kind.save(old, path)  # the next save removes what the killed writer left
        assert _temporaries(folder, os.path.basename(path)) == []
    np.testing.assert_allclose(kind.outputs(kind.load(path)), expected_old)
    return interrupted


@pytest.mark.parametrize("kind_name", FAST_KINDS)
def test_kill_during_save_keeps_the_old_file(writer_factory, kind_name, tmp_path):
    interrupted = kill_during_saves(writer_factory, kind_name, tmp_path, FAST_TRIES)
    # The kills landed inside a save (its temporary was there), not between saves.
    assert interrupted >= 1


@pytest.mark.slow
@pytest.mark.parametrize("kind_name", sorted(KINDS))
def test_kill_during_save_many_times(writer_factory, kind_name, tmp_path):
    interrupted = kill_during_saves(writer_factory, kind_name, tmp_path, SLOW_TRIES, seed=1)
    assert interrupted >= SLOW_TRIES // 2


if __name__ == "__main__":
    _serve()
