"""Detection and robustness metrics: pure functions over scores and labels.

Conventions used throughout (METHODS.md section 7):

- **Positive = adversarial.** A detector outputs one real score per input;
  a higher score means "more adversarial". Clean inputs are label 0,
  adversarial inputs label 1.
- **Decision rule.** An input is flagged as adversarial iff
  `score > threshold` (strictly greater). Every threshold this module
  returns follows that rule, including the ones from `roc_curve`.
- **Honest protocol.** A threshold for a target false positive rate is
  calibrated on *clean validation* scores only, never on the test set
  (`tpr_at_fpr(..., scores_clean_validation=...)`).

Labels (`y_true`, `y_pred_*`, `y_target`) are 1-D arrays of class indices
(use `np.argmax(probabilities, axis=-1)` to get them from a softmax).

scikit-learn is imported inside the functions that need it, so importing
this module does not import `sklearn`.
"""

import dataclasses
import math
import numbers

import numpy as np

from keras_advguard import _validation
from keras_advguard.splits import stratified_kfold as stratified_kfold
from keras_advguard.splits import (
    train_val_test_split_by_group as train_val_test_split_by_group,
)

# Relative tolerance on `fpr * n` so that e.g. `0.29 * 100` (which is
# 28.999999999999996 in floating point) allows 29 false positives.
_FPR_RTOL = 1e-12


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------


def _check_scores(name, value):
    """Return `value` as a finite float64 1-D array (a `(n, 1)` column too)."""
    array = _validation.check_array(name, value, dtype_kind="fiu")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must be a 1-D array of scores (or a column of "
            f"shape (n, 1)). Received: {name} with shape={array.shape}"
        )
    array = array.astype(np.float64)
    n_nan = int(np.isnan(array).sum())
    if n_nan:
        raise ValueError(
            f"Argument `{name}` must not contain NaN. "
            f"Received: {name} with {n_nan} NaN value(s) out of {array.size}"
        )
    n_inf = int(np.isinf(array).sum())
    if n_inf:
        raise ValueError(
            f"Argument `{name}` must contain finite scores. "
            f"Received: {name} with {n_inf} infinite value(s) out of {array.size}"
        )
    return array


_check_labels = _validation.check_labels


def _check_fprs(fpr):
    """Return `(fprs_1d, is_scalar)` with every value checked in [0, 1]."""
    if isinstance(fpr, numbers.Number | np.number) or (
        isinstance(fpr, np.ndarray) and fpr.ndim == 0
    ):
        value = fpr.item() if isinstance(fpr, np.ndarray | np.number) else fpr
        _validation.check_number("fpr", value, min_value=0.0, max_value=1.0)
        return np.array([float(value)]), True
    if isinstance(fpr, str | bytes):
        raise TypeError(
            "Argument `fpr` must be a real number or a list of real numbers. "
            f"Received: fpr={fpr!r} of type {type(fpr).__name__}"
        )
    array = _validation.check_array("fpr", fpr, ndim=1, dtype_kind="fiu")
    for i, value in enumerate(array.tolist()):
        _validation.check_number(f"fpr[{i}]", value, min_value=0.0, max_value=1.0)
    return array.astype(np.float64), False


def _thresholds_from_sorted(sorted_clean, fprs):
    """Thresholds for each target in `fprs` from ascending clean scores."""
    n = sorted_clean.size
    thresholds = np.empty(fprs.shape, dtype=np.float64)
    for i, target in enumerate(fprs):
        # Largest number of clean scores allowed strictly above the threshold.
        allowed = math.floor(target * n * (1.0 + _FPR_RTOL))
        if allowed >= n:
            thresholds[i] = -np.inf
        else:
            # The (allowed + 1)-th largest clean score: only the `allowed`
            # largest can be strictly above it, and any lower threshold lets
            # at least `allowed + 1` through. Ties need no special case.
            thresholds[i] = sorted_clean[n - 1 - allowed]
    return thresholds


def _as_output(values, is_scalar):
    return float(values[0]) if is_scalar else values


# ---------------------------------------------------------------------------
# ROC
# ---------------------------------------------------------------------------


def roc_curve(scores_clean, scores_adv, *, drop_intermediate=True):
    """ROC curve of a detector, positive = adversarial.

    Computed with `sklearn.metrics.roc_curve` on the pooled scores with
    labels 0 (clean) and 1 (adversarial). The false and true positive rates
    are scikit-learn's. The thresholds are converted to this library's rule
    (flag iff `score > threshold`): `thresholds[i]` is the smallest threshold
    that gives the point `(fpr[i], tpr[i])`, i.e. the largest pooled score
    strictly below scikit-learn's threshold, or `-inf` when there is none.
    So `fpr[i] == mean(scores_clean > thresholds[i])` and
    `tpr[i] == mean(scores_adv > thresholds[i])` hold exactly;
    `thresholds[0]` is the largest score (nothing flagged).

    Args:
        scores_clean: 1-D array of detector scores of clean inputs.
        scores_adv: 1-D array of detector scores of adversarial inputs.
        drop_intermediate: whether to drop points that do not change the
            shape of the curve (scikit-learn's option). Defaults to `True`.

    Returns:
        A tuple `(fpr, tpr, thresholds)` of 1-D float arrays of equal length,
        `fpr` and `tpr` non-decreasing, `thresholds` decreasing.

    Raises:
        ValueError: if a score set is empty or holds NaN or infinite values.
        TypeError: if the scores are not numeric.

    Example:

        >>> fpr, tpr, thresholds = roc_curve([0.1, 0.4, 0.2], [0.35, 0.8])
        >>> print(fpr, tpr)
        [0.         0.         0.33333333 0.33333333 1.        ] [0.  0.5 0.5 1.  1. ]
        >>> print(thresholds)
        [0.8  0.4  0.35 0.2  -inf]
    """
    from sklearn import metrics as sk_metrics

    clean = _check_scores("scores_clean", scores_clean)
    adv = _check_scores("scores_adv", scores_adv)
    y_true = np.concatenate([np.zeros(clean.size), np.ones(adv.size)])
    y_score = np.concatenate([clean, adv])
    fpr, tpr, sk_thresholds = sk_metrics.roc_curve(
        y_true, y_score, drop_intermediate=drop_intermediate
    )
    # scikit-learn flags `score >= t`; shift to the next lower pooled score.
    unique = np.unique(y_score)
    below = np.searchsorted(unique, sk_thresholds, side="left") - 1
    thresholds = np.where(below >= 0, unique[np.maximum(below, 0)], -np.inf)
    return fpr, tpr, thresholds


def roc_auc(scores_clean, scores_adv):
    """Area under the ROC curve, positive = adversarial.

    The probability that a random adversarial input scores higher than a
    random clean input (ties count one half), computed with
    `sklearn.metrics.roc_auc_score`.

    Args:
        scores_clean: 1-D array of detector scores of clean inputs.
        scores_adv: 1-D array of detector scores of adversarial inputs.

    Returns:
        The AUC as a Python float in `[0, 1]`.

    Raises:
        ValueError: if a score set is empty or holds NaN or infinite values.
        TypeError: if the scores are not numeric.

    Example:

        >>> roc_auc([0.1, 0.4, 0.2], [0.35, 0.8])
        0.8333333333333334
    """
    from sklearn import metrics as sk_metrics

    clean = _check_scores("scores_clean", scores_clean)
    adv = _check_scores("scores_adv", scores_adv)
    y_true = np.concatenate([np.zeros(clean.size), np.ones(adv.size)])
    return float(sk_metrics.roc_auc_score(y_true, np.concatenate([clean, adv])))


# ---------------------------------------------------------------------------
# Operating points at a target false positive rate
# ---------------------------------------------------------------------------


def threshold_at_fpr(scores_clean_validation, fpr):
    """Detection threshold for a target false positive rate, from clean scores.

    The rule: with `n` clean scores, the threshold is the **smallest** `t`
    such that the fraction of clean scores **strictly greater** than `t` is
    at most `fpr`; an input is then flagged as adversarial iff `score > t`.
    Concretely, with `k = floor(fpr * n)` false positives allowed, `t` is the
    `(k + 1)`-th largest clean score; when `k >= n` (only for `fpr = 1`),
    `t = -inf` and everything is flagged. Consequences:

    - The achieved FPR on these scores never exceeds `fpr`. With tied scores
      it can be below: all copies of a tied value fall on the same side.
    - `fpr = 0` gives `t = max(scores)`: no clean score is flagged.
    - All-equal scores give `t` equal to that value for every `fpr < 1`.

    `floor(fpr * n)` is taken with a relative tolerance of `1e-12`, so that
    floating-point rounding (`0.29 * 100 = 28.999999999999996`) does not
    cost a false positive.

    Only clean scores are used. Calibrate on a clean validation set, never on
    the clean test set the detector is evaluated on (see `tpr_at_fpr`).

    Args:
        scores_clean_validation: 1-D array of detector scores of clean
            validation inputs.
        fpr: target false positive rate in `[0, 1]`, or a list of them.

    Returns:
        The threshold as a Python float when `fpr` is a scalar, else a 1-D
        float64 array with one threshold per target.

    Raises:
        ValueError: if the scores are empty or hold NaN or infinite values,
            or if a target is outside `[0, 1]` or NaN.
        TypeError: if the scores or `fpr` are not numeric.

    Example:

        >>> clean = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3]
        >>> threshold_at_fpr(clean, 0.4)  # 4 scores (the 3s) are > 2
        2.0
        >>> threshold_at_fpr(clean, 0.3)  # the four 3s are tied: achieved FPR 0
        3.0
        >>> print(threshold_at_fpr(clean, [0.0, 0.5, 1.0]))
        [  3.   1. -inf]
    """
    clean = _check_scores("scores_clean_validation", scores_clean_validation)
    fprs, is_scalar = _check_fprs(fpr)
    return _as_output(_thresholds_from_sorted(np.sort(clean), fprs), is_scalar)


def tpr_at_fpr(scores_clean, scores_adv, fpr, *, scores_clean_validation=None):
    """True positive rate at a target false positive rate.

    The threshold comes from `threshold_at_fpr` (flag iff `score > t`):

    - with `scores_clean_validation` given, it is calibrated on those clean
      validation scores. This is the honest protocol (METHODS.md section 7):
      the test set never chooses its own threshold. `scores_clean` is then
      only checked, not used; `detection_report` gives the FPR the threshold
      actually achieves on it.
    - without it, it is calibrated on `scores_clean` itself. This is the
      **in-sample** figure: optimistic, since the threshold is fitted to the
      very clean scores it is evaluated on. Report it as such.

    Args:
        scores_clean: 1-D array of detector scores of clean test inputs.
        scores_adv: 1-D array of detector scores of adversarial test inputs.
        fpr: target false positive rate in `[0, 1]`, or a list of them.
        scores_clean_validation: optional 1-D array of detector scores of
            clean validation inputs, disjoint from the test set. Defaults to
            `None` (in-sample calibration).

    Returns:
        The fraction of `scores_adv` strictly above the threshold: a Python
        float when `fpr` is a scalar, else a 1-D float64 array.

    Raises:
        ValueError: if a score set is empty or holds NaN or infinite values,
            or if a target is outside `[0, 1]`.
        TypeError: if the scores or `fpr` are not numeric.

    Example:

        >>> clean_test = [0.1, 0.2, 0.3, 0.4, 0.9]
        >>> adv_test = [0.5, 0.6, 0.95, 1.0]
        >>> tpr_at_fpr(clean_test, adv_test, 0.2)  # in-sample: t = 0.4
        1.0
        >>> clean_val = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.92, 0.97]
        >>> tpr_at_fpr(clean_test, adv_test, 0.2, scores_clean_validation=clean_val)
        0.5
    """
    clean = _check_scores("scores_clean", scores_clean)
    adv = _check_scores("scores_adv", scores_adv)
    if scores_clean_validation is not None:
        clean = _check_scores("scores_clean_validation", scores_clean_validation)
    fprs, is_scalar = _check_fprs(fpr)
    thresholds = _thresholds_from_sorted(np.sort(clean), fprs)
    tprs = np.array([np.mean(adv > t) for t in thresholds], dtype=np.float64)
    return _as_output(tprs, is_scalar)


def detection_report(
    scores_clean,
    scores_adv,
    fprs=(0.01, 0.05, 0.1),
    *,
    scores_clean_validation=None,
):
    """AUC and operating points of a detector, in one dictionary.

    For each target FPR the threshold comes from `threshold_at_fpr` on
    `scores_clean_validation` when given (the honest protocol), else on
    `scores_clean` (in-sample). TPR and achieved FPR are then measured on the
    test sets `scores_adv` and `scores_clean` with the rule `score > t`.

    Args:
        scores_clean: 1-D array of detector scores of clean test inputs.
        scores_adv: 1-D array of detector scores of adversarial test inputs.
        fprs: target false positive rates in `[0, 1]` (a scalar is accepted).
            Defaults to `(0.01, 0.05, 0.1)`.
        scores_clean_validation: optional 1-D array of detector scores of
            clean validation inputs. Defaults to `None`.

    Returns:
        A dict with keys

        - `"auc"`: ROC AUC on the test sets (float);
        - `"n_clean"`, `"n_adversarial"`: sizes of the test sets;
        - `"calibration"`: `"validation"` or `"in-sample"`;
        - `"n_calibration"`: number of clean scores the thresholds came from;
        - `"at_fpr"`: a dict keyed by each target FPR (float) whose values
            are dicts with `"threshold"`, `"tpr"`, `"fpr"` (achieved on
            `scores_clean`), `"true_positives"` and `"false_positives"`
            (counts of adversarial and clean test scores above the threshold).

    Raises:
        ValueError: if a score set is empty or holds NaN or infinite values,
            or if a target is outside `[0, 1]`.
        TypeError: if the scores or targets are not numeric.

    Example:

        >>> report = detection_report(
        ...     [0.1, 0.2, 0.3, 0.4, 0.9], [0.5, 0.6, 0.95, 1.0], fprs=[0.2]
        ... )
        >>> report["auc"], report["calibration"]
        (0.9, 'in-sample')
        >>> report["at_fpr"][0.2]
        {'threshold': 0.4, 'tpr': 1.0, 'fpr': 0.2, 'true_positives': 4, \
'false_positives': 1}
    """
    clean = _check_scores("scores_clean", scores_clean)
    adv = _check_scores("scores_adv", scores_adv)
    if scores_clean_validation is None:
        calibration, reference = "in-sample", clean
    else:
        calibration = "validation"
        reference = _check_scores("scores_clean_validation", scores_clean_validation)
    targets, _ = _check_fprs(fprs)
    thresholds = _thresholds_from_sorted(np.sort(reference), targets)
    at_fpr = {}
    for target, t in zip(targets.tolist(), thresholds.tolist(), strict=True):
        true_positives = int(np.sum(adv > t))
        false_positives = int(np.sum(clean > t))
        at_fpr[target] = {
            "threshold": t,
            "tpr": true_positives / adv.size,
            "fpr": false_positives / clean.size,
            "true_positives": true_positives,
            "false_positives": false_positives,
        }
    return {
        "auc": roc_auc(clean, adv),
        "n_clean": int(clean.size),
        "n_adversarial": int(adv.size),
        "calibration": calibration,
        "n_calibration": int(reference.size),
        "at_fpr": at_fpr,
    }


# ---------------------------------------------------------------------------
# Classifier-side metrics and the evaluation sets
# ---------------------------------------------------------------------------


def _check_targets(y_true, y_target):
    y_target = _check_labels("y_target", y_target)
    _validation.check_same_length("y_true", y_true, "y_target", y_target)
    same = np.flatnonzero(y_target == y_true)
    if same.size:
        raise ValueError(
            "Argument `y_target` must differ from `y_true` for every input: a "
            "targeted attack towards the true class is not an attack. "
            f"Received: y_target == y_true at {same.size} index(es), first "
            f"index={int(same[0])}"
        )
    return y_target


def _success_masks(y_true, y_pred_clean, y_pred_adv, y_target):
    y_true = _check_labels("y_true", y_true)
    y_pred_clean = _check_labels("y_pred_clean", y_pred_clean)
    y_pred_adv = _check_labels("y_pred_adv", y_pred_adv)
    _validation.check_same_length("y_true", y_true, "y_pred_clean", y_pred_clean)
    _validation.check_same_length("y_true", y_true, "y_pred_adv", y_pred_adv)
    correct = y_pred_clean == y_true
    if y_target is None:
        fooled = y_pred_adv != y_true
    else:
        fooled = y_pred_adv == _check_targets(y_true, y_target)
    return correct, correct & fooled


def attack_success_rate(y_true, y_pred_clean, y_pred_adv, *, targeted=False, y_target=None):
    """Fraction of correctly classified inputs that the attack fools.

    Denominator: the inputs whose **clean** prediction is correct
    (`y_pred_clean == y_true`); inputs the classifier already gets wrong are
    left out, since there is nothing to attack. Numerator: those of them
    whose adversarial prediction differs from the truth
    (`y_pred_adv != y_true`, untargeted) or equals the target
    (`y_pred_adv == y_target`, targeted).

    Args:
        y_true: 1-D array of true class labels.
        y_pred_clean: 1-D array of predicted labels on the clean inputs.
        y_pred_adv: 1-D array of predicted labels on their adversarial
            versions.
        targeted: whether the attack was targeted. Defaults to `False`.
        y_target: 1-D array of target labels, required when `targeted=True`
            and refused otherwise; must differ from `y_true` everywhere.
            Defaults to `None`.

    Returns:
        The success rate as a Python float in `[0, 1]`.

    Raises:
        ValueError: if an array is empty or not 1-D, lengths differ,
            `y_target` is missing (targeted) or given (untargeted) or equals
            `y_true` somewhere, or no input is correctly classified (the rate
            is undefined).
        TypeError: if labels are floats or not array-like.

    Example:

        >>> y_true = [0, 1, 2, 3]
        >>> y_pred_clean = [0, 1, 2, 0]  # index 3 wrong: not in the denominator
        >>> y_pred_adv = [1, 1, 0, 2]
        >>> round(attack_success_rate(y_true, y_pred_clean, y_pred_adv), 4)  # 2 / 3
        0.6667
        >>> attack_success_rate(
        ...     y_true, y_pred_clean, y_pred_adv, targeted=True, y_target=[1, 2, 0, 0]
        ... )  # index 0 and 2 reach their target: 2 / 3
        0.6666666666666666
    """
    _validation.check_type("targeted", targeted, bool)
    if targeted and y_target is None:
        raise ValueError(
            "Argument `y_target` is required when `targeted=True`. Received: y_target=None"
        )
    if not targeted and y_target is not None:
        raise ValueError(
            "Argument `y_target` is only used when `targeted=True`. "
            "Received: targeted=False with a y_target"
        )
    correct, success = _success_masks(y_true, y_pred_clean, y_pred_adv, y_target)
    n_correct = int(correct.sum())
    if n_correct == 0:
        raise ValueError(
            "The attack success rate is undefined: no input is correctly "
            "classified (`y_pred_clean == y_true` nowhere). "
            f"Received: {correct.size} input(s), 0 correct"
        )
    return int(success.sum()) / n_correct


def robust_accuracy(y_true, y_pred):
    """Accuracy of the predictions on (adversarial or sanitized) inputs.

    The fraction of **all** inputs with `y_pred == y_true` (denominator: every
    input, including those the classifier already misclassifies when clean).

    Args:
        y_true: 1-D array of true class labels.
        y_pred: 1-D array of predicted class labels.

    Returns:
        The accuracy as a Python float in `[0, 1]`.

    Raises:
        ValueError: if an array is empty or not 1-D, or the lengths differ.
        TypeError: if labels are floats or not array-like.

    Example:

        >>> robust_accuracy([0, 1, 2, 3], [0, 1, 1, 1])
        0.5
    """
    y_true = _check_labels("y_true", y_true)
    y_pred = _check_labels("y_pred", y_pred)
    _validation.check_same_length("y_true", y_true, "y_pred", y_pred)
    return float(np.mean(y_pred == y_true))


def proportion_interval(successes, n, confidence=0.95):
    """Wilson score interval of a proportion `successes / n` (a TPR, an SR@N).

    Figures such as the TPR of a detector on the few images an adaptive
    attack makes fool a robust classifier rest on a handful of images; the
    interval says how little they pin down. Wilson's interval (not the
    normal approximation, which collapses to a point at 0 and `n`):

        z = Phi^-1((1 + confidence) / 2),   p = successes / n
        centre = (p + z^2 / (2 n)) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))

    equal to `scipy.stats.binomtest(successes, n).proportion_ci(confidence,
    method="wilson")`.

    Args:
        successes: number of successes, an integer in `[0, n]`.
        n: number of trials, an integer `>= 1`.
        confidence: confidence level in `(0, 1)`. Defaults to `0.95`.

    Returns:
        `(low, high)`, Python floats with `0 <= low <= successes / n <= high <= 1`.

    Raises:
        TypeError: if `successes` or `n` is not an integer, or `confidence`
            not a number.
        ValueError: if `n < 1`, `successes` is outside `[0, n]`, or
            `confidence` outside `(0, 1)`.

    Example:

        >>> low, high = proportion_interval(10, 13)  # 10 of 13 fooling images flagged
        >>> round(low, 3), round(high, 3)
        (0.497, 0.918)
    """
    import statistics

    _validation.check_positive_int("n", n)
    _validation.check_number("successes", successes, min_value=0, max_value=n, integer=True)
    _validation.check_number(
        "confidence",
        confidence,
        min_value=0.0,
        max_value=1.0,
        min_inclusive=False,
        max_inclusive=False,
    )
    n, k = int(n), int(successes)
    z = statistics.NormalDist().inv_cdf((1.0 + float(confidence)) / 2.0)
    p = k / n
    scale = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


@dataclasses.dataclass(frozen=True, repr=False)
class EvaluationSets:
    """The clean and adversarial sets of METHODS.md section 7.

    Attributes:
        clean_mask: bool array of shape `(n_total,)`, `True` where the clean
            input is correctly classified (the clean set).
        adversarial_mask: bool array of shape `(n_total,)`, `True` where the
            clean input is correctly classified **and** its adversarial
            version succeeds (the adversarial set). A subset of `clean_mask`.
        clean_index: int64 indices where `clean_mask` is `True`.
        adversarial_index: int64 indices where `adversarial_mask` is `True`.
        n_clean: size of the clean set.
        n_adversarial: size of the adversarial set.
        n_total: number of inputs.
    """

    clean_mask: np.ndarray
    adversarial_mask: np.ndarray
    clean_index: np.ndarray
    adversarial_index: np.ndarray
    n_clean: int
    n_adversarial: int
    n_total: int

    def __repr__(self):
        return (
            f"EvaluationSets(n_total={self.n_total}, n_clean={self.n_clean}, "
            f"n_adversarial={self.n_adversarial})"
        )


def evaluation_sets(y_true, y_pred_clean, y_pred_adv, *, y_target=None):
    """Build the clean and adversarial evaluation sets (METHODS.md section 7).

    - Clean set: the inputs the classifier gets right
      (`y_pred_clean == y_true`).
    - Adversarial set: the successful adversarial versions of them, i.e. the
      clean set restricted to `y_pred_adv != y_true` (untargeted) or
      `y_pred_adv == y_target` (targeted, when `y_target` is given).

    Index the clean inputs with `clean_index` and the adversarial inputs with
    `adversarial_index`. For a paired protocol (each source image once clean
    and once attacked) index both with `adversarial_index`. Report the counts.

    Args:
        y_true: 1-D array of true class labels.
        y_pred_clean: 1-D array of predicted labels on the clean inputs.
        y_pred_adv: 1-D array of predicted labels on their adversarial
            versions (same order).
        y_target: optional 1-D array of target labels of a targeted attack;
            must differ from `y_true` everywhere. Defaults to `None`.

    Returns:
        An `EvaluationSets` with masks, indices and counts.

    Raises:
        ValueError: if an array is empty or not 1-D, lengths differ, or
            `y_target` equals `y_true` somewhere.
        TypeError: if labels are floats or not array-like.

    Example:

        >>> sets = evaluation_sets([0, 1, 2, 3], [0, 1, 2, 0], [1, 1, 0, 2])
        >>> sets
        EvaluationSets(n_total=4, n_clean=3, n_adversarial=2)
        >>> sets.clean_index.tolist(), sets.adversarial_index.tolist()
        ([0, 1, 2], [0, 2])
    """
    correct, success = _success_masks(y_true, y_pred_clean, y_pred_adv, y_target)
    clean_index = np.flatnonzero(correct).astype(np.int64)
    adversarial_index = np.flatnonzero(success).astype(np.int64)
    return EvaluationSets(
        clean_mask=correct,
        adversarial_mask=success,
        clean_index=clean_index,
        adversarial_index=adversarial_index,
        n_clean=int(clean_index.size),
        n_adversarial=int(adversarial_index.size),
        n_total=int(correct.size),
    )


# ---------------------------------------------------------------------------
# Adaptive attacks: success against classifier and detector together
# ---------------------------------------------------------------------------


def success_rate_at_fpr(
    scores_clean_validation,
    scores_adv,
    fooled,
    fprs=(0.01, 0.05, 0.1),
    *,
    scores_clean=None,
):
    """SR@N: the share of attacked inputs that fool the classifier and evade the detector.

    The figure adaptive attacks on detectors report (Bryniarski et al.,
    ICLR 2022): with the threshold `t_N` set at N% false positive rate on
    clean validation scores (`threshold_at_fpr`, flag iff `score > t_N`),
    `SR@N = mean(fooled & (scores_adv <= t_N))` over all attacked sources.
    Beside it, the detector's side at the same threshold: `TPR@N =
    mean(scores_adv > t_N)` over all attacked inputs (fooled or not). Works
    for any detector: pass its `score` of clean validation inputs and of the
    attack's `x_adv`, and the attack's `success`.

    Args:
        scores_clean_validation: 1-D array of detector scores of clean
            validation inputs (the calibration set, disjoint from the test).
        scores_adv: 1-D array `(N,)` of detector scores of the attacked
            inputs, one per source.
        fooled: bool array `(N,)`, whether each attacked input fools the
            classifier (`AttackResult.success`).
        fprs: target false positive rates in `[0, 1]` (a scalar is accepted).
            Defaults to `(0.01, 0.05, 0.1)`.
        scores_clean: optional 1-D array of detector scores of clean *test*
            inputs; when given, the ROC AUC of clean test vs attacked inputs
            and the ROC curve are added. Defaults to `None`.

    Returns:
        A dict with keys `"n"` (number of attacked sources), `"n_fooled"`
        (how many fool the classifier), `"n_calibration"` (number of clean
        validation scores) and `"at_fpr"`: a dict keyed by each target FPR
        (float) whose values are dicts with `"threshold"`, `"sr"` (SR@N),
        `"tpr"` (TPR@N of the attacked inputs) and `"n_evaded"` (sources
        counted in SR@N). With `scores_clean`, also `"auc"` and `"roc"`:
        the ROC AUC and the ROC curve `(fpr, tpr, thresholds)`
        (`roc_curve`), clean test vs attacked.

    Raises:
        ValueError: empty score sets, NaN or infinite scores, a target outside
            `[0, 1]`, or `fooled` and `scores_adv` of different lengths.
        TypeError: non-numeric scores, or `fooled` not boolean.

    Example:

        >>> clean_val = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
        >>> adv = [0.35, 0.65, 0.95, 0.2]
        >>> fooled = [True, True, True, False]
        >>> report = success_rate_at_fpr(clean_val, adv, fooled, fprs=[0.1, 0.4])
        >>> report["at_fpr"][0.1]  # t = 0.9: the first two evade
        {'threshold': 0.9, 'sr': 0.5, 'tpr': 0.25, 'n_evaded': 2}
        >>> report["at_fpr"][0.4]["sr"]  # t = 0.6: only the first
        0.25
    """
    clean = _check_scores("scores_clean_validation", scores_clean_validation)
    adv = _check_scores("scores_adv", scores_adv)
    fooled = _validation.check_array("fooled", fooled, ndim=1, dtype_kind="b")
    _validation.check_same_length("scores_adv", adv, "fooled", fooled)
    targets, _ = _check_fprs(fprs)
    thresholds = _thresholds_from_sorted(np.sort(clean), targets)
    at_fpr = {}
    for target, t in zip(targets.tolist(), thresholds.tolist(), strict=True):
        evaded = fooled & (adv <= t)
        at_fpr[target] = {
            "threshold": t,
            "sr": float(np.mean(evaded)),
            "tpr": float(np.mean(adv > t)),
            "n_evaded": int(evaded.sum()),
        }
    report = {
        "n": int(adv.size),
        "n_fooled": int(fooled.sum()),
        "n_calibration": int(clean.size),
        "at_fpr": at_fpr,
    }
    if scores_clean is not None:
        clean_test = _check_scores("scores_clean", scores_clean)
        report["auc"] = roc_auc(clean_test, adv)
        report["roc"] = roc_curve(clean_test, adv)
    return report
