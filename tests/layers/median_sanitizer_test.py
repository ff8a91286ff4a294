import keras
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from keras_advguard.layers import MedianSanitizer, _neighbourhood
from tests.layers._layer_test_case import run_layer_test


def scipy_median(x, window):
    """scipy.ndimage.median_filter on each map of a (B, H, W, C) or (B, N) array."""
    if x.ndim == 2:
        return np.stack([scipy.ndimage.median_filter(v, size=window, mode="reflect") for v in x])
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[3]):
            out[b, :, :, c] = scipy.ndimage.median_filter(
                x[b, :, :, c], size=window, mode="reflect"
            )
    return out


def padded_median(m, window):
    """Brute force: numpy.pad "symmetric", then the element of rank n // 2."""
    before, after = window // 2, (window - 1) // 2
    padded = np.pad(m, (before, after), mode="symmetric")
    out = np.empty_like(m)
    for index in np.ndindex(*m.shape):
        block = padded[tuple(slice(i, i + window) for i in index)]
        values = np.sort(block.ravel())
        out[index] = values[values.size // 2]
    return out


def median(x, window, dtype="float64"):
    layer = MedianSanitizer(window=window, dtype=dtype)
    return keras.ops.convert_to_numpy(layer(x))


@pytest.mark.parametrize("window", [1, 2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("kind", ["normal", "integers"])
def test_maps_match_scipy(window, kind):
    rng = np.random.default_rng(window)
    shape = (2, 7, 9, 3)
    if kind == "normal":
        x = rng.normal(size=shape)
    else:  # many ties
        x = rng.integers(0, 4, size=shape).astype("float64")
    np.testing.assert_array_equal(median(x, window), scipy_median(x, window))


@pytest.mark.parametrize("window", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("kind", ["normal", "integers"])
def test_vectors_match_scipy(window, kind):
    rng = np.random.default_rng(10 + window)
    if kind == "normal":
        x = rng.normal(size=(3, 20))
    else:
        x = rng.integers(0, 3, size=(3, 20)).astype("float64")
    np.testing.assert_array_equal(median(x, window), scipy_median(x, window))


def test_default_window_is_3x3():
    x = np.random.default_rng(0).normal(size=(1, 5, 5, 1)).astype("float32")
    layer = MedianSanitizer()
    assert layer.window == 3
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), scipy_median(x, 3))


def test_hand_worked_3x3():
    m = np.array([[1.0, 9.0, 2.0], [8.0, 3.0, 7.0], [4.0, 6.0, 5.0]])
    # Centre: median of 1..9 is 5. Corner (0, 0): its window over the
    # symmetric padding holds 1, 1, 9, 1, 1, 9, 8, 8, 3 -> sorted
    # 1 1 1 1 3 8 8 9 9 -> 3.
    out = median(m[None, :, :, None], 3)[0, :, :, 0]
    assert out[1, 1] == 5.0
    assert out[0, 0] == 3.0


def test_even_window_takes_upper_middle_value():
    # For 4 values the result is the 0-based rank 2 (second largest), and the
    # window of size 2 covers offsets -1 .. 0, as scipy anchors it.
    x = np.array([[1.0, 2.0, 10.0, 20.0]])
    np.testing.assert_array_equal(median(x, 2), [[1.0, 2.0, 10.0, 20.0]])
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    # Window at (1, 1) holds 1, 2, 3, 4 -> 3 (not 2.5).
    assert median(m[None, :, :, None], 2)[0, 1, 1, 0] == 3.0


def test_constant_maps_are_unchanged():
    x = np.full((2, 6, 5, 2), 0.3)
    for window in (2, 3, 5):
        np.testing.assert_array_equal(median(x, window), x)
    np.testing.assert_array_equal(median(x[:, 0, :, 0], 3), x[:, 0, :, 0])


# Windows up to 2 n + 1 (one reflection of the map on each side); wider ones
# are refused (tests/reliability/resource_limits_test.py).
@pytest.mark.parametrize("window", [4, 5])
def test_windows_larger_than_the_map(window):
    # scipy 1.17 median_filter returns wrong or uninitialised values when the
    # window is much larger than the array (1-D fast path from window
    # 2 n + 2, N-D path near 8 n), so the reference here is the definition:
    # periodic symmetric extension, rank n // 2.
    rng = np.random.default_rng(window)
    x = rng.integers(0, 5, size=(2, 2, 3, 2)).astype("float64")
    expected = np.empty_like(x)
    for b in range(2):
        for c in range(2):
            expected[b, :, :, c] = padded_median(x[b, :, :, c], window)
    np.testing.assert_array_equal(median(x, window), expected)
    v = rng.normal(size=(3, 2))
    np.testing.assert_array_equal(
        median(v, window), np.stack([padded_median(r, window) for r in v])
    )


def test_large_window_uses_top_k_selection_exactly():
    # 10 x 10 = 100 values per window: above the network limit, top_k path.
    x = np.random.default_rng(3).integers(0, 9, size=(1, 12, 11, 1)).astype("float64")
    np.testing.assert_array_equal(median(x, 10), scipy_median(x, 10))


def test_network_and_top_k_agree():
    x = tf.constant(np.random.default_rng(4).normal(size=(2, 6, 5, 2)))
    for window in (2, 3, 4, 5):
        views = _neighbourhood.shifted_views(x, window, 2)
        np.testing.assert_array_equal(
            _neighbourhood.median_filter(x, window, 2),
            _neighbourhood._median_top_k(views),
        )


def test_dynamic_spatial_shape_and_xla():
    x = np.random.default_rng(5).normal(size=(2, 6, 7, 3)).astype("float32")
    layer = MedianSanitizer(window=3)
    dynamic = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    np.testing.assert_array_equal(dynamic(x).numpy(), scipy_median(x, 3))
    small = x[:, :2, :2]  # window wider than the map, dynamic padding path
    np.testing.assert_array_equal(
        tf.function(MedianSanitizer(window=5), input_signature=dynamic.input_signature)(
            small
        ).numpy(),
        np.stack(
            [
                np.stack([padded_median(small[b, :, :, c], 5) for c in range(3)], -1)
                for b in range(2)
            ]
        ),
    )
    compiled = tf.function(layer, jit_compile=True)
    np.testing.assert_array_equal(compiled(x).numpy(), scipy_median(x, 3))


@pytest.mark.parametrize("window", [2, 3, 4])
def test_gradient_selects_one_input_per_output(window):
    x = tf.constant(np.random.default_rng(6).normal(size=(2, 5, 6, 3)))
    layer = MedianSanitizer(window=window, dtype="float64")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y)
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad))
    # Each output is one input value: the gradient counts how often each
    # input is selected (distinct values, so no ties).
    np.testing.assert_array_equal(grad, np.round(grad))
    assert grad.min() >= 0
    assert grad.sum() == y.shape.num_elements()


def test_gradient_with_ties_is_finite_and_compiled():
    x = tf.constant(np.random.default_rng(7).integers(0, 2, size=(2, 5, 5, 2)), tf.float32)
    layer = MedianSanitizer()

    @tf.function(jit_compile=True)
    def grad_fn(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) ** 2)
        return tape.gradient(loss, x)

    grad = grad_fn(x).numpy()
    assert np.all(np.isfinite(grad))
    # Each output y routes d(y^2)/dy = 2 y to one input holding the value y:
    # the gradient sums to 2 sum(y), and inputs equal to 0 get none.
    y = layer(x).numpy()
    assert grad.sum() == pytest.approx(2 * y.sum())
    assert np.all(grad[x.numpy() == 0] == 0) and grad.max() > 0


def test_float16_and_mixed_precision_are_exact_on_half_values():
    x = np.random.default_rng(8).normal(size=(2, 6, 6, 3)).astype("float16")
    expected = scipy_median(x.astype("float32"), 3)
    for policy in ("float16", "mixed_float16"):
        out = MedianSanitizer(dtype=policy)(x.astype("float32"))
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), expected)


@pytest.mark.parametrize(
    "window, error",
    [
        (0, ValueError),
        (-3, ValueError),
        (2.5, TypeError),
        ("3", TypeError),
        (True, TypeError),
    ],
)
def test_bad_window(window, error):
    with pytest.raises(error, match="window"):
        MedianSanitizer(window=window)


@pytest.mark.parametrize("shape", [(2, 5, 3), (2, 3, 3, 3, 1), (4,)])
def test_bad_rank(shape):
    with pytest.raises(ValueError, match="rank-2 input"):
        MedianSanitizer()(np.zeros(shape, "float32"))


def test_numpy_integer_window_is_stored_as_int():
    layer = MedianSanitizer(window=np.int64(5))
    assert type(layer.get_config()["window"]) is int


@pytest.mark.parametrize(
    "window, shape", [(3, (2, 5, 6, 3)), (2, (2, 5, 6, 3)), (3, (3, 8)), (4, (3, 8))]
)
def test_layer_contract(window, shape):
    x = np.random.default_rng(9).normal(size=shape).astype("float32")
    run_layer_test(
        MedianSanitizer,
        {"window": window},
        x,
        expected_output=scipy_median(x, window),
        run_training_check=window == 3,
    )


@pytest.mark.parametrize(
    "window, shape",
    [
        (3, (3, 9, 8, 4)),
        (2, (2, 7, 7, 3)),
        # XLA compile of the 4x4 network: ~12 s; CI runs it (`pytest -m ci`)
        pytest.param(4, (2, 9, 9, 2), marks=pytest.mark.ci),
    ],
)
def test_compiled_median_equals_the_op_by_op_network(window, shape):
    # The layer runs the selection network as one XLA kernel forward and one
    # backward; values must be identical and gradients equal to the plain
    # network's (up to float rounding of the summed routes).
    x = tf.constant(np.random.default_rng(window).normal(size=shape).astype("float32"))
    dy = tf.constant(np.random.default_rng(7).normal(size=shape).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        fast = _neighbourhood.compiled_median_filter(x, window, 2)
        plain = _neighbourhood.median_filter(x, window, 2)
    np.testing.assert_array_equal(fast.numpy(), plain.numpy())
    np.testing.assert_allclose(
        tape.gradient(fast, x, output_gradients=dy).numpy(),
        tape.gradient(plain, x, output_gradients=dy).numpy(),
        rtol=1e-6,
        atol=1e-6,
    )


def test_graph_mode_3x3_matches_scipy_inside_and_the_symmetric_border_rule():
    # The 3x3 path pads and filters as two compiled functions (issue 16); in a
    # plain `tf.function` it must still be scipy's median on interior pixels,
    # and at the border the median of the window over the map padded with
    # its edge row/column repeated (numpy "symmetric"), including corners.
    rng = np.random.default_rng(11)
    x = np.maximum(rng.normal(size=(2, 26, 26, 3)), 0.0).astype("float32")
    x[1] = np.round(x[1])  # many ties
    out = tf.function(MedianSanitizer(window=3))(tf.constant(x)).numpy()
    for b in range(2):
        for c in range(3):
            m = x[b, :, :, c]
            inside = scipy.ndimage.median_filter(m, size=3)[1:-1, 1:-1]
            np.testing.assert_array_equal(out[b, 1:-1, 1:-1, c], inside)
            edged = np.pad(m, 1, mode="edge")  # symmetric by one = edge repeated
            for i, j in [(0, 0), (0, 7), (25, 25), (13, 0), (25, 3), (9, 25)]:
                window = edged[i : i + 3, j : j + 3]
                assert out[b, i, j, c] == np.sort(window.ravel())[4]


def test_graph_mode_3x3_gradient_equals_the_op_by_op_network():
    x = tf.constant(np.random.default_rng(12).normal(size=(2, 26, 26, 2)).astype("float32"))
    dy = tf.constant(np.random.default_rng(13).normal(size=(2, 26, 26, 2)).astype("float32"))

    @tf.function
    def grads(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            fast = _neighbourhood.compiled_median_filter(x, 3, 2)
            plain = _neighbourhood.median_filter(x, 3, 2)
        return (
            fast,
            plain,
            tape.gradient(fast, x, output_gradients=dy),
            tape.gradient(plain, x, output_gradients=dy),
        )

    fast, plain, g_fast, g_plain = (t.numpy() for t in grads(x))
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_allclose(g_fast, g_plain, rtol=1e-6, atol=1e-6)
