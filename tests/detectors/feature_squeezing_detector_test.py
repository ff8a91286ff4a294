import json
import zipfile

import keras
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from keras_advguard import metrics
from keras_advguard._validation import NotFittedError
from keras_advguard.attacks import bpda
from keras_advguard.detectors.feature_squeezing_detector import FeatureSqueezingDetector
from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer
from keras_advguard.layers.median_smoothing_squeezer import MedianSmoothingSqueezer


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(5, name="fc_linear")(h)
    h = keras.layers.ReLU(name="relu")(h)
    outputs = keras.layers.Dense(4, activation="softmax", name="predictions")(h)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((20, 6, 6, 1)).astype("float32")


def numpy_squeezers(x):
    """The two squeezers of the tests, computed with numpy / scipy."""
    return [
        np.rint(x * 7) / 7,  # 3 bits
        scipy.ndimage.median_filter(x, size=(1, 2, 2, 1), mode="reflect"),
    ]


def squeezers():
    return [BitDepthSqueezer(3), MedianSmoothingSqueezer(2)]


def numpy_internal(model, x, names):
    """Mean over the layers of 1 - cos between flattened activations (float64)."""
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])

    def acts(v):
        out = probe.predict(v, verbose=0)
        out = out if isinstance(out, list) else [out]
        return [a.reshape(len(v), -1).astype("float64") for a in out]

    reference = acts(x)
    columns = []
    for squeezed in numpy_squeezers(x):
        per_layer = []
        for a, b in zip(reference, acts(squeezed), strict=True):
            cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            per_layer.append(1.0 - cos)
        columns.append(np.mean(per_layer, axis=0))
    return np.stack(columns, axis=1)


def test_output_score_is_max_l1_between_softmax_outputs(tiny_model, images):
    detector = FeatureSqueezingDetector(tiny_model, squeezers(), score="output")
    p = tiny_model.predict(images, verbose=0).astype("float64")
    expected = np.stack(
        [np.abs(p - tiny_model.predict(s, verbose=0)).sum(1) for s in numpy_squeezers(images)],
        axis=1,
    )
    per_squeezer = detector.squeezer_scores(images, batch_size=8)
    np.testing.assert_allclose(per_squeezer, expected, atol=2e-6)
    np.testing.assert_array_equal(detector.score(images, batch_size=8), per_squeezer.max(1))
    assert detector.tap_names == []
    assert np.any(expected[:, 0] != expected[:, 1])


def test_internal_score_default_layers_and_value(tiny_model, images):
    detector = FeatureSqueezingDetector(tiny_model, squeezers(), score="internal")
    # Layers after a non-linearity; not the linear Dense, pooling or softmax.
    assert detector.tap_names == ["conv", "relu"]
    expected = numpy_internal(tiny_model, images, ["conv", "relu"])
    np.testing.assert_allclose(detector.squeezer_scores(images), expected, atol=1e-6)
    np.testing.assert_allclose(detector.score(images), expected.max(1), atol=1e-6)


def test_internal_score_with_selected_layers(tiny_model, images):
    detector = FeatureSqueezingDetector(
        tiny_model, squeezers(), score="internal", layers=["fc_linear"]
    )
    assert detector.tap_names == ["fc_linear"]
    expected = numpy_internal(tiny_model, images, ["fc_linear"])
    np.testing.assert_allclose(detector.squeezer_scores(images), expected, atol=1e-6)


def test_fit_threshold_and_predict_side(tiny_model, images):
    detector = FeatureSqueezingDetector(tiny_model, squeezers())
    with pytest.raises(NotFittedError, match="Call `calibrate"):
        detector.predict(images)
    assert detector.fit(images[:10], fpr=0.2) is detector
    scores = detector.score(images[:10])
    assert detector.threshold_ == metrics.threshold_at_fpr(scores, 0.2)
    assert detector.fpr_ == 0.2 and detector.n_calibration_ == 10
    flags = detector.predict(images[:10])
    assert flags.dtype == bool
    assert flags.sum() == 2  # at most 20% of 10, distinct scores: exactly 2
    # Strict rule: the score equal to the threshold is not flagged.
    at_threshold = np.flatnonzero(scores == detector.threshold_)
    assert at_threshold.size == 1 and flags[at_threshold[0]] == 0
    np.testing.assert_array_equal(
        detector.predict(images), detector.score(images) > detector.threshold_
    )
    # fpr=0.05 on 10 images allows floor(0.5) = 0 false positives.
    assert detector.calibrate(images[:10], fpr=0.05).predict(images[:10]).sum() == 0


def test_differentiable_score_and_bpda(tiny_model, images):
    detector = FeatureSqueezingDetector(tiny_model, [BitDepthSqueezer(3)], score="internal")
    x = tf.constant(images[:4])
    np.testing.assert_allclose(
        detector.score_tensor(x).numpy(), detector.score(images[:4]), atol=1e-6
    )
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        plain = tf.reduce_sum(detector.score_tensor(x, wrap_squeezer=None))
        through = tf.reduce_sum(detector.score_tensor(x, wrap_squeezer=bpda))
        default = tf.reduce_sum(detector.score_tensor(x))  # "bpda" by default
    g_plain, g_bpda = tape.gradient(plain, x), tape.gradient(through, x)
    np.testing.assert_allclose(tape.gradient(default, x).numpy(), g_bpda.numpy(), atol=1e-6)
    # Without BPDA only the unsqueezed branch carries a gradient.
    assert np.all(np.isfinite(g_plain.numpy())) and np.all(np.isfinite(g_bpda.numpy()))
    assert not np.allclose(g_plain.numpy(), g_bpda.numpy())


def test_save_and_load_round_trip(tiny_model, images, tmp_path):
    detector = FeatureSqueezingDetector(
        tiny_model, squeezers(), score="internal", layers=lambda layer: layer.name == "conv"
    ).fit(images[:10], fpr=0.1)
    path = tmp_path / "detector.advguard"
    assert detector.save(path) == path
    with zipfile.ZipFile(path) as archive:
        document = json.loads(archive.read("detector.json"))
        assert "model.keras" in archive.namelist()
    assert document["config"]["layers"] == ["conv"]  # the predicate's choice
    assert document["model_file"] == "model.keras"
    loaded = FeatureSqueezingDetector.load(path)
    assert loaded.threshold_ == detector.threshold_ and loaded.fpr_ == 0.1
    assert [type(s) for s in loaded.squeezers] == [BitDepthSqueezer, MedianSmoothingSqueezer]
    assert loaded.squeezers[0].bits == 3 and loaded.squeezers[1].window == 2
    np.testing.assert_array_equal(loaded.score(images), detector.score(images))
    np.testing.assert_array_equal(loaded.predict(images), detector.predict(images))


def test_save_without_model_and_unfitted(tiny_model, images, tmp_path):
    detector = FeatureSqueezingDetector(tiny_model, squeezers())
    path = tmp_path / "d.advguard"
    detector.save(path, include_model=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.advguard"]
    with pytest.raises(ValueError, match="without its classifier"):
        FeatureSqueezingDetector.load(path)
    loaded = FeatureSqueezingDetector.load(path, model=tiny_model)
    assert getattr(loaded, "threshold_", None) is None
    np.testing.assert_array_equal(loaded.score(images), detector.score(images))
    (tmp_path / "other.json").write_text(json.dumps({"class_name": "Something"}))
    with pytest.raises(ValueError, match="holds a 'Something', not a FeatureSqueezingDetector"):
        FeatureSqueezingDetector.load(tmp_path / "other.json", model=tiny_model)


def test_legacy_json_file_still_loads(tiny_model, images, tmp_path):
    detector = FeatureSqueezingDetector(tiny_model, squeezers()).calibrate(images, fpr=0.1)
    document = {
        "class_name": "FeatureSqueezingDetector",
        "format_version": 1,
        "config": detector.get_config(),
        "model_file": None,
        "fitted": {"threshold_": detector.threshold_, "fpr_": 0.1, "n_calibration_": 12},
    }
    (tmp_path / "old.json").write_text(json.dumps(document))
    with pytest.warns(DeprecationWarning):
        loaded = FeatureSqueezingDetector.load(tmp_path / "old.json", model=tiny_model)
    assert loaded.threshold_ == detector.threshold_
    np.testing.assert_array_equal(loaded.predict(images), detector.predict(images))


def test_bad_arguments(tiny_model):
    with pytest.raises(TypeError, match="model"):
        FeatureSqueezingDetector(lambda x: x, squeezers())
    with pytest.raises(ValueError, match="at least one"):
        FeatureSqueezingDetector(tiny_model, [])
    with pytest.raises(TypeError, match=r"squeezers\[1\]"):
        FeatureSqueezingDetector(tiny_model, [BitDepthSqueezer(1), np.round])
    with pytest.raises(ValueError, match="score"):
        FeatureSqueezingDetector(tiny_model, squeezers(), score="logits")
    with pytest.raises(ValueError, match="must be None for score='output'"):
        FeatureSqueezingDetector(tiny_model, squeezers(), layers=["conv"])
    with pytest.raises(ValueError, match="at least one activation layer"):
        FeatureSqueezingDetector(tiny_model, squeezers(), score="internal", layers=[])
    with pytest.raises(ValueError, match="No layer 'conv9'"):
        FeatureSqueezingDetector(tiny_model, squeezers(), score="internal", layers=["conv9"])
    detector = FeatureSqueezingDetector(tiny_model, squeezers())
    with pytest.raises(ValueError, match="fpr"):
        detector.fit(np.zeros((2, 6, 6, 1), "float32"), fpr=1.5)
    assert detector.score(np.zeros((0, 6, 6, 1), "float32")).shape == (0,)
    with pytest.raises(ValueError, match="must not be empty"):
        detector.calibrate(np.zeros((0, 6, 6, 1), "float32"))
    with pytest.raises(ValueError, match=r"shape \(N, 6, 6, 1\)"):
        detector.score(np.zeros((2, 7, 7, 1), "float32"))
    with pytest.raises(ValueError, match="1 NaN"):
        detector.score(np.where(np.arange(72).reshape(2, 6, 6, 1) == 5, np.nan, 0.5))
