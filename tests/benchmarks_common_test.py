"""Tests of `benchmarks/_common.py`: the eps search and the atomic writers."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _common  # noqa: E402


def test_bisect_finds_the_crossing_of_a_decreasing_function():
    # accuracy-like curve exp(-x / 0.1): it crosses 0.5 at 0.1 * ln 2.
    f = lambda x: math.exp(-x / 0.1)  # noqa: E731
    x, fx, history = _common.bisect(f, 0.5, 0.0, 1.0, tol=1e-5, max_iter=40)
    assert x == pytest.approx(0.1 * math.log(2), abs=1e-4)
    assert fx == pytest.approx(0.5, abs=1e-3)
    assert all(f(h[0]) == h[1] for h in history)


def test_bisect_increasing_and_step_function():
    x, _, _ = _common.bisect(lambda x: x**2, 0.25, 0.0, 2.0, tol=1e-6, decreasing=False)
    assert x == pytest.approx(0.5, abs=1e-5)
    # a step function (accuracy on a finite set): the search closes in on the step
    step = lambda x: 1.0 if x < 0.3 else 0.0  # noqa: E731
    x, fx, history = _common.bisect(step, 0.5, 0.0, 1.0, tol=1e-3)
    assert (x, fx) in history and len(history) == 10  # 2**-10 < 1e-3
    assert min(abs(h[0] - 0.3) for h in history) < 2e-3
    with pytest.raises(ValueError, match="lo < hi"):
        _common.bisect(step, 0.5, 1.0, 1.0)


def test_writers_and_table(tmp_path):
    _common.write_json(tmp_path / "a.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    with pytest.raises(ValueError):
        _common.write_json(tmp_path / "b.json", {"x": float("nan")})
    assert not list(tmp_path.glob("*b.json*"))  # nothing half-written
    _common.write_text(tmp_path / "t.md", _common.table(["a", "b"], [[1, 2]]))
    assert (tmp_path / "t.md").read_text().splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]


def test_parser_common_options_and_quick_implies_digits(tmp_path):
    p = _common.parser("doc")
    args = _common.parse(p, ["--dataset", "cifar10", "--quick", "--out", str(tmp_path)])
    assert (args.dataset, args.quick, args.out, args.num_images) == (
        "digits",
        True,
        str(tmp_path),
        None,
    )
    assert _common.parse(p, ["--num-images", "7"]).dataset == "mnist"
    with pytest.raises(SystemExit):
        _common.parse(p, ["--dataset", "imagenet"])
    stem = _common.results_stem("bench", "mnist", quick=False, out=tmp_path / "r")
    assert stem == tmp_path / "r" / "bench_mnist" and stem.parent.is_dir()


def test_rename_detectors_subset_and_evaluate_kwargs():
    from keras_advguard import EvaluationReport

    detectors = {"max_softmax": {"a": 0}, "Cls": {"a": 1}, "Cls_2": {"a": 2}}
    roc = {("Cls_2", "fgsm"): [1], ("max_softmax", "fgsm"): [0]}
    report = EvaluationReport({"fprs": [0.05]}, {}, detectors, {}, {"clean": 1.0}, roc)
    _common.rename_detectors(report, "Cls", ["first", "second"])
    assert report.detectors == {"max_softmax": {"a": 0}, "first": {"a": 1}, "second": {"a": 2}}
    assert report.roc == {("second", "fgsm"): [1], ("max_softmax", "fgsm"): [0]}
    assert _common.report_body(report, "T").startswith("# T\n\n")
    import numpy as np

    x, y = _common.subset((np.arange(10), -np.arange(10)), 4, seed=1)
    assert len(x) == 4 and (y == -x).all() and (x[:-1] < x[1:]).all()
    args = _common.parse(_common.parser("doc"), ["--quick", "--splits", "4"])
    kw = _common.evaluate_kwargs(args, fpr=(0.05,))
    assert (kw["splits"], kw["epochs"], kw["quick"], kw["fpr"]) == (4, 3, True, (0.05,))
    assert kw["adaptive_steps"] is None  # the engine's default
    args = _common.parse(_common.parser("doc"), ["--adaptive-steps", "30", "--no-cache"])
    kw = _common.evaluate_kwargs(args)
    assert (kw["adaptive_steps"], kw["cache_dir"], kw["splits"]) == (30, False, 3)
