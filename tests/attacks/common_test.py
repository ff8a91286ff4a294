"""The shared machinery: validation, batching, labels, logits, `AttackResult`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advguard import DetectorModel, attacks
from keras_advguard.attacks import _common

EPS_ATTACKS = {
    "fgsm": attacks.fgsm,
    "bim": attacks.bim,
    "pgd": attacks.pgd,
    "mim": attacks.mim,
    "spsa": attacks.spsa,
    "uniform_noise": attacks.uniform_noise,
    "gradient_attack": attacks.gradient_attack,
}
STEP_ATTACKS = {"bim": attacks.bim, "pgd": attacks.pgd, "mim": attacks.mim}
NORM_ATTACKS = {
    "fgsm": attacks.fgsm,
    "bim": attacks.bim,
    "pgd": attacks.pgd,
    "mim": attacks.mim,
    "deepfool": attacks.deepfool,
}
# Every attack with the minimal arguments it needs, for the checks common to all.
ALL = {
    **{name: (fn, {"eps": 0.1}) for name, fn in EPS_ATTACKS.items()},
    "deepfool": (attacks.deepfool, {}),
    "carlini_wagner_l2": (attacks.carlini_wagner_l2, {"max_iterations": 2}),
    "one_pixel": (attacks.one_pixel, {"maxiter": 1, "population": 5}),
    "boundary": (attacks.boundary, {"steps": 2}),
    "pgd_with_loss": (
        lambda model, x, **kw: attacks.pgd_with_loss(
            model, x, lambda out, y: out["logits"][:, 0], **kw
        ),
        {"eps": 0.1},
    ),
}


@pytest.fixture
def small(linear, x_mid):
    return linear.model, x_mid


# --------------------------------------------------------------------------
# Invalid arguments
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EPS_ATTACKS))
def test_negative_eps_raises(name, small):
    model, x = small
    with pytest.raises(ValueError, match=r"`eps` must be >= 0"):
        EPS_ATTACKS[name](model, x, eps=-0.1)


@pytest.mark.parametrize("name", list(STEP_ATTACKS))
def test_eps_iter_larger_than_eps_raises(name, small):
    model, x = small
    with pytest.raises(ValueError, match=r"`eps_iter` .* must not exceed `eps`"):
        STEP_ATTACKS[name](model, x, eps=0.1, eps_iter=0.2)


@pytest.mark.parametrize("name", list(NORM_ATTACKS))
@pytest.mark.parametrize("norm", [1, 3, "l2", "inf"])
def test_unknown_norm_raises(name, norm, small):
    model, x = small
    kwargs = {} if name == "deepfool" else {"eps": 0.1}
    with pytest.raises(ValueError, match=r"`norm` must be one of inf, 2"):
        NORM_ATTACKS[name](model, x, norm=norm, **kwargs)


@pytest.mark.parametrize("name", list(ALL))
def test_clip_min_not_below_clip_max_raises(name, small):
    fn, kwargs = ALL[name]
    model, x = small
    with pytest.raises(ValueError, match=r"`clip_min` must be smaller than `clip_max`"):
        fn(model, x, clip_min=0.5, clip_max=0.5, **kwargs)


@pytest.mark.parametrize("name", list(ALL))
def test_x_outside_clip_range_raises(name, small):
    fn, kwargs = ALL[name]
    model, x = small
    with pytest.raises(ValueError, match=r"values of `x` must lie in \[clip_min"):
        fn(model, x + 1.0, **kwargs)


@pytest.mark.parametrize("name", [n for n in ALL if n != "pgd_with_loss"])
def test_labels_of_wrong_length_raise(name, small):
    fn, kwargs = ALL[name]
    model, x = small
    with pytest.raises(ValueError, match=r"one label per sample.*len\(y\)=2, len\(x\)=6"):
        fn(model, x, y=np.array([0, 1]), **kwargs)


def test_pgd_with_loss_data_of_wrong_length_raises(small):
    model, x = small
    with pytest.raises(ValueError, match=r"one row per sample"):
        attacks.pgd_with_loss(model, x, lambda o, y: o["logits"][:, 0], eps=0.1, y=[0, 1])


def test_label_out_of_class_range_raises(small):
    model, x = small
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\]"):
        attacks.fgsm(model, x, eps=0.1, y=np.full(len(x), 3))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3, activation="softmax")

    def call(self, x):
        return self.dense(keras.ops.reshape(x, (-1, 16)))


@pytest.mark.parametrize("name", list(ALL))
def test_model_without_logits_path_raises(name, x_mid):
    fn, kwargs = ALL[name]
    model = _Subclassed()
    model(x_mid)
    with pytest.raises(ValueError, match=r"subclassed keras.Model"):
        fn(model, x_mid, **kwargs)


def test_model_of_wrong_type_raises(x_mid):
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model"):
        attacks.fgsm("model", x_mid, eps=0.1)


def test_other_bad_arguments(small):
    model, x = small
    with pytest.raises(ValueError, match=r"`batch_size` must be >= 1"):
        attacks.fgsm(model, x, eps=0.1, batch_size=0)
    with pytest.raises(TypeError, match=r"`targeted` must be bool"):
        attacks.fgsm(model, x, eps=0.1, targeted=1)
    with pytest.raises(TypeError, match=r"`eps` must be a real number"):
        attacks.fgsm(model, x, eps="0.1")
    with pytest.raises(ValueError, match=r"`x` must have rank >= 2"):
        attacks.fgsm(model, x[0, 0, 0], eps=0.1)


# --------------------------------------------------------------------------
# Logits, labels and batching
# --------------------------------------------------------------------------


def test_as_logits_fn_on_models_wrappers_and_callables(linear, x_mid):
    """Pre-softmax logits of a softmax model, its wrappers; callables pass as they are."""
    from keras_advguard import as_logits_fn

    assert as_logits_fn is _common.as_logits_fn  # public name, defined beside run_attack
    flatten, dense = linear.model.layers
    expected = linear.logits(x_mid)  # closed form, numpy

    class Wrapper(keras.Model):  # duck-typed: exposes its classifier as `base_model`
        def __init__(self, base_model):
            super().__init__()
            self.base_model = base_model

    for model in (linear.model, DetectorModel(linear.model, layers=dense), Wrapper(linear.model)):
        logits = as_logits_fn(model)(x_mid)
        assert logits.dtype == tf.float32
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    # A DetectorModel's `logits_layer` is kept: here the flattened input.
    flat = DetectorModel(linear.model, logits_layer=flatten.name)
    np.testing.assert_allclose(as_logits_fn(flat)(x_mid), x_mid.reshape(6, -1), atol=1e-6)
    fn = lambda x: x  # noqa: E731
    assert as_logits_fn(fn) is fn
    with pytest.raises(TypeError, match="Received: model of type int"):
        as_logits_fn(42)


def test_softmax_model_attacked_on_its_logits(digits):
    """Same result from the softmax model, its DetectorModel and its logits callable."""
    model, x, y = digits
    # An independent logits path: the last Dense recomputed without its softmax.
    dense = model.get_layer("predictions")
    features = keras.Model(model.inputs, dense.input)

    def logits_fn(x):
        return tf.matmul(features(x), dense.kernel) + dense.bias

    results = [
        attacks.bim(m, x, eps=0.1, nb_iter=5)
        for m in (model, DetectorModel(model, layers=["conv1"]), logits_fn)
    ]
    for other in results[1:]:
        np.testing.assert_allclose(other.x_adv, results[0].x_adv, atol=1e-6)
        np.testing.assert_array_equal(other.success, results[0].success)
    # Attacking the probabilities as if they were logits gives a different answer.
    probs = attacks.bim(lambda x: model(x), x, eps=0.1, nb_iter=5)
    assert not np.allclose(probs.x_adv, results[0].x_adv)


def test_batching_does_not_change_the_result(digits):
    model, x, y = digits
    whole = attacks.deepfool(model, x, batch_size=64)
    pieces = attacks.deepfool(model, x, batch_size=7)
    np.testing.assert_allclose(pieces.x_adv, whole.x_adv, atol=1e-5)
    np.testing.assert_array_equal(pieces.y_pred_after, whole.y_pred_after)


def test_one_hot_labels_equal_integer_labels(digits):
    model, x, y = digits
    a = attacks.fgsm(model, x, eps=0.1, y=y)
    b = attacks.fgsm(model, x, eps=0.1, y=np.eye(10)[y])
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    np.testing.assert_array_equal(a.labels, y)


def test_random_targets_are_other_classes_and_seeded(digits):
    model, x, _ = digits
    a = attacks.fgsm(model, x, eps=0.1, targeted=True, seed=3)
    b = attacks.fgsm(model, x, eps=0.1, targeted=True, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert np.all(a.labels != a.y_pred_before)
    assert len(np.unique(a.labels)) > 3
    np.testing.assert_array_equal(a.success, a.y_pred_after == a.labels)


def test_result_fields(digits):
    model, x, y = digits
    result = attacks.fgsm(model, x, eps=0.2, y=y)
    pred = np.argmax(model.predict(result.x_adv, verbose=0), axis=1)
    np.testing.assert_array_equal(result.y_pred_after, pred)
    np.testing.assert_array_equal(result.y_pred_before, y)  # all correct
    np.testing.assert_array_equal(result.success, pred != y)
    assert result.attack == "fgsm" and result.params["eps"] == 0.2
    assert result.seconds > 0 and len(result) == len(x)
    summary = result.summary()
    assert summary["success_rate"] == pytest.approx(result.success.mean())
    assert summary["mean_linf"] == pytest.approx(0.2, abs=1e-6)


def test_summary_without_success_is_nan():
    result = _common.AttackResult(
        x_adv=np.zeros((1, 2)),
        success=np.array([False]),
        y_pred_before=np.zeros(1, int),
        y_pred_after=np.zeros(1, int),
        labels=np.zeros(1, int),
        l2=np.zeros(1),
        linf=np.zeros(1),
        seconds=0.0,
        attack="x",
        targeted=False,
        params={},
    )
    assert np.isnan(result.summary()["mean_l2"])
    assert result.success_rate == 0.0


def test_progress_bar_per_batch(small, capsys):
    model, x = small
    attacks.fgsm(model, x, eps=0.1, batch_size=2, verbose=2)
    out = capsys.readouterr().out
    assert "3/3" in out
    attacks.fgsm(model, x, eps=0.1, batch_size=2, verbose=0)
    assert capsys.readouterr().out == ""


def test_tensor_inputs_accepted(small):
    model, x = small
    a = attacks.fgsm(model, tf.constant(x), eps=0.1)
    b = attacks.fgsm(model, x, eps=0.1)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
