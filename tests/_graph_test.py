"""The one tracer of Keras graphs: the traced record, model checks, traces counted."""

import keras
import numpy as np
import pytest

from keras_advguard import DetectorModel, _graph, sanitize
from keras_advguard.detectors.feature_response import _target_path


def _residual():
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(2, 3, padding="same", name="branch_conv")(inputs)
    b = keras.layers.Add(name="add")([inputs, a])
    b = keras.layers.ReLU(name="relu")(b)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(b)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(g)
    return keras.Model(inputs, outputs, name="residual")


def _nested():
    backbone = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, name="b1"), keras.layers.Dense(5, name="b2")],
        name="backbone",
    )
    return keras.Sequential(
        [keras.Input((4,)), backbone, keras.layers.Dense(2, name="head")], name="outer"
    )


def test_trace_records_paths_layers_outputs_and_consumers():
    model = _residual()
    graph = _graph.trace(model)
    assert graph.paths == ["branch_conv", "add", "relu", "gap", "predictions"]
    assert graph.layers["add"] is model.get_layer("add")
    # The input feeds `add` directly (no producer path); branch_conv feeds add.
    assert graph.consumers == {
        "branch_conv": ["add"],
        "add": ["relu"],
        "relu": ["gap"],
        "gap": ["predictions"],
    }
    assert graph.logits is None  # find_logits=False: the softmax Dense is left whole
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype("float32")
    traced = keras.Model(graph.inputs, graph.prediction)
    np.testing.assert_allclose(traced(x), model(x), atol=1e-6)


def test_trace_enters_nested_models_and_finds_logits():
    model = _nested()
    graph = _graph.trace(model, find_logits=False)
    assert graph.paths == ["backbone/b1", "backbone/b2", "backbone", "head"]
    assert graph.leaf_paths() == ["backbone/b1", "backbone/b2", "head"]
    assert graph.consumers["backbone/b1"] == ["backbone/b2"]
    assert graph.consumers["backbone/b2"] == ["head"]
    softmax = _graph.trace(_residual(), find_logits=True)
    x = np.random.default_rng(1).normal(size=(3, 6, 6, 2)).astype("float32")
    logits = np.asarray(keras.Model(softmax.inputs, softmax.logits)(x))
    probabilities = np.asarray(keras.Model(softmax.inputs, softmax.prediction)(x))
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)


def test_check_model_unwraps_by_duck_typing_and_refuses_bad_models():
    model = _nested()

    class Wrapper:  # not a DetectorModel: only the `base_model` attribute counts
        base_model = model

    assert _graph.check_model(Wrapper()) is model
    assert _graph.check_model(DetectorModel(model)) is model
    with pytest.raises(TypeError, match="model of type int"):
        _graph.check_model(3)
    with pytest.raises(ValueError, match="is not built"):
        _graph.check_model(keras.Sequential([keras.layers.Dense(2)]))


@pytest.fixture
def count_traces(monkeypatch):
    """The number of graph traces: each starts from one fresh input."""
    calls = []
    fresh_input = _graph.fresh_input

    def counting(model):
        calls.append(model.name)
        return fresh_input(model)

    monkeypatch.setattr(_graph, "fresh_input", counting)
    return calls


def test_sanitize_inspects_the_graph_once(count_traces):
    model = _residual()
    sanitize(model, after=["branch_conv", "relu"])
    # One trace to select layers and check names, one rebuild (was 3).
    assert count_traces == ["residual", "residual"]


def test_feature_response_target_uses_one_trace(count_traces):
    model = _residual()
    # Default layer: the last convolution, followed through `add` to no ReLU.
    assert _target_path(model, None) == "branch_conv"
    assert count_traces == ["residual"]  # selection and consumers (was 2)


def test_rebuild_model_shares_weights_and_names_missing_outputs():
    model = _nested()
    rebuilt = _graph.rebuild_model(model, outputs=["backbone/b2"])
    x = np.random.default_rng(2).normal(size=(3, 4)).astype("float32")
    out = rebuilt(x)
    inner = model.get_layer("backbone")
    np.testing.assert_allclose(out["prediction"], model(x), atol=1e-6)
    np.testing.assert_allclose(out["backbone/b2"], inner(x), atol=1e-6)
    assert {id(w) for w in rebuilt.weights} == {id(w) for w in model.weights}
    with pytest.raises(ValueError, match=r"No layer 'nope' \(argument `outputs`\)"):
        _graph.rebuild_model(model, outputs=["nope"])


def test_rebuild_model_after_hook_rewires_every_consumer():
    model = _residual()
    x = np.random.default_rng(3).normal(size=(2, 6, 6, 2)).astype("float32")

    def zero_branch(path, layer, output):
        if path == "branch_conv":
            return keras.layers.Rescaling(0.0, name="zero_branch")(output)
        return output

    rebuilt = _graph.rebuild_model(model, after=zero_branch, outputs=["add", "branch_conv"])
    out = rebuilt(x)
    # The residual Add now sees a zero branch: add == inputs.
    np.testing.assert_allclose(out["add"], x, atol=1e-6)
    np.testing.assert_allclose(out["branch_conv"], 0.0)
    # The original model is unchanged; without hooks the rebuild is the model.
    np.testing.assert_allclose(_graph.rebuild_model(model)(x), model(x), atol=1e-6)


def test_rebuild_model_replace_hook_inside_nested_model():
    model = _nested()
    x = np.random.default_rng(4).normal(size=(3, 4)).astype("float32")

    def double_b2(path, layer, args, kwargs):
        if path == "backbone/b2":
            return keras.layers.Rescaling(2.0, name="twice")(layer(*args, **kwargs))
        return None

    rebuilt = _graph.rebuild_model(model, replace=double_b2, outputs=["backbone/b2"])
    backbone = model.get_layer("backbone")
    np.testing.assert_allclose(rebuilt(x)["backbone/b2"], 2 * np.asarray(backbone(x)), atol=1e-5)
