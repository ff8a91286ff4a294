"""keras_advguard.splits: every split in one module, still importable from its old home."""

import numpy as np
import pytest

from keras_advguard import datasets, metrics, splits


def test_old_homes_re_export_the_same_functions():
    assert datasets.validation_split is splits.validation_split
    assert metrics.stratified_kfold is splits.stratified_kfold
    assert metrics.train_val_test_split_by_group is splits.train_val_test_split_by_group


def test_splits_partition_the_samples():
    # Hand-worked: 6 images x (clean, adversarial), grouped by image.
    groups = np.repeat(np.arange(6), 2)
    labels = np.tile([0, 1], 6)
    train, val, test = splits.train_val_test_split_by_group(groups, (0.5, 0.25, 0.25), seed=1)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(12))
    # Group middles 1, 3, 5, 7, 9, 11 against the bounds 6 and 9 (side "right"):
    # three groups to train, one to validation, two to test.
    assert [len(s) for s in (train, val, test)] == [6, 2, 4]
    for a, b in ((train, val), (train, test), (val, test)):
        assert not set(groups[a]) & set(groups[b])
    folds = list(splits.stratified_kfold(labels, 3, seed=0, groups=groups))
    tested = np.sort(np.concatenate([test for _, test in folds]))
    np.testing.assert_array_equal(tested, np.arange(12))
    for train_idx, test_idx in folds:
        assert not set(groups[train_idx]) & set(groups[test_idx])
        assert np.mean(labels[test_idx]) == 0.5  # both versions of an image travel together


def test_label_checks_name_the_argument():
    with pytest.raises(ValueError, match="`labels` must not be empty"):
        splits.stratified_kfold([], 2)
    with pytest.raises(TypeError, match="`groups`"):
        splits.train_val_test_split_by_group([0.5, 1.5])
