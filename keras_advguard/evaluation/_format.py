"""Formatting helpers of `EvaluationReport`: numbers, JSON, file names, mean ROC."""

import math

import numpy as np


def _pct(value):
    return "n/a" if value is None else f"{value:.3f}"


def _counted(counts, n, intervals):
    """`k / n [low, high]` per FPR, joined by `; ` (`-` where a report lacks the counts)."""
    if counts is None or n is None:
        return "-"
    intervals = intervals or [None] * len(counts)
    cells = []
    for k, bounds in zip(counts, intervals, strict=True):
        cell = f"{k} / {n}"
        if bounds is not None:
            cell += f" [{100 * bounds[0]:.1f}, {100 * bounds[1]:.1f}]"
        cells.append(cell)
    return "; ".join(cells)


def _pm(mean, std):
    if mean is None:
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def _clean_json(value):
    """NaN / inf -> None, numpy -> Python, tuple keys -> strings."""
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _writer(data):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return write


def _slug(name):
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower() or "x"


def _mean_curve(folds, grid):
    """Mean and std of the folds' ROC on `grid` (the curve `plot_mean_roc` draws)."""
    from keras_advguard import metrics

    tprs = []
    for clean, adv in folds:
        if len(clean) == 0 or len(adv) == 0:
            continue
        fpr, tpr, _ = metrics.roc_curve(clean, adv, drop_intermediate=False)
        tprs.append(np.interp(grid, fpr, tpr))
    if not tprs:
        return None
    tprs = np.array(tprs)
    return {
        "fpr": grid.round(4).tolist(),
        "tpr": tprs.mean(0).round(5).tolist(),
        "tpr_std": tprs.std(0).round(5).tolist(),
    }
