"""The protocol helpers against hand-worked cases, numpy and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from keras_advguard.evaluation import _protocol


def test_splits_partition_the_sources_and_keep_parts_disjoint():
    labels = np.repeat(np.arange(10), 12)  # 120 sources
    splits = _protocol.source_splits(labels, 4, seed=3)
    assert len(splits) == 4
    tests = np.concatenate([s.test for s in splits])
    np.testing.assert_array_equal(np.sort(tests), np.arange(120))  # a partition
    for s in splits:
        parts = [set(s.fit), set(s.calibration), set(s.test)]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        assert len(s.fit) + len(s.calibration) + len(s.test) == 120
        # a quarter of the 90 non-test sources calibrates
        assert len(s.calibration) == round(0.25 * 90)
        # stratified: each class has 3 of its 12 sources in the test part
        np.testing.assert_array_equal(np.bincount(labels[s.test], minlength=10), 3)


def test_splits_are_seeded():
    labels = np.repeat(np.arange(3), 10)
    a = _protocol.source_splits(labels, 3, seed=0)
    b = _protocol.source_splits(labels, 3, seed=0)
    c = _protocol.source_splits(labels, 3, seed=1)
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a, b))
    assert not all(np.array_equal(x.test, y.test) for x, y in zip(a, c))


def test_splits_accept_classes_rarer_than_the_folds():
    labels = np.array([0] * 10 + [1] * 10 + [2])  # class 2 has one source
    splits = _protocol.source_splits(labels, 5, seed=0)
    np.testing.assert_array_equal(np.sort(np.concatenate([s.test for s in splits])), np.arange(21))


def test_fold_metrics_thresholds_come_from_calibration_only():
    clean_test = np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    adv = np.array([0.5, 0.6, 0.95, 1.0])
    calibration = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.92, 0.97])
    out = _protocol.fold_metrics(clean_test, adv, calibration, (0.2,))
    # hand-worked: floor(0.2 * 10) = 2 calibration scores may exceed t, so t is the
    # third largest, 0.9; the adversarial scores above it: 0.95 and 1.0
    assert out["threshold"] == [0.9]
    assert out["tpr"] == [0.5]
    assert out["fpr"] == [0.0]  # no clean test score is > 0.9
    assert out["auc"] == pytest.approx(roc_auc_score([0] * 5 + [1] * 4, np.r_[clean_test, adv]))
    # in-sample calibration would have given t = 0.4 and TPR 1.0: not what is reported
    assert _protocol.fold_metrics(clean_test, adv, clean_test, (0.2,))["tpr"] == [1.0]


def test_fold_metrics_of_an_inverted_detector_is_below_one_half():
    rng = np.random.default_rng(0)
    clean, adv = rng.normal(1.0, 1.0, 200), rng.normal(-1.0, 1.0, 150)
    out = _protocol.fold_metrics(clean, adv, clean, (0.05,))
    reference = roc_auc_score(np.r_[np.zeros(200), np.ones(150)], np.r_[clean, adv])
    assert out["auc"] == pytest.approx(reference) and out["auc"] < 0.2
    flipped = _protocol.fold_metrics(-clean, -adv, -clean, (0.05,))
    assert flipped["auc"] == pytest.approx(1.0 - out["auc"])


def test_fold_metrics_of_an_empty_set_is_none():
    assert _protocol.fold_metrics([], [0.5], [0.1], (0.05,)) is None
    assert _protocol.fold_metrics([0.5], np.zeros(0), [0.1], (0.05,)) is None


def test_aggregate_is_the_numpy_mean_and_std_over_measured_folds():
    folds = [
        {"auc": 0.9, "tpr": [0.5, 0.7], "fpr": [0.0, 0.1], "n_clean": 10, "n_adversarial": 4},
        None,
        {"auc": 0.7, "tpr": [0.1, 0.2], "fpr": [0.02, 0.04], "n_clean": 11, "n_adversarial": 6},
    ]
    out = _protocol.aggregate(folds, (0.01, 0.05))
    assert out["auc"] == pytest.approx(0.8) and out["auc_std"] == pytest.approx(0.1)
    np.testing.assert_allclose(out["tpr"], [0.3, 0.45])
    np.testing.assert_allclose(out["tpr_std"], np.std([[0.5, 0.7], [0.1, 0.2]], axis=0))
    assert (out["n_clean"], out["n_adversarial"], out["n_splits"]) == (21, 10, 2)
    assert _protocol.aggregate([None, None], (0.05,)) is None


def test_success_at_threshold_counts_fooled_and_undetected():
    fooled = np.array([True, True, False, True])
    scores = np.array([0.1, 0.5, 0.0, 0.9])
    # t=0.5: sources 0, 1 (fooled and <= t); source 2 is not fooled
    assert _protocol.success_at_threshold(fooled, scores, [0.5, 0.05, 1.0]) == [0.5, 0.0, 0.75]
    assert _protocol.success_at_threshold([], [], [0.5]) == [0.0]
