"""Run by `distribute_test.py` in fresh processes: two logical CPUs, or two workers.

`tf.config.set_logical_device_configuration` must run before TensorFlow
initialises its devices, so this cannot share the test session's process.
It computes every output once on the default (single-device) strategy and
once under `tf.distribute.MirroredStrategy` over the two logical CPUs, and
prints one JSON line `{check: max |difference|}` (plus `"error"` when the
mirrored run raised). `--full` adds the slower checks; `--multi-worker`
runs one worker of a `MultiWorkerMirroredStrategy` instead (`multi_worker`).
Importing this file (pytest's doctest collection does) runs nothing.
"""

import json
import os
import sys
import traceback


def _classifier(keras):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs)


def _outputs(keras, np, weights, x, y, detector_weights, full):
    """Everything compared, for the strategy in scope (models built inside it).

    `full=False` (a few seconds): the activation pass, and one check of each
    kind: detectors fitted and scored from inputs (KNN, class medoids, the
    medoid LSTM trained for one epoch) and the attacks' batch loop (PGD).
    `full=True` adds the other detectors and attacks.
    """
    from keras_advguard import DetectorModel, attacks
    from keras_advguard.detectors import (
        ClassMedoids,
        FeatureSqueezingDetector,
        KNNDetector,
        MaxSoftmaxDetector,
        MedoidLSTMDetector,
    )
    from keras_advguard.layers import BitDepthSqueezer

    model = _classifier(keras)
    model.set_weights(weights)
    taps = DetectorModel(model, layers=["conv1", "conv2", "fc"])
    out = {}
    collected = taps.collect(x, batch_size=7)  # uneven: 7 over 2 replicas, last batch 5
    for key in ("logits", "prediction", "predicted_class"):
        out[f"collect/{key}"] = collected[key]
    for name, value in collected["activations"].items():
        out[f"collect/activations/{name}"] = value
    out["activations/fc"] = taps.activations(x, batch_size=8)["fc"]
    out["MaxSoftmaxDetector.score"] = MaxSoftmaxDetector(model).score(x, batch_size=8)

    # Fit and score from inputs (each fit runs the activation pass itself).
    knn = KNNDetector(model, "fc", n_neighbors=3, batch_size=8).fit(x, y)
    out["KNNDetector.fit+score"] = knn.score(x, batch_size=8)
    medoids = ClassMedoids().fit_from_model(taps, x, y, batch_size=8).medoids_
    out["ClassMedoids.fit_from_model"] = np.concatenate(
        [np.asarray(medoids[name]).ravel() for name in taps.tap_names]
    )
    lstm = MedoidLSTMDetector.from_training_data(
        model, x, y, layers=["conv2", "fc"], lstm_units=4, batch_size=8
    )
    out["MedoidLSTMDetector.medoids"] = np.concatenate(
        [np.asarray(m).ravel() for m in lstm.distance.medoids]
    )
    if detector_weights is None:  # the single-device run draws them, the mirrored one reuses
        detector_weights = lstm.get_weights()
    lstm.set_weights(detector_weights)
    out["MedoidLSTMDetector.score"] = lstm.score(x, batch_size=8)
    # Plain SGD: Adam's first steps are ~lr * sign(gradient), which turns the
    # float32 rounding of near-zero gradients into differences of a whole step.
    # Whole batches: Keras averages a batch split 3 + 2 over two replicas as the
    # mean of the two replicas' means, not the mean of the 5 samples.
    lstm.compile(optimizer=keras.optimizers.SGD(0.1))
    is_adversarial = (np.arange(24) % 2).astype("float32")
    lstm.fit(x[:24], is_adversarial, epochs=1, batch_size=8, shuffle=False, verbose=0)
    out["MedoidLSTMDetector.fit/weights"] = np.concatenate(
        [np.asarray(w).ravel() for w in lstm.get_weights()]
    )
    out["MedoidLSTMDetector.fit+score"] = lstm.score(x, batch_size=8)
    keras.utils.set_random_seed(0)  # PGD's random start is drawn by TensorFlow
    result = attacks.pgd(model, x[:10], eps=0.1, nb_iter=3, y=y[:10], batch_size=4)
    out["attacks.pgd"] = result.x_adv
    if not full:
        return out, detector_weights
    squeeze = FeatureSqueezingDetector(model, [BitDepthSqueezer(3)])
    out["FeatureSqueezingDetector.score"] = squeeze.score(x, batch_size=8)
    result = attacks.fgsm(model, x[:10], eps=0.1, y=y[:10], batch_size=4)
    out["attacks.fgsm"] = result.x_adv
    return out, detector_weights


def _compare(np, single, distributed, report):
    for key, value in single.items():
        if key not in distributed:
            continue
        a, b = np.asarray(value), np.asarray(distributed[key])
        if a.shape != b.shape:
            report[key] = f"shape {a.shape} vs {b.shape}"
        else:
            report[key] = float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))
    return report


def multi_worker():
    """One worker of a `MultiWorkerMirroredStrategy` (TF_CONFIG set by the test).

    The strategy must exist before TensorFlow runs any op, so it is created
    first; the single-device reference is computed outside its scope, in the
    same process, from the same weights.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras
    import numpy as np

    from keras_advguard import DetectorModel

    keras.utils.set_random_seed(0)
    weights = _classifier(keras).get_weights()
    x = np.random.default_rng(0).random((29, 8, 8, 1), dtype=np.float32)

    def outputs():
        model = _classifier(keras)
        model.set_weights(weights)
        taps = DetectorModel(model, layers=["conv1", "fc"])
        collected = taps.collect(x, batch_size=8)
        out = {f"activations/{k}": v for k, v in taps.activations(x, batch_size=8).items()}
        out["collect/logits"] = collected["logits"]
        return out

    single = outputs()
    report = {
        "replicas": strategy.num_replicas_in_sync,
        "task": json.loads(os.environ["TF_CONFIG"])["task"],
    }
    try:
        with strategy.scope():
            distributed = outputs()
    except Exception:  # noqa: BLE001 - reported to the test, which fails with it
        report["error"] = traceback.format_exc()
        distributed = {}
    print(json.dumps(_compare(np, single, distributed, report)))
    return 0


def main():
    if "--multi-worker" in sys.argv:
        return multi_worker()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras
    import numpy as np

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    keras.utils.set_random_seed(0)
    weights = _classifier(keras).get_weights()
    rng = np.random.default_rng(0)
    x = rng.random((29, 8, 8, 1), dtype=np.float32)
    y = np.arange(29) % 3

    full = "--full" in sys.argv
    single, detector_weights = _outputs(keras, np, weights, x, y, None, full)
    strategy = tf.distribute.MirroredStrategy(devices)
    report = {"devices": devices, "replicas": strategy.num_replicas_in_sync}
    try:
        with strategy.scope():
            mirrored, _ = _outputs(keras, np, weights, x, y, detector_weights, full)
    except Exception:  # noqa: BLE001 - reported to the test, which fails with it
        report["error"] = traceback.format_exc()
        mirrored = {}
    print(json.dumps(_compare(np, single, mirrored, report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
