"""The adaptive detector attacks `evaluate` runs, wired to the attacks with their step schedules."""

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
    "name, attack, step_decay",
    [
        ("selective_pgd", "selective_pgd", 1.0),
        ("orthogonal_pgd", "orthogonal_pgd", 1.0),
        ("selective_pgd_decaying", "selective_pgd", _threats.ADAPTIVE_STEP_DECAY),
    ],
)
def test_each_adaptive_attack_runs_with_its_step_schedule(name, attack, step_decay):
    assert name in _threats.ADAPTIVE_DETECTOR_ATTACKS
    x = np.full((4, 4), 0.5, "float32")
    result = _threats.adaptive_detector_attack(
        _logits, SumOfLastTwo(), x, np.ones(4, "int64"), eps=0.3, nb_iter=10,
        clip=(0.0, 1.0), batch_size=8, seed=0, attack=name,
    )  # fmt: skip
    assert result.attack == attack
    assert result.params["step_decay"] == step_decay
    assert result.params["eps_iter"] == pytest.approx(0.03)  # eps / 10


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
