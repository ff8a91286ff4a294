"""Tests for the deliberate bugs the rest of the suite let through.

Breaking the library in 30 places, the suite caught 27. Each test here
fails on one of the mutations that slipped through (checked by applying the
mutation locally):

- `metrics.roc_auc` returning `max(auc, 1 - auc)`: no test had
  adversarial scores below the clean ones. An inverted detector must show
  an AUC below 0.5 (scikit-learn's `roc_auc_score` is the reference).
- an untargeted attack's `success` measured against the prediction before
  the attack instead of the given labels: every attack fixture used
  correctly classified inputs only.
- `DenseLogits` dropping the bias: untrained heads have a zero bias.
"""

import keras
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from keras_advguard import DetectorModel, as_logits_fn, attacks, metrics


def _sklearn_auc(clean, adv):
    y = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
    return sk_metrics.roc_auc_score(y, np.r_[clean, adv])


@pytest.mark.parametrize("shift", [-2.0, -0.5, 0.0, 0.5])
def test_roc_auc_of_an_inverted_detector_is_below_one_half(shift):
    rng = np.random.default_rng(0)
    clean = rng.normal(size=50)
    adv = rng.normal(loc=shift, size=40)  # shift < 0: adversarial scores lower
    auc = metrics.roc_auc(clean, adv)
    assert auc == pytest.approx(_sklearn_auc(clean, adv), abs=1e-12)
    if shift < 0:
        assert auc < 0.5


def test_roc_auc_hand_worked_inverted_case():
    # Every adversarial score below every clean one: AUC 0 (not 1).
    assert metrics.roc_auc([0.6, 0.7, 0.9], [0.1, 0.2]) == 0.0
    # 1 of the 6 pairs ordered correctly, one tie (half): (1 + 0.5) / 6.
    assert metrics.roc_auc([0.2, 0.5, 0.9], [0.3, 0.2]) == pytest.approx(1.5 / 6)


@pytest.fixture(scope="module")
def linear():
    """A linear 3-class model on 4 x 4 images, and inputs with known predictions."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    w = rng.normal(size=(16, 3)).astype("float32")
    b = rng.normal(size=3).astype("float32")
    model.layers[-1].set_weights([w, b])
    x = rng.uniform(0.3, 0.7, size=(12, 4, 4, 1)).astype("float32")
    predicted = np.argmax(x.reshape(12, -1) @ w + b, axis=1)
    return model, x, predicted


@pytest.mark.parametrize(
    "attack",
    [
        lambda m, x, y: attacks.fgsm(m, x, eps=0.0, y=y),
        lambda m, x, y: attacks.pgd(m, x, eps=0.0, nb_iter=1, y=y, rand_init=False),
        lambda m, x, y: attacks.uniform_noise(m, x, eps=0.0, y=y),
    ],
    ids=["fgsm", "pgd", "uniform_noise"],
)
def test_untargeted_success_is_measured_against_the_given_labels(linear, attack):
    # eps = 0: x_adv = x, so the prediction does not move. With y = the
    # predicted class plus one (every input "misclassified"), an untargeted
    # attack succeeds everywhere: success = prediction after != y. Measured
    # against the prediction before the attack, it would fail everywhere.
    model, x, predicted = linear
    y = (predicted + 1) % 3
    result = attack(model, x, y)
    np.testing.assert_array_equal(result.y_pred_after, predicted)
    np.testing.assert_array_equal(result.labels, y)
    assert result.success.all()
    # Half the labels right, half wrong: success exactly on the wrong half.
    y_mixed = np.where(np.arange(12) % 2 == 0, predicted, y)
    result = attack(model, x, y_mixed)
    np.testing.assert_array_equal(result.success, np.arange(12) % 2 == 1)


def test_dense_logits_include_the_bias():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(5, 4)).astype("float32")
    b = np.array([3.0, -2.0, 0.5, 1.0], "float32")  # a non-zero bias
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="softmax")])
    model.layers[-1].set_weights([w, b])
    x = rng.normal(size=(6, 5)).astype("float32")
    expected = x @ w + b
    out = DetectorModel(model)(x)
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(as_logits_fn(model)(x), expected, rtol=1e-5, atol=1e-5)
    softmax = np.exp(expected) / np.exp(expected).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out["prediction"], softmax, rtol=1e-5, atol=1e-6)
