"""Feature matching: the tapped layer's activations move towards the target's."""

import keras
import numpy as np
import pytest

from keras_advguard import DetectorModel
from keras_advguard.attacks import feature_matching


def _distance(model, layer, x, wanted):
    tap = DetectorModel(model, layers=[layer], pooling=None)
    acts = keras.ops.convert_to_numpy(tap(x)["activations"][layer])
    return np.sum((acts - wanted).reshape(len(x), -1) ** 2, axis=1)


def test_moves_towards_a_target_class_input(digits):
    model, x, y = digits
    source, target = x[y != y[0]][:10], x[y == y[0]][:1]
    result = feature_matching(model, source, target, layer="fc4", eps=0.3, nb_iter=30, seed=0)
    tap = DetectorModel(model, layers=["fc4"], pooling=None)
    wanted = keras.ops.convert_to_numpy(tap(target)["activations"]["fc4"])
    before = _distance(model, "fc4", source, wanted)
    after = _distance(model, "fc4", result.x_adv, wanted)
    assert np.all(after < 0.7 * before)
    np.testing.assert_array_equal(result.labels, np.full(10, y[0]))
    np.testing.assert_array_equal(result.success, result.y_pred_after == y[0])
    assert result.targeted and result.attack == "feature_matching"
    assert result.success.mean() >= 0.7 and result.linf.max() <= 0.3 + 1e-6
    assert result.params["layer"] == "fc4"


def test_one_target_per_source_and_eps_zero(digits):
    model, x, y = digits
    source, target = x[:4], x[4:8]
    same = feature_matching(model, source, target, layer="fc4", eps=0.0, nb_iter=2)
    np.testing.assert_array_equal(same.x_adv, source)
    pred_target = np.argmax(model.predict(target, verbose=0), axis=1)
    np.testing.assert_array_equal(same.labels, pred_target)


def test_bad_arguments(digits):
    model, x, _ = digits
    with pytest.raises(ValueError, match=r"`x_target` must hold one input per sample"):
        feature_matching(model, x[:4], x[:2], layer="fc4", eps=0.1)
    with pytest.raises(ValueError, match=r"must select exactly one layer"):
        feature_matching(model, x[:4], x[:1], layer=keras.layers.Conv2D, eps=0.1)
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model"):
        feature_matching(lambda v: v, x[:4], x[:1], layer="fc4", eps=0.1)
    bad = x[:1].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"`x_target` must hold finite values"):
        feature_matching(model, x[:4], bad, layer="fc4", eps=0.1)
