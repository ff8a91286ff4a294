"""Run by `distribute_test.py` in a fresh process: two logical CPUs, MirroredStrategy.

`tf.config.set_logical_device_configuration` must run before TensorFlow
initialises its devices, so this cannot share the test session's process.
It computes every output once on the default (single-device) strategy and
once under `tf.distribute.MirroredStrategy` over the two logical CPUs, and
prints one JSON line `{check: max |difference|}` (plus `"error"` when the
mirrored run raised). `--full` adds the slower checks. Importing this file
(pytest's doctest collection does) runs nothing.
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

    `full=False`: the activation pass and one detector (a few seconds);
    `full=True`: every detector here and an attack as well.
    """
    from keras_advguard import DetectorModel, attacks
    from keras_advguard.detectors import (
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
    if not full:
        return out, detector_weights
    knn = KNNDetector(model, "fc", n_neighbors=3).fit(x, y)
    out["KNNDetector.score"] = knn.score(x, batch_size=8)
    squeeze = FeatureSqueezingDetector(model, [BitDepthSqueezer(3)])
    out["FeatureSqueezingDetector.score"] = squeeze.score(x, batch_size=8)
    lstm = MedoidLSTMDetector.from_training_data(model, x, y, layers=["conv2", "fc"])
    if detector_weights is None:
        detector_weights = lstm.get_weights()
    lstm.set_weights(detector_weights)
    out["MedoidLSTMDetector.score"] = lstm.score(x, batch_size=8)
    out["MedoidLSTMDetector.medoids"] = np.concatenate(
        [np.asarray(m).ravel() for m in lstm.distance.medoids]
    )
    result = attacks.fgsm(model, x[:10], eps=0.1, y=y[:10], batch_size=4)
    out["attacks.fgsm"] = result.x_adv
    return out, detector_weights


def main():
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
    for key, value in single.items():
        if key not in mirrored:
            continue
        a, b = np.asarray(value), np.asarray(mirrored[key])
        if a.shape != b.shape:
            report[key] = f"shape {a.shape} vs {b.shape}"
        else:
            report[key] = float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
