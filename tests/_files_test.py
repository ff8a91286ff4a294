import json
import os

import numpy as np
import pytest

from keras_advguard._files import write_atomic, write_json


def test_write_json_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "doc.json"
    write_json(target, {"b": 1, "a": [1.5]}, sort_keys=True)
    assert target.read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    assert os.listdir(tmp_path) == ["doc.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "doc.json"
    write_json(target, {"kept": True})
    with pytest.raises(TypeError):
        write_json(target, {"bad": object()})
    with pytest.raises(ValueError):
        write_json(target, {"nan": float("nan")}, allow_nan=False)
    assert json.loads(target.read_text()) == {"kept": True}
    assert os.listdir(tmp_path) == ["doc.json"]


def test_write_atomic_gives_writers_their_extension(tmp_path):
    # numpy.savez appends ".npz" to a name without it: the temporary keeps it.
    target = tmp_path / "arrays.npz"
    write_atomic(target, lambda tmp: np.savez(tmp, x=np.arange(3)), ".npz")
    assert os.listdir(tmp_path) == ["arrays.npz"]
    np.testing.assert_array_equal(np.load(target)["x"], [0, 1, 2])
