"""Shape and model mismatches that used to pass silently (issue: reliability).

Before the fix, after one successful call the compiled predict skipped Keras's
input check: other spatial shapes returned wrong-shaped or constant results,
and KNN/FeatureSqueezing detectors loaded onto a classifier with other weights
returned meaningless scores. The contract-wide versions of these checks run
over every detector in `tests/detectors/detector_contract_test.py`; these are
the issue's own reproductions.
"""

import keras
import numpy as np
import pytest

from keras_advguard import DetectorModel, FeatureSqueezingDetector, KNNDetector
from keras_advguard._fingerprint import weights_fingerprint
from keras_advguard.datasets import load_dataset
from keras_advguard.layers import BitDepthSqueezer


@pytest.fixture(scope="module")
def digits(digits_model):
    model, _ = digits_model
    (x_train, y_train), (x_test, _) = load_dataset("digits")
    return model, x_train[:300], y_train[:300], x_test[:40]


def _other_weights(model):
    other = keras.models.clone_model(model)
    other.set_weights([w + 0.01 for w in model.get_weights()])
    return other


@pytest.mark.parametrize("shape", [(10, 10, 1), (8, 8, 3), (64,)])
def test_activations_check_the_input_shape_after_a_first_call(digits, shape):
    model, _, _, x = digits
    taps = DetectorModel(model, layers="conv+dense")
    taps.activations(x)  # the first call compiles the predict function
    with pytest.raises(ValueError, match="shape"):
        taps.activations(np.zeros((4, *shape), "float32"))


def test_activations_check_a_dataset_of_other_shape_too(digits):
    import tensorflow as tf

    model, _, _, x = digits
    taps = DetectorModel(model, layers="conv+dense")
    taps.activations(x)
    bad = tf.data.Dataset.from_tensor_slices(np.zeros((6, 10, 10, 1), "float32")).batch(3)
    with pytest.raises(ValueError, match="shape"):
        taps.activations(bad)


def test_knn_score_checks_the_input_shape_after_a_first_call(digits):
    model, x_train, y_train, x = digits
    knn = KNNDetector(model, "fc4", n_neighbors=5).fit(x_train, y_train)
    assert knn.score(x).shape == (len(x),)
    with pytest.raises(ValueError, match="shape"):
        knn.score(np.zeros((4, 10, 10, 1), "float32"))


@pytest.mark.parametrize("kind", ["knn", "squeeze"])
def test_loading_onto_a_classifier_with_other_weights_is_refused(digits, tmp_path, kind):
    model, x_train, y_train, x = digits
    if kind == "knn":
        detector = KNNDetector(model, "fc4", n_neighbors=5).fit(x_train, y_train)
    else:
        detector = FeatureSqueezingDetector(model, [BitDepthSqueezer(bits=2)])
    detector.calibrate(x, fpr=0.1)
    path = tmp_path / f"{kind}.advguard"
    detector.save(path)
    other = _other_weights(model)
    with pytest.raises(ValueError) as info:
        type(detector).load(path, model=other)
    assert weights_fingerprint(model) in str(info.value)
    assert weights_fingerprint(other) in str(info.value)
    # The classifier it was fitted on is accepted, with identical scores.
    np.testing.assert_array_equal(
        type(detector).load(path, model=model).score(x), detector.score(x)
    )
