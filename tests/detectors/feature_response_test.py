import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.detectors.feature_response import (
    _guided_relu,
    _GuidedCall,
    feature_response,
)

# ---------------------------------------------------------------------------
# Hand-worked references (numpy)
# ---------------------------------------------------------------------------


def conv_valid(x, kernel, bias):
    """Stride-1 'valid' cross-correlation of one image (H, W, C)."""
    kh, kw, _, out = kernel.shape
    h, w = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    z = np.zeros((h, w, out))
    for i in range(h):
        for j in range(w):
            window = x[i : i + kh, j : j + kw, :]
            z[i, j] = np.tensordot(window, kernel, axes=([0, 1, 2], [0, 1, 2])) + bias
    return z


def conv_valid_backward(gz, kernel, input_shape):
    """Gradient of `conv_valid` with respect to its input."""
    kh, kw, _, _ = kernel.shape
    gx = np.zeros(input_shape)
    for i in range(gz.shape[0]):
        for j in range(gz.shape[1]):
            gx[i : i + kh, j : j + kw, :] += np.tensordot(kernel, gz[i, j], axes=([3], [0]))
    return gx


def guided(upstream, pre_activation):
    """The guided ReLU rule: pass where input > 0 and incoming gradient > 0."""
    return upstream * (pre_activation > 0) * (upstream > 0)


def dense_net(seed=0):
    keras.utils.set_random_seed(seed)
    init = keras.initializers.RandomNormal(stddev=0.7)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(
                8, activation="relu", name="fc1", kernel_initializer=init, bias_initializer=init
            ),
            keras.layers.Dense(
                5, activation="relu", name="fc2", kernel_initializer=init, bias_initializer=init
            ),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )


def test_two_layer_dense_net_matches_hand_computation():
    model = dense_net()
    x = np.random.default_rng(1).normal(size=(16, 6)).astype("float32")
    w1, b1 = (np.asarray(v, np.float64) for v in model.get_layer("fc1").weights)
    w2, b2 = (np.asarray(v, np.float64) for v in model.get_layer("fc2").weights)
    z1 = x @ w1 + b1
    a1 = np.maximum(z1, 0)
    z2 = a1 @ w2 + b2
    a2 = np.maximum(z2, 0)
    gz2 = guided(a2, z2)  # d/dA sum(A * stop_gradient(A)) = A
    ga1 = gz2 @ w2.T
    gz1 = guided(ga1, z1)
    expected = gz1 @ w1.T
    plain = (ga1 * (z1 > 0)) @ w1.T

    response = feature_response(model, x, layer="fc2")
    np.testing.assert_allclose(response, expected, rtol=1e-5, atol=1e-5)
    # The case is not vacuous: negative gradients were blocked somewhere.
    assert np.any((ga1 < 0) & (z1 > 0))
    assert np.abs(expected - plain).max() > 1e-2


def test_two_layer_conv_net_matches_hand_computation():
    keras.utils.set_random_seed(2)
    init = keras.initializers.RandomNormal(stddev=0.5)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(
                3, 3, activation="relu", name="c1", kernel_initializer=init, bias_initializer=init
            ),
            keras.layers.Conv2D(
                2, 2, activation="relu", name="c2", kernel_initializer=init, bias_initializer=init
            ),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    x = np.random.default_rng(3).uniform(-1, 1, size=(5, 6, 6, 2)).astype("float32")
    k1, b1 = (np.asarray(v, np.float64) for v in model.get_layer("c1").weights)
    k2, b2 = (np.asarray(v, np.float64) for v in model.get_layer("c2").weights)
    expected = []
    for image in x.astype(np.float64):
        z1 = conv_valid(image, k1, b1)
        z2 = conv_valid(np.maximum(z1, 0), k2, b2)
        a2 = np.maximum(z2, 0)
        ga1 = conv_valid_backward(guided(a2, z2), k2, z1.shape)
        expected.append(conv_valid_backward(guided(ga1, z1), k1, image.shape))
    response = feature_response(model, x)  # default: the last conv, c2
    np.testing.assert_allclose(response, np.stack(expected), rtol=1e-5, atol=1e-5)


def test_guided_and_plain_gradients_differ_exactly_where_the_rule_says():
    # A ReLU on the input itself: the plain gradient is g * (x > 0), the
    # guided one g * (x > 0) * (g > 0), with g the gradient at the ReLU's
    # output (the conv's own ReLU receives A >= 0, where both rules agree).
    keras.utils.set_random_seed(4)
    inputs = keras.Input((7, 7, 2))
    h = keras.layers.Activation("relu", name="relu_in")(inputs)
    h = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    x = np.random.default_rng(5).uniform(-1, 1, size=(6, 7, 7, 2)).astype("float32")

    relu_out = tf.constant(np.maximum(x, 0))
    with tf.GradientTape() as tape:
        tape.watch(relu_out)
        a = model.get_layer("conv")(relu_out)
        objective = tf.reduce_sum(a * tf.stop_gradient(a))
    g = tape.gradient(objective, relu_out).numpy()
    plain = g * (x > 0)
    expected_guided = g * (x > 0) * (g > 0)

    response = feature_response(model, x)
    np.testing.assert_allclose(response, expected_guided, rtol=1e-5, atol=1e-6)
    differs = ~np.isclose(response, plain, rtol=1e-5, atol=1e-6)
    rule = (x > 0) & (g < 0)
    np.testing.assert_array_equal(differs, rule)
    assert rule.sum() > 10  # the rule did something


def test_guided_relu_gradient_rule():
    x = tf.constant([-1.0, 0.0, 2.0, 3.0, 4.0])
    dy = tf.constant([1.0, 1.0, -1.0, 2.0, 0.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = _guided_relu(x)
    np.testing.assert_array_equal(y.numpy(), [0.0, 0.0, 2.0, 3.0, 4.0])
    grad = tape.gradient(y, x, output_gradients=dy).numpy()
    np.testing.assert_array_equal(grad, [0.0, 0.0, 0.0, 2.0, 0.0])


# ---------------------------------------------------------------------------
# Architectures: fused / standalone ReLUs, nested models
# ---------------------------------------------------------------------------


def fused_model():
    inputs = keras.Input((10, 10, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(5, 2, activation="relu", name="c2")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(6, activation="relu", name="fc")(h)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(h))


def standalone_model():
    inputs = keras.Input((10, 10, 1))
    h = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(5, 2, name="c2")(h)
    h = keras.layers.Activation("relu", name="r2")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(6, name="fc")(h)
    h = keras.layers.ReLU()(h)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(h))


def images(n=8, shape=(10, 10, 1), seed=0):
    return np.random.default_rng(seed).uniform(size=(n,) + shape).astype("float32")


def test_fused_and_standalone_relus_give_the_same_response():
    fused, standalone = fused_model(), standalone_model()
    for name in ("c1", "c2", "fc", "out"):
        standalone.get_layer(name).set_weights(fused.get_layer(name).get_weights())
    x = images()
    np.testing.assert_allclose(
        standalone.predict(x, verbose=0), fused.predict(x, verbose=0), rtol=1e-6
    )
    expected = feature_response(fused, x)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(feature_response(standalone, x), expected, rtol=1e-5, atol=1e-7)
    # Explicitly at the conv (before the separate ReLU) the response differs.
    before_relu = feature_response(standalone, x, layer="c2")
    assert not np.allclose(before_relu, expected, atol=1e-6)


def test_batch_norm_between_conv_and_relu_is_followed():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    x = images(4, (8, 8, 1))
    np.testing.assert_allclose(
        feature_response(model, x), feature_response(model, x, layer="relu"), rtol=1e-6
    )


def test_nested_models_match_the_flat_model():
    flat = fused_model()
    backbone = keras.Sequential(
        [
            keras.Input((10, 10, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(5, 2, activation="relu", name="c2"),
        ],
        name="backbone",
    )
    inputs = keras.Input((10, 10, 1))
    h = keras.layers.Flatten()(backbone(inputs))
    h = keras.layers.Dense(6, activation="relu", name="fc")(h)
    nested = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(h))
    backbone.get_layer("c1").set_weights(flat.get_layer("c1").get_weights())
    backbone.get_layer("c2").set_weights(flat.get_layer("c2").get_weights())
    x = images()
    expected = feature_response(flat, x)
    np.testing.assert_allclose(feature_response(nested, x), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        feature_response(nested, x, layer="backbone/c2"), expected, rtol=1e-5, atol=1e-7
    )


def test_users_model_is_unchanged():
    model = standalone_model()
    x = images()
    before = model.predict(x, verbose=0)
    config = model.get_config()
    activations = {layer.name: getattr(layer, "activation", None) for layer in model.layers}
    weights = [id(w) for w in model.weights]

    feature_response(model, x)
    feature_response(fused_model(), x)

    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    assert model.get_config() == config
    assert {layer.name: getattr(layer, "activation", None) for layer in model.layers} == activations
    assert model.get_layer("r2").activation is keras.activations.relu
    assert [id(w) for w in model.weights] == weights
    # Plain gradients of the user's model are still plain (not guided).
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(model(xt)[:, 0])
    assert np.any(np.asarray(tape.gradient(loss, xt)) < 0)


def test_activation_is_restored_when_the_call_fails():
    dense = keras.layers.Dense(3, activation="relu")
    dense.build((None, 4))
    wrapper = _GuidedCall(dense)
    with pytest.raises(Exception):  # noqa: B017 - any error from the wrapped call
        wrapper(tf.zeros((2, 5)))
    assert dense.activation is keras.activations.relu


def test_dataset_input_and_batching_give_the_same_response():
    model = fused_model()
    x = images(10)
    expected = feature_response(model, x, batch_size=10)
    np.testing.assert_allclose(feature_response(model, x, batch_size=3), expected, atol=1e-6)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(4)
    np.testing.assert_allclose(feature_response(model, dataset), expected, atol=1e-6)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_model_without_a_conv_layer_is_refused():
    with pytest.raises(ValueError, match="no convolutional layer"):
        feature_response(dense_net(), np.zeros((2, 6), "float32"))


def test_unknown_layer_lists_the_layers():
    with pytest.raises(ValueError, match="No layer 'nope'. Layers: .*c1"):
        feature_response(fused_model(), images(2), layer="nope")


def test_bad_input_shape_and_type():
    with pytest.raises(ValueError, match=r"shape \(N, 10, 10, 1\)"):
        feature_response(fused_model(), np.zeros((2, 9, 10, 1), "float32"))
    with pytest.raises(TypeError, match="keras.Model"):
        feature_response(lambda x: x, images(2))
    with pytest.raises(ValueError, match="batch_size"):
        feature_response(fused_model(), images(2), batch_size=0)
