"""adversarial_fit: rounds of adaptive examples against the current detector."""

import keras
import numpy as np
import pytest

from keras_advguard import attacks
from keras_advguard.detectors import (
    ClassConditionalInputDetector,
    InputCNNDetector,
    MaxSoftmaxDetector,
)
from keras_advguard.training import adversarial_fit
from keras_advguard.training.detector_training import _balanced_weights


def _classifier():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


@pytest.fixture(scope="module")
def data():
    # Smooth clean images: the sign steps of PGD leave a texture a CNN sees.
    rng = np.random.default_rng(0)
    x = np.clip(0.5 + 0.05 * rng.standard_normal((48, 6, 6, 1)), 0, 1)
    return _classifier(), x.astype("float32")


def _detector(model):
    keras.utils.set_random_seed(2)
    detector = InputCNNDetector(model, filters=(4,), dense_units=8)
    detector.compile(optimizer=keras.optimizers.Adam(0.01))
    return detector


@pytest.mark.slow
def test_adaptive_round_raises_the_score_of_its_own_examples(data):
    model, x = data
    captured = {}

    def recording_attack(model, x, detector, **kwargs):
        result = attacks.selective_pgd(model, x, detector, **kwargs)
        captured["x_adv"] = result.x_adv[result.success]
        return result

    kwargs = {"eps": 0.2, "nb_iter": 5, "seed": 0, "batch_size": 8}
    trained = _detector(model)
    history = adversarial_fit(
        trained, x, rounds=1, epochs_per_round=4, attack=recording_attack, **kwargs
    )
    assert len(captured["x_adv"]) >= 8
    assert [r["round"] for r in history.rounds] == [0, 1]
    assert history.rounds[1]["attack"] == "recording_attack"
    assert history.rounds[1]["n_new"] == len(captured["x_adv"])
    assert history.rounds[1]["n_negatives"] == history.rounds[0]["n_new"] + len(captured["x_adv"])
    assert len(history.history["loss"]) == 8
    # Control: the same detector and epochs, oblivious negatives only. The
    # detector trained on the adaptive examples tells them from clean inputs
    # better than the control does (mean score gap).
    control = _detector(model)
    adversarial_fit(control, x, rounds=0, epochs_per_round=8, **kwargs)
    gap_trained = np.mean(trained.score(captured["x_adv"])) - np.mean(trained.score(x))
    gap_control = np.mean(control.score(captured["x_adv"])) - np.mean(control.score(x))
    assert gap_trained > gap_control + 0.03
    # The threshold the attack needed is gone: calibrate on held-out data.
    assert getattr(trained, "threshold_", None) is None


@pytest.mark.slow
def test_round_zero_uses_x_adv_and_replaces_without_accumulate(data):
    model, x = data
    given = np.clip(x[:10] + 0.2, 0, 1)
    detector = _detector(model)
    history = adversarial_fit(
        detector,
        x,
        eps=0.2,
        rounds=2,
        epochs_per_round=1,
        nb_iter=3,
        x_adv=given,
        accumulate=False,
        attack=["selective_pgd", "orthogonal_pgd"],
        seed=0,
    )
    rounds = history.rounds
    assert rounds[0] == {
        "round": 0,
        "attack": "x_adv",
        "n_new": 10,
        "fooled": None,
        "evaded": None,
        "n_negatives": 10,
    }
    assert [(r["round"], r["attack"]) for r in rounds[1:]] == [
        (1, "selective_pgd"),
        (1, "orthogonal_pgd"),
        (2, "selective_pgd"),
        (2, "orthogonal_pgd"),
    ]
    for r in (1, 2):  # only this round's examples (both attacks)
        this = [e for e in rounds if e["round"] == r]
        assert all(e["n_negatives"] == sum(f["n_new"] for f in this) for e in this)
        assert all(0.0 <= e["evaded"] <= e["fooled"] <= 1.0 for e in this)
    assert len(history.history["loss"]) == 3


def test_balanced_weights():
    w = _balanced_weights(30, 10)
    assert w.shape == (40,)
    np.testing.assert_allclose(w[:30].sum(), w[30:].sum(), rtol=1e-6)
    np.testing.assert_allclose(w.mean(), 1.0)


def test_errors(data):
    model, x = data
    detector = _detector(model)
    with pytest.raises(TypeError, match="supervised"):
        adversarial_fit(MaxSoftmaxDetector(model), x, eps=0.1)
    cc = ClassConditionalInputDetector(model, filters=(2,), dense_units=4)
    with pytest.raises(TypeError, match="ClassConditionalInputDetector"):
        adversarial_fit(cc, x, eps=0.1)
    alone = InputCNNDetector((6, 6, 1), filters=(2,), dense_units=4)
    with pytest.raises(ValueError, match="classifier"):
        adversarial_fit(alone, x, eps=0.1)
    with pytest.raises(ValueError, match="attack"):
        adversarial_fit(detector, x, eps=0.1, attack="fgsm")
    with pytest.raises(TypeError, match="attack"):
        adversarial_fit(detector, x, eps=0.1, attack=[3])
    with pytest.raises(ValueError, match="rounds"):
        adversarial_fit(detector, x, eps=0.1, rounds=-1)
    with pytest.raises(ValueError, match="clip_min"):
        adversarial_fit(detector, x + 2, eps=0.1)
    with pytest.raises(TypeError, match="epochs_per_round"):
        adversarial_fit(detector, x, eps=0.1, epochs=3)


def _knn(model):
    from keras_advguard.detectors import KNNDetector

    return KNNDetector(model, layer=model.layers[1].name, n_neighbors=5)


def test_knn_reference_set_grows_with_source_labels(data):
    model, x = data
    y = np.arange(len(x)) % 3
    given = np.clip(x + 0.2, 0, 1)
    detector = _knn(model)
    history = adversarial_fit(
        detector, x, y, eps=0.2, rounds=1, nb_iter=4, x_adv=given, seed=0, attack="selective_pgd"
    )
    r1 = history.rounds[1]
    # Reference set: the clean rows, round 0's given versions, round 1's fooling examples,
    # each adversarial row labelled with its source's label.
    assert detector.train_activations_.shape[0] == 2 * len(x) + r1["n_new"]
    np.testing.assert_array_equal(detector.train_labels_[: 2 * len(x)], np.r_[y, y])
    assert r1["n_negatives"] == len(x) + r1["n_new"]
    assert history.history == {}
    assert getattr(detector, "threshold_", None) is None
    # The kNN vote of the augmented set, recomputed by hand with scikit-learn.
    from sklearn.neighbors import NearestNeighbors

    hidden = keras.Model(model.inputs, model.layers[1].output)
    acts = np.asarray(hidden.predict(given, verbose=0))
    pred = np.argmax(model.predict(given, verbose=0), axis=1)
    _, idx = NearestNeighbors(n_neighbors=5).fit(detector.train_activations_).kneighbors(acts)
    expected = 1.0 - np.mean(detector.train_labels_[idx] == pred[:, None], axis=1)
    np.testing.assert_allclose(detector.score(given), expected, atol=1e-6)


def test_knn_errors(data):
    model, x = data
    with pytest.raises(TypeError, match="KNNDetector has no Keras `fit`"):
        adversarial_fit(_knn(model), x, eps=0.1, verbose=1, callbacks=[])
    with pytest.raises(ValueError, match="one attacked version of each row"):
        adversarial_fit(_knn(model), x, eps=0.1, x_adv=x[:5])
