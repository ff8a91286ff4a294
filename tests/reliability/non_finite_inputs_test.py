"""Non-finite inputs are a `ValueError` naming the argument and the count, not data.

Before the fix, `attacks.fgsm` accepted an image holding a NaN (its range
check used `min`/`max`, which a NaN defeats) and returned NaN perturbation
norms, and an `inf` pixel passed when the clip range was infinite. Every
attack shares one input check (`attacks._common.check_inputs`), so each one
is tried here. `ClassMedoids.fit` reported NaN activations without naming
how many.
"""

import keras
import numpy as np
import pytest

from keras_advguard import attacks
from keras_advguard.detectors import ClassMedoids


@pytest.fixture(scope="module")
def linear_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])


def _images(n=3):
    return np.random.default_rng(0).uniform(0.2, 0.8, size=(n, 4, 4, 1)).astype("float32")


def _loss(outputs, y):
    return keras.ops.max(outputs["logits"], axis=-1)


# Each attack with the smallest arguments that run it.
ATTACKS = {
    "bim": lambda m, x, **k: attacks.bim(m, x, eps=0.1, nb_iter=1, **k),
    "boundary": lambda m, x, **k: attacks.boundary(m, x, steps=1, **k),
    "carlini_wagner_l2": lambda m, x, **k: attacks.carlini_wagner_l2(
        m, x, binary_search_steps=1, max_iterations=1, **k
    ),
    "deepfool": lambda m, x, **k: attacks.deepfool(m, x, max_iter=1, **k),
    "fgsm": lambda m, x, **k: attacks.fgsm(m, x, eps=0.1, **k),
    "gradient_attack": lambda m, x, **k: attacks.gradient_attack(m, x, eps=0.1, **k),
    "mim": lambda m, x, **k: attacks.mim(m, x, eps=0.1, nb_iter=1, **k),
    "one_pixel": lambda m, x, **k: attacks.one_pixel(m, x, maxiter=1, **k),
    "pgd": lambda m, x, **k: attacks.pgd(m, x, eps=0.1, nb_iter=1, **k),
    "pgd_with_loss": lambda m, x, **k: attacks.pgd_with_loss(m, x, _loss, eps=0.1, nb_iter=1, **k),
    "spsa": lambda m, x, **k: attacks.spsa(m, x, eps=0.1, nb_iter=1, **k),
    "uniform_noise": lambda m, x, **k: attacks.uniform_noise(m, x, eps=0.1, **k),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_refuses_nan_images(linear_model, name):
    x = _images()
    x[1, 2, 3, 0] = np.nan
    x[2, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"Argument `x` must hold finite values.*2 NaN and 0 inf"):
        ATTACKS[name](linear_model, x)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_refuses_infinite_pixels_even_with_an_infinite_clip_range(linear_model, name):
    x = _images()
    x[0, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"Argument `x` .*0 NaN and 1 infinite"):
        ATTACKS[name](linear_model, x, clip_min=-np.inf, clip_max=np.inf)


def test_fgsm_nan_image_was_accepted_with_nan_norms_before(linear_model):
    # The failure as reported: one NaN pixel of one image. The clean images
    # of the same batch still attack normally (the check is not too eager).
    x = _images()
    result = attacks.fgsm(linear_model, x, eps=0.1)
    assert np.all(np.isfinite(result.l2)) and np.allclose(result.linf, 0.1, atol=1e-6)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="`x`"):
        attacks.fgsm(linear_model, x, eps=0.1)


def test_a_value_beyond_float32_is_infinite_after_the_cast(linear_model):
    x = _images().astype("float64")
    x[0, 0, 0, 0] = 1e300
    with pytest.raises(ValueError, match="1 infinite"):
        attacks.fgsm(linear_model, x, eps=0.1, clip_min=-np.inf, clip_max=np.inf)


def test_boundary_starting_points_are_checked_too(linear_model):
    x = _images()
    start = np.clip(1.0 - x, 0, 1)
    start[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"Argument `starting_points` .*1 NaN"):
        attacks.boundary(linear_model, x, steps=1, starting_points=start)


def test_class_medoids_fit_names_the_layer_and_counts_the_bad_values():
    rng = np.random.default_rng(0)
    activations = {"fc1": rng.normal(size=(12, 4)), "fc2": rng.normal(size=(12, 3))}
    labels = np.arange(12) % 2
    activations["fc2"][[1, 3], 0] = np.nan
    activations["fc2"][5, 2] = -np.inf
    with pytest.raises(
        ValueError,
        match=r"Argument `activations_by_layer\['fc2'\]` must hold finite values.*"
        r"2 NaN and 1 infinite.*class 1",
    ):
        ClassMedoids().fit(activations, labels)
