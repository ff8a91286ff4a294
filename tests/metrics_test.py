import pathlib
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from keras_advguard import metrics

# A tie-heavy clean set used for hand-worked thresholds (shuffled on purpose:
# the rule must not depend on the input order).
TIED_CLEAN = [3, 0, 1, 3, 0, 2, 3, 1, 0, 3]  # sorted: 0 0 0 1 1 2 3 3 3 3


def _random_scores(seed, n_clean=200, n_adv=150, decimals=None):
    rng = np.random.default_rng(seed)
    clean = rng.normal(0.0, 1.0, n_clean)
    adv = rng.normal(1.0, 1.5, n_adv)
    if decimals is not None:  # coarse rounding creates many ties
        clean, adv = np.round(clean, decimals), np.round(adv, decimals)
    return clean, adv


def _brute_force_threshold(clean, fpr):
    """Smallest t among all candidates with mean(clean > t) <= fpr."""
    clean = np.asarray(clean, dtype=np.float64)
    candidates = np.concatenate([[-np.inf], np.unique(clean)])
    for t in candidates:  # ascending: the first admissible one is the smallest
        if np.sum(clean > t) <= fpr * clean.size + 1e-9:
            return t
    raise AssertionError("unreachable: t = max(clean) is always admissible")


# ---------------------------------------------------------------------------
# ROC
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("drop_intermediate", [True, False])
def test_roc_curve_matches_sklearn(decimals, drop_intermediate):
    clean, adv = _random_scores(0, decimals=decimals)
    fpr, tpr, thresholds = metrics.roc_curve(clean, adv, drop_intermediate=drop_intermediate)
    y = np.r_[np.zeros(clean.size), np.ones(adv.size)]
    ref_fpr, ref_tpr, _ = sk_metrics.roc_curve(
        y, np.r_[clean, adv], drop_intermediate=drop_intermediate
    )
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert thresholds.shape == fpr.shape
    assert np.all(np.diff(thresholds) < 0)


@pytest.mark.parametrize("decimals", [None, 1])
def test_roc_curve_thresholds_follow_strict_rule(decimals):
    clean, adv = _random_scores(1, decimals=decimals)
    fpr, tpr, thresholds = metrics.roc_curve(clean, adv)
    for f, t, thr in zip(fpr, tpr, thresholds, strict=True):
        assert np.mean(clean > thr) == f
        assert np.mean(adv > thr) == t
    assert thresholds[0] == max(clean.max(), adv.max())
    assert thresholds[-1] == -np.inf


def test_roc_curve_hand_worked():
    fpr, tpr, thresholds = metrics.roc_curve([0.0, 1.0], [0.5, 2.0])
    # Descending pooled scores: 2 (adv), 1 (clean), 0.5 (adv), 0 (clean).
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(thresholds, [2, 1, 0.5, 0, -np.inf])


@pytest.mark.parametrize("decimals", [None, 1])
def test_roc_auc_matches_sklearn_and_pairwise_count(decimals):
    clean, adv = _random_scores(2, decimals=decimals)
    auc = metrics.roc_auc(clean, adv)
    y = np.r_[np.zeros(clean.size), np.ones(adv.size)]
    assert auc == pytest.approx(sk_metrics.roc_auc_score(y, np.r_[clean, adv]))
    # Mann-Whitney: P(adv > clean) + 0.5 P(adv == clean).
    diff = adv[:, None] - clean[None, :]
    pairwise = np.mean(diff > 0) + 0.5 * np.mean(diff == 0)
    assert auc == pytest.approx(pairwise)
    assert isinstance(auc, float)


def test_roc_auc_accepts_column_vectors_and_ints():
    assert metrics.roc_auc(np.array([[0], [1]]), [2, 3]) == 1.0
    assert metrics.roc_auc([5, 5], [5]) == 0.5


# ---------------------------------------------------------------------------
# threshold_at_fpr
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fpr, threshold, achieved",
    [
        (0.0, 3.0, 0.0),
        (0.1, 3.0, 0.0),  # one false positive allowed, but the 3s come in fours
        (0.3, 3.0, 0.0),
        (0.4, 2.0, 0.4),  # exactly the four 3s are > 2
        (0.45, 2.0, 0.4),
        (0.5, 1.0, 0.5),  # 2 and the 3s are > 1
        (0.6, 1.0, 0.5),  # the two 1s are tied
        (0.7, 0.0, 0.7),
        (0.99, 0.0, 0.7),  # the three 0s are tied
        (1.0, -np.inf, 1.0),
    ],
)
def test_threshold_at_fpr_hand_worked_ties(fpr, threshold, achieved):
    t = metrics.threshold_at_fpr(TIED_CLEAN, fpr)
    assert t == threshold
    assert np.mean(np.array(TIED_CLEAN) > t) == pytest.approx(achieved)
    assert achieved <= fpr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_at_fpr_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 12, size=int(rng.integers(1, 60))).astype(float)
    targets = np.r_[0.0, 1.0, rng.uniform(0, 1, 40)]
    thresholds = metrics.threshold_at_fpr(clean, list(targets))
    for target, t in zip(targets, thresholds, strict=True):
        assert t == _brute_force_threshold(clean, target)
        assert np.mean(clean > t) <= target  # never above the target


def test_threshold_at_fpr_extremes_and_all_equal():
    clean = [0.3, -1.0, 2.5, 0.7]
    assert metrics.threshold_at_fpr(clean, 0) == 2.5
    assert metrics.threshold_at_fpr(clean, 1) == -np.inf
    equal = [4.0] * 7
    for fpr in (0.0, 0.2, 0.5, 0.99):
        assert metrics.threshold_at_fpr(equal, fpr) == 4.0
    assert metrics.threshold_at_fpr(equal, 1.0) == -np.inf
    assert metrics.threshold_at_fpr([1.5], 0.5) == 1.5


def test_threshold_at_fpr_float_rounding_does_not_cost_a_false_positive():
    clean = np.arange(100, dtype=float)
    assert 0.29 * 100 < 29  # the case being guarded
    t = metrics.threshold_at_fpr(clean, 0.29)
    assert np.sum(clean > t) == 29


def test_threshold_at_fpr_return_types():
    assert isinstance(metrics.threshold_at_fpr(TIED_CLEAN, 0.4), float)
    assert isinstance(metrics.threshold_at_fpr(TIED_CLEAN, np.float32(0.4)), float)
    assert isinstance(metrics.threshold_at_fpr(TIED_CLEAN, np.array(0.4)), float)
    out = metrics.threshold_at_fpr(TIED_CLEAN, [0.4, 0.5])
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, [2.0, 1.0])
    np.testing.assert_array_equal(
        metrics.threshold_at_fpr(TIED_CLEAN, np.array([0.0, 1.0])), [3.0, -np.inf]
    )


@pytest.mark.parametrize(
    "scores, fpr, error, match",
    [
        ([], 0.1, ValueError, "scores_clean_validation.*empty"),
        ([0.1, np.nan], 0.1, ValueError, "NaN"),
        ([0.1, np.inf], 0.1, ValueError, "finite"),
        ([[0.1, 0.2], [0.3, 0.4]], 0.1, ValueError, "1-D"),
        (["a", "b"], 0.1, TypeError, "scores_clean_validation"),
        ([0.1, 0.2], -0.01, ValueError, "fpr"),
        ([0.1, 0.2], 1.01, ValueError, "fpr"),
        ([0.1, 0.2], float("nan"), ValueError, "fpr"),
        ([0.1, 0.2], [0.1, 2.0], ValueError, r"fpr\[1\]"),
        ([0.1, 0.2], [], ValueError, "fpr"),
        ([0.1, 0.2], "0.1", TypeError, "fpr"),
        ([0.1, 0.2], True, TypeError, "fpr"),
        ([0.1, 0.2], None, TypeError, "fpr"),
    ],
)
def test_threshold_at_fpr_errors(scores, fpr, error, match):
    with pytest.raises(error, match=match):
        metrics.threshold_at_fpr(scores, fpr)


# ---------------------------------------------------------------------------
# tpr_at_fpr and detection_report
# ---------------------------------------------------------------------------


def test_tpr_at_fpr_in_sample_equals_definition():
    clean, adv = _random_scores(3, decimals=1)
    fprs = [0.01, 0.05, 0.1, 0.5]
    tprs = metrics.tpr_at_fpr(clean, adv, fprs)
    for f, tpr in zip(fprs, tprs, strict=True):
        t = _brute_force_threshold(clean, f)
        assert tpr == np.mean(adv > t)


def test_tpr_at_fpr_validation_differs_from_in_sample():
    clean_test = [0.1, 0.2, 0.3, 0.4, 0.9]
    adv_test = [0.5, 0.6, 0.95, 1.0]
    # In-sample at 20%: one of five clean may pass -> t = 0.4, all adv above.
    assert metrics.tpr_at_fpr(clean_test, adv_test, 0.2) == 1.0
    # Validation: 2 of 10 may pass -> t = 0.9 (8th smallest), 2 of 4 adv above.
    clean_val = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.92, 0.97]
    honest = metrics.tpr_at_fpr(clean_test, adv_test, 0.2, scores_clean_validation=clean_val)
    assert honest == 0.5
    np.testing.assert_array_equal(
        metrics.tpr_at_fpr(
            clean_test, adv_test, [0.0, 0.2, 1.0], scores_clean_validation=clean_val
        ),
        [0.25, 0.5, 1.0],
    )


def test_tpr_at_fpr_errors():
    with pytest.raises(ValueError, match="scores_adv"):
        metrics.tpr_at_fpr([0.1], [], 0.1)
    with pytest.raises(ValueError, match="scores_clean_validation"):
        metrics.tpr_at_fpr([0.1], [0.2], 0.1, scores_clean_validation=[np.nan])
    with pytest.raises(ValueError, match="scores_clean"):
        metrics.tpr_at_fpr([], [0.2], 0.1, scores_clean_validation=[0.3])
    with pytest.raises(ValueError, match="fpr"):
        metrics.tpr_at_fpr([0.1], [0.2], 5)


def test_detection_report_in_sample_and_validation():
    clean_test = [0.1, 0.2, 0.3, 0.4, 0.9]
    adv_test = [0.5, 0.6, 0.95, 1.0]
    clean_val = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.92, 0.97]

    report = metrics.detection_report(clean_test, adv_test, fprs=(0.0, 0.2))
    assert report["calibration"] == "in-sample"
    assert report["n_clean"] == 5 and report["n_adversarial"] == 4
    assert report["n_calibration"] == 5
    assert report["auc"] == pytest.approx(18 / 20)
    assert report["at_fpr"][0.2] == {
        "threshold": 0.4,
        "tpr": 1.0,
        "fpr": 0.2,
        "true_positives": 4,
        "false_positives": 1,
    }
    assert report["at_fpr"][0.0]["threshold"] == 0.9
    assert report["at_fpr"][0.0]["tpr"] == 0.5

    report = metrics.detection_report(
        clean_test, adv_test, fprs=[0.2], scores_clean_validation=clean_val
    )
    assert report["calibration"] == "validation"
    assert report["n_calibration"] == 10
    point = report["at_fpr"][0.2]
    assert point["threshold"] == 0.9
    assert point["tpr"] == 0.5
    # Achieved FPR measured on the clean *test* set: nothing above 0.9.
    assert point["fpr"] == 0.0 and point["false_positives"] == 0


def test_detection_report_default_fprs_and_scalar():
    clean, adv = _random_scores(4)
    report = metrics.detection_report(clean, adv)
    assert list(report["at_fpr"]) == [0.01, 0.05, 0.1]
    for target, point in report["at_fpr"].items():
        assert point["fpr"] <= target
        assert point["tpr"] == metrics.tpr_at_fpr(clean, adv, target)
    assert list(metrics.detection_report(clean, adv, 0.05)["at_fpr"]) == [0.05]


# ---------------------------------------------------------------------------
# Classifier-side metrics
# ---------------------------------------------------------------------------


def test_attack_success_rate_untargeted_denominator():
    y_true = [0, 1, 2, 3, 4, 5]
    y_pred_clean = [0, 1, 2, 3, 0, 0]  # 4 correct; 4 and 5 already wrong
    y_pred_adv = [9, 1, 7, 3, 4, 9]  # 0 and 2 fooled; 4 "fixed" by the attack
    assert metrics.attack_success_rate(y_true, y_pred_clean, y_pred_adv) == 2 / 4


def test_attack_success_rate_targeted():
    y_true = [0, 1, 2, 3, 4]
    y_pred_clean = [0, 1, 2, 3, 0]  # 4 correct
    y_target = [1, 2, 3, 4, 0]
    y_pred_adv = [1, 5, 3, 3, 0]  # 0 and 2 reach the target; 1 fooled elsewhere
    rate = metrics.attack_success_rate(
        y_true, y_pred_clean, y_pred_adv, targeted=True, y_target=y_target
    )
    assert rate == 2 / 4
    # The untargeted view of the same predictions counts index 1 too.
    assert metrics.attack_success_rate(y_true, y_pred_clean, y_pred_adv) == 3 / 4


def test_attack_success_rate_errors():
    y = [0, 1, 2]
    with pytest.raises(ValueError, match="y_target"):
        metrics.attack_success_rate(y, y, y, targeted=True)
    with pytest.raises(ValueError, match="y_target"):
        metrics.attack_success_rate(y, y, y, y_target=[1, 2, 0])
    with pytest.raises(ValueError, match="y_target"):
        metrics.attack_success_rate(y, y, y, targeted=True, y_target=[1, 1, 0])
    with pytest.raises(ValueError, match="correctly classified"):
        metrics.attack_success_rate(y, [1, 2, 0], y)
    with pytest.raises(ValueError, match="same length"):
        metrics.attack_success_rate(y, y, [0, 1])
    with pytest.raises(ValueError, match="y_true.*empty"):
        metrics.attack_success_rate([], [], [])
    with pytest.raises(TypeError, match="y_pred_adv"):
        metrics.attack_success_rate(y, y, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="y_pred_clean.*1-D"):
        metrics.attack_success_rate(y, np.eye(3, dtype=int), y)
    with pytest.raises(TypeError, match="targeted"):
        metrics.attack_success_rate(y, y, y, targeted=1)


def test_robust_accuracy_matches_sklearn():
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 10, 300)
    y_pred = np.where(rng.uniform(size=300) < 0.6, y_true, rng.integers(0, 10, 300))
    expected = sk_metrics.accuracy_score(y_true, y_pred)
    assert metrics.robust_accuracy(y_true, y_pred) == pytest.approx(expected)
    assert metrics.robust_accuracy([1, 2, 3, 4], [1, 0, 3, 0]) == 0.5
    with pytest.raises(ValueError, match="same length"):
        metrics.robust_accuracy([1, 2], [1])


@pytest.mark.parametrize(
    "k, n, confidence",
    [(10, 13, 0.95), (0, 5, 0.95), (5, 5, 0.95), (1, 4, 0.9), (3, 295, 0.99), (200, 400, 0.5)],
)
def test_proportion_interval_matches_scipy_wilson(k, n, confidence):
    from scipy.stats import binomtest

    expected = binomtest(k, n).proportion_ci(confidence, method="wilson")
    low, high = metrics.proportion_interval(k, n, confidence=confidence)
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0
    assert isinstance(low, float) and isinstance(high, float)


def test_proportion_interval_hand_worked_and_shrinking_with_n():
    # 1 of 4: z = 1.959964, centre (0.25 + z^2 / 8) / (1 + z^2 / 4) = 0.372473, half 0.326885
    assert metrics.proportion_interval(1, 4) == pytest.approx((0.045587, 0.699358), abs=1e-6)
    widths = [np.subtract(*metrics.proportion_interval(n // 4, n)[::-1]) for n in (4, 40, 400)]
    assert widths[0] > widths[1] > widths[2]


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((1, 0), ValueError, "n"),
        ((5, 4), ValueError, "successes"),
        ((-1, 4), ValueError, "successes"),
        ((1.0, 4), TypeError, "successes"),
        ((1, 4.0), TypeError, "n"),
        ((1, 4, 1.0), ValueError, "confidence"),
        ((1, 4, 0.0), ValueError, "confidence"),
        ((1, 4, "95%"), TypeError, "confidence"),
    ],
)
def test_proportion_interval_errors(args, error, match):
    with pytest.raises(error, match=match):
        metrics.proportion_interval(*args)


def test_evaluation_sets_untargeted():
    y_true = [0, 1, 2, 3, 4, 5]
    y_pred_clean = [0, 1, 2, 3, 0, 0]
    y_pred_adv = [9, 1, 7, 3, 4, 9]
    sets = metrics.evaluation_sets(y_true, y_pred_clean, y_pred_adv)
    np.testing.assert_array_equal(sets.clean_index, [0, 1, 2, 3])
    np.testing.assert_array_equal(sets.adversarial_index, [0, 2])
    np.testing.assert_array_equal(sets.clean_mask, [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(sets.adversarial_mask, [1, 0, 1, 0, 0, 0])
    assert (sets.n_total, sets.n_clean, sets.n_adversarial) == (6, 4, 2)
    assert sets.clean_index.dtype == np.int64
    assert "n_adversarial=2" in repr(sets)
    rate = metrics.attack_success_rate(y_true, y_pred_clean, y_pred_adv)
    assert rate == sets.n_adversarial / sets.n_clean


def test_evaluation_sets_targeted_and_random_consistency():
    sets = metrics.evaluation_sets([0, 1, 2, 3], [0, 1, 2, 3], [1, 5, 3, 3], y_target=[1, 2, 3, 0])
    np.testing.assert_array_equal(sets.adversarial_index, [0, 2])
    rng = np.random.default_rng(6)
    y_true = rng.integers(0, 5, 500)
    y_pred_clean = np.where(rng.uniform(size=500) < 0.8, y_true, 0)
    y_pred_adv = rng.integers(0, 5, 500)
    sets = metrics.evaluation_sets(y_true, y_pred_clean, y_pred_adv)
    expected_clean = [i for i in range(500) if y_pred_clean[i] == y_true[i]]
    expected_adv = [i for i in expected_clean if y_pred_adv[i] != y_true[i]]
    assert sets.clean_index.tolist() == expected_clean
    assert sets.adversarial_index.tolist() == expected_adv
    with pytest.raises(ValueError, match="y_target"):
        metrics.evaluation_sets([0, 1], [0, 1], [1, 0], y_target=[0, 0])


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------


def _assert_partition(parts, n):
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(n))


def test_stratified_kfold_without_groups():
    labels = np.r_[np.zeros(60, int), np.ones(40, int)]
    folds = list(metrics.stratified_kfold(labels, n_splits=5, seed=1))
    assert len(folds) == 5
    _assert_partition([test for _, test in folds], labels.size)
    for train, test in folds:
        assert set(train.tolist()).isdisjoint(test.tolist())
        assert train.size + test.size == labels.size
        assert np.sum(labels[test] == 1) == 8  # 40 / 5
        assert np.sum(labels[test] == 0) == 12  # 60 / 5
    again = list(metrics.stratified_kfold(labels, n_splits=5, seed=1))
    for (a, b), (c, d) in zip(folds, again, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_stratified_kfold_groups_never_straddle():
    rng = np.random.default_rng(7)
    # 60 source images; each has a clean sample, about half an adversarial one.
    images = np.arange(60)
    attacked = images[rng.uniform(size=60) < 0.6]
    groups = np.r_[images, attacked]
    labels = np.r_[np.zeros(images.size, int), np.ones(attacked.size, int)]
    folds = list(metrics.stratified_kfold(labels, 4, seed=3, groups=groups))
    assert len(folds) == 4
    _assert_partition([test for _, test in folds], labels.size)
    test_groups = []
    for train, test in folds:
        train_g, test_g = set(groups[train].tolist()), set(groups[test].tolist())
        assert train_g.isdisjoint(test_g)
        assert train_g | test_g == set(images.tolist())
        test_groups.append(test_g)
    for i in range(4):
        for j in range(i + 1, 4):
            assert test_groups[i].isdisjoint(test_groups[j])


def test_stratified_kfold_errors():
    labels = [0, 1] * 5
    with pytest.raises(ValueError, match="n_splits"):
        metrics.stratified_kfold(labels, 1)
    with pytest.raises(TypeError, match="n_splits"):
        metrics.stratified_kfold(labels, 2.0)
    with pytest.raises(ValueError, match="groups"):
        metrics.stratified_kfold(labels, 2, groups=[0, 1, 2])
    with pytest.raises(TypeError, match="labels"):
        metrics.stratified_kfold([0.5, 1.5], 2)
    with pytest.raises(ValueError, match="labels.*empty"):
        metrics.stratified_kfold([], 2)
    with pytest.raises(ValueError):  # scikit-learn: more folds than groups
        metrics.stratified_kfold(labels, 5, groups=[0, 0, 0, 0, 0, 1, 1, 1, 1, 1])


@pytest.mark.parametrize("seed", [0, 1])
def test_train_val_test_split_by_group(seed):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(200), rng.integers(1, 3, 200))  # sizes 1 or 2
    rng.shuffle(groups)
    train, val, test = metrics.train_val_test_split_by_group(groups, (0.7, 0.2, 0.1), seed=seed)
    _assert_partition([train, val, test], groups.size)
    sets = [set(groups[idx].tolist()) for idx in (train, val, test)]
    assert sets[0].isdisjoint(sets[1])
    assert sets[0].isdisjoint(sets[2])
    assert sets[1].isdisjoint(sets[2])
    for idx, fraction in zip((train, val, test), (0.7, 0.2, 0.1), strict=True):
        assert abs(idx.size - fraction * groups.size) <= 2  # one group of 2
        assert np.all(np.diff(idx) > 0) and idx.dtype == np.int64
    again = metrics.train_val_test_split_by_group(groups, (0.7, 0.2, 0.1), seed=seed)
    for a, b in zip((train, val, test), again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_val_test_split_by_group_string_ids_and_empty_split():
    groups = [f"img{i // 2}" for i in range(20)]
    train, val, test = metrics.train_val_test_split_by_group(groups, (0.5, 0.5, 0.0))
    assert train.size == 10 and val.size == 10 and test.size == 0
    assert {groups[i] for i in train}.isdisjoint({groups[i] for i in val})


@pytest.mark.parametrize(
    "fractions, match",
    [
        ((0.8, 0.2), "three"),
        ((0.8, 0.1, 0.2), "sum to 1"),
        ((1.2, -0.1, -0.1), "fractions"),
    ],
)
def test_train_val_test_split_by_group_errors(fractions, match):
    with pytest.raises(ValueError, match=match):
        metrics.train_val_test_split_by_group([0, 1, 2], fractions)
    with pytest.raises(ValueError, match="groups.*empty"):
        metrics.train_val_test_split_by_group([])


# ---------------------------------------------------------------------------
# Import surface
# ---------------------------------------------------------------------------


def test_modules_do_not_import_sklearn_or_matplotlib_at_top():
    # Keras itself imports both, so the package `__init__` is bypassed: a bare
    # package object lets `metrics` and `plots` be imported on their own.
    root = pathlib.Path(__file__).resolve().parents[1]
    code = (
        "import sys, types\n"
        "package = types.ModuleType('keras_advguard')\n"
        f"package.__path__ = [{str(root / 'keras_advguard')!r}]\n"
        "sys.modules['keras_advguard'] = package\n"
        "import keras_advguard.metrics, keras_advguard.plots\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in ('sklearn', 'matplotlib', 'keras')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
