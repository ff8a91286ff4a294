"""The adaptive detector attacks `evaluate` runs: their step schedules and targets."""

import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.evaluation import _threats


class SumOfLastTwo:
    """A contract detector whose score is `x[:, 2] + x[:, 3]` (never evaded)."""

    score_tensor_kind = "exact"
    threshold_ = -100.0

    def score_tensor(self, x):
        return tf.reduce_sum(x[:, 2:], axis=1)


def _logits(v):
    return tf.stack([10.0 + 0.1 * v[:, 0], 0.1 * v[:, 1], 0.0 * v[:, 0]], axis=1)


@pytest.mark.parametrize(
    "name, attack, step_decay, targeted",
    [
        ("selective_pgd", "selective_pgd", 1.0, False),
        ("orthogonal_pgd", "orthogonal_pgd", 1.0, False),
        ("selective_pgd_decaying", "selective_pgd", _threats.ADAPTIVE_STEP_DECAY, False),
        ("selective_pgd_runner_up", "selective_pgd", _threats.ADAPTIVE_STEP_DECAY, True),
    ],
)
def test_each_adaptive_attack_runs_with_its_step_schedule(name, attack, step_decay, targeted):
    assert name in _threats.ADAPTIVE_DETECTOR_ATTACKS
    x = np.full((4, 4), 0.5, "float32")
    result = _threats.adaptive_detector_attack(
        _logits, SumOfLastTwo(), x, np.ones(4, "int64"), eps=0.3, nb_iter=10,
        clip=(0.0, 1.0), batch_size=8, seed=0, attack=name,
    )  # fmt: skip
    assert result.attack == attack
    assert result.params["step_decay"] == step_decay
    assert result.params["eps_iter"] == pytest.approx(0.03)  # eps / 10
    assert result.targeted == targeted
    if targeted:  # label 1: the runner-up is class 0 (logit 10 against 0.05 and 0)
        np.testing.assert_array_equal(result.labels, np.zeros(4))


def test_runner_up_targets_are_the_most_likely_wrong_class():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(37, 5)).astype("float32")
    y = rng.integers(0, 5, size=37)
    got = _threats.runner_up_targets(lambda v: v, logits, y, batch_size=8)
    order = np.argsort(-logits, axis=1)  # best first; skip the label where it comes first
    expected = np.where(order[:, 0] == y, order[:, 1], order[:, 0])
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64 and not np.any(got == y)


def test_the_runner_up_attack_makes_the_runner_up_the_prediction():
    """Targeted at the runner-up, the attack makes that class the prediction.

    A 3-class linear model: on the clean input (0.5 everywhere) the logits
    are 2, 0.5 and 0, the label is 0, so the runner-up is class 1; within
    eps 0.3 class 1 can reach 2.3 against class 0's 0.8 (the 40 shrinking steps
    travel 0.38, enough from any random start).
    """
    x = np.full((4, 4), 0.5, "float32")

    def logits(v):
        return tf.stack(
            [4.0 - 4.0 * v[:, 0], 1.5 - 4.0 * v[:, 1] + 2.0 * v[:, 2], 0.0 * v[:, 0]], 1
        )

    result = _threats.adaptive_detector_attack(
        logits, SumOfLastTwo(), x, np.zeros(4, "int64"), eps=0.3, nb_iter=40,
        clip=(0.0, 1.0), batch_size=8, seed=0, attack="selective_pgd_runner_up",
    )  # fmt: skip
    np.testing.assert_array_equal(result.labels, np.ones(4))
    np.testing.assert_array_equal(result.y_pred_after, np.ones(4))


def test_the_decaying_attack_travels_the_sum_of_its_shrinking_steps():
    """Same seed, same random start: each run moves down the score by the sum of its steps.

    Fooled from the start (label 1, prediction 0), so every step goes down the
    detector's score, -0.03 per step on coordinates 2 and 3 for the constant
    run (0.3 in 10 steps), -0.03 * 0.05 ** (i / 9) for the shrinking one
    (0.102 in all), unless the ball's edge (0.5 - 0.3) stops the run first.
    """
    x = np.full((4, 4), 0.5, "float32")
    kw = dict(eps=0.3, nb_iter=10, clip=(0.0, 1.0), batch_size=8, seed=0)
    y = np.ones(4, "int64")
    runs = {
        name: _threats.adaptive_detector_attack(_logits, SumOfLastTwo(), x, y, attack=name, **kw)
        for name in ("selective_pgd", "selective_pgd_decaying")
    }
    constant = runs["selective_pgd"].x_adv[:, 2:]
    decaying = runs["selective_pgd_decaying"].x_adv[:, 2:]
    travel = 0.3 - 0.03 * np.sum(_threats.ADAPTIVE_STEP_DECAY ** (np.arange(10) / 9))
    inside = constant > 0.2 + 1e-5  # the constant run not stopped by the ball
    assert 2 <= inside.sum() < inside.size  # both cases occur with this seed
    np.testing.assert_allclose((decaying - constant)[inside], travel, atol=1e-5)
    assert np.all(decaying >= constant - 1e-6)
    # Coordinates 0 and 1 keep the shared random start (the score does not depend on them).
    np.testing.assert_array_equal(
        runs["selective_pgd"].x_adv[:, :2], runs["selective_pgd_decaying"].x_adv[:, :2]
    )
