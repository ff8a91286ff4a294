"""Neighbourhood sizes are bounded by the map: refused with a clear error, or clipped exactly.

Before the fix, `MedianSanitizer(window=40)` on a 4 x 4 map took 28 s and
2.8 GB (1600 shifted views of the map selected with `top_k`) and window 80
never finished: a window reaching past the map's reflection at its borders
only repeats values. Such windows (and patches) are now refused at once;
a non-local means search window wider than the map is clipped to the
offsets that can reach inside the map, which changes nothing in the result.
"""

import time

import keras
import numpy as np
import pytest

from keras_advguard import (
    MedianSanitizer,
    MedianSmoothingSqueezer,
    NLMeansSanitizer,
    NLMeansSqueezer,
    sanitize,
)


def _reference_median(image, window):
    """Median of each `window`-square of the symmetrically padded 2-D map (rank n // 2)."""
    before, after = window // 2, (window - 1) // 2
    padded = np.pad(image, ((before, after), (before, after)), mode="symmetric")
    views = np.lib.stride_tricks.sliding_window_view(padded, (window, window))
    flat = np.sort(views.reshape(*views.shape[:2], -1), axis=-1)
    return flat[..., flat.shape[-1] // 2]


@pytest.mark.parametrize(
    "layer, shape, limit",
    [
        (MedianSanitizer(window=40), (1, 4, 4, 2), 9),
        (MedianSanitizer(window=80), (1, 4, 4, 2), 9),
        (MedianSanitizer(window=10), (1, 4, 7, 1), 9),
        (MedianSanitizer(window=40), (2, 10), 21),
        (MedianSmoothingSqueezer(window=12), (1, 5, 5, 1), 11),
    ],
)
def test_windows_beyond_the_reflected_map_are_refused_at_once(layer, shape, limit):
    x = np.zeros(shape, "float32")
    start = time.perf_counter()
    with pytest.raises(
        ValueError, match=rf"`window` .*at most .* = {limit}\b.*window={layer.window}"
    ):
        layer(x)
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("layer_class", [NLMeansSanitizer, NLMeansSqueezer])
def test_nl_means_patches_beyond_the_reflected_map_are_refused(layer_class):
    with pytest.raises(ValueError, match=r"`patch` .*at most 2 \* 3 \+ 1 = 7.*patch=9"):
        layer_class(patch=9)(np.zeros((1, 3, 5, 1), "float32"))


def test_the_largest_window_allowed_is_exact():
    x = np.random.default_rng(0).integers(0, 20, size=(2, 2, 2, 3)).astype("float32")
    out = np.asarray(MedianSanitizer(window=5)(x))  # 2 * 2 + 1
    for b in range(2):
        for c in range(3):
            np.testing.assert_array_equal(out[b, :, :, c], _reference_median(x[b, :, :, c], 5))
    v = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    padded = np.pad(v, ((0, 0), (4, 4)), mode="symmetric")
    expected = np.median(np.lib.stride_tricks.sliding_window_view(padded, 9, axis=1), axis=-1)
    np.testing.assert_array_equal(np.asarray(MedianSanitizer(window=9)(v)), expected)


def test_a_huge_nl_means_search_window_is_clipped_exactly_and_cheaply():
    # On a 4 x 5 map no offset beyond (3, 4) reaches another position: a
    # search window of 101 gives the result of one of 9 (offsets -4..4).
    x = np.random.default_rng(1).normal(size=(2, 4, 5, 2)).astype("float32")
    start = time.perf_counter()
    huge = np.asarray(NLMeansSanitizer(patch=3, search=101)(x))
    assert time.perf_counter() - start < 20.0  # 10200 unrolled offsets before
    np.testing.assert_allclose(huge, np.asarray(NLMeansSanitizer(patch=3, search=9)(x)), rtol=1e-6)
    assert not np.allclose(huge, np.asarray(NLMeansSanitizer(patch=3, search=3)(x)))


def test_sanitize_names_the_layer_whose_map_is_too_small():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(2, 3, strides=2, name="conv1"),  # 2 x 2 maps
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    with pytest.raises(ValueError, match=r"after layer 'conv1'.*`window`.*= 5.*window=40"):
        sanitize(model, "conv1", MedianSanitizer(window=40))
