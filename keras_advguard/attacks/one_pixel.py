"""One-pixel attack: differential evolution over a few pixels (Su et al.)."""

import numpy as np

from keras_advguard.attacks import _common


def one_pixel(
    model,
    x,
    *,
    pixels=1,
    maxiter=100,
    population=400,
    y=None,
    targeted=False,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """Change `pixels` pixels, searched by differential evolution.

    A candidate is `pixels` tuples `(row, column, value_1, ..., value_C)`;
    the image with those pixels set is scored by the softmax probability of
    the label (untargeted: minimised) or of the target (targeted:
    maximised). scipy's `differential_evolution` (DE/rand/1, `F = 0.5`,
    crossover rate 1, i.e. no crossover, as in the paper) evolves a
    population of `population` candidates, scored in one model call per
    generation, and stops at the first generation holding a successful
    candidate. Needs only the model's outputs, not its gradients.

    Args:
        model: a Keras model (scored on the softmax of its logits), a
            `DetectorModel`, or a callable returning logits.
        x: images `(N, H, W, C)` in `[clip_min, clip_max]`.
        pixels: number of pixels changed, >= 1. Defaults to `1`.
        maxiter: most generations, >= 1. Defaults to `100` (the paper's).
        population: candidates per generation, >= 5. Defaults to `400`
            (the paper's).
        y: labels `(N,)` or one-hot `(N, C)`. Untargeted: the labels to move
            away from; defaults to the model's predictions. Targeted: the
            targets; defaults to a random class other than the predicted one.
        targeted: whether to reach `y`. Defaults to `False`.
        clip_min: smallest valid pixel value. Defaults to `0.0`.
        clip_max: largest valid pixel value. Defaults to `1.0`.
        batch_size: samples per progress-bar step. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.
        seed: seed of the evolution and of the random targets. Defaults to
            `None`.

    Returns:
        An `AttackResult` (at most `pixels` pixels differ from `x`). A
        sample without success keeps the best candidate found.

    Raises:
        ValueError: a number out of range, `x` not 4-D, `clip_min >=
            clip_max`, `x` outside the clip range, `y` of the wrong length, or
            a model whose logits cannot be reached.
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> model = keras.Sequential(
        ...     [keras.Input((3, 3, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> x = np.full((1, 3, 3, 1), 0.5, dtype="float32")
        >>> result = one_pixel(model, x, maxiter=3, population=10, seed=0)
        >>> int(np.count_nonzero(result.x_adv != x)) <= 1
        True

    Reference:
        J. Su, D. V. Vargas and K. Sakurai, "One Pixel Attack for Fooling Deep
        Neural Networks", IEEE Transactions on Evolutionary Computation, 2019.
    """
    from keras_advguard import _validation

    _validation.check_positive_int("pixels", pixels)
    _validation.check_positive_int("maxiter", maxiter)
    _validation.check_number("population", population, min_value=5, integer=True)
    if np.ndim(x) != 4:
        raise ValueError(
            f"`one_pixel` needs images of shape (N, H, W, C). Received: x with shape={np.shape(x)}"
        )

    def attack_batch(logits_fn, xb, labels, rng):
        out = xb.numpy()
        for i, label in enumerate(labels.numpy()):
            out[i] = _evolve(
                logits_fn,
                out[i],
                label,
                targeted=targeted,
                pixels=pixels,
                maxiter=maxiter,
                population=population,
                clip_min=clip_min,
                clip_max=clip_max,
                rng=rng,
            )
        return out

    return _common.run_attack(
        attack_batch,
        model,
        x,
        name="one_pixel",
        y=y,
        targeted=targeted,
        clip_min=clip_min,
        clip_max=clip_max,
        batch_size=batch_size,
        verbose=verbose,
        seed=seed,
        params={"pixels": pixels, "maxiter": maxiter, "population": population},
    )


def _set_pixels(image, params, pixels):
    """Copies of `image` with the pixels of each row of `params` set.

    A row of `params` holds `pixels` tuples `(row, column, value_1, ...,
    value_C)`; coordinates are truncated to integers.
    """
    h, w, c = image.shape
    params = params.reshape(len(params), pixels, 2 + c)
    rows = np.clip(params[..., 0].astype(int), 0, h - 1)
    cols = np.clip(params[..., 1].astype(int), 0, w - 1)
    out = np.repeat(image[None], len(params), axis=0)
    sample = np.repeat(np.arange(len(params)), pixels)
    out[sample, rows.ravel(), cols.ravel()] = params[..., 2:].reshape(-1, c)
    return out


def _evolve(
    logits_fn,
    image,
    label,
    *,
    targeted,
    pixels,
    maxiter,
    population,
    clip_min,
    clip_max,
    rng,
):
    """Differential evolution on one image; the first success, else the best."""
    import tensorflow as tf
    from scipy.optimize import differential_evolution

    h, w, c = image.shape
    bounds = ([(0, h), (0, w)] + [(clip_min, clip_max)] * c) * pixels
    found = []

    def score(params):  # params: (dimensions, population), scipy's vectorized layout
        candidates = _set_pixels(image, params.T, pixels)
        logits = logits_fn(tf.constant(candidates))
        probs = tf.nn.softmax(logits).numpy()[:, label]
        pred = np.argmax(np.asarray(logits), axis=1)
        hit = pred == label if targeted else pred != label
        if hit.any() and not found:
            found.append(candidates[np.argmax(hit)])
        return -probs if targeted else probs

    def callback(intermediate_result):  # scipy passes this one argument by name
        return bool(found)  # True stops the evolution

    low, high = np.array(bounds, dtype="float64").T
    result = differential_evolution(
        score,
        bounds,
        strategy="rand1bin",
        maxiter=maxiter,
        mutation=0.5,
        recombination=1.0,
        init=rng.uniform(low, high, size=(population, len(bounds))),
        tol=0.0,
        atol=0.0,
        polish=False,
        vectorized=True,
        updating="deferred",
        callback=callback,
        rng=rng,
    )
    return found[0] if found else _set_pixels(image, result.x[None], pixels)[0]
