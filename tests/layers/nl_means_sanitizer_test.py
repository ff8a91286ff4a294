import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.layers import NLMeansSanitizer
from tests.layers._layer_test_case import run_layer_test


def nlm_map(m, patch, search, h):
    """The formula, pixel by pixel, on one 1-D or 2-D map with an absolute h."""
    p_before, p_after = patch // 2, (patch - 1) // 2
    s_before, s_after = search // 2, (search - 1) // 2
    padded = np.pad(m, (p_before, p_after), mode="symmetric")

    def patch_at(index):
        # padded[index + p_before + o] for o in -p_before .. p_after
        return padded[tuple(slice(i, i + patch) for i in index)]

    out = np.empty_like(m)
    for i in np.ndindex(*m.shape):
        numerator = denominator = 0.0
        for offset in itertools.product(range(-s_before, s_after + 1), repeat=m.ndim):
            j = tuple(a + o for a, o in zip(i, offset, strict=True))
            if not all(0 <= a < n for a, n in zip(j, m.shape, strict=True)):
                continue  # the search window is clipped to the map
            distance = np.sum((patch_at(i) - patch_at(j)) ** 2)
            weight = np.exp(-distance / h**2)
            numerator += weight * m[j]
            denominator += weight
        out[i] = numerator / denominator
    return out


def nlm_reference(x, patch, search, h, h_mode):
    out = np.empty_like(x)
    maps = (
        [((b,), x[b]) for b in range(x.shape[0])]
        if x.ndim == 2
        else [
            ((b, slice(None), slice(None), c), x[b, :, :, c])
            for b in range(x.shape[0])
            for c in range(x.shape[3])
        ]
    )
    for index, m in maps:
        strength = h * m.std() if h_mode == "relative" else h
        out[index] = m if strength == 0 else nlm_map(m, patch, search, strength)
    return out


def nlm(x, dtype="float64", **kwargs):
    return keras.ops.convert_to_numpy(NLMeansSanitizer(dtype=dtype, **kwargs)(x))


@pytest.mark.parametrize(
    "patch, search, h, h_mode",
    [
        (3, 7, 1.0, "relative"),
        (3, 7, 0.5, "absolute"),
        (1, 3, 2.0, "absolute"),
        (2, 4, 0.8, "relative"),
        (5, 3, 1.5, "relative"),
        (3, 1, 1.0, "relative"),
    ],
)
def test_maps_match_reference(patch, search, h, h_mode):
    x = np.random.default_rng(patch * 10 + search).normal(size=(2, 6, 7, 2))
    out = nlm(x, patch=patch, search=search, h=h, h_mode=h_mode)
    np.testing.assert_allclose(
        out, nlm_reference(x, patch, search, h, h_mode), rtol=1e-5, atol=1e-12
    )


@pytest.mark.parametrize(
    "patch, search, h, h_mode", [(3, 7, 1.0, "relative"), (2, 5, 0.3, "absolute")]
)
def test_vectors_match_reference(patch, search, h, h_mode):
    x = np.random.default_rng(search).normal(size=(3, 11))
    out = nlm(x, patch=patch, search=search, h=h, h_mode=h_mode)
    np.testing.assert_allclose(
        out, nlm_reference(x, patch, search, h, h_mode), rtol=1e-5, atol=1e-12
    )


def test_integer_valued_maps_match_reference():
    # Many equal patches (distance 0, weight 1).
    x = np.random.default_rng(1).integers(0, 2, size=(1, 5, 6, 2)).astype("float64")
    np.testing.assert_allclose(
        nlm(x, h=0.7), nlm_reference(x, 3, 7, 0.7, "relative"), rtol=1e-5, atol=1e-12
    )


def test_hand_worked_vector():
    # patch 1, search 3, h 1: middle value 0 -> e^-1 / (2 + e^-1).
    out = nlm(np.array([[0.0, 0.0, 1.0]]), patch=1, search=3, h=1.0, h_mode="absolute")
    e = np.exp(-1.0)
    np.testing.assert_allclose(out, [[0.0, e / (2 + e), 1 / (1 + e)]], rtol=1e-12)


def test_constant_maps_return_themselves():
    x = np.full((2, 5, 6, 3), 0.7)
    x[1] = -2.5
    np.testing.assert_array_equal(nlm(x), x)
    np.testing.assert_array_equal(nlm(x[:, 0, :, 0]), x[:, 0, :, 0])
    x32 = x.astype("float32")
    np.testing.assert_array_equal(nlm(x32, dtype="float32"), x32)


def test_dead_channel_stays_zero_in_eager_and_graph_mode():
    # A ReLU map that is zero everywhere: the scale 2^floor(log2(max)) must
    # stay a normal float32 (2^-127 is flushed to zero: 0 / 0 = NaN, which
    # eager float32 kernels produced). The live channel matches the formula.
    x = np.zeros((3, 8, 7, 2), "float32")
    x[..., 1] = np.random.default_rng(3).random((3, 8, 7))
    layer = NLMeansSanitizer(dtype="float32")
    expected = nlm_reference(x.astype("float64"), 3, 7, 1.0, "relative")
    for out in (layer(x), tf.function(lambda v: layer(v))(x)):
        out = keras.ops.convert_to_numpy(out)
        np.testing.assert_array_equal(out[..., 0], 0.0)
        np.testing.assert_allclose(out[..., 1], expected[..., 1], rtol=1e-5, atol=1e-6)


def test_small_h_keeps_the_map_and_large_h_averages_the_window():
    x = np.random.default_rng(2).normal(size=(1, 5, 5, 1))
    np.testing.assert_allclose(nlm(x, h=1e-4), x, rtol=1e-12)
    # h -> infinity: plain mean over the clipped search window.
    out = nlm(x, h=1e6, h_mode="absolute", search=3)
    padded = np.pad(x[0, :, :, 0], 1, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    np.testing.assert_allclose(out[0, :, :, 0], np.nanmean(windows, axis=(2, 3)), rtol=1e-9)


def test_gradient_matches_finite_differences():
    x = np.random.default_rng(3).normal(size=(1, 4, 4, 1))
    layer = NLMeansSanitizer(patch=3, search=3, dtype="float64")
    theoretical, numerical = tf.test.compute_gradient(layer, [tf.constant(x)])
    assert np.all(np.isfinite(theoretical[0]))
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


def test_gradient_is_finite_on_constant_maps():
    x = tf.constant(np.full((1, 4, 5, 2), 3.0, "float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(NLMeansSanitizer()(x) ** 2)
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad))
    # On a constant map every weight is 1 and the weights' own derivative is
    # 0 (squared patch differences, all 0), so s = A a with A the mean over
    # the clipped 7 x 7 search window: d/da sum(s^2) = 2 A^T s, s = 3.
    counts = [
        [min(i + 3, 3) - max(i - 3, 0) + 1 for i in range(4)],
        [min(j + 3, 4) - max(j - 3, 0) + 1 for j in range(5)],
    ]
    inv_size = 1.0 / np.outer(counts[0], counts[1])  # 1 / |S(i)|
    expected = np.zeros((4, 5))
    for i in range(4):
        for j in range(5):
            expected[max(i - 3, 0) : i + 4, max(j - 3, 0) : j + 4] += inv_size[i, j]
    expected = 2 * 3.0 * expected
    for c in range(2):
        np.testing.assert_allclose(grad[0, :, :, c], expected, rtol=1e-5)


def test_dynamic_shapes_and_xla():
    x = np.random.default_rng(4).normal(size=(2, 6, 5, 2)).astype("float32")
    layer = NLMeansSanitizer(search=5)
    expected = nlm_reference(x.astype("float64"), 3, 5, 1.0, "relative")
    dynamic = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 2))])
    np.testing.assert_allclose(dynamic(x).numpy(), expected, rtol=1e-4, atol=1e-5)
    small = NLMeansSanitizer(patch=3, search=3)  # keeps the XLA compile short
    compiled = tf.function(small, jit_compile=True)
    np.testing.assert_allclose(
        compiled(x).numpy(),
        nlm_reference(x.astype("float64"), 3, 3, 1.0, "relative"),
        rtol=1e-4,
        atol=1e-5,
    )


def test_half_precision_is_computed_in_float32():
    x = np.random.default_rng(5).normal(size=(2, 5, 5, 2)).astype("float16")
    expected = keras.ops.convert_to_numpy(NLMeansSanitizer()(x.astype("float32")))
    for policy in ("float16", "mixed_float16"):
        out = NLMeansSanitizer(dtype=policy)(x.astype("float32"))
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        # Only the final cast to float16 differs.
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), expected.astype("float16"))


def test_large_activations_do_not_overflow_in_float16():
    x = np.random.default_rng(6).uniform(0, 300, size=(1, 5, 5, 1)).astype("float32")
    out = keras.ops.convert_to_numpy(NLMeansSanitizer(dtype="mixed_float16")(x))
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"patch": 0}, ValueError, "patch"),
        ({"patch": -1}, ValueError, "patch"),
        ({"patch": 3.0}, TypeError, "patch"),
        ({"search": 0}, ValueError, "search"),
        ({"search": "7"}, TypeError, "search"),
        ({"h": 0.0}, ValueError, "h"),
        ({"h": -1.0}, ValueError, "h"),
        ({"h": None}, TypeError, "h"),
        ({"h_mode": "std"}, ValueError, "h_mode"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        NLMeansSanitizer(**kwargs)


def test_bad_rank():
    with pytest.raises(ValueError, match="rank-2 input"):
        NLMeansSanitizer()(np.zeros((2, 3, 4), "float32"))


def test_layer_contract_maps():
    x = np.random.default_rng(7).normal(size=(2, 5, 6, 3)).astype("float32")
    run_layer_test(
        NLMeansSanitizer,
        {"patch": 3, "search": 3, "h": 1.0, "h_mode": "relative"},
        x,
        expected_output=nlm_reference(x.astype("float64"), 3, 3, 1.0, "relative"),
        atol=1e-5,
        rtol=1e-4,
    )


def test_layer_contract_vectors():
    x = np.random.default_rng(8).normal(size=(3, 10)).astype("float32")
    run_layer_test(
        NLMeansSanitizer,
        {"patch": 3, "search": 7, "h": 0.5, "h_mode": "absolute"},
        x,
        expected_output=nlm_reference(x.astype("float64"), 3, 7, 0.5, "absolute"),
        atol=1e-5,
        rtol=1e-4,
        run_training_check=False,
    )


@pytest.mark.parametrize("search, joint", [(7, False), (4, False), (5, True)])
def test_paired_offsets_equal_every_offset_on_its_own(search, joint):
    # The fast path reads w(i, i - o) off the weights of offset o; the slow
    # path computes every offset. Same numbers up to rounding.
    from keras_advguard.layers import _neighbourhood

    x = np.random.default_rng(search).normal(size=(2, 9, 8, 3))
    inv_h2 = np.full((2, 1, 1, 3), 0.7)
    args = (x, 3, search, inv_h2, joint)
    paired = _neighbourhood.nl_means_filter(*args, pair_offsets=True)
    alone = _neighbourhood.nl_means_filter(*args, pair_offsets=False)
    np.testing.assert_allclose(np.asarray(paired), np.asarray(alone), rtol=1e-12, atol=1e-12)
    pairs = list(_neighbourhood._offset_pairs([_neighbourhood.window_bounds(search)] * 2))
    covered = len(pairs) + sum(mirrored for _, mirrored in pairs)
    assert covered == search * search - 1


def test_large_map_memory_stays_linear():
    # A 512 x 512 map: an (H W)^2 weight matrix would be 6.9e10 entries
    # (275 GB in float32). The layer needs a few copies of the map; peak RSS
    # may grow by well under 1 GB (the map itself is 1 MB).
    import resource

    x = np.random.default_rng(0).normal(size=(1, 512, 512, 1)).astype("float32")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out = np.asarray(NLMeansSanitizer()(x))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert out.shape == x.shape and np.isfinite(out).all()
    assert grown_kib < 1024**2, f"peak memory grew by {grown_kib / 1024:.0f} MiB"
