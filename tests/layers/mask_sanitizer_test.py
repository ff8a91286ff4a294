import fractions
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.layers import MaskSanitizer
from tests.layers._layer_test_case import run_layer_test


def maps_of(x):
    """Yield (index, map) for each sample/channel map of (B, H, W, C) or (B, N)."""
    if x.ndim == 2:
        for b in range(x.shape[0]):
            yield (b, slice(None)), x[b]
    else:
        for b in range(x.shape[0]):
            for c in range(x.shape[3]):
                yield (b, slice(None), slice(None), c), x[b, :, :, c]


def reference_mask(x, mode, alpha=None, q=None, threshold=None):
    out = np.zeros_like(x)
    for index, m in maps_of(x):
        if mode == "relative":
            tau = alpha * m.max()
        elif mode == "absolute":
            tau = threshold
        else:
            # Exact decimal arithmetic for k = ceil(q * n).
            k = math.ceil(fractions.Fraction(str(q)) * m.size)
            tau = np.sort(m.ravel())[::-1][k - 1]
        out[index] = np.where(m >= tau, m, 0.0)
    return out


def mask(x, dtype="float64", **kwargs):
    return keras.ops.convert_to_numpy(MaskSanitizer(dtype=dtype, **kwargs)(x))


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(2, 6, 7, 3), (4, 15)])
def test_relative_matches_reference(alpha, shape):
    x = np.maximum(np.random.default_rng(0).normal(size=shape), 0.0)
    np.testing.assert_array_equal(
        mask(x, mode="relative", alpha=alpha),
        reference_mask(x, "relative", alpha=alpha),
    )


def test_relative_is_the_default_with_alpha_0_1():
    layer = MaskSanitizer()
    assert (layer.mode, layer.alpha, layer.q, layer.threshold) == (
        "relative",
        0.1,
        None,
        None,
    )
    x = np.array([[0.05, 0.1, 0.099, 1.0]])
    np.testing.assert_array_equal(mask(x), [[0.0, 0.1, 0.0, 1.0]])


def test_relative_threshold_is_per_sample_and_channel():
    x = np.zeros((2, 2, 2, 2))
    x[0, :, :, 0] = [[1.0, 0.5], [0.2, 0.0]]
    x[0, :, :, 1] = [[10.0, 5.0], [4.0, 0.0]]
    x[1, :, :, 0] = [[0.3, 0.25], [0.1, 0.0]]
    out = mask(x, alpha=0.5)
    np.testing.assert_array_equal(out[0, :, :, 0], [[1.0, 0.5], [0.0, 0.0]])
    np.testing.assert_array_equal(out[0, :, :, 1], [[10.0, 5.0], [0.0, 0.0]])
    np.testing.assert_array_equal(out[1, :, :, 0], [[0.3, 0.25], [0.0, 0.0]])
    np.testing.assert_array_equal(out[1, :, :, 1], np.zeros((2, 2)))


@pytest.mark.parametrize("q", [0.07, 0.1, 0.25, 0.5, 0.7, 0.93, 1.0])
@pytest.mark.parametrize("kind", ["normal", "integers"])
def test_quantile_matches_reference(q, kind):
    rng = np.random.default_rng(1)
    shape = (2, 10, 10, 2)  # n = 100 values per map: q * n is exact in decimal
    if kind == "normal":
        x = rng.normal(size=shape)
    else:  # ties at the threshold are all kept
        x = rng.integers(0, 5, size=shape).astype("float64")
    out = mask(x, mode="quantile", q=q)
    np.testing.assert_array_equal(out, reference_mask(x, "quantile", q=q))
    k = math.ceil(fractions.Fraction(str(q)) * 100)
    for index, m in maps_of(x):
        kept = np.count_nonzero(out[index] == m)
        assert kept >= k
        if kind == "normal":
            assert kept == k


@pytest.mark.parametrize("q", [0.1, 0.3, 0.5, 0.6])
def test_quantile_on_vectors(q):
    x = np.random.default_rng(2).normal(size=(3, 10))
    np.testing.assert_array_equal(mask(x, mode="quantile", q=q), reference_mask(x, "quantile", q=q))


def test_quantile_with_dynamic_spatial_shape():
    x = np.random.default_rng(3).normal(size=(2, 5, 4, 3)).astype("float32")
    layer = MaskSanitizer(mode="quantile", q=0.3)
    dynamic = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 3))])
    np.testing.assert_array_equal(dynamic(x).numpy(), reference_mask(x, "quantile", q=0.3))
    vectors = tf.function(layer, input_signature=[tf.TensorSpec((None, None))])
    v = x.reshape(2, -1)
    np.testing.assert_array_equal(vectors(v).numpy(), reference_mask(v, "quantile", q=0.3))


@pytest.mark.parametrize("threshold", [-0.5, 0.0, 0.8])
def test_absolute_matches_reference(threshold):
    x = np.random.default_rng(4).normal(size=(2, 4, 5, 3))
    np.testing.assert_array_equal(
        mask(x, mode="absolute", threshold=threshold, alpha=None),
        reference_mask(x, "absolute", threshold=threshold),
    )


def test_negative_maximum_masks_everything_in_relative_mode():
    x = -np.ones((1, 5))
    np.testing.assert_array_equal(mask(x, alpha=0.5), np.zeros((1, 5)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "relative", "alpha": 0.3},
        {"mode": "quantile", "q": 0.4},
        {"mode": "absolute", "threshold": 0.2},
    ],
)
def test_gradient_is_identity_where_kept_and_zero_where_masked(kwargs):
    x = tf.constant(np.random.default_rng(5).uniform(size=(2, 5, 5, 3)))
    weights = tf.constant(np.random.default_rng(6).normal(size=(2, 5, 5, 3)))
    layer = MaskSanitizer(dtype="float64", **kwargs)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * weights)
    grad = tape.gradient(loss, x).numpy()
    kept = y.numpy() == x.numpy()
    assert 0 < kept.sum() < kept.size
    np.testing.assert_array_equal(grad, np.where(kept, weights.numpy(), 0.0))


def test_half_precision_is_exact_on_half_values():
    x = np.random.default_rng(7).normal(size=(2, 6, 6, 3)).astype("float16")
    x32 = x.astype("float32")
    for kwargs in ({"alpha": 0.3}, {"mode": "quantile", "q": 0.2}):
        expected = keras.ops.convert_to_numpy(MaskSanitizer(**kwargs)(x32))
        for policy in ("float16", "mixed_float16"):
            out = MaskSanitizer(dtype=policy, **kwargs)(x32)
            assert keras.backend.standardize_dtype(out.dtype) == "float16"
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), expected)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"mode": "top"}, ValueError, "mode"),
        ({"mode": "quantile"}, ValueError, "`q` is required"),
        ({"mode": "absolute"}, ValueError, "`threshold` is required"),
        ({"mode": "relative", "alpha": None}, ValueError, "`alpha` is required"),
        ({"q": 0.5}, ValueError, "`q` is only used"),
        ({"threshold": 0.5}, ValueError, "`threshold` is only used"),
        ({"mode": "quantile", "q": 0.5, "threshold": 1.0}, ValueError, "threshold"),
        ({"mode": "absolute", "threshold": 1.0, "q": 0.5}, ValueError, "`q`"),
        ({"alpha": 1.5}, ValueError, "alpha"),
        ({"alpha": -0.1}, ValueError, "alpha"),
        ({"alpha": "0.1"}, TypeError, "alpha"),
        ({"mode": "quantile", "q": 0.0}, ValueError, "q"),
        ({"mode": "quantile", "q": 1.2}, ValueError, "q"),
        ({"mode": "quantile", "q": float("nan")}, ValueError, "q"),
        ({"mode": "absolute", "threshold": "high"}, TypeError, "threshold"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MaskSanitizer(**kwargs)


def test_bad_rank():
    with pytest.raises(ValueError, match="rank-2 input"):
        MaskSanitizer()(np.zeros((2, 3, 4), "float32"))


def test_layer_contract_relative_maps():
    x = np.random.default_rng(8).normal(size=(2, 5, 6, 3)).astype("float16").astype("float32")
    run_layer_test(
        MaskSanitizer,
        {"mode": "relative", "alpha": 0.2, "q": None, "threshold": None},
        x,
        expected_output=reference_mask(x, "relative", alpha=np.float32(0.2)),
        half_atol=0.0,
        half_rtol=0.0,
    )


def test_layer_contract_quantile_vectors():
    x = np.random.default_rng(9).normal(size=(3, 12)).astype("float16").astype("float32")
    run_layer_test(
        MaskSanitizer,
        {"mode": "quantile", "q": 0.25},
        x,
        expected_output=reference_mask(x, "quantile", q=0.25),
        half_atol=0.0,
        half_rtol=0.0,
        run_training_check=False,
    )


def test_layer_contract_absolute():
    x = np.random.default_rng(10).normal(size=(2, 4, 4, 2)).astype("float32")
    run_layer_test(
        MaskSanitizer,
        {"mode": "absolute", "alpha": None, "threshold": 0.5},
        x,
        expected_output=reference_mask(x, "absolute", threshold=0.5),
        run_training_check=False,
    )
