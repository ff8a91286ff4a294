"""The evaluation protocol of METHODS.md section 7, as pure numpy functions.

- Clean set: the test images the classifier gets right (the *sources*).
- Adversarial set of an attack: the successful attacks on those sources.
- Splits by source image: a source's clean image and every adversarial
  version of it are always in the same part (fit, calibration or test).
- Thresholds from clean validation images only: the calibration part of a
  split, never its test part.
- Per-attack and mixed ROC / AUC / TPR at FPR, as mean and spread over the
  splits.
"""

import dataclasses
import warnings

import numpy as np

from keras_advguard import metrics
from keras_advguard.splits import stratified_kfold


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of the sources (indices into the clean set).

    Attributes:
        fit: sources whose images train a supervised detector.
        calibration: sources whose clean images set every threshold.
        test: sources whose images are scored for the figures.
    """

    fit: np.ndarray
    calibration: np.ndarray
    test: np.ndarray


def source_splits(labels, n_splits, seed, calibration_fraction=0.25):
    """Split the sources into `n_splits` folds of (fit, calibration, test).

    The test parts are the folds of a shuffled stratified k-fold on the
    sources' true classes (`splits.stratified_kfold`), so they partition the
    sources. The rest of each fold is shuffled (seeded per fold) and its
    first `calibration_fraction` (at least one source) becomes the
    calibration part; the remainder is the fit part.

    Args:
        labels: 1-D int array, the true class of each source.
        n_splits: number of folds, >= 2.
        seed: seed of the shuffles.
        calibration_fraction: share of the non-test sources that calibrate.

    Returns:
        A list of `Split`, each part sorted.
    """
    labels = np.asarray(labels)
    # Classes with fewer sources than folds cannot be stratified: merge them.
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    strata = np.where(counts[inverse] >= n_splits, inverse, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a small merged stratum
        folds = list(stratified_kfold(strata, n_splits, seed))
    splits = []
    for k, (rest, test) in enumerate(folds):
        rest = np.random.default_rng([seed, k]).permutation(rest)
        n_cal = max(1, int(round(calibration_fraction * len(rest))))
        splits.append(
            Split(
                fit=np.sort(rest[n_cal:]).astype(np.int64),
                calibration=np.sort(rest[:n_cal]).astype(np.int64),
                test=np.sort(test).astype(np.int64),
            )
        )
    return splits


def fold_metrics(scores_clean, scores_adv, scores_calibration, fprs):
    """AUC and TPR / achieved FPR at each target, thresholds from calibration.

    Returns `None` when either test set is empty (nothing to measure).
    """
    if len(scores_clean) == 0 or len(scores_adv) == 0:
        return None
    report = metrics.detection_report(
        scores_clean, scores_adv, fprs, scores_clean_validation=scores_calibration
    )
    return {
        "auc": report["auc"],
        "tpr": [report["at_fpr"][float(f)]["tpr"] for f in fprs],
        "fpr": [report["at_fpr"][float(f)]["fpr"] for f in fprs],
        "threshold": [report["at_fpr"][float(f)]["threshold"] for f in fprs],
        "n_clean": report["n_clean"],
        "n_adversarial": report["n_adversarial"],
    }


def aggregate(folds, fprs):
    """Mean and standard deviation (ddof=0) over the folds that could be measured.

    Returns a dict with `auc`, `auc_std`, `tpr` and `tpr_std` (one value per
    target FPR), `fpr` (mean achieved FPR), `n_clean` and `n_adversarial`
    (summed over the folds) and `n_splits` (folds measured); `None` when no
    fold could be measured.
    """
    folds = [f for f in folds if f is not None]
    if not folds:
        return None
    auc = np.array([f["auc"] for f in folds])
    tpr = np.array([f["tpr"] for f in folds])
    fpr = np.array([f["fpr"] for f in folds])
    return {
        "auc": float(auc.mean()),
        "auc_std": float(auc.std()),
        "tpr": [float(v) for v in tpr.mean(axis=0)],
        "tpr_std": [float(v) for v in tpr.std(axis=0)],
        "fpr": [float(v) for v in fpr.mean(axis=0)],
        "fprs": [float(f) for f in fprs],
        "n_clean": int(sum(f["n_clean"] for f in folds)),
        "n_adversarial": int(sum(f["n_adversarial"] for f in folds)),
        "n_splits": len(folds),
    }


def interval(successes, n):
    """The 95% Wilson interval of `successes / n` as a JSON-safe list; `None` for `n == 0`."""
    if n == 0:
        return None
    return [round(v, 5) for v in metrics.proportion_interval(int(successes), int(n))]


def success_at_threshold(fooled, scores, thresholds):
    """SR@N: share of attacked sources misclassified *and* scored <= t_N.

    Args:
        fooled: bool `(n,)`, the attack changed the prediction away from the
            truth.
        scores: float `(n,)`, the detector's scores of the attacked images.
        thresholds: thresholds, one per target FPR.

    Returns:
        A list of floats, one per threshold (0.0 for no source).
    """
    fooled = np.asarray(fooled, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if fooled.size == 0:
        return [0.0 for _ in thresholds]
    return [float(np.mean(fooled & (scores <= t))) for t in thresholds]
