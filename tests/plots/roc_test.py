"""keras_advguard.plots.roc: DetectionRocDisplay, plot_mean_roc, AttackRocDisplay."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn import metrics as sk_metrics  # noqa: E402

from keras_advguard import metrics, plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _scores(seed, shift=1.5):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, 80), rng.normal(shift, 1, 60)


def _sklearn_roc(clean, adv):
    y = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
    score = np.r_[clean, adv]
    fpr, tpr, _ = sk_metrics.roc_curve(y, score)
    return fpr, tpr, sk_metrics.roc_auc_score(y, score)


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_from_scores_draws_the_roc_curve(tmp_path):
    clean, adv = _scores(0)
    display = plots.DetectionRocDisplay.from_scores(clean, adv, name="kNN")
    ref_fpr, ref_tpr, ref_auc = _sklearn_roc(clean, adv)
    np.testing.assert_allclose(display.line_.get_xdata(), ref_fpr)
    np.testing.assert_allclose(display.line_.get_ydata(), ref_tpr)
    assert display.roc_auc == pytest.approx(ref_auc)
    assert display.line_.get_label() == f"kNN (AUC = {ref_auc:.2f})"
    assert display.ax_.figure is display.figure_
    assert display.line_ in display.ax_.lines
    assert display.band_ is None
    np.testing.assert_array_equal(display.chance_level_.get_xdata(), [0, 1])
    np.testing.assert_array_equal(display.chance_level_.get_ydata(), [0, 1])
    assert display.fpr_markers_ == []
    assert "False positive rate" in display.ax_.get_xlabel()
    assert "True positive rate" in display.ax_.get_ylabel()
    assert display.ax_.get_legend() is not None
    path = tmp_path / "roc.png"
    display.figure_.savefig(path)
    assert path.stat().st_size > 0 and _is_png(path)


def test_plot_on_given_ax_with_options():
    clean, adv = _scores(1)
    figure, ax = plt.subplots()
    fpr, tpr, _ = metrics.roc_curve(clean, adv)
    display = plots.DetectionRocDisplay(fpr, tpr, roc_auc=0.876, name="first")
    out = display.plot(
        ax=ax,
        name="second",
        plot_chance_level=False,
        fpr_markers=(0.01, 0.05, 0.1),
        color="red",
    )
    assert out is display
    assert display.ax_ is ax and display.figure_ is figure
    assert display.line_.get_label() == "second (AUC = 0.88)"
    assert display.line_.get_color() == "red"
    assert display.chance_level_ is None
    assert len(ax.lines) == 1 + 3  # curve + three markers, no diagonal
    xs = [line.get_xdata()[0] for line in display.fpr_markers_]
    np.testing.assert_allclose(xs, [0.01, 0.05, 0.1])


def test_display_without_auc_or_name():
    display = plots.DetectionRocDisplay([0, 0, 1], [0, 1, 1]).plot(plot_chance_level=False)
    assert display.line_.get_label().startswith("_")  # matplotlib's "no label"
    assert display.ax_.get_legend() is None
    assert plots.DetectionRocDisplay([0, 1], [0, 1], roc_auc=0.5).plot(
        plot_chance_level=False
    ).line_.get_label() == ("AUC = 0.50")


def test_display_constructor_errors():
    with pytest.raises(ValueError, match="same length"):
        plots.DetectionRocDisplay([0, 0.5, 1], [0, 1])
    with pytest.raises(ValueError, match="fpr.*empty"):
        plots.DetectionRocDisplay([], [])
    with pytest.raises(TypeError, match="tpr"):
        plots.DetectionRocDisplay([0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="fpr_markers"):
        plots.DetectionRocDisplay([0, 1], [0, 1]).plot(fpr_markers=[1.5])
    with pytest.raises(ValueError, match="scores_adv.*NaN"):
        plots.DetectionRocDisplay.from_scores([0.1, 0.2], [np.nan])


def test_plot_mean_roc_hand_worked():
    # Fold 1: ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1); fold 2: perfect.
    folds = [([0.0, 1.0], [0.5, 2.0]), ([0.0, 1.0], [2.0, 3.0])]
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    display = plots.plot_mean_roc(folds, name="det", fpr_grid=grid)
    np.testing.assert_allclose(display.fpr, [0, 0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(display.tpr, [0, 0.75, 0.75, 1, 1, 1])
    np.testing.assert_allclose(display.tpr_std, [0, 0.25, 0.25, 0, 0, 0])
    assert display.roc_auc == pytest.approx(0.875)  # (0.75 + 1) / 2
    assert display.roc_auc_std == pytest.approx(0.125)
    np.testing.assert_allclose(display.line_.get_xdata(), display.fpr)
    np.testing.assert_allclose(display.line_.get_ydata(), display.tpr)
    assert display.line_.get_label() == "det (AUC = 0.88 $\\pm$ 0.12)"
    assert display.band_ is not None


def test_plot_mean_roc_matches_interpolated_sklearn_folds(tmp_path):
    folds = [_scores(seed) for seed in range(4)]
    display = plots.plot_mean_roc(folds, fpr_markers=(0.01, 0.05, 0.1))
    grid = np.linspace(0, 1, 1001)
    curves, aucs = [], []
    for clean, adv in folds:
        fpr, tpr, auc = _sklearn_roc(clean, adv)
        curves.append(np.interp(grid, fpr, tpr))
        aucs.append(auc)
    np.testing.assert_allclose(display.tpr[1:], np.mean(curves, axis=0), atol=1e-12)
    np.testing.assert_allclose(display.tpr_std[1:], np.std(curves, axis=0), atol=1e-12)
    assert display.tpr[0] == 0 and display.tpr[-1] == 1
    assert display.roc_auc == pytest.approx(np.mean(aucs))
    assert display.roc_auc_std == pytest.approx(np.std(aucs))
    assert len(display.fpr_markers_) == 3
    path = tmp_path / "mean_roc.png"
    display.figure_.savefig(path)
    assert _is_png(path)


def test_plot_mean_roc_single_fold_equals_its_roc():
    clean, adv = _scores(9)
    display = plots.plot_mean_roc([(clean, adv)], plot_chance_level=False)
    fpr, tpr, auc = _sklearn_roc(clean, adv)
    np.testing.assert_allclose(display.tpr[1:], np.interp(np.linspace(0, 1, 1001), fpr, tpr))
    np.testing.assert_array_equal(display.tpr_std, 0)
    assert display.roc_auc == pytest.approx(auc) and display.roc_auc_std == 0


def test_plot_mean_roc_on_given_ax():
    figure, ax = plt.subplots()
    display = plots.plot_mean_roc([_scores(0), _scores(1)], ax=ax)
    assert display.ax_ is ax and display.figure_ is figure


@pytest.mark.parametrize(
    "folds, kwargs, error, match",
    [
        ([], {}, ValueError, "folds"),
        ("abc", {}, TypeError, "folds"),
        ([([0.1], [0.2], [0.3])], {}, ValueError, r"folds\[0\]"),
        ([([0.1], [])], {}, ValueError, "scores_adv"),
        ([([0.1], [0.2])], {"fpr_grid": [0.5, 0.2]}, ValueError, "fpr_grid"),
    ],
)
def test_plot_mean_roc_errors(folds, kwargs, error, match):
    with pytest.raises(error, match=match):
        plots.plot_mean_roc(folds, **kwargs)


def test_from_folds_is_plot_mean_roc():
    folds = [_scores(0), _scores(1)]
    a = plots.plot_mean_roc(folds)
    b = plots.DetectionRocDisplay.from_folds(folds)
    np.testing.assert_array_equal(a.tpr, b.tpr)
    np.testing.assert_array_equal(a.tpr_std, b.tpr_std)
    assert (a.roc_auc, a.roc_auc_std) == (b.roc_auc, b.roc_auc_std)


def test_attack_roc_display():
    clean = [0.1, 0.4, 0.2, 0.3]
    # "Inverted": every adversarial score below the clean ones (AUC 0).
    by_attack = {"FGSM": [0.35, 0.8], "DeepFool": [0.15, 0.5, 0.9], "Inverted": [0.0, 0.05]}
    display = plots.AttackRocDisplay.from_scores(clean, by_attack)
    assert list(display.displays_) == ["FGSM", "DeepFool", "Inverted"]
    for name, scores in by_attack.items():
        labels = np.r_[np.zeros(len(clean)), np.ones(len(scores))]
        auc = sk_metrics.roc_auc_score(labels, np.r_[clean, scores])  # independent reference
        assert display.displays_[name].line_.get_label() == f"{name} (AUC = {auc:.2f})"
    assert display.displays_["Inverted"].line_.get_label() == "Inverted (AUC = 0.00)"
    chance = [d.chance_level_ for d in display.displays_.values() if d.chance_level_]
    assert len(chance) == 1
    plt.close(display.figure_)
    with pytest.raises(ValueError, match="at least one attack"):
        plots.AttackRocDisplay(clean, {})
