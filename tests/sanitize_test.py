import keras
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from keras_advguard.layers import MaskSanitizer, MedianSanitizer, NLMeansSanitizer
from keras_advguard.models import MNIST_CNN_SANITIZED_LAYERS, mnist_cnn
from keras_advguard.sanitize import sanitize, sanitizer_name
from tests._model_saving_test_case import run_model_saving_test

RNG = np.random.default_rng(0)


def relu(x):
    return np.maximum(x, 0.0)


def mask_ref(a, alpha):
    """Numpy mask sanitizer on vectors (B, N) or maps (B, H, W, C)."""
    axes = (1,) if a.ndim == 2 else (1, 2)
    tau = alpha * a.max(axis=axes, keepdims=True)
    return np.where(a >= tau, a, 0.0)


def dense_ref(layer, x):
    kernel, bias = (w.numpy().astype("float64") for w in layer.weights)
    return x @ kernel + bias


def mlp(name="mlp"):
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(12, activation="relu", name="fc1"),
            keras.layers.Dense(10, activation="relu", name="fc2"),
            keras.layers.Dense(3, name="logits"),
        ],
        name=name,
    )


def residual_model():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="stem")(inputs)
    branch = keras.layers.Dense(8, activation="relu", name="branch")(h)
    added = keras.layers.Add(name="add")([h, branch])  # h has two consumers
    outputs = keras.layers.Dense(3, name="head")(added)
    return keras.Model(inputs, outputs, name="residual")


def ids(weights):
    return {id(w) for w in weights}


# --------------------------------------------------------------------------
# Outputs against independent references
# --------------------------------------------------------------------------


def test_sequential_matches_numpy_reference():
    model = mlp()
    x = RNG.normal(size=(16, 6)).astype("float32")
    defended = sanitize(model, after=["fc1", "fc2"], sanitizer=MaskSanitizer(alpha=0.4))
    h1 = mask_ref(relu(dense_ref(model.get_layer("fc1"), x)), 0.4)
    h2 = mask_ref(relu(dense_ref(model.get_layer("fc2"), h1)), 0.4)
    expected = dense_ref(model.get_layer("logits"), h2)
    np.testing.assert_allclose(defended.predict(x, verbose=0), expected, atol=1e-5)
    # The mask does change something here, so the test can fail.
    assert np.abs(model.predict(x, verbose=0) - expected).max() > 1e-2


def test_matches_hand_composed_model():
    model = mlp()
    inputs = keras.Input((6,))
    h = MaskSanitizer(alpha=0.3)(model.get_layer("fc1")(inputs))
    h = model.get_layer("fc2")(h)
    outputs = model.get_layer("logits")(MaskSanitizer(alpha=0.3)(h))
    by_hand = keras.Model(inputs, outputs)
    defended = sanitize(model, ["fc1", "fc2"], MaskSanitizer(alpha=0.3))
    x = RNG.normal(size=(32, 6)).astype("float32")
    np.testing.assert_array_equal(defended(x), by_hand(x))


def test_median_in_a_convnet_matches_scipy():
    inputs = keras.Input((9, 9, 1))
    h = keras.layers.Conv2D(3, 3, activation="relu", name="conv1")(inputs)
    h = keras.layers.Flatten(name="flatten")(h)
    outputs = keras.layers.Dense(4, name="logits")(h)
    model = keras.Model(inputs, outputs)
    x = RNG.random((5, 9, 9, 1)).astype("float32")
    conv = keras.Model(inputs, model.get_layer("conv1").output).predict(x, verbose=0)
    filtered = scipy.ndimage.median_filter(
        conv.astype("float64"), size=(1, 3, 3, 1), mode="reflect"
    )
    expected = dense_ref(model.get_layer("logits"), filtered.reshape(5, -1))
    defended = sanitize(model, keras.layers.Conv2D, MedianSanitizer(window=3))
    np.testing.assert_allclose(defended.predict(x, verbose=0), expected, atol=1e-5)


def test_residual_branches_all_see_the_sanitized_output():
    model = residual_model()
    defended = sanitize(model, after="stem", sanitizer=MaskSanitizer(alpha=0.5))
    x = RNG.normal(size=(20, 6)).astype("float32")
    h = mask_ref(relu(dense_ref(model.get_layer("stem"), x)), 0.5)
    added = h + relu(dense_ref(model.get_layer("branch"), h))
    expected = dense_ref(model.get_layer("head"), added)
    np.testing.assert_allclose(defended.predict(x, verbose=0), expected, atol=1e-5)
    # Sanitizing only the branch input (not the skip connection) differs.
    h_raw = relu(dense_ref(model.get_layer("stem"), x))
    half = dense_ref(model.get_layer("head"), h_raw + relu(dense_ref(model.get_layer("branch"), h)))
    assert np.abs(half - expected).max() > 1e-3


def test_nested_model_layers_are_sanitized():
    inner = mlp(name="backbone")
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(2, name="top")(inner(inputs))
    model = keras.Model(inputs, outputs, name="outer")
    defended = sanitize(model, "backbone/fc2", MaskSanitizer(alpha=0.5))
    assert "backbone_fc2_sanitizer" in [layer.name for layer in defended.layers]
    x = RNG.normal(size=(10, 6)).astype("float32")
    h = relu(dense_ref(inner.get_layer("fc1"), x))
    h = mask_ref(relu(dense_ref(inner.get_layer("fc2"), h)), 0.5)
    expected = dense_ref(model.get_layer("top"), dense_ref(inner.get_layer("logits"), h))
    np.testing.assert_allclose(defended.predict(x, verbose=0), expected, atol=1e-5)


def test_sanitizing_a_whole_nested_model_output():
    inner = mlp(name="backbone")
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(2, name="top")(inner(inputs))
    model = keras.Model(inputs, outputs)
    defended = sanitize(model, "backbone", MaskSanitizer(alpha=0.5))
    x = RNG.normal(size=(10, 6)).astype("float32")
    expected = dense_ref(model.get_layer("top"), mask_ref(inner.predict(x, verbose=0), 0.5))
    np.testing.assert_allclose(defended.predict(x, verbose=0), expected, atol=1e-5)


def test_shared_layer_is_sanitized_at_every_call():
    shared = keras.layers.Dense(5, activation="relu", name="shared")
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(2, name="head")(shared(shared(inputs)))
    model = keras.Model(inputs, outputs)
    defended = sanitize(model, "shared", MaskSanitizer(alpha=0.6))
    x = RNG.normal(size=(7, 5)).astype("float32")
    h = mask_ref(relu(dense_ref(shared, x)), 0.6)
    h = mask_ref(relu(dense_ref(shared, h)), 0.6)
    expected = dense_ref(model.get_layer("head"), h)
    np.testing.assert_allclose(defended.predict(x, verbose=0), expected, atol=1e-5)


# --------------------------------------------------------------------------
# Structure: the paper's call, copies, names, shared weights
# --------------------------------------------------------------------------


def test_paper_selection_is_one_call():
    model = mnist_cnn()
    defended = sanitize(model, MNIST_CNN_SANITIZED_LAYERS, MaskSanitizer(alpha=0.2))
    names = [layer.name for layer in defended.layers]
    for layer in MNIST_CNN_SANITIZED_LAYERS:
        assert names[names.index(layer) + 1] == sanitizer_name(layer)
    inserted = [la for la in defended.layers if isinstance(la, MaskSanitizer)]
    assert len(inserted) == 6
    assert len({id(la) for la in inserted}) == 6  # one fresh copy each
    assert all(la.alpha == 0.2 for la in inserted)
    assert defended.name == "mnist_cnn_sanitized"


def test_weights_are_shared_not_copied():
    model = mlp()
    defended = sanitize(model, "dense", MaskSanitizer(alpha=0.2))
    assert ids(defended.weights) == ids(model.weights)
    x = RNG.normal(size=(4, 6)).astype("float32")
    before = defended.predict(x, verbose=0)
    kernel = model.get_layer("logits").kernel
    kernel.assign(kernel.numpy() * 2.0)
    after = defended.predict(x, verbose=0)
    bias = model.get_layer("logits").bias.numpy()
    np.testing.assert_allclose(after - bias, 2.0 * (before - bias), rtol=1e-5, atol=1e-5)


def test_template_is_not_inserted_and_name_is_overridden():
    template = MaskSanitizer(alpha=0.3, name="my_mask")
    defended = sanitize(mlp(), "fc1", template)
    assert template not in defended.layers
    assert defended.get_layer("fc1_sanitizer").get_config()["alpha"] == 0.3


def test_sanitizing_twice_gives_unique_names():
    once = sanitize(mlp(), "fc1")
    twice = sanitize(once, "fc1")
    names = [layer.name for layer in twice.layers]
    assert len(names) == len(set(names))
    assert "fc1_sanitizer_1" in names and "fc1_sanitizer" in names


def test_default_sanitizer_is_mask():
    defended = sanitize(mlp(), "fc1")
    layer = defended.get_layer("fc1_sanitizer")
    assert isinstance(layer, MaskSanitizer) and layer.alpha == 0.1


def test_original_model_is_unchanged():
    model = mlp()
    x = RNG.normal(size=(4, 6)).astype("float32")
    before = model.predict(x, verbose=0)
    sanitize(model, "dense", MaskSanitizer(alpha=0.9))
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    assert len(model.layers) == 3


# --------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------


@pytest.mark.parametrize("bpda", [False, True])
@pytest.mark.parametrize(
    "sanitizer",
    [MaskSanitizer(alpha=0.2), MedianSanitizer(window=3), NLMeansSanitizer(h=0.5)],
    ids=["mask", "median", "nlm"],
)
def test_save_and_load_in_safe_mode(tmp_path, sanitizer, bpda):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(6, activation="relu", name="fc2")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(h)
    model = keras.Model(inputs, outputs)
    defended = sanitize(model, ["conv1", "fc2"], sanitizer, bpda=bpda)
    x = RNG.random((6, 8, 8, 1)).astype("float32")
    loaded = run_model_saving_test(
        keras.Model, model=defended, input_data=x, atol=0, rtol=0, folder=str(tmp_path)
    )
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), defended.predict(x, verbose=0))
    kinds = [type(la).__name__ for la in loaded.layers]
    assert kinds.count(type(sanitizer).__name__) == 2


# --------------------------------------------------------------------------
# BPDA variant
# --------------------------------------------------------------------------


def _input_gradient(model, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tf.reduce_sum(model(x))
    return tape.gradient(out, x).numpy()


def test_bpda_forward_equals_plain_and_backward_is_identity():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(10, name="fc1")(inputs)  # linear: mask on raw values
    outputs = keras.layers.Dense(3, name="logits")(h)
    model = keras.Model(inputs, outputs)
    plain = sanitize(model, "fc1", MaskSanitizer(alpha=0.5))
    through = sanitize(model, "fc1", MaskSanitizer(alpha=0.5), bpda=True)
    assert through.name == f"{model.name}_sanitized_bpda"
    x = RNG.normal(size=(8, 6)).astype("float32")
    np.testing.assert_array_equal(through(x), plain(x))
    w1 = model.get_layer("fc1").kernel.numpy()
    w2 = model.get_layer("logits").kernel.numpy()
    identity_grad = np.tile((w1 @ w2).sum(axis=1), (8, 1))
    np.testing.assert_allclose(_input_gradient(through, x), identity_grad, rtol=1e-5)
    # The plain mask passes no gradient through masked units.
    kept = mask_ref(dense_ref(model.get_layer("fc1"), x), 0.5) != 0
    masked_grad = (kept * w2.sum(axis=1)) @ w1.T
    np.testing.assert_allclose(_input_gradient(plain, x), masked_grad, rtol=1e-4, atol=1e-6)
    assert np.abs(masked_grad - identity_grad).max() > 1e-2


def test_bpda_median_forward_is_close():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(3, 3, padding="same", name="conv1")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    x = RNG.random((4, 8, 8, 1)).astype("float32")
    plain = sanitize(model, "conv1", MedianSanitizer())
    through = sanitize(model, "conv1", MedianSanitizer(), bpda=True)
    np.testing.assert_allclose(through(x), plain(x), rtol=1e-5, atol=1e-6)
    grad = _input_gradient(through, x)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def test_unknown_layer_lists_the_layers():
    with pytest.raises(ValueError, match="No layer 'conv9'. Layers: fc1, fc2, logits"):
        sanitize(mlp(), after="conv9")


def test_selector_matching_nothing():
    with pytest.raises(ValueError, match="matches no layer"):
        sanitize(mlp(), after=keras.layers.Conv2D)


def nested_twice():
    inner_a = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="d")], name="a")
    inner_b = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="d")], name="b")
    return keras.Sequential([keras.Input((4,)), inner_a, inner_b])


def test_ambiguous_name():
    with pytest.raises(ValueError, match=r"'d' is ambiguous.*a/d.*b/d"):
        sanitize(nested_twice(), after="d")


def test_duplicate_names_in_nested_models():
    with pytest.raises(ValueError, match=r"'d' is used by several.*a/d.*b/d"):
        sanitize(nested_twice(), after="b/d")


def test_bad_selector_type():
    # The argument is `after` (resolve_layers calls it `layers`).
    with pytest.raises(TypeError, match=r"Argument `after` must be a layer name.*after=3"):
        sanitize(mlp(), after=3)


def test_empty_selection():
    with pytest.raises(ValueError, match="at least one layer"):
        sanitize(mlp(), after=[])


@pytest.mark.parametrize(
    "bad",
    [MaskSanitizer, "mask", keras.Sequential([keras.layers.Dense(2)])],
    ids=["class", "string", "model"],
)
def test_bad_sanitizer_type(bad):
    with pytest.raises(TypeError, match="sanitizer"):
        sanitize(mlp(), after="fc1", sanitizer=bad)


def test_sanitizer_with_weights_is_refused():
    dense = keras.layers.Dense(3)
    dense.build((None, 12))
    with pytest.raises(ValueError, match="stateless"):
        sanitize(mlp(), after="fc1", sanitizer=dense)


def test_wrong_rank_names_the_layer():
    inputs = keras.Input((10, 2))
    h = keras.layers.Conv1D(3, 3, name="conv1d")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="after layer 'conv1d'"):
        sanitize(model, after="conv1d")


def test_not_a_model():
    with pytest.raises(TypeError, match="keras.Model"):
        sanitize(lambda x: x, after="fc1")


def test_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        sanitize(net, after="dense")


def test_bad_bpda_and_name_types():
    with pytest.raises(TypeError, match="bpda"):
        sanitize(mlp(), after="fc1", bpda="yes")
    with pytest.raises(TypeError, match="name"):
        sanitize(mlp(), after="fc1", name=3)


@pytest.mark.parametrize("bpda", [False, True])
def test_attacks_see_the_logits_of_the_sanitized_model(bpda):
    from keras_advguard import as_logits_fn

    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="fc1")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(h)
    model = keras.Model(inputs, outputs)
    defended = sanitize(model, "fc1", MaskSanitizer(alpha=0.5), bpda=bpda)
    x = RNG.normal(size=(5, 6)).astype("float32")
    h = mask_ref(relu(dense_ref(model.get_layer("fc1"), x)), 0.5)
    expected = dense_ref(model.get_layer("predictions"), h)  # pre-softmax
    np.testing.assert_allclose(as_logits_fn(defended)(x), expected, atol=1e-5)
