"""`evaluate` on digits with contract-only test detectors, against independent references."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from keras_advguard import attacks, metrics
from keras_advguard.datasets import load_dataset
from keras_advguard.evaluation import _defences, evaluate
from tests.evaluation._contract_detectors import SoftmaxScore


class PixelLogistic:
    """Trained detector from the contract only: logistic regression on the pixels."""

    supervised = True
    score_tensor_kind = "exact"

    def __init__(self, log):
        self.log = log

    def clone(self):
        return PixelLogistic(self.log)

    def fit(self, x, is_adversarial, *, epochs=1, batch_size=32, verbose=0):
        self.fit_x, self.scored = np.asarray(x), []
        self.clf = LogisticRegression(max_iter=200).fit(
            self.fit_x.reshape(len(x), -1), is_adversarial
        )
        self.log.append(self)

    def score(self, x, *, batch_size=128, verbose=0):
        self.scored.append(np.asarray(x))
        return self.clf.decision_function(np.asarray(x).reshape(len(x), -1))

    def score_tensor(self, x):
        w = tf.constant(self.clf.coef_[0], tf.float32)
        return tf.linalg.matvec(tf.reshape(x, [tf.shape(x)[0], -1]), w) + self.clf.intercept_[0]

    def calibrate(self, x, fpr=0.05, *, batch_size=128, verbose=0):
        self.threshold_ = metrics.threshold_at_fpr(self.score(x), fpr)
        return self


@pytest.fixture(scope="module")
def run(digits_model, tmp_path_factory):
    model, _ = digits_model
    train, (x_test, y_test) = load_dataset("digits")
    # 200 of the 360 test images: the engine's sets, folds and four adaptive
    # attacks on every detector are the cost of this fixture (~20 s at 200).
    test = (x_test[:200], y_test[:200])
    log = []
    detectors = [SoftmaxScore(model), SoftmaxScore(model, inverted=True), PixelLogistic(log)]
    patch = pytest.MonkeyPatch()
    # the baselines are added as always, less the input CNN (its own tests train it)
    patch.setattr(_defences, "with_baselines", lambda d: ["max_softmax"] + list(d))
    try:
        report = evaluate(
            model,
            train,
            test,
            defences=detectors,
            attacks=["fgsm", ("pgd", {"nb_iter": 5})],
            splits=2,
            quick=True,
            num_images=len(test[0]),
            verbose=0,
            cache_dir=tmp_path_factory.mktemp("attack_cache"),
        )
    finally:
        patch.undo()
    return {"report": report, "model": model, "test": test, "log": log, "detectors": detectors}


def test_sets_match_an_independent_attack_run(run):
    model, (x, y) = run["model"], run["test"]
    report = run["report"]
    sources = np.argmax(model.predict(x, verbose=0), axis=1) == y
    fgsm = attacks.fgsm(model, x, eps=0.1, y=y)  # deterministic: the same images
    fooled = sources & (fgsm.y_pred_after != y)
    assert report.meta["n_sources"] == sources.sum()
    assert report.attacks["fgsm"]["n_adversarial"] == fooled.sum()
    assert report.undefended["clean"] == pytest.approx(sources.mean())
    summary = report.detectors["SoftmaxScore"]["oblivious"]["fgsm"]
    assert (summary["n_clean"], summary["n_adversarial"]) == (sources.sum(), fooled.sum())


def test_scores_and_auc_follow_numpy_and_scikit_learn(run):
    model, (x, y) = run["model"], run["test"]
    report = run["report"]
    sources = np.argmax(model.predict(x, verbose=0), axis=1) == y
    expected = 1.0 - model.predict(x[sources], verbose=0).max(axis=1)
    folds = report.roc[("SoftmaxScore", "fgsm")]
    pooled_clean = np.sort(np.concatenate([clean for clean, _ in folds]))
    np.testing.assert_allclose(pooled_clean, np.sort(expected), rtol=1e-6)  # a partition
    aucs = [roc_auc_score(np.r_[np.zeros(len(c)), np.ones(len(a))], np.r_[c, a]) for c, a in folds]
    assert report.detectors["SoftmaxScore"]["oblivious"]["fgsm"]["auc"] == pytest.approx(
        np.mean(aucs)
    )
    assert report.detectors["SoftmaxScore"]["oblivious"]["fgsm"]["auc"] > 0.7


def test_an_inverted_detector_reports_one_minus_the_auc(run):
    detectors = run["report"].detectors
    for attack in ("fgsm", "pgd", "mixed"):
        normal = detectors["SoftmaxScore"]["oblivious"][attack]["auc"]
        inverted = detectors["SoftmaxScore_2"]["oblivious"][attack]["auc"]
        assert inverted == pytest.approx(1.0 - normal) and inverted < 0.5


def test_thresholds_are_calibrated_on_clean_sources_only(run):
    model, (x, y) = run["model"], run["test"]
    detector = run["detectors"][0]
    sources = x[np.argmax(model.predict(x, verbose=0), axis=1) == y]
    source_rows = {row.tobytes() for row in sources}
    (calibration,) = detector.calibrated_on
    assert 0 < len(calibration) < len(sources)
    assert all(row.tobytes() in source_rows for row in calibration)
    # statistical detectors are fitted on training images, never on test images
    test_rows = {row.tobytes() for row in x}
    assert not any(row.tobytes() in test_rows for row in detector.fitted_on[0])


def test_trained_detector_never_scores_a_source_it_was_trained_on(run):
    _, (x, _) = run["model"], run["test"]
    log = run["log"]
    assert len(log) == 2 * 3  # 2 splits x (fgsm, pgd, mixed)
    flat = x.reshape(len(x), -1)

    def source_of(rows):  # nearest test image in L-infinity: an attack moves <= eps
        rows = rows.reshape(len(rows), -1)
        return {int(np.argmin(np.abs(flat - r).max(axis=1))) for r in rows}

    for trained in log:
        fit_sources = source_of(trained.fit_x)
        scored_sources = source_of(np.concatenate(trained.scored))
        assert fit_sources and scored_sources and not fit_sources & scored_sources
    matrix = run["report"].detectors["PixelLogistic"]["attack_unknown"]
    assert set(matrix) == {"fgsm", "pgd", "mixed"} and set(matrix["fgsm"]) == {"fgsm", "pgd"}
    assert (
        matrix["fgsm"]["fgsm"]["auc"]
        == run["report"].detectors["PixelLogistic"]["oblivious"]["fgsm"]["auc"]
    )


def test_adaptive_figures_are_consistent(run):
    report = run["report"]
    for name, entry in report.detectors.items():
        adaptive = entry["adaptive"]
        assert "error" not in adaptive, (name, adaptive)
        sr = adaptive["sr_at_fpr"]  # thresholds fall as the FPR grows: SR cannot grow
        assert all(a >= b - 1e-12 for a, b in zip(sr, sr[1:]))
        assert all(0.0 <= v <= adaptive["success_rate"] + 1e-12 for v in sr)
        # the best per source is at least as strong as each attack alone
        assert sorted(adaptive["per_attack"]) == [
            "orthogonal_pgd",
            "selective_pgd",
            "selective_pgd_decaying",
            "selective_pgd_runner_up",
        ]
        for one in adaptive["per_attack"].values():
            assert one["success_rate"] <= adaptive["success_rate"] + 1e-12
            assert all(a <= b + 1e-12 for a, b in zip(one["sr_at_fpr"], sr, strict=True))
        best = max(one["sr_at_fpr"][-1] for one in adaptive["per_attack"].values())
        assert sr[-1] >= best
        # the counts behind SR and TPR, and their Wilson intervals
        n, fooled = adaptive["n_sources"], adaptive["n_fooled"]
        assert fooled == round(adaptive["success_rate"] * n)
        for k, rate, bounds in zip(adaptive["n_evaded"], sr, adaptive["sr_interval"], strict=True):
            assert k / n == pytest.approx(rate)
            assert bounds == pytest.approx(metrics.proportion_interval(k, n), abs=1e-5)
        if fooled:
            flagged, tpr = adaptive["n_flagged"], adaptive["tpr"]
            for k, rate, bounds in zip(flagged, tpr, adaptive["tpr_interval"], strict=True):
                assert k / fooled == pytest.approx(rate)
                assert bounds == pytest.approx(metrics.proportion_interval(k, fooled), abs=1e-5)
    # the adaptive attack pushes the exact max-softmax score down: it evades more
    # often than the oblivious PGD at the same budget would suggest
    ms = report.detectors["max_softmax"]
    assert ms["adaptive"]["auc"] < ms["oblivious"]["mixed"]["auc"]


def test_bad_arguments_are_refused_before_any_work(digits_model):
    model, _ = digits_model
    train, test = load_dataset("digits")
    with pytest.raises(ValueError, match="fpr"):
        evaluate(model, train, test, fpr=(0.0,), verbose=0)
    with pytest.raises(ValueError, match="num_images"):
        evaluate(model, train, test, num_images=10_000, verbose=0)
    with pytest.raises(ValueError, match="attacks"):
        evaluate(model, train, test, attacks=["nope"], verbose=0)
    with pytest.raises(ValueError, match="defences"):
        evaluate(model, train, test, defences=["nope"], verbose=0)
    with pytest.raises(ValueError, match="NaN"):
        x = test[0].copy()
        x[0, 0, 0, 0] = np.nan
        evaluate(model, train, (x, test[1]), verbose=0)
    with pytest.raises(ValueError, match="model's input"):
        evaluate(model, train, (np.zeros((4, 9, 9, 1), "float32"), np.zeros(4, int)), verbose=0)
    with pytest.raises(TypeError, match="keras.Model"):
        evaluate(lambda x: x, train, test, verbose=0)
    assert isinstance(keras.Model, type)


def test_adaptive_radius_ignores_radii_of_other_norms(digits_model):
    from keras_advguard.evaluation._threats import linf_eps

    specs = [("fgsm", {"eps": 0.1}), ("gradient_attack", {"eps": 4.0}), ("bim", {"eps": 0.2})]
    assert linf_eps(specs) == 0.2  # the L2 gradient attack's eps 4 is no L-inf radius
    assert linf_eps(specs + [("pgd", {"eps": 0.5, "norm": 2})]) == 0.2
    assert linf_eps([("deepfool", {})]) == 0.0
    model, _ = digits_model
    train, test = load_dataset("digits")
    for bad in ({"adaptive_steps": 0}, {"adaptive_eps": -0.1}, {"adaptive_steps": 2.5}):
        with pytest.raises((ValueError, TypeError), match="adaptive_"):
            evaluate(model, train, test, verbose=0, **bad)
