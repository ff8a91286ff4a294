import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.attacks import bpda
from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer
from tests.layers._layer_test_case import run_layer_test


def squeeze(x, dtype="float32", **kwargs):
    return keras.ops.convert_to_numpy(BitDepthSqueezer(dtype=dtype, **kwargs)(x))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8, 16])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_xu_numpy_rint_bit_for_bit(bits, dtype):
    # Xu et al.'s reduce_precision_py: np.rint(x * (2**bits - 1)) / (2**bits - 1).
    rng = np.random.default_rng(bits)
    x = rng.random((3, 7, 5, 2)).astype(dtype)
    levels = 2**bits - 1
    np.testing.assert_array_equal(squeeze(x, dtype, bits=bits), np.rint(x * levels) / levels)


def test_one_bit_is_a_binarisation_with_halves_to_even():
    x = np.array([[0.0, 0.49, 0.5, 0.51, 1.0]], "float32")
    # rint(0.5) = 0 (round half to even), as numpy and Xu et al.'s code.
    np.testing.assert_array_equal(squeeze(x, bits=1), [[0.0, 0.0, 0.0, 1.0, 1.0]])
    # value_range (0, 4) with 1 bit: x / 4 = 0.5 -> 0 and x / 4 = 1.5 -> 2 (even).
    x = np.array([[2.0, 6.0]], "float32")
    np.testing.assert_array_equal(squeeze(x, bits=1, value_range=(0.0, 4.0)), [[0.0, 8.0]])


def test_every_output_is_on_the_grid():
    x = np.random.default_rng(0).random((2, 50)).astype("float32")
    out = squeeze(x, bits=3)
    np.testing.assert_allclose(out * 7, np.round(out * 7), atol=1e-6)
    assert np.max(np.abs(out - x)) <= 0.5 / 7 + 1e-7


def test_value_range_matches_art_formula():
    # ART FeatureSqueezing: rint((x - min) / (max - min) * L) / L * (max - min) + min.
    low, high, bits = -1.0, 3.0, 4
    x = np.random.default_rng(1).uniform(low, high, size=(4, 9)).astype("float32")
    levels = 2**bits - 1
    expected = np.rint((x - low) / (high - low) * levels) / levels * (high - low) + low
    np.testing.assert_array_equal(squeeze(x, bits=bits, value_range=(low, high)), expected)


def test_values_outside_the_range_are_not_clipped():
    x = np.array([[-0.4, 1.6]], "float32")
    np.testing.assert_array_equal(squeeze(x, bits=1), [[-0.0, 2.0]])


def test_gradient_is_none_and_bpda_gives_the_identity():
    x = tf.constant(np.random.default_rng(2).random((2, 5)).astype("float32"))
    layer = BitDepthSqueezer(3)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        plain = tf.reduce_sum(layer(x) * 2.0)
        through = tf.reduce_sum(bpda(layer)(x) * 2.0)
    assert tape.gradient(plain, x) is None
    np.testing.assert_array_equal(tape.gradient(through, x).numpy(), np.full((2, 5), 2.0))
    np.testing.assert_array_equal(bpda(layer)(x).numpy(), layer(x).numpy())


def test_layer_contract():
    x = np.random.default_rng(3).random((2, 4, 4, 3)).astype("float32")
    run_layer_test(
        BitDepthSqueezer,
        {"bits": 5, "value_range": [0.0, 1.0]},
        x,
        expected_output=np.rint(x * 31) / 31,
        atol=0,
        rtol=0,
        # float16 can move a value across a rounding boundary: one level.
        half_atol=1 / 31 + 1e-3,
        run_training_check=False,  # no gradient through the rounding, by design
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"bits": 0}, ValueError, "bits"),
        ({"bits": 25}, ValueError, "bits"),
        ({"bits": 2.0}, TypeError, "bits"),
        ({"bits": True}, TypeError, "bits"),
        ({"bits": 2, "value_range": (1.0, 0.0)}, ValueError, "low < high"),
        ({"bits": 2, "value_range": (0.0, 1.0, 2.0)}, ValueError, "pair"),
        ({"bits": 2, "value_range": "01"}, TypeError, "pair"),
        ({"bits": 2, "value_range": (0.0, "1")}, TypeError, r"value_range\[1\]"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        BitDepthSqueezer(**kwargs)
