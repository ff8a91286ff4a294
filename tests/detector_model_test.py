import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard import DetectorModel, as_logits_fn
from tests._model_saving_test_case import run_model_saving_test


def _sequential():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(12, activation="relu", name="fc"),
            keras.layers.Dense(5, activation="softmax", name="predictions"),
        ],
        name="seq",
    )


def _residual():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(3, 3, padding="same", name="branch_conv")(inputs)
    b = keras.layers.Add(name="add")([inputs, a])
    b = keras.layers.ReLU(name="relu")(b)
    c = keras.layers.Conv2D(5, 1, name="head_conv")(b)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(c)
    logits = keras.layers.Dense(4, name="logits_dense")(g)
    probs = keras.layers.Softmax(name="softmax")(logits)
    return keras.Model(inputs, probs, name="residual"), keras.Model(inputs, logits)


def _nested():
    backbone = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="b_conv1"),
            keras.layers.Conv2D(4, 3, activation="relu", name="b_conv2"),
        ],
        name="backbone",
    )
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            backbone,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, name="dense"),
            keras.layers.Activation("softmax", name="act"),
        ],
        name="outer",
    )
    return model, backbone


@pytest.fixture
def x8():
    return np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)


def _manual_logits_sequential(model, x):
    """Pre-softmax logits computed independently, in numpy."""
    penultimate = keras.Model(model.inputs, model.get_layer("fc").output)
    h = np.asarray(penultimate(x))
    kernel, bias = (np.asarray(w) for w in model.get_layer("predictions").weights)
    return h @ kernel + bias


def test_sequential_outputs_match_model_and_numpy(x8):
    model = _sequential()
    detector = DetectorModel(model, layers=["conv1", "fc"])
    out = detector(x8)
    np.testing.assert_allclose(out["prediction"], model(x8), atol=1e-6)
    np.testing.assert_allclose(out["logits"], _manual_logits_sequential(model, x8), atol=1e-5)
    # avg pooling of a 4-D map equals the numpy mean over H and W.
    conv1 = keras.Model(model.inputs, model.get_layer("conv1").output)(x8)
    np.testing.assert_allclose(
        out["activations"]["conv1"], np.mean(np.asarray(conv1), axis=(1, 2)), atol=1e-6
    )
    assert detector.tap_names == ["conv1", "fc"]
    assert detector.has_softmax


def test_weights_are_shared_not_copied(x8):
    model = _sequential()
    detector = DetectorModel(model, layers="conv1")
    kernel = model.get_layer("predictions").kernel
    kernel.assign(kernel * 2.0)
    np.testing.assert_allclose(detector(x8)["prediction"], model(x8), atol=1e-6)
    assert {id(w) for w in detector.weights} == {id(w) for w in model.weights}


@pytest.mark.parametrize(
    "pooling, expected_shape",
    [
        ("avg", (5, 4)),
        ("max", (5, 4)),
        ("flatten", (5, 6 * 6 * 4)),
        (None, (5, 6, 6, 4)),
    ],
)
def test_pooling_modes(x8, pooling, expected_shape):
    model = _sequential()
    detector = DetectorModel(model, layers="conv1", pooling=pooling)
    act = np.asarray(detector(x8)["activations"]["conv1"])
    assert act.shape == expected_shape
    full = np.asarray(keras.Model(model.inputs, model.get_layer("conv1").output)(x8))
    reference = {
        "avg": full.mean(axis=(1, 2)),
        "max": full.max(axis=(1, 2)),
        "flatten": full.reshape(5, -1),
        None: full,
    }[pooling]
    np.testing.assert_allclose(act, reference, atol=1e-6)


def test_functional_residual_and_softmax_layer_logits():
    model, logits_model = _residual()
    x = np.random.default_rng(1).random((3, 8, 8, 3), dtype=np.float32)
    detector = DetectorModel(model, layers=["add", "relu", keras.layers.Conv2D])
    out = detector(x)
    assert detector.tap_names == ["branch_conv", "add", "relu", "head_conv"]
    np.testing.assert_allclose(out["logits"], logits_model(x), atol=1e-5)
    np.testing.assert_allclose(out["prediction"], model(x), atol=1e-6)
    added = x + np.asarray(keras.Model(model.inputs, model.get_layer("branch_conv").output)(x))
    np.testing.assert_allclose(out["activations"]["add"], added.mean(axis=(1, 2)), atol=1e-5)


def test_nested_model_paths_and_activation_softmax(x8):
    model, backbone = _nested()
    detector = DetectorModel(model, layers=["backbone/b_conv2", "b_conv1"])
    assert detector.tap_names == ["backbone/b_conv1", "backbone/b_conv2"]
    out = detector(x8)
    inner = np.asarray(keras.Model(backbone.inputs, backbone.get_layer("b_conv2").output)(x8))
    np.testing.assert_allclose(
        out["activations"]["backbone/b_conv2"], inner.mean(axis=(1, 2)), atol=1e-6
    )
    dense_out = keras.Model(model.inputs, model.get_layer("dense").output)(x8)
    np.testing.assert_allclose(out["logits"], dense_out, atol=1e-6)
    # The whole nested model can be tapped too.
    assert DetectorModel(model, layers="backbone").tap_names == ["backbone"]


def test_model_without_softmax_has_logits_equal_prediction(x8):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="out"),
        ]
    )
    detector = DetectorModel(model)
    out = detector(x8)
    np.testing.assert_allclose(out["logits"], out["prediction"])
    assert not detector.has_softmax


def test_logits_layer_override(x8):
    model = _sequential()
    detector = DetectorModel(model, logits_layer="fc")
    fc = keras.Model(model.inputs, model.get_layer("fc").output)(x8)
    np.testing.assert_allclose(detector(x8)["logits"], fc, atol=1e-6)
    with pytest.raises(ValueError, match="No layer 'nope'.*conv1"):
        DetectorModel(model, logits_layer="nope")


def test_save_and_load_safe_mode(tmp_path, x8):
    model, _ = _nested()
    init_kwargs = {"model": model, "layers": ["backbone/b_conv1", "dense"], "pooling": "max"}
    loaded = run_model_saving_test(DetectorModel, init_kwargs, x8, folder=str(tmp_path))
    assert loaded.tap_names == ["backbone/b_conv1", "dense"]
    assert loaded.pooling == "max"


def test_save_and_load_dense_softmax_logits(tmp_path, x8):
    loaded = run_model_saving_test(
        DetectorModel, {"model": _sequential(), "layers": "conv"}, x8, folder=str(tmp_path)
    )
    assert loaded.has_softmax  # the logits behind the fused softmax, found again


def test_activations_batched_numpy_and_dataset(x8):
    detector = DetectorModel(_sequential(), layers=["conv1", "fc"])
    full = detector(x8)["activations"]
    for batch_size in (1, 2, 5, 64):
        acts = detector.activations(x8, batch_size=batch_size)
        assert list(acts) == ["conv1", "fc"]
        for name in acts:
            np.testing.assert_allclose(acts[name], full[name], atol=1e-5)
    labels = np.arange(5)
    dataset = tf.data.Dataset.from_tensor_slices((x8, labels)).batch(2)
    acts = detector.activations(dataset)
    np.testing.assert_allclose(acts["fc"], full["fc"], atol=1e-5)
    # Unbatched datasets and drop_remainder batches (known leading dim) work too.
    unbatched = tf.data.Dataset.from_tensor_slices(x8)
    np.testing.assert_allclose(
        detector.activations(unbatched, batch_size=3)["fc"], full["fc"], atol=1e-5
    )
    exact = tf.data.Dataset.from_tensor_slices(x8[:4]).batch(2, drop_remainder=True)
    np.testing.assert_allclose(detector.activations(exact)["fc"], full["fc"][:4], atol=1e-5)
    assert len(list(detector.iter_activations(exact))) == 2
    batches = list(detector.iter_activations(dataset))
    assert [len(y) for _, y in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)


def test_mixed_precision(x8):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _sequential()
        detector = DetectorModel(model, layers="conv")
        out = detector(x8)
        assert out["activations"]["conv1"].dtype == "float32"
        logits = as_logits_fn(model)(x8)
        assert logits.dtype == tf.float32
        np.testing.assert_allclose(keras.ops.softmax(logits), model(x8), atol=2e-3)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_gradients_flow_through_taps(x8):
    detector = DetectorModel(_sequential(), layers="conv2")
    x = tf.convert_to_tensor(x8)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = detector(x)
        loss = tf.reduce_sum(out["activations"]["conv2"]) + tf.reduce_sum(out["logits"])
    grad = tape.gradient(loss, x)
    assert grad is not None and np.all(np.isfinite(grad)) and np.any(grad != 0)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(keras.ops.reshape(x, (-1, 64)))


def test_errors():
    # Unknown layers, bad selector types and unbuilt models: tests/_selectors_test.py
    # and tests/_graph_test.py (the errors come from there unchanged).
    model = _sequential()
    with pytest.raises(ValueError, match="pooling"):
        DetectorModel(model, pooling="median")
    sub = _Subclassed()
    sub(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        DetectorModel(sub)
    a, b = keras.Input((4,)), keras.Input((4,))
    two_in = keras.Model([a, b], keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match="exactly one input"):
        DetectorModel(two_in)
    two_out = keras.Model(a, [keras.layers.Dense(2)(a), keras.layers.Dense(3)(a)])
    with pytest.raises(ValueError, match="exactly one output"):
        DetectorModel(two_out)


def test_layer_with_non_tensor_output_is_refused():
    inputs = keras.Input((8,))
    lstm_out = keras.layers.LSTM(4, return_state=True, name="lstm")(
        keras.layers.Reshape((2, 4))(inputs)
    )
    outputs = keras.layers.Dense(2, name="out")(lstm_out[0])
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="not a single tensor"):
        DetectorModel(model, layers="lstm")


def test_ambiguous_name_in_nested_models():
    inner_a = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="d")], name="a")
    inner_b = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="d")], name="b")
    model = keras.Sequential([keras.Input((4,)), inner_a, inner_b])
    # Keras needs unique names in one graph: a clear error, naming both paths.
    with pytest.raises(ValueError, match=r"'d' is used by several.*a/d.*b/d"):
        DetectorModel(model, layers=["b/d"])


def test_ambiguous_short_name():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="d")], name="a")
    model = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(2, name="d_top")])
    assert DetectorModel(model, layers="d").tap_names == ["a/d"]
    assert DetectorModel(model, layers="a/d").tap_names == ["a/d"]


def test_inception_v3_mixed_preset_nested():
    backbone = keras.applications.InceptionV3(
        weights=None, include_top=False, input_shape=(75, 75, 3)
    )
    model = keras.Sequential(
        [
            keras.Input((75, 75, 3)),
            backbone,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    detector = DetectorModel(model, layers="inception_mixed")
    assert detector.tap_names == [f"{backbone.name}/mixed{i}" for i in range(11)]
    x = np.random.default_rng(0).random((2, 75, 75, 3), dtype=np.float32)
    out = detector(x)
    np.testing.assert_allclose(out["prediction"], model(x), atol=1e-5)
    assert out["activations"][f"{backbone.name}/mixed10"].shape == (2, 2048)


def test_mobilenet_v2_nested_in_sequential(tmp_path):
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3)
    )
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            backbone,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    detector = DetectorModel(model, layers=[f"{backbone.name}/block_1_expand", "block_2_add"])
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    out = detector(x)
    np.testing.assert_allclose(out["prediction"], model(x), atol=1e-5)
    detector.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(
        loaded(x)["activations"][detector.tap_names[1]],
        out["activations"][detector.tap_names[1]],
        atol=1e-5,
    )


def test_taps_are_the_selected_layers():
    """DetectorModel taps what `_selectors` selects (selectors: tests/_selectors_test.py)."""
    from keras_advguard import _graph, _selectors
    from keras_advguard.detector_model import rebuild_model, resolve_layers

    assert resolve_layers is _selectors.resolve_layers  # old import paths kept
    assert rebuild_model is _graph.rebuild_model
    model, _ = _nested()
    for selector in ("conv", ["dense", "b_conv1"], keras.layers.Conv2D, ["dense", "conv"]):
        assert DetectorModel(model, layers=selector).tap_names == resolve_layers(model, selector)
    with pytest.raises(ValueError, match=r"No layer 'conv7'\. Layers: backbone/b_conv1"):
        DetectorModel(model, layers="conv7")


# ----------------------------------------------------------------------
# collect: the one activation pass of the detectors


def test_collect_matches_the_model_and_numpy(x8):
    model = _sequential()
    detector = DetectorModel(model, layers=["conv1", "fc"])
    x = np.random.default_rng(4).random((11, 8, 8, 1), dtype=np.float32)
    out = detector.collect(x, batch_size=4)
    assert sorted(out) == ["activations", "labels", "logits", "predicted_class", "prediction"]
    assert out["labels"] is None
    conv1 = np.asarray(keras.Model(model.inputs, model.get_layer("conv1").output)(x))
    np.testing.assert_allclose(out["activations"]["conv1"], conv1.mean(axis=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(out["logits"], _manual_logits_sequential(model, x), atol=1e-5)
    probabilities = np.asarray(model(x))
    np.testing.assert_allclose(out["prediction"], probabilities, atol=1e-6)
    assert out["predicted_class"].dtype == np.int64
    np.testing.assert_array_equal(out["predicted_class"], probabilities.argmax(axis=1))
    # The same through tf.data (batched, unbatched), with integer or one-hot labels.
    labels = np.arange(11) % 5
    for dataset in (
        tf.data.Dataset.from_tensor_slices((x, labels)).batch(3),
        tf.data.Dataset.from_tensor_slices((x, np.eye(5, dtype="float32")[labels])),
    ):
        from_dataset = detector.collect(dataset, batch_size=4)
        assert from_dataset["labels"].dtype == np.int64
        np.testing.assert_array_equal(from_dataset["labels"], labels)
        np.testing.assert_allclose(from_dataset["logits"], out["logits"], atol=1e-6)
        np.testing.assert_allclose(
            from_dataset["activations"]["fc"], out["activations"]["fc"], atol=1e-6
        )
    # `activations` is the same pass.
    np.testing.assert_allclose(detector.activations(x)["fc"], out["activations"]["fc"], atol=1e-6)


def test_collect_to_memory_maps(tmp_path):
    detector = DetectorModel(_sequential(), layers=["conv2", "fc"])
    x = np.random.default_rng(5).random((9, 8, 8, 1), dtype=np.float32)
    in_memory = detector.collect(x, batch_size=4)
    on_disk = detector.collect(x, batch_size=4, cache_dir=str(tmp_path))
    from_dataset = detector.collect(
        tf.data.Dataset.from_tensor_slices(x).batch(2), cache_dir=str(tmp_path)
    )
    for out in (on_disk, from_dataset):
        assert isinstance(out["activations"]["conv2"], np.memmap)
        for name in detector.tap_names:
            np.testing.assert_allclose(
                out["activations"][name], in_memory["activations"][name], atol=1e-6
            )
    with pytest.raises(ValueError, match="cache_dir"):
        detector.collect(x, cache_dir=str(tmp_path / "missing"))


def test_non_finite_inputs_are_refused_with_a_count(x8):
    detector = DetectorModel(_sequential(), layers=["conv1"])
    bad = x8.copy()
    bad[3, 0, 0, 0] = np.nan
    bad[3, 2, 2, 0] = np.nan
    bad[4, 1, 1, 0] = np.inf
    # The ReLU would turn NaN into finite activations: refused before the model.
    with pytest.raises(ValueError, match=r"`x`.*2 NaN and 1 infinite"):
        detector.activations(bad)
    with pytest.raises(ValueError, match=r"`x`.*0 NaN and 1 infinite.*samples 2\.\.2"):
        detector.collect(bad[[0, 1, 4]], batch_size=2)
    with pytest.raises(ValueError, match=r"`x`.*2 NaN"):
        detector.collect(tf.data.Dataset.from_tensor_slices(bad).batch(2))
    with pytest.raises(ValueError, match=r"`x`.*NaN"):
        next(detector.iter_activations(bad[3:]))


def test_input_shape_is_checked_on_every_call(x8):
    detector = DetectorModel(_sequential(), layers=["conv1", "fc"])
    detector.activations(x8)  # compiles the predict function for (B, 8, 8, 1)
    rng = np.random.default_rng(6)
    for shape in [(5, 10, 10, 1), (5, 12, 12, 1), (5, 8, 8, 3), (5, 8, 8), (5, 64)]:
        with pytest.raises(ValueError, match=r"`x` must have shape \(N, 8, 8, 1\).*" + str(shape)):
            detector.activations(rng.random(shape, dtype=np.float32))
        with pytest.raises(ValueError, match=r"\(N, 8, 8, 1\)"):
            detector.collect(tf.data.Dataset.from_tensor_slices(rng.random(shape, "float32")))
    # A dataset whose spec hides the spatial size is checked batch by batch.
    hidden = tf.data.Dataset.from_generator(
        lambda: iter([rng.random((2, 10, 10, 1), dtype=np.float32)]),
        output_signature=tf.TensorSpec((None, None, None, 1), tf.float32),
    )
    with pytest.raises(ValueError, match=r"batch of x with shape=\(2, 10, 10, 1\)"):
        detector.collect(hidden)
    with pytest.raises(TypeError, match="must hold numbers"):
        detector.collect(np.array([["a"]]))


def test_empty_input_gives_empty_arrays_of_the_right_shape():
    detector = DetectorModel(_sequential(), layers=["conv1", "conv2", "fc"], pooling=None)
    empty = np.zeros((0, 8, 8, 1), np.float32)
    acts = detector.activations(empty)
    assert {name: a.shape for name, a in acts.items()} == {
        "conv1": (0, 6, 6, 4),
        "conv2": (0, 4, 4, 6),
        "fc": (0, 12),
    }
    assert all(a.dtype == np.float32 for a in acts.values())
    out = detector.collect(tf.data.Dataset.from_tensor_slices((empty, np.zeros(0, int))))
    assert out["logits"].shape == (0, 5) and out["prediction"].shape == (0, 5)
    assert out["predicted_class"].shape == (0,) and out["predicted_class"].dtype == np.int64
    assert out["labels"].shape == (0,) and out["labels"].dtype == np.int64


def test_collect_progress_bar_and_bad_labels(x8, capsys):
    detector = DetectorModel(_sequential(), layers="fc")
    detector.collect(x8, batch_size=2, verbose=1)
    assert "3/3" in capsys.readouterr().out
    detector.collect(x8, batch_size=2, verbose=0)
    assert capsys.readouterr().out == ""
    fractional = tf.data.Dataset.from_tensor_slices((x8, np.full(5, 0.5, "float32")))
    with pytest.raises(ValueError, match="integer class ids"):
        detector.collect(fractional)
    with pytest.raises(ValueError, match="batch_size"):
        detector.collect(x8, batch_size=0)


def test_old_as_logits_fn_path_warns_and_gives_the_same_function():
    import keras_advguard
    from keras_advguard import detector_model

    with pytest.warns(DeprecationWarning, match="keras_advguard.as_logits_fn"):
        old = detector_model.as_logits_fn
    assert old is keras_advguard.as_logits_fn
    with pytest.raises(AttributeError, match="no_such_name"):
        detector_model.no_such_name  # noqa: B018
