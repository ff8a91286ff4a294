import json
import zipfile

import numpy as np
import pytest

from keras_advguard.detectors import _base
from keras_advguard.detectors._base import (
    check_fpr,
    iterate_inputs,
    load_detector,
    threshold_from_scores,
)


def test_threshold_is_the_k_plus_one_th_largest_score():
    scores = np.array([0.3, 0.1, 0.9, 0.5, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0])
    # fpr 0.2 of 10 scores: 2 false positives allowed -> the 3rd largest, 0.7.
    assert threshold_from_scores(scores, 0.2) == 0.7
    assert np.mean(scores > 0.7) == 0.2
    # fpr 0.05: floor(0.5) = 0 allowed -> the largest.
    assert threshold_from_scores(scores, 0.05) == 0.9
    with pytest.raises(ValueError, match="must not be empty"):
        threshold_from_scores([], 0.1)
    with pytest.raises(ValueError, match="NaN"):
        threshold_from_scores([0.1, np.nan], 0.1)


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, -0.5, 2.0, float("nan")])
def test_fpr_must_lie_strictly_between_zero_and_one(bad):
    with pytest.raises(ValueError, match="fpr"):
        check_fpr(bad)


def test_fpr_type():
    with pytest.raises(TypeError, match="fpr"):
        check_fpr("5%")
    assert check_fpr(np.float32(0.25)) == 0.25


def test_iterate_inputs_checks_every_batch():
    x = np.zeros((10, 3, 2), "float32")
    x[9, 1, 1] = np.inf  # in the third batch
    batches = iterate_inputs(x, (None, 3, 2), batch_size=4)
    assert next(batches).shape == (4, 3, 2)
    next(batches)
    with pytest.raises(ValueError, match="0 NaN and 1 infinite"):
        next(batches)
    with pytest.raises(ValueError, match=r"shape \(N, 3, 2\)"):
        list(iterate_inputs(np.zeros((2, 3, 3)), (None, 3, 2)))
    assert list(iterate_inputs(np.zeros((0, 3, 2)), (None, 3, 2))) == []


def test_json_values_are_checked_and_numpy_scalars_converted():
    assert _base._to_json({"a": np.int64(3), "b": (np.float32(0.5), True)}, "c") == {
        "a": 3,
        "b": [0.5, True],
    }
    with pytest.raises(TypeError, match=r"`cfg\['n_jobs'\]`"):
        _base._to_json({"n_jobs": object()}, "cfg")
    with pytest.raises(ValueError, match="finite"):
        _base._to_json({"t": float("inf")}, "cfg")


def test_unknown_class_and_newer_format_are_refused(tmp_path):
    def archive(path, document):
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("detector.json", json.dumps(document))

    base = {"format": _base.FORMAT, "format_version": 1, "config": {}}
    archive(tmp_path / "a.advguard", {**base, "class_name": "NoSuchDetector"})
    with pytest.raises(ValueError, match="'NoSuchDetector', which is not a known detector"):
        load_detector(tmp_path / "a.advguard")
    archive(tmp_path / "b.advguard", {**base, "class_name": "KNNDetector", "format_version": 99})
    with pytest.raises(ValueError, match="format_version=99"):
        load_detector(tmp_path / "b.advguard")
    with zipfile.ZipFile(tmp_path / "c.advguard", "w") as z:
        z.writestr("other.txt", "x")
    with pytest.raises(ValueError, match="holds no 'detector.json'"):
        load_detector(tmp_path / "c.advguard")
    with pytest.raises(ValueError, match="directory"):
        load_detector(tmp_path)
