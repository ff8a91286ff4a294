"""The one instance cache: rebuilt exactly when what it was built from changes."""

import numpy as np

from keras_advguard import _memo


class _Owner:
    pass


def _counting():
    calls = []

    def build():
        calls.append(1)
        return len(calls)

    return calls, build


def test_memo_rebuilds_on_a_new_object_not_on_an_equal_value():
    owner, (calls, build) = _Owner(), _counting()
    array = np.zeros(3)
    assert _memo.memo(owner, "a", build, (array, "layer", (1, None))) == 1
    assert _memo.memo(owner, "a", build, (array, "layer", (1, None))) == 1  # same: kept
    assert _memo.memo(owner, "a", build, (array.copy(), "layer", (1, None))) == 2  # new array
    assert _memo.memo(owner, "a", build, (array, "layer", (1, None))) == 3
    assert _memo.memo(owner, "a", build, (array, "other", (1, None))) == 4  # value changed
    assert _memo.memo(owner, "a", build, (array, "other", (1, 2))) == 5
    assert _memo.memo(owner, "b", build) == 6  # names are independent
    assert _memo.memo(owner, "a", build, (array, "other", (1, 2))) == 5
    assert len(calls) == 6


def test_memo_tells_true_from_one():
    owner, (_, build) = _Owner(), _counting()
    assert _memo.memo(owner, "a", build, (1,)) == 1
    assert _memo.memo(owner, "a", build, (True,)) == 2  # 1 == True, but another value


def test_forget_drops_entries():
    owner, (_, build) = _Owner(), _counting()
    _memo.memo(owner, "a", build)
    _memo.memo(owner, "b", build)
    _memo.forget(owner, "a")
    assert _memo.memo(owner, "a", build) == 3
    assert _memo.memo(owner, "b", build) == 2
    _memo.forget(owner)
    assert _memo.memo(owner, "b", build) == 4
    _memo.forget(_Owner(), "never built")  # nothing to drop: no error


def test_batch_function_traces_once_for_every_batch_size():
    import tensorflow as tf

    owner, traces = _Owner(), []

    def double(x):
        traces.append(1)
        return 2.0 * x

    fn = _memo.batch_function(owner, "double", double, (None, 3))
    for n in (4, 1, 7):
        x = np.arange(3 * n, dtype="float32").reshape(n, 3)
        np.testing.assert_array_equal(fn(tf.constant(x)).numpy(), 2 * x)
    assert len(traces) == 1
    assert _memo.batch_function(owner, "double", double, (None, 3)) is fn
    assert _memo.batch_function(owner, "double", double, (None, 4)) is not fn
