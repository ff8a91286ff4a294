"""`evaluate`'s entry options: named defences, sanitizer placement, per-attack image
counts, targeted attacks, the adversarial images and `baselines=False`.

One quick run (digits, contract-only detectors, no baselines, oblivious only) is
checked against independent references: the model's own predictions on the
returned images, `sanitize` run by hand, scikit-learn's AUC.
"""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from keras_advguard import layers
from keras_advguard.datasets import load_dataset
from keras_advguard.evaluation import evaluate
from keras_advguard.sanitize import sanitize
from tests.evaluation._contract_detectors import SoftmaxScore

EPS = 0.1
ATTACKS = [
    "fgsm",
    ("pgd", {"nb_iter": 5, "num_images": 40}),
    ("bim", {"nb_iter": 5, "target": "next"}),
    ("mim", {"nb_iter": 5, "targeted": True}),
]


@pytest.fixture(scope="module")
def run(digits_model):
    model, _ = digits_model
    train, test = load_dataset("digits")
    report = evaluate(
        model,
        train,
        test,
        defences=[
            ("soft", SoftmaxScore(model)),
            ("soft_inverted", SoftmaxScore(model, inverted=True)),
            ("mask_fc4", "mask", {"after": ["fc4"]}),
        ],
        attacks=ATTACKS,
        threat_models=("oblivious",),
        eps=EPS,
        num_images=120,
        splits=2,
        quick=True,
        cache_dir=False,
        verbose=0,
        baselines=False,
        return_adversarial=True,
    )
    return {"report": report, "model": model, "test": test}


def _predict(model, x):
    return np.argmax(model.predict(x, verbose=0), axis=1)


def test_named_defences_are_reported_apart(run):
    report = run["report"]
    assert set(report.detectors) == {"soft", "soft_inverted"}
    assert set(report.sanitizers) == {"mask_fc4"}
    assert report.meta["baselines"] == [] and report.meta["baselines_left_out"]
    assert "baselines (max_softmax, input_cnn) were left out" in report.to_markdown()
    for attack in list(report.attacks) + ["mixed"]:
        soft = report.detectors["soft"]["oblivious"][attack]["auc"]
        inverted = report.detectors["soft_inverted"]["oblivious"][attack]["auc"]
        assert inverted == pytest.approx(1.0 - soft)
    # each fold's AUC recomputed with scikit-learn from the stored scores
    folds = report.roc[("soft", "fgsm")]
    aucs = [roc_auc_score(np.r_[np.zeros(len(c)), np.ones(len(a))], np.r_[c, a]) for c, a in folds]
    assert report.detectors["soft"]["oblivious"]["fgsm"]["auc"] == pytest.approx(np.mean(aucs))


def test_a_sanitizer_goes_only_after_the_layers_it_names(run):
    report, model = run["report"], run["model"]
    entry = report.sanitizers["mask_fc4"]
    assert entry["after"] == ["fc4"]
    advs = [report.adversarial(attack) for attack in report.attacks]
    x = np.concatenate([adv["x_adv"] for adv in advs])
    y = np.concatenate([adv["y"] for adv in advs])
    ends = np.cumsum([len(adv["y"]) for adv in advs])[:-1]
    by_hand = np.split(_predict(sanitize(model, ["fc4"], layers.MaskSanitizer()), x) == y, ends)
    for attack, right in zip(report.attacks, by_hand, strict=True):
        assert entry["oblivious"][attack] == pytest.approx(right.mean())
    everywhere = sanitize(model, ["conv1", "conv2", "fc4"], layers.MaskSanitizer())
    right = np.split(_predict(everywhere, x) == y, ends)
    assert any(
        entry["oblivious"][a] != pytest.approx(r.mean()) for a, r in zip(report.attacks, right)
    )


def test_an_attack_with_its_own_num_images_runs_on_the_first_sources(run):
    report, model, (x_test, y_test) = run["report"], run["model"], run["test"]
    full, few = report.adversarial("fgsm"), report.adversarial("pgd")
    # the sources, from the model's own predictions on the test images
    assert np.array_equal(full["source"], _predict(model, x_test[full["index"]]) == full["y"])
    first = full["index"][full["source"]][:40]
    assert np.array_equal(few["index"], first) and few["source"].all()
    assert np.array_equal(few["y"], y_test[first])
    assert np.abs(few["x_adv"] - x_test[first]).max() <= EPS + 1e-5
    fooled = _predict(model, few["x_adv"]) != few["y"]
    np.testing.assert_array_equal(few["success"], fooled)
    row = report.attacks["pgd"]
    assert (row["n_attacked"], row["n_sources"], row["num_images"]) == (40, 40, 40)
    assert row["n_adversarial"] == fooled.sum() and row["success_rate"] == fooled.mean()
    assert report.undefended["pgd"] == pytest.approx(1.0 - fooled.mean())
    # splits: the test parts partition the sources; only 40 of them have a pgd image
    pgd = report.detectors["soft"]["oblivious"]["pgd"]
    assert pgd["n_clean"] == report.meta["n_sources"] > 40
    assert pgd["n_adversarial"] == fooled.sum()
    mixed = report.detectors["soft"]["oblivious"]["mixed"]
    assert mixed["n_adversarial"] == sum(
        int(report.adversarial(a)["adversarial"].sum()) for a in report.attacks
    )
    assert "num_images=40" in report.to_markdown()


@pytest.mark.parametrize("attack", ["bim", "mim"])
def test_targeted_attacks_succeed_when_the_prediction_is_the_target(run, attack):
    report, model = run["report"], run["model"]
    adv = report.adversarial(attack)
    assert (adv["target"] != adv["y"]).all()
    if attack == "bim":  # target="next"
        np.testing.assert_array_equal(adv["target"], (adv["y"] + 1) % 10)
    else:  # targeted=True: seeded random targets, not simply the next class
        assert not np.array_equal(adv["target"], (adv["y"] + 1) % 10)
    predicted = _predict(model, adv["x_adv"])
    np.testing.assert_array_equal(predicted, adv["y_pred"])
    np.testing.assert_array_equal(adv["success"], predicted == adv["target"])
    row = report.attacks[attack]
    assert row["targeted"] and row["params"]["targeted"] is True
    assert row["n_adversarial"] == (adv["success"] & adv["source"]).sum() > 0
    assert row["success_rate"] == pytest.approx(adv["success"][adv["source"]].mean())
    assert row["accuracy"] == pytest.approx(np.mean(predicted == adv["y"]))
    # fooled but not onto the target: not in the adversarial set
    missed = adv["source"] & (predicted != adv["y"]) & ~adv["success"]
    assert not adv["adversarial"][missed].any()
    assert report.detectors["soft"]["oblivious"][attack]["n_adversarial"] == row["n_adversarial"]


def test_adversarial_images_stay_out_of_the_json_and_save_on_request(run, tmp_path, monkeypatch):
    report = run["report"]
    monkeypatch.setattr(report, "figures", lambda: {})  # the figures are tested elsewhere
    assert "x_adv" not in report.to_json()
    files = report.save(tmp_path / "plain")
    assert "adversarial.npz" not in files
    files = report.save(tmp_path / "with", adversarial=True)
    with np.load(files["adversarial.npz"], allow_pickle=False) as data:
        names = json.loads(str(data["attacks"]))
        assert names == list(report.attacks)
        for k, name in enumerate(names):
            expected = report.adversarial(name)
            assert {f.split("/", 1)[1] for f in data.files if f.startswith(f"{k}/")} == set(
                expected
            )
            for field, value in expected.items():
                np.testing.assert_array_equal(data[f"{k}/{field}"], value)
    # the returned arrays are copies
    report.adversarial("fgsm")["x_adv"][:] = -1
    assert report.adversarial("fgsm")["x_adv"].min() >= 0
    with pytest.raises(ValueError, match="attack"):
        report.adversarial("nope")


def test_a_report_without_images_says_how_to_get_them(tmp_path):
    from keras_advguard.evaluation import EvaluationReport

    report = EvaluationReport(
        meta={"fprs": [0.05]}, attacks={}, detectors={}, sanitizers={}, undefended={}, roc={}
    )
    with pytest.raises(ValueError, match="return_adversarial=True"):
        report.adversarial("fgsm")
    with pytest.raises(ValueError, match="return_adversarial=True"):
        report.save(tmp_path / "out", adversarial=True)
    assert not (tmp_path / "out").exists()


def _evaluate(model, **kwargs):
    train, test = load_dataset("digits")
    args = dict(threat_models=("oblivious",), quick=True, cache_dir=False, verbose=0)
    return evaluate(model, train, test, **{**args, **kwargs})


def test_bad_entries_are_refused_before_any_work(digits_model):
    model, _ = digits_model
    one, two = SoftmaxScore(model), SoftmaxScore(model)
    with pytest.raises(ValueError, match="'same'"):
        _evaluate(model, defences=[("same", one), ("same", two)])
    with pytest.raises(ValueError, match="'SoftmaxScore'"):  # an explicit name = an automatic one
        _evaluate(model, defences=[one, ("SoftmaxScore", two)])
    with pytest.raises(ValueError, match="'max_softmax'"):  # = a baseline's name
        _evaluate(model, defences=[("max_softmax", one)])
    with pytest.raises(ValueError, match=r"'nope'.*'zap'"):
        _evaluate(model, defences=[("m", "mask", {"after": ["conv1", "nope", "zap"]})])
    with pytest.raises(ValueError, match=r"detector 's'.*'fit'.*\['after'\]"):
        _evaluate(model, defences=[("s", one, {"after": ["fc4"]})])
    with pytest.raises(ValueError, match=r"sanitizer 'm'.*'after'.*\['fit'\]"):
        _evaluate(model, defences=[("m", "mask", {"fit": False})])
    with pytest.raises(TypeError, match="fit=0"):
        _evaluate(model, defences=[("s", one, {"fit": 0})])
    with pytest.raises(ValueError, match="instance.*'knn'"):
        _evaluate(model, defences=[("k", "knn", {"fit": False})])
    trained = SoftmaxScore(model)
    trained.supervised = True
    with pytest.raises(ValueError, match="statistical.*'t'|'t'.*statistical"):
        _evaluate(model, defences=[("t", trained, {"fit": False})])
    with pytest.raises(ValueError, match="'layers'"):
        _evaluate(model, defences=[("m", "mask", {"layers": ["fc4"]})])
    with pytest.raises(TypeError, match="pair"):
        _evaluate(model, defences=[(one, "name")])
    with pytest.raises(ValueError, match="empty"):
        _evaluate(model, defences=[(" ", one)])


def test_bad_attack_options_are_refused(digits_model):
    model, _ = digits_model
    cases = [
        (("deepfool", {"targeted": True}), ValueError, "cannot be targeted"),
        (("fgsm", {"target": "far"}), ValueError, "target"),
        (("fgsm", {"targeted": False, "target": "next"}), ValueError, "targeted=False"),
        (("fgsm", {"targeted": "yes"}), TypeError, "targeted"),
        (("fgsm", {"num_images": 0}), ValueError, "num_images"),
        (("fgsm", {"num_images": 2.5}), TypeError, "num_images"),
        (("fgsm", {"num_images": 200}), ValueError, "num_images=150"),
    ]
    for spec, error, match in cases:
        with pytest.raises(error, match=match):
            _evaluate(model, defences=["mask"], attacks=[spec])
    with pytest.raises(TypeError, match="return_adversarial"):
        _evaluate(model, return_adversarial=1)
    with pytest.raises(TypeError, match="baselines"):
        _evaluate(model, baselines="no")


def test_a_detector_given_with_fit_false_is_used_as_given_and_apgd_runs(digits_model):
    model, _ = digits_model
    _, (x_test, _) = load_dataset("digits")
    given, fitted = SoftmaxScore(model), SoftmaxScore(model)
    report = _evaluate(
        model,
        defences=[("given", given, {"fit": False}), ("fitted", fitted)],
        attacks=[("apgd", {"loss": "ce", "nb_iter": 5}), ("apgd", {"loss": "dlr", "nb_iter": 5})],
        eps=EPS,
        num_images=60,
        splits=2,
        baselines=False,
        return_adversarial=True,
    )
    assert given.fitted_on == [] and len(fitted.fitted_on) == 1
    # not fitted, but calibrated and scored like any other detector
    assert given.calibrated_on
    names = list(report.attacks)
    assert [report.attacks[a]["params"]["loss"] for a in names] == ["ce", "dlr"]
    for attack in names:
        auc = report.detectors["given"]["oblivious"][attack]["auc"]
        assert auc == pytest.approx(report.detectors["fitted"]["oblivious"][attack]["auc"])
        kept = report.adversarial(attack)
        # APGD's images: inside the eps ball, and their success is the model's own verdict
        assert np.max(np.abs(kept["x_adv"] - x_test[kept["index"]])) <= EPS + 1e-6
        pred = _predict(model, kept["x_adv"])
        np.testing.assert_array_equal(kept["success"], pred != kept["y"])
        assert kept["success"].any()
