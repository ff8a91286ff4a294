"""Layers that create weights are refused as sanitizers and squeezers; `after` is blamed.

Before the fix, `sanitize(model, after, keras.layers.Dense(64))` and
`FeatureSqueezingDetector(model, [keras.layers.Dense(1)])` accepted the
unbuilt layer (it has no weights until built), so every insertion, and
every load, got fresh random weights; `sanitize(model, after=3.5)` blamed an
argument named `layers`.
"""

import keras
import numpy as np
import pytest

from keras_advguard import FeatureSqueezingDetector, MaskSanitizer, sanitize
from keras_advguard.layers import BitDepthSqueezer
from keras_advguard.layers._stateless import check_stateless


@pytest.fixture
def model():
    return keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Conv2D(3, 3, activation="relu", name="conv1"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(8, activation="relu", name="fc1"),
            keras.layers.Dense(3, name="logits"),
        ]
    )


@pytest.mark.parametrize("bpda", [False, True])
def test_sanitize_refuses_an_unbuilt_dense_layer(model, bpda):
    with pytest.raises(ValueError, match=r"`sanitizer` must be a stateless layer.*Dense.*2 weight"):
        sanitize(model, "fc1", keras.layers.Dense(8), bpda=bpda)


def test_sanitize_refuses_other_layers_that_build_weights(model):
    with pytest.raises(ValueError, match=r"stateless.*BatchNormalization.*4 weight"):
        sanitize(model, "conv1", keras.layers.BatchNormalization())


def test_stateless_keras_layers_are_still_accepted(model):
    x = np.random.default_rng(0).uniform(size=(2, 4, 4, 1)).astype("float32")
    defended = sanitize(model, "fc1", keras.layers.ReLU(max_value=0.5))
    # fc1 is already ReLU'd: capping at 0.5 is the whole change.
    fc1 = keras.Model(model.inputs[0], model.get_layer("fc1").output)(x)
    expected = model.get_layer("logits")(np.minimum(np.asarray(fc1), 0.5))
    np.testing.assert_allclose(defended(x), expected, rtol=1e-5, atol=1e-6)


def test_check_stateless_builds_a_copy_not_the_layer():
    dense = keras.layers.Dense(2)
    with pytest.raises(ValueError, match=r"`squeezers\[0\]`.*creates 2 weight.*shape \(None, 5\)"):
        check_stateless("squeezers[0]", dense, (None, 5))
    assert not dense.built  # the user's layer is left as it was
    assert check_stateless("squeezers[0]", BitDepthSqueezer(bits=3), (None, 4, 4, 1))


def test_feature_squeezing_detector_refuses_a_dense_squeezer(model):
    inputs = keras.Input((4, 4, 1))
    classifier = keras.Model(inputs, model(inputs))
    with pytest.raises(ValueError, match=r"`squeezers\[1\]` must be a stateless layer"):
        FeatureSqueezingDetector(classifier, [BitDepthSqueezer(bits=3), keras.layers.Dense(1)])


@pytest.mark.parametrize("after", [3.5, ["fc1", 2], None.__class__])
def test_a_bad_after_is_blamed_on_after(model, after):
    with pytest.raises(TypeError, match=r"`after`") as info:
        sanitize(model, after, MaskSanitizer())
    assert "`layers`" not in str(info.value)


def test_a_selector_matching_nothing_is_blamed_on_after(model):
    with pytest.raises(ValueError, match=r"in `after` matches no layer") as info:
        sanitize(model, lambda layer: False, MaskSanitizer())
    assert "`layers`" not in str(info.value)
