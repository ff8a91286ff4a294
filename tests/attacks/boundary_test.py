import numpy as np
import pytest

from keras_advguard.attacks import boundary


def test_walks_towards_the_boundary_on_a_linear_model(linear, x_mid):
    labels = np.argmax(linear.logits(x_mid), axis=1)
    distance = linear.boundary_distance(x_mid, labels)
    start = boundary(linear.model, x_mid, steps=1, seed=0)
    walked = boundary(linear.model, x_mid, steps=2000, seed=0)
    assert start.success.all() and walked.success.all()
    assert np.all(walked.l2 >= distance * (1 - 1e-4))  # never inside the class
    assert np.all(walked.l2 < start.l2)
    assert np.median(walked.l2 / distance) < 1.3


def test_starting_points_allow_a_targeted_attack(digits):
    model, x, y = digits
    x, y = x[:10], y[:10]
    # Start every sample at an image of the target class.
    target_image = x[np.flatnonzero(y != y[0])[0]]
    target = int(np.argmax(model.predict(target_image[None], verbose=0)))
    mask = y != target
    x, y = x[mask], y[mask]
    starts = np.repeat(target_image[None], len(x), axis=0)
    targets = np.full(len(x), target)
    result = boundary(model, x, y=targets, targeted=True, starting_points=starts, steps=200, seed=0)
    assert result.success.all()
    assert np.all(result.l2 < np.linalg.norm((starts - x).reshape(len(x), -1), axis=1))


def test_success_and_progress_on_digits(digits):
    model, x, y = digits
    x, y = x[:20], y[:20]
    first = boundary(model, x, y=y, steps=1, seed=0)
    later = boundary(model, x, y=y, steps=1000, seed=0)
    assert later.success_rate >= 0.95
    assert np.mean(later.l2) < 0.8 * np.mean(first.l2)


def test_starting_points_of_the_wrong_shape_raise(linear, x_mid):
    with pytest.raises(ValueError, match=r"`starting_points` must have the shape"):
        boundary(linear.model, x_mid, starting_points=x_mid[:2])


def test_numpy_black_box(linear, x_mid):
    """Decision-based: a model that is plain numpy (no gradients) can be attacked."""

    def black_box(x):
        return linear.logits(np.asarray(x))

    result = boundary(black_box, x_mid, steps=300, seed=0)
    assert result.success.all()
    labels = np.argmax(linear.logits(x_mid), axis=1)
    np.testing.assert_array_equal(result.success, result.y_pred_after != labels)
