"""Properties every attack must keep, checked on the trained digits model.

Clip bounds hold for every attack; the norm ball holds and `eps=0` returns
`x` unchanged for every attack that has an `eps`; invalid arguments raise.
"""

import numpy as np
import pytest

from keras_advguard import attacks

EPS = 0.15
L2_EPS = 1.0


def _ce(outputs, y):
    import keras

    return keras.ops.sparse_categorical_crossentropy(y, outputs["logits"], from_logits=True)


# name -> (function, norm of the ball or None, extra parameters for a fast run)
ATTACKS = {
    "fgsm": (attacks.fgsm, np.inf, {}),
    "fgsm_l2": (attacks.fgsm, 2, {"norm": 2}),
    "bim": (attacks.bim, np.inf, {"nb_iter": 5}),
    "pgd": (attacks.pgd, np.inf, {"nb_iter": 5}),
    "pgd_l2": (attacks.pgd, 2, {"nb_iter": 5, "norm": 2}),
    "mim": (attacks.mim, np.inf, {"nb_iter": 5}),
    "mim_l2": (attacks.mim, 2, {"nb_iter": 5, "norm": 2}),
    "spsa": (attacks.spsa, np.inf, {"nb_iter": 3, "spsa_samples": 16}),
    "uniform_noise": (attacks.uniform_noise, np.inf, {"seed": 0}),
    "gradient_attack": (attacks.gradient_attack, 2, {"steps": 4}),
    "pgd_with_loss": (attacks.pgd_with_loss, np.inf, {"nb_iter": 5, "loss_fn": _ce}),
    "deepfool": (attacks.deepfool, None, {"max_iter": 5}),
    "deepfool_linf": (attacks.deepfool, None, {"max_iter": 5, "norm": np.inf}),
    "carlini_wagner_l2": (
        attacks.carlini_wagner_l2,
        None,
        {"max_iterations": 10, "binary_search_steps": 2, "learning_rate": 0.1},
    ),
    "one_pixel": (attacks.one_pixel, None, {"maxiter": 2, "population": 20, "seed": 0}),
    "boundary": (attacks.boundary, None, {"steps": 30, "seed": 0}),
}
EPS_ATTACKS = [name for name, (_, norm, _) in ATTACKS.items() if norm is not None]


def _run(name, model, x, y=None, **overrides):
    fn, norm, params = ATTACKS[name]
    params = dict(params, **overrides)
    if norm is not None and "eps" not in params:
        params["eps"] = L2_EPS if norm == 2 else EPS
    if name == "pgd_with_loss":
        loss_fn = params.pop("loss_fn")
        return fn(model, x, loss_fn, y=y, **params)
    return fn(model, x, y=y, **params)


@pytest.fixture
def digits_09(digits):
    """The digits scaled into [0, 0.9], so that clip_max=0.9 is a valid range."""
    model, x, y = digits
    return model, x[:8] * 0.9, y[:8]


@pytest.mark.parametrize("name", list(ATTACKS))
def test_bounds_on_valid_range(name, digits_09):
    model, x, y = digits_09
    result = _run(name, model, x, y=y, clip_min=0.0, clip_max=0.9)
    assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 0.9
    diff = (result.x_adv - x).reshape(len(x), -1)
    np.testing.assert_allclose(result.l2, np.linalg.norm(diff, axis=1), rtol=1e-5)
    np.testing.assert_allclose(result.linf, np.abs(diff).max(axis=1), rtol=1e-5)


@pytest.mark.parametrize("name", EPS_ATTACKS)
def test_norm_ball_holds(name, digits):
    model, x, y = digits
    _, norm, _ = ATTACKS[name]
    result = _run(name, model, x[:8], y=y[:8])
    eps = L2_EPS if norm == 2 else EPS
    measured = result.l2 if norm == 2 else result.linf
    assert measured.max() <= eps * (1 + 1e-5) + 1e-6
    assert measured.max() > 0.5 * eps  # the attack did move


@pytest.mark.parametrize("name", EPS_ATTACKS)
def test_eps_zero_returns_x(name, digits):
    model, x, y = digits
    result = _run(name, model, x[:8], y=y[:8], eps=0.0)
    np.testing.assert_array_equal(result.x_adv, x[:8])
    assert not result.success.any()
