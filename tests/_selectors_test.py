"""Layer selectors and presets, on a model and on a traced record."""

import keras
import pytest

from keras_advguard import _graph, _selectors


def _model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, name="conv_a")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(4, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(2, name="out")(x)
    return keras.Model(inputs, outputs, name="m")


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("conv", ["conv_a", "depthwise"]),
        ("dense", ["fc", "out"]),
        ("conv+dense", ["conv_a", "depthwise", "fc", "out"]),
        (keras.layers.Flatten, ["flatten"]),
        (lambda layer: getattr(layer, "activation", None) is keras.activations.relu, ["fc"]),
        (["out", "conv_a"], ["conv_a", "out"]),  # graph order, not selector order
        (["fc", "conv_a", "conv"], ["conv_a", "depthwise", "fc"]),  # no duplicates
        (None, []),
    ],
)
def test_selectors_on_a_model_and_on_its_traced_record(selector, expected):
    model = _model()
    assert _selectors.resolve_layers(model, selector) == expected
    assert _selectors.resolve_layers(_graph.trace(model), selector) == expected


def test_layer_object_and_errors():
    model = _model()
    graph = _graph.trace(model)
    assert _selectors.resolve_layers(graph, model.get_layer("fc")) == ["fc"]
    with pytest.raises(ValueError, match=r"No layer 'conv9'\. Layers: conv_a, depthwise"):
        _selectors.resolve_layers(graph, "conv9")
    with pytest.raises(ValueError, match="matches no layer"):
        _selectors.resolve_layers(graph, keras.layers.LSTM)
    with pytest.raises(TypeError, match="subclass of keras.layers.Layer"):
        _selectors.resolve_layers(graph, int)
    with pytest.raises(TypeError, match="of type float"):
        _selectors.resolve_layers(graph, 1.5)
    with pytest.raises(ValueError, match="is not part of the model"):
        _selectors.resolve_layers(graph, keras.layers.Dense(1, name="stranger"))


def test_every_preset_is_described():
    assert set(_selectors.PRESETS) == {"conv", "dense", "conv+dense", "inception_mixed"}
