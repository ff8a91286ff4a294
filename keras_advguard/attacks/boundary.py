"""Boundary attack: a decision-based random walk along the boundary (Brendel et al.)."""

import numpy as np

from keras_advguard.attacks import _common


def boundary(
    model,
    x,
    *,
    steps=5000,
    spherical_step=0.01,
    source_step=0.01,
    source_step_convergence=1e-7,
    step_adaptation=1.5,
    update_stats_every=10,
    init_attempts=100,
    starting_points=None,
    y=None,
    targeted=False,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """Boundary attack: shrink an adversarial input towards `x` using labels only.

    Needs only the predicted label, never scores or gradients. Starts from
    an adversarial point (`starting_points`, else uniform noise blended
    towards `x` by a binary search: the Foolbox initialisation), then at each
    step draws a random orthogonal ("spherical") move of relative size
    `spherical_step` on the sphere around `x`, plus a move of relative size
    `source_step` towards `x`, and keeps the candidate when it is still
    adversarial and closer. Every `update_stats_every` steps both step sizes
    adapt to the recent acceptance rates (spherical: kept between 20% and
    50%; source: between 10% and 25%), multiplied or divided by
    `step_adaptation`. A sample stops when its `source_step` falls below
    `source_step_convergence`. Batched, in numpy around the model's calls,
    following the Foolbox 3 formulation (one model call per step, one more
    every `update_stats_every` steps).

    Args:
        model: a Keras model, a `DetectorModel`, or a callable returning
            logits (only their argmax is used).
        x: inputs `(N, ...)` in `[clip_min, clip_max]`.
        steps: most steps, >= 1. Defaults to `5000`.
        spherical_step: initial relative size of the orthogonal move, > 0.
            Defaults to `0.01`.
        source_step: initial relative size of the move towards `x`, > 0.
            Defaults to `0.01`.
        source_step_convergence: a sample stops when its source step falls
            below this, >= 0. Defaults to `1e-7`.
        step_adaptation: factor of the step-size updates, > 1. Defaults to
            `1.5`.
        update_stats_every: steps between two step-size updates, >= 1.
            Defaults to `10`.
        init_attempts: uniform-noise draws tried per sample to find an
            adversarial start, >= 1. Defaults to `100`.
        starting_points: adversarial inputs to start from, same shape as
            `x` (needed for a targeted attack in practice: noise rarely hits
            a given class). Defaults to `None` (noise).
        y: labels `(N,)` or one-hot `(N, C)`. Untargeted: the labels to move
            away from; defaults to the model's predictions. Targeted: the
            targets; defaults to a random class other than the predicted one.
        targeted: whether to reach `y`. Defaults to `False`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        batch_size: samples per batch. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.
        seed: seed of every random draw. Defaults to `None`.

    Returns:
        An `AttackResult`. Samples without an adversarial start keep `x`.

    Raises:
        ValueError: a number out of range, `starting_points` of another shape
            or outside the clip range, `clip_min >= clip_max`, `x` outside
            the clip range, `y` of the wrong length, or a model whose logits
            cannot be reached.
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.random.default_rng(0).random((4, 4), dtype="float32")
        >>> result = boundary(model, x, steps=50, seed=0)
        >>> bool(np.all((result.x_adv >= 0) & (result.x_adv <= 1)))
        True

    Reference:
        W. Brendel, J. Rauber and M. Bethge, "Decision-Based Adversarial
        Attacks: Reliable Attacks Against Black-Box Machine Learning Models",
        ICLR 2018.
    """
    import tensorflow as tf

    from keras_advguard import _validation

    check = _validation.check_number
    _validation.check_positive_int("steps", steps)
    for name, value in (
        ("spherical_step", spherical_step),
        ("source_step", source_step),
    ):
        check(name, value, min_value=0, min_inclusive=False)
    check("source_step_convergence", source_step_convergence, min_value=0)
    check("step_adaptation", step_adaptation, min_value=1, min_inclusive=False)
    _validation.check_positive_int("update_stats_every", update_stats_every)
    _validation.check_positive_int("init_attempts", init_attempts)
    if starting_points is not None:
        _common.check_clip(clip_min, clip_max)
        starting_points = _common.check_inputs(
            starting_points, clip_min, clip_max, name="starting_points"
        )
        if starting_points.shape != np.shape(x):
            raise ValueError(
                "Argument `starting_points` must have the shape of `x`. Received: "
                f"starting_points.shape={starting_points.shape}, "
                f"x.shape={np.shape(x)}"
            )

    def attack_batch(logits_fn, xb, labels, rng, starting_points=None):
        x0 = xb.numpy()
        n = len(x0)
        labels = labels.numpy()
        flat = x0.reshape(n, -1)

        def is_adv(candidates):
            logits = logits_fn(tf.constant(candidates.reshape(x0.shape), tf.float32))
            pred = np.argmax(np.asarray(logits), axis=1)
            return pred == labels if targeted else pred != labels

        if starting_points is not None:
            start = starting_points.reshape(n, -1)
            found = is_adv(start)
        else:
            start, found = _noise_start(is_adv, flat, init_attempts, rng, clip_min, clip_max)
        best = _blend_search(is_adv, flat, np.where(found[:, None], start, flat), found)
        best = _walk(
            is_adv,
            flat,
            best,
            found,
            rng,
            clip_min,
            clip_max,
            steps=steps,
            spherical_step=spherical_step,
            source_step=source_step,
            convergence=source_step_convergence,
            adaptation=step_adaptation,
            every=update_stats_every,
        )
        return best.reshape(x0.shape)

    return _common.run_attack(
        attack_batch,
        model,
        x,
        name="boundary",
        y=y,
        targeted=targeted,
        clip_min=clip_min,
        clip_max=clip_max,
        batch_size=batch_size,
        verbose=verbose,
        seed=seed,
        batch_args={} if starting_points is None else {"starting_points": starting_points},
        params={
            "steps": steps,
            "spherical_step": spherical_step,
            "source_step": source_step,
            "source_step_convergence": source_step_convergence,
            "step_adaptation": step_adaptation,
            "update_stats_every": update_stats_every,
            "init_attempts": init_attempts,
        },
    )


def _noise_start(is_adv, flat, attempts, rng, clip_min, clip_max):
    """Uniform noise images that are adversarial, one per sample when found."""
    start = flat.copy()
    found = np.zeros(len(flat), dtype=bool)
    for _ in range(attempts):
        noise = rng.uniform(clip_min, clip_max, size=flat.shape).astype("float32")
        hit = is_adv(noise) & ~found
        start[hit] = noise[hit]
        found |= hit
        if found.all():
            break
    return start, found


def _blend_search(is_adv, flat, start, found, iterations=20):
    """Smallest blend `x + t (start - x)` that stays adversarial (bisection on t)."""
    low = np.zeros(len(flat))
    high = np.ones(len(flat))
    for _ in range(iterations):
        mid = (low + high) / 2.0
        hit = is_adv(flat + mid[:, None] * (start - flat))
        high = np.where(hit, mid, high)
        low = np.where(hit, low, mid)
    blended = (flat + high[:, None] * (start - flat)).astype("float32")
    return np.where(found[:, None], blended, flat)


def _walk(
    is_adv,
    flat,
    best,
    active,
    rng,
    clip_min,
    clip_max,
    *,
    steps,
    spherical_step,
    source_step,
    convergence,
    adaptation,
    every,
):
    """The boundary walk of Brendel et al. (Foolbox 3's step-size schedule)."""
    n = len(flat)
    spherical_steps = np.full(n, float(spherical_step))
    source_steps = np.full(n, float(source_step))
    spherical_stats = _RateQueue(100, n)
    step_stats = _RateQueue(30, n)
    for step in range(1, steps + 1):
        converged = source_steps < convergence
        running = active & ~converged
        if not running.any():
            break
        # === Proposals ===
        source_dirs = flat - best
        source_norms = np.linalg.norm(source_dirs, axis=1)
        unit_dirs = source_dirs / np.maximum(source_norms, 1e-12)[:, None]
        eta = rng.standard_normal(flat.shape)
        eta -= np.sum(eta * unit_dirs, axis=1, keepdims=True) * unit_dirs
        eta *= (spherical_steps * source_norms / np.maximum(np.linalg.norm(eta, axis=1), 1e-12))[
            :, None
        ]
        distances = np.sqrt(spherical_steps**2 + 1.0)
        spherical = flat + (eta - source_dirs) / distances[:, None]
        spherical = np.clip(spherical, clip_min, clip_max)
        new_dirs = flat - spherical
        new_norms = np.linalg.norm(new_dirs, axis=1)
        lengths = source_steps * source_norms + new_norms - source_norms
        lengths = np.maximum(lengths, 0.0) / np.maximum(new_norms, 1e-12)
        candidates = np.clip(spherical + lengths[:, None] * new_dirs, clip_min, clip_max)
        candidates = candidates.astype("float32")
        # === Accept ===
        hit = is_adv(candidates)
        closer = np.linalg.norm(flat - candidates, axis=1) < source_norms
        accept = hit & closer & running
        best = np.where(accept[:, None], candidates, best)
        # === Adapt the step sizes ===
        if step % every == 0:
            spherical_stats.append(is_adv(spherical.astype("float32")))
            step_stats.append(hit)
            full = spherical_stats.full()
            if full.any():
                rate = spherical_stats.mean()
                up = full & (rate > 0.5)
                down = full & (rate < 0.2)
                factor = np.where(up, adaptation, np.where(down, 1.0 / adaptation, 1.0))
                spherical_steps *= factor
                source_steps *= factor
                spherical_stats.clear(up | down)
            full = step_stats.full()
            if full.any():
                rate = step_stats.mean()
                up = full & (rate > 0.25)
                down = full & (rate < 0.1)
                source_steps *= np.where(up, adaptation, np.where(down, 1.0 / adaptation, 1.0))
                step_stats.clear(up | down)
    return best


class _RateQueue:
    """The last `size` booleans of each of `n` samples (a ring buffer)."""

    def __init__(self, size, n):
        self.data = np.full((size, n), np.nan)
        self.next = 0

    def append(self, values):
        self.data[self.next % len(self.data)] = values
        self.next += 1

    def full(self):
        return ~np.isnan(self.data).any(axis=0)

    def mean(self):
        return np.mean(self.data, axis=0)  # NaN where not full

    def clear(self, mask):
        self.data[:, mask] = np.nan
