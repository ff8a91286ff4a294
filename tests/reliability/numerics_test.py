"""Numerics across the float32 range: scale equivariance, no overflow, no silent infinities.

Before the fix, `NLMeansSanitizer` (relative `h`) returned NaN for maps of
~1e19 and over-smoothed maps of ~1e-19 (its squared patch distances and
variance left float32's range); `ClassMedoids.fit` failed with numpy's
"argmin of an empty sequence" for activations around 1e20 (float32
overflow of the squared norms); `MaskSanitizer(mode="absolute",
threshold=inf)` was accepted.
"""

import keras
import numpy as np
import pytest
import scipy.spatial.distance

from keras_advguard import MaskSanitizer, NLMeansSanitizer
from keras_advguard.detectors import ClassMedoids

SCALES = [10.0**e for e in range(-30, 31, 5)]


@pytest.mark.parametrize("shape", [(2, 6, 7, 2), (3, 11)])
def test_nl_means_is_scale_equivariant_across_the_float32_range(shape):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    layer = NLMeansSanitizer(patch=3, search=5, h=0.8)
    unscaled = np.asarray(layer(x), dtype="float64")
    assert np.abs(unscaled - x).max() > 1e-2  # it does filter
    for c in SCALES:
        scaled = np.asarray(layer((x * np.float32(c)).astype("float32")), dtype="float64")
        assert np.all(np.isfinite(scaled)), c
        np.testing.assert_allclose(scaled / c, unscaled, rtol=2e-5, atol=2e-6, err_msg=f"c={c}")


def test_nl_means_gradient_is_unchanged_by_the_internal_rescaling():
    # filter(c a) = c filter(a): the gradient at c a equals the gradient at a.
    import tensorflow as tf

    x = np.random.default_rng(1).normal(size=(1, 5, 5, 1))
    layer = NLMeansSanitizer(patch=3, search=3, dtype="float64")
    weights = tf.constant(np.random.default_rng(2).normal(size=x.shape))

    def grad(a):
        a = tf.constant(a)
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss = tf.reduce_sum(layer(a) * weights)
        return tape.gradient(loss, a).numpy()

    reference = grad(x)
    assert np.abs(reference).max() > 0.1
    for c in (1e-100, 1e100):
        np.testing.assert_allclose(grad(x * c), reference, rtol=1e-9, atol=1e-12)


def _brute_force_medoid(points):
    d = scipy.spatial.distance.cdist(points.astype("float64"), points.astype("float64"))
    return int(np.argmin(d.sum(axis=1)))


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1.0, 1e20, 1e30])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_class_medoids_at_extreme_scales(scale, dtype):
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 6))
    labels = np.arange(40) % 2
    acts = (base * scale).astype(dtype)
    assert np.all(np.isfinite(acts)) and np.all(acts[acts != 0] != 0)
    fitted = ClassMedoids(block_size=16).fit({"fc": acts}, labels)
    for c in (0, 1):
        members = np.flatnonzero(labels == c)
        expected = members[_brute_force_medoid(acts[members])]
        assert fitted.medoid_indices_["fc"][c] == expected


@pytest.mark.parametrize("threshold", [np.inf, -np.inf, float("inf")])
def test_mask_sanitizer_refuses_an_infinite_threshold(threshold):
    with pytest.raises(ValueError, match=r"`threshold` must be finite.*threshold=-?inf"):
        MaskSanitizer(mode="absolute", alpha=None, threshold=threshold)


def test_mask_sanitizer_keeps_finite_thresholds():
    layer = MaskSanitizer(mode="absolute", alpha=None, threshold=0.5)
    x = np.array([[0.2, 0.5, 0.9]], "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), np.where(x >= 0.5, x, 0))


@pytest.mark.parametrize("value_range", [(0.0, np.inf), (-np.inf, 1.0)])
def test_squeezers_refuse_an_infinite_value_range(value_range):
    from keras_advguard import BitDepthSqueezer, NLMeansSqueezer

    with pytest.raises(ValueError, match=r"`value_range` must hold finite values"):
        BitDepthSqueezer(bits=4, value_range=value_range)
    with pytest.raises(ValueError, match=r"`value_range` must hold finite values"):
        NLMeansSqueezer(value_range=value_range)
