"""What every attack shares: argument checks, the batch loop, `AttackResult`.

An attack module only writes its per-batch step,
`attack_batch(logits_fn, x, labels, rng) -> x_adv`, and hands it to
`run_attack`, which validates the inputs, turns the model into a logits
callable (`as_logits_fn`), picks the labels, loops over batches with a
progress bar, clips the result into `[clip_min, clip_max]` and measures it.
"""

import dataclasses
import functools
import time

import numpy as np

from keras_advguard import _batching, _perturb, _progress, _validation

NORMS = (np.inf, 2)
"""Norms accepted by the gradient attacks: `np.inf` (L-infinity) or `2` (L2)."""


@dataclasses.dataclass(eq=False)
class AttackResult:
    """Adversarial inputs produced by one attack run, and what they achieved.

    Attributes:
        x_adv: float32 array, same shape as the attacked `x`, inside
            `[clip_min, clip_max]`.
        success: bool array `(N,)`. Targeted: `x_adv` is classified as the
            target. Untargeted: `x_adv` is classified differently from
            `labels`.
        y_pred_before: int64 array `(N,)`, the model's labels for `x`.
        y_pred_after: int64 array `(N,)`, the model's labels for `x_adv`.
        labels: int64 array `(N,)`, what `success` is measured against: the
            targets (targeted), else `y` when given, else `y_pred_before`.
        l2: float32 array `(N,)`, `||x_adv - x||_2` per sample.
        linf: float32 array `(N,)`, `||x_adv - x||_inf` per sample.
        seconds: wall-clock time of the whole run.
        attack: name of the attack function.
        targeted: whether the attack was targeted.
        params: the attack's parameters (everything but the data).
    """

    x_adv: np.ndarray
    success: np.ndarray
    y_pred_before: np.ndarray
    y_pred_after: np.ndarray
    labels: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    seconds: float
    attack: str
    targeted: bool
    params: dict

    def __len__(self):
        return len(self.x_adv)

    @property
    def success_rate(self):
        """Share of successful samples (0.0 for an empty run)."""
        return float(np.mean(self.success)) if len(self.success) else 0.0

    def summary(self):
        """The numbers every run records (METHODS.md section 6).

        Returns:
            A dict: `"attack"`, `"n"`, `"success_rate"`, `"mean_l2"` and
            `"mean_linf"` (over the successful samples; NaN when none
            succeeded) and `"seconds"`.

        Example:

            >>> import numpy as np
            >>> r = AttackResult(
            ...     x_adv=np.zeros((2, 1)), success=np.array([True, False]),
            ...     y_pred_before=np.array([0, 1]), y_pred_after=np.array([1, 1]),
            ...     labels=np.array([0, 1]), l2=np.array([0.5, 0.1]),
            ...     linf=np.array([0.2, 0.1]), seconds=1.5, attack="fgsm",
            ...     targeted=False, params={})
            >>> r.summary()["success_rate"], r.summary()["mean_l2"]
            (0.5, 0.5)
        """
        ok = self.success
        return {
            "attack": self.attack,
            "n": len(self),
            "success_rate": self.success_rate,
            "mean_l2": float(np.mean(self.l2[ok])) if ok.any() else float("nan"),
            "mean_linf": float(np.mean(self.linf[ok])) if ok.any() else float("nan"),
            "seconds": float(self.seconds),
        }


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


check_clip = _validation.check_clip


def check_norm(norm):
    """`norm` is `np.inf` or `2`; returns it as a Python float/int."""
    _validation.check_choice("norm", norm, NORMS)
    return np.inf if norm == np.inf else 2


def check_eps(eps, name="eps"):
    """A real `eps >= 0`."""
    return float(_validation.check_number(name, eps, min_value=0))


def check_step(eps, eps_iter, nb_iter):
    """`nb_iter >= 1` and `0 <= eps_iter <= eps`; defaults `eps_iter`.

    The default step, `2.5 * eps / nb_iter` capped at `eps`, is the one
    Madry et al. (2018) use: enough to travel the ball and back.
    """
    _validation.check_positive_int("nb_iter", nb_iter)
    if eps_iter is None:
        return min(eps, 2.5 * eps / nb_iter)
    eps_iter = float(_validation.check_number("eps_iter", eps_iter, min_value=0))
    if eps_iter > eps:
        raise ValueError(
            "Argument `eps_iter` (the step) must not exceed `eps` (the radius). "
            f"Received: eps_iter={eps_iter}, eps={eps}"
        )
    return eps_iter


def step_sizes(eps_iter, step_decay, nb_iter):
    """The step of each iteration as float32 scalars: `eps_iter` times `_perturb.step_factors`.

    The schedule `ClassConditionalInputDetector(step_decay=...)` trains with;
    `TypeError`/`ValueError` for a `step_decay` that is not a number in `(0, 1]`.
    """
    return [np.float32(eps_iter * f) for f in _perturb.step_factors(step_decay, nb_iter)]


def check_inputs(x, clip_min, clip_max, name="x"):
    """`x` as a float32 array of rank >= 2, finite, every value in the clip range.

    The one input check of every attack (`run_attack` calls it on `x`; an
    attack's extra image arguments, such as `boundary`'s `starting_points`,
    too). NaN and infinite values are refused before the range check: NaN
    defeats `min`/`max` comparisons, and an infinite value passes an infinite
    clip range. The check runs on the float32 array (a value finite in float64
    but beyond float32's range is infinite after the cast) and counts the bad
    values (`_validation.check_finite`).
    """
    x = _validation.check_array(name, x, min_ndim=2, dtype_kind="fiu")
    with np.errstate(over="ignore"):  # reported as infinite just below
        x = x.astype("float32", copy=False)
    _validation.check_finite(name, x)
    lo, hi = float(np.min(x)), float(np.max(x))
    if lo < clip_min or hi > clip_max:
        raise ValueError(
            f"The values of `{name}` must lie in [clip_min, clip_max] = "
            f"[{clip_min}, {clip_max}]. Received: {name} with values in [{lo}, {hi}]"
        )
    return x


def check_labels(y, n, name="y"):
    """`None`, or `n` integer labels (or one-hot rows) as an int64 array."""
    if y is None:
        return None
    y = _validation.check_array(name, y, dtype_kind="iuf", allow_empty=True)
    if y.ndim == 2:
        y = np.argmax(y, axis=1)
    elif y.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must hold integer labels of shape (N,) or one-hot "
            f"rows of shape (N, C). Received: {name} with shape={y.shape}"
        )
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise TypeError(f"Argument `{name}` must hold integer class labels.")
    if len(y) != n:
        raise ValueError(
            f"Argument `{name}` must have one label per sample of `x`. "
            f"Received: len({name})={len(y)}, len(x)={n}"
        )
    return y.astype("int64")


def check_label_range(y, num_classes, name="y"):
    """Every label is a class index of the model's output."""
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"Argument `{name}` must hold class indices in [0, {num_classes - 1}] "
            f"(the model has {num_classes} outputs). Received: {name} with values "
            f"in [{y.min()}, {y.max()}]"
        )


def check_batch_args(batch_args, n):
    """Every array in `batch_args` has one row per sample; returns numpy copies."""
    import keras

    checked = {}
    for key, value in batch_args.items():
        value = keras.tree.map_structure(np.asarray, value)
        for leaf in keras.tree.flatten(value):
            if leaf.ndim == 0 or len(leaf) != n:
                raise ValueError(
                    f"Every array in `{key}` must have one row per sample of `x`. "
                    f"Received: an array of shape {leaf.shape} for len(x)={n}"
                )
        checked[key] = value
    return checked


def random_in_ball(rng, shape, norm, eps):
    """Uniform samples from the `norm` ball of radius `eps`, one per row.

    Drawn from the numpy generator `rng` (so a seeded attack repeats
    exactly): uniform per pixel for L-infinity; a Gaussian direction and a
    radius `eps * U^(1/d)` for L2.
    """
    if norm == np.inf:
        return rng.uniform(-eps, eps, size=shape).astype("float32")
    n, dim = shape[0], int(np.prod(shape[1:]))
    direction = rng.standard_normal((n, dim))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    radius = eps * rng.uniform(size=(n, 1)) ** (1.0 / dim)
    return (direction * radius).reshape(shape).astype("float32")


def check_common(batch_size, verbose, targeted=False, seed=None):
    """The arguments every attack takes besides the data."""
    _validation.check_positive_int("batch_size", batch_size)
    _validation.check_choice("verbose", verbose, (0, 1, 2))
    _validation.check_type("targeted", targeted, bool)
    if seed is not None:
        _validation.check_number("seed", seed, min_value=0, integer=True)


def as_logits_fn(model):
    """A callable `x -> float32 logits` for attacks.

    Every attack turns its `model` argument into logits through this
    function (`run_attack` via `logits_callable`). A `DetectorModel` (or a
    wrapper exposing its classifier as `base_model`) is attacked on the
    classifier it wraps, keeping its `logits_layer`.

    Args:
        model: a Keras model (Functional or Sequential; pre-softmax logits are
            taken when it ends in softmax), a `DetectorModel`, or a callable
            already returning logits.

    Returns:
        A callable mapping a batch to a float32 logits tensor.

    Raises:
        ValueError: for a Keras model whose logits cannot be reached (a
            subclassed, unbuilt, multi-input or multi-output model).
        TypeError: for an object that is neither a Keras model nor callable.

    Example:

        >>> import keras, numpy as np
        >>> from keras_advguard import as_logits_fn
        >>> classifier = keras.Sequential([
        ...     keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        >>> logits = as_logits_fn(classifier)(np.ones((2, 4), "float32"))
        >>> tuple(logits.shape), logits.dtype.name
        ((2, 3), 'float32')
    """
    import keras
    import tensorflow as tf

    from keras_advguard._fingerprint import unwrap_model
    from keras_advguard.detector_model import DetectorModel

    if isinstance(model, keras.Model):
        logits_layer = getattr(model, "logits_layer", None)
        logits_model = DetectorModel(unwrap_model(model), logits_layer=logits_layer)
    elif callable(model):
        return model
    else:
        raise TypeError(
            "Argument `model` must be a keras.Model, a DetectorModel or a callable "
            f"returning logits. Received: model of type {type(model).__name__}"
        )

    def logits_fn(x):
        return tf.cast(logits_model(x)["logits"], tf.float32)

    logits_fn.detector_model = logits_model
    return logits_fn


def logits_callable(model):
    """`as_logits_fn(model)` with a float32 output.

    For a Keras model (or `DetectorModel`) the callable is compiled with
    `tf.function` (1.5 to 4 times faster per call on a CPU than an eager
    Keras call); a user's callable is left eager, since it may not be
    traceable (a numpy model attacked by a decision-based attack).
    """
    import keras
    import tensorflow as tf

    # Keras models need no AutoGraph conversion, and converting the callable
    # re-reads its source file (fragile: it fails when the file changed).
    fn = tf.autograph.experimental.do_not_convert(as_logits_fn(model))

    def logits_fn(x):
        return tf.cast(fn(x), tf.float32)

    if isinstance(model, keras.Model):
        return compile_fn(logits_fn)
    return logits_fn


def compile_fn(fn):
    """`tf.function(fn, reduce_retracing=True)`, without spurious warnings.

    Attacks compile their closures once per call. TensorFlow counts the
    traces of every `tf.function` built from the same code object and warns
    about "excessive retracing" after a few attack calls in a row, although
    each function traces only once or twice. Wrapping `fn` in a
    `functools.partial` (which has no code object) keys the count on this
    function alone.
    """
    import tensorflow as tf

    return tf.function(functools.partial(fn), reduce_retracing=True)


# --------------------------------------------------------------------------
# The batch loop
# --------------------------------------------------------------------------


def run_attack(
    attack_batch,
    model,
    x,
    *,
    name,
    y,
    targeted,
    clip_min,
    clip_max,
    batch_size,
    verbose,
    seed=None,
    params=None,
    logits_fn=None,
    batch_args=None,
):
    """Validate, then run `attack_batch` over `x` batch by batch.

    Args:
        attack_batch: `f(logits_fn, x_batch, labels, rng) -> x_adv_batch`,
            with `x_batch` a float32 `tf.Tensor`, `labels` an int64
            `tf.Tensor` (targets when targeted) and `rng` a
            `numpy.random.Generator`. It may return a tensor or an array.
        model: anything `as_logits_fn` accepts.
        x: the inputs, array-like `(N, ...)`.
        name: the attack's name, stored in the result.
        y: labels `(N,)` or one-hot `(N, C)`, or `None`. Untargeted: the true
            labels to move away from (default: the model's predictions).
            Targeted: the targets (default: a random class other than the
            predicted one, drawn with `seed`).
        targeted: whether the attack is targeted.
        clip_min, clip_max: the valid input range.
        batch_size: samples per batch.
        verbose: 0 silent, 1 or 2 a progress bar over batches.
        seed: seed of `rng` (random targets and the attack's own draws).
        params: the attack's parameters, stored in the result.
        logits_fn: an already built logits callable (skips `as_logits_fn`).
        batch_args: a dict of per-sample data (arrays, or nested lists/dicts
            of arrays, first dimension `N`), sliced like `x` and passed to
            `attack_batch` as keyword arguments.

    Returns:
        An `AttackResult`.
    """
    import keras
    import tensorflow as tf

    check_common(batch_size, verbose, targeted, seed)
    check_clip(clip_min, clip_max)
    x = check_inputs(x, clip_min, clip_max)
    y = check_labels(y, len(x))
    batch_args = check_batch_args(batch_args or {}, len(x))
    if logits_fn is None:
        logits_fn = logits_callable(model)
    rng = np.random.default_rng(seed)

    start = time.perf_counter()
    n = len(x)
    x_adv = np.empty_like(x)
    pred_before = np.empty(n, dtype="int64")
    pred_after = np.empty(n, dtype="int64")
    labels = np.empty(n, dtype="int64")
    bar = _progress.progress_bar(
        _batching.num_batches(x, batch_size), verbose=verbose, unit_name="batch"
    )
    begin = 0
    for step, xb in enumerate(_batching.iterate_batches(x, batch_size), start=1):
        end = begin + len(xb)
        xt = tf.convert_to_tensor(xb)
        logits = logits_fn(xt)
        before = np.argmax(np.asarray(logits), axis=1)
        num_classes = int(logits.shape[-1])
        if step == 1 and y is not None:
            check_label_range(y, num_classes)
        if y is not None:
            lab = y[begin:end]
        elif targeted:
            lab = (before + rng.integers(1, num_classes, size=len(xb))) % num_classes
        else:
            lab = before
        rows = slice(begin, end)
        extra = {
            key: keras.tree.map_structure(lambda a, rows=rows: a[rows], value)
            for key, value in batch_args.items()
        }
        out = attack_batch(logits_fn, xt, tf.constant(lab, tf.int64), rng, **extra)
        out = np.clip(np.asarray(out, dtype="float32"), clip_min, clip_max)
        x_adv[begin:end] = out
        pred_before[begin:end] = before
        pred_after[begin:end] = np.argmax(np.asarray(logits_fn(tf.constant(out))), axis=1)
        labels[begin:end] = lab
        bar.update(step)
        begin = end
    seconds = time.perf_counter() - start

    diff = (x_adv - x).reshape(n, -1)
    success = pred_after == labels if targeted else pred_after != labels
    return AttackResult(
        x_adv=x_adv,
        success=success,
        y_pred_before=pred_before,
        y_pred_after=pred_after,
        labels=labels,
        l2=np.linalg.norm(diff, axis=1).astype("float32"),
        linf=np.max(np.abs(diff), axis=1, initial=0.0).astype("float32"),
        seconds=seconds,
        attack=name,
        targeted=targeted,
        params=dict(params or {}),
    )
