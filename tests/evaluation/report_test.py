"""EvaluationReport: tables, strict JSON, ROC curves against scikit-learn, atomic save."""

import base64
import json
import re

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from keras_advguard.evaluation import EvaluationReport


def _summary(auc, n_adv=20):
    return {
        "auc": auc,
        "auc_std": 0.01,
        "tpr": [0.2, 0.5],
        "tpr_std": [0.0, 0.1],
        "fpr": [0.01, 0.04],
        "fprs": [0.01, 0.05],
        "n_clean": 50,
        "n_adversarial": n_adv,
        "n_splits": 2,
    }


def _report():
    rng = np.random.default_rng(0)
    folds = [(rng.normal(0, 1, 30), rng.normal(1.5, 1, 12)) for _ in range(2)]
    inverted = [(rng.normal(1, 1, 30), rng.normal(-1, 1, 12)) for _ in range(2)]
    attack = {
        "attack": "fgsm",
        "params": {"eps": 0.1},
        "n_attacked": 60,
        "n_sources": 50,
        "n_adversarial": 20,
        "success_rate": 0.4,
        "accuracy": 0.5,
        "mean_l2": 0.6,
        "mean_linf": 0.1,
        "seconds": 1.25,
        "cached": True,
    }
    detectors = {
        "good": {
            "supervised": True,
            "score_tensor_kind": "exact",
            "oblivious": {"fgsm": _summary(0.93), "mixed": _summary(0.93)},
            "attack_unknown": {"fgsm": {"fgsm": _summary(0.93)}, "mixed": {"fgsm": _summary(0.91)}},
            "adaptive": {
                "attack": "selective_pgd",
                "eps": 0.1,
                "nb_iter": 5,
                "n_sources": 25,
                "n_fooled": 20,
                "success_rate": 0.8,
                "sr_at_fpr": [0.4, 0.6],
                "seconds": 1.0,
                "auc": 0.55,
                "tpr": [0.1, 0.2],
                "fpr": [0.0, 0.04],
                "n_flagged": [2, 4],
                "tpr_interval": [[0.0279, 0.301], [0.0807, 0.416]],
                "n_evaded": [10, 15],
                "sr_interval": [[0.234, 0.5926], [0.4074, 0.766]],
            },
        },
        "inverted": {
            "supervised": False,
            "score_tensor_kind": "surrogate",
            "oblivious": {"fgsm": _summary(0.08), "mixed": None},
            "attack_unknown": {},
            "adaptive": {"error": "ValueError: no gradient"},
        },
    }
    return EvaluationReport(
        meta={
            "fprs": [0.01, 0.05],
            "splits": 2,
            "n_images": 60,
            "n_sources": 50,
            "threat_models": ["oblivious", "adaptive"],
            "adaptive_eps": 0.1,
            "timing": {"total": 3.0},
            "cache_hits": 1,
            "cache_misses": 0,
            "bad_float": float("nan"),
        },
        attacks={"fgsm": attack},
        detectors=detectors,
        sanitizers={
            "mask": {"oblivious": {"clean": 0.97, "fgsm": 0.55}, "adaptive": {"fgsm": 0.42}}
        },
        undefended={"clean": 0.98, "fgsm": 0.5},
        roc={("good", "fgsm"): folds, ("good", "mixed"): folds, ("inverted", "fgsm"): inverted},
    )


def test_markdown_has_every_table_with_the_figures():
    text = _report().to_markdown()
    assert "success rate" in text and "AUC" in text
    assert "| fgsm | eps=0.1 | 0.400 | 20 / 50 | 0.500 |" in text
    assert "| mask | adaptive (BPDA) | - | 0.420 |" in text
    assert "| good | fgsm | 0.930 ± 0.010 | 0.200 ± 0.000 | 0.500 ± 0.100 | 50 / 20 |" in text
    assert "| inverted | fgsm | 0.080 ± 0.010 |" in text  # an AUC below 0.5 is kept
    # oblivious (mixed) next to adaptive, then the adaptive success rate and SR@N
    row = "| good | exact | 0.930 / 0.550 | 0.200 / 0.100 | 0.500 / 0.200 | 0.800 | 0.400 / 0.600 |"
    assert row in text
    # the counts behind the adaptive TPR and SR, with their intervals in percent
    assert "| 2 / 20 [2.8, 30.1]; 4 / 20 [8.1, 41.6] | 10 / 25 [23.4, 59.3]; " in text
    assert "failed: ValueError: no gradient" in text
    assert "Attack unknown: good" in text and "| trained on mixed | 0.910 |" in text
    assert "1 loaded, 0 computed" in text


def test_json_is_strict_and_holds_the_mean_roc_of_scikit_learn():
    report = _report()
    document = json.loads(report.to_json())  # allow_nan=False: NaN became null
    assert document["meta"]["bad_float"] is None
    assert document["detectors"]["inverted"]["oblivious"]["mixed"] is None
    curve = document["roc"]["good"]["fgsm"]
    grid = np.array(curve["fpr"])
    expected = []
    for clean, adv in report.roc[("good", "fgsm")]:
        fpr, tpr, _ = roc_curve(
            np.r_[np.zeros(len(clean)), np.ones(len(adv))],
            np.r_[clean, adv],
            drop_intermediate=False,
        )
        expected.append(np.interp(grid, fpr, tpr))
    np.testing.assert_allclose(curve["tpr"], np.mean(expected, axis=0), atol=1e-5)
    np.testing.assert_allclose(curve["tpr_std"], np.std(expected, axis=0), atol=1e-5)


def test_plot_roc_draws_one_curve_per_detector_with_its_auc():
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score

    report = _report()
    ax = report.plot_roc("fgsm")
    labels = [line.get_label() for line in ax.get_lines()]
    aucs = [
        roc_auc_score(np.r_[np.zeros(len(c)), np.ones(len(a))], np.r_[c, a])
        for c, a in report.roc[("inverted", "fgsm")]
    ]
    assert any(label.startswith("good (AUC") for label in labels)
    assert any(f"inverted (AUC = {np.mean(aucs):.2f}" in label for label in labels)
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="attack"):
        report.plot_roc("cw")


def test_save_writes_every_file_and_a_self_contained_html(tmp_path):
    out = tmp_path / "report"
    files = _report().save(out)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(files)
    assert {
        "report.md",
        "report.json",
        "report.html",
        "accuracy.png",
        "roc_fgsm.png",
        "roc_mixed.png",
        "adaptive.png",
        "attack_unknown_good.png",
    } <= set(names)
    page = (out / "report.html").read_text()
    assert "<img" in page and 'src="http' not in page and "href=" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    pngs = [p for p in names if p.endswith(".png")]
    assert len(images) == len(pngs)
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert {base64.b64decode(i) for i in images} == {(out / p).read_bytes() for p in pngs}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary


def test_a_failed_save_leaves_nothing(tmp_path, monkeypatch):
    report = _report()

    def broken():
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "figures", broken)
    with pytest.raises(RuntimeError):
        report.save(tmp_path / "report")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_a_file_and_replaces_an_older_report(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ValueError, match="existing file"):
        _report().save(tmp_path / "taken")
    folder = tmp_path / "again"
    folder.mkdir()
    (folder / "report.md").write_text("old")
    _report().save(folder)
    assert (folder / "report.md").read_text().startswith("# Evaluation report")
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_report_saved_before_the_counts_shows_a_dash():
    report = _report()
    for key in ("n_flagged", "tpr_interval", "n_evaded", "sr_interval"):
        report.detectors["good"]["adaptive"].pop(key)
    row = "| 0.500 / 0.200 | 0.800 | 0.400 / 0.600 | - | - |"
    assert row in report.to_markdown()
