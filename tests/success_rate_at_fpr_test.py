"""SR@N (`metrics.success_rate_at_fpr`): hand-worked cases and a brute-force reference."""

import numpy as np
import pytest

from keras_advguard.metrics import roc_auc, success_rate_at_fpr


def test_hand_worked_case():
    # 20 clean validation scores 0.05, 0.10, ..., 1.00.
    clean = np.arange(1, 21) / 20
    adv = np.array([0.12, 0.5, 0.96, 0.9, 0.99, 0.3])
    fooled = np.array([True, True, True, True, False, False])
    report = success_rate_at_fpr(clean, adv, fooled, fprs=(0.05, 0.1, 0.5))
    # 5% of 20 = 1 false positive allowed: t = 0.95 (only 1.00 above it).
    # Evaded: fooled and <= 0.95: 0.12, 0.5, 0.9 -> 3 of 6. Flagged: 0.96, 0.99.
    assert report["at_fpr"][0.05] == {"threshold": 0.95, "sr": 0.5, "tpr": 2 / 6, "n_evaded": 3}
    # 10%: t = 0.90 (1.00, 0.95 above). Evaded: 0.12, 0.5, 0.9. Flagged: 0.96, 0.99.
    assert report["at_fpr"][0.1]["sr"] == 0.5 and report["at_fpr"][0.1]["threshold"] == 0.9
    # 50%: t = 0.5. Evaded: 0.12, 0.5. Flagged: 0.96, 0.9, 0.99.
    assert report["at_fpr"][0.5] == {"threshold": 0.5, "sr": 2 / 6, "tpr": 3 / 6, "n_evaded": 2}
    assert (report["n"], report["n_fooled"], report["n_calibration"]) == (6, 4, 20)
    assert "auc" not in report


def test_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        clean = np.round(rng.normal(size=rng.integers(5, 60)), 1)  # ties included
        adv = np.round(rng.normal(0.8, 1.0, size=30), 1)
        fooled = rng.random(30) < 0.7
        fpr = float(rng.choice([0.01, 0.05, 0.1, 0.3]))
        # The smallest candidate threshold whose clean exceedance is <= fpr.
        candidates = np.concatenate([[-np.inf], np.unique(clean)])
        t = min(c for c in candidates if np.mean(clean > c) <= fpr + 1e-12)
        got = success_rate_at_fpr(clean, adv, fooled, fprs=fpr)["at_fpr"][fpr]
        assert got["threshold"] == t
        assert got["sr"] == pytest.approx(np.mean(fooled & (adv <= t)))
        assert got["tpr"] == pytest.approx(np.mean(adv > t))


def test_auc_with_clean_test_scores_and_errors():
    clean_test, adv = [0.1, 0.2, 0.6], [0.3, 0.7]
    report = success_rate_at_fpr([0.1, 0.5], adv, [True, True], scores_clean=clean_test)
    assert report["auc"] == roc_auc(clean_test, adv) == pytest.approx(5 / 6)
    fpr, tpr, _ = report["roc"]
    assert fpr[-1] == tpr[-1] == 1.0 and np.trapezoid(tpr, fpr) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match=r"same length"):
        success_rate_at_fpr([0.1, 0.5], adv, [True])
    with pytest.raises(TypeError, match=r"`fooled`"):
        success_rate_at_fpr([0.1, 0.5], adv, [1, 0])
    with pytest.raises(ValueError, match=r"NaN"):
        success_rate_at_fpr([0.1, np.nan], adv, [True, False])
