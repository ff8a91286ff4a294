"""Attacks by name and the adaptive threat model, built from the Detector contract only.

- Oblivious: the attack sees only the undefended classifier.
- Adaptive, sanitizer: the same attack on the sanitized model with every
  sanitizer wrapped in BPDA (identity on the backward pass).
- Adaptive, detector: selective and orthogonal PGD (Bryniarski et al.
  2022) on the classifier and `detector.score_tensor`: while a sample is
  still classified correctly, step up the classifier's cross-entropy; once
  it is fooled, step down the detector's score (orthogonal PGD projects each
  step off the other objective's gradient); selective PGD three times,
  with the constant step eps/10, with a step shrinking to eps/200, and
  with the shrinking step targeted at each source's runner-up class. The
  score's gradient is whatever `score_tensor` offers (`score_tensor_kind`:
  exact, a smooth surrogate, or BPDA), so no detector needs code here.
"""

import inspect

import numpy as np

from keras_advguard import _validation

ATTACK_NAMES = (
    "fgsm",
    "pgd",
    "apgd",
    "bim",
    "mim",
    "gradient_attack",
    "uniform_noise",
    "deepfool",
    "carlini_wagner_l2",
    "spsa",
    "one_pixel",
    "boundary",
)
"""Attack names `evaluate` accepts in `attacks` (functions of `keras_advguard.attacks`)."""

_ITERATIVE = ("pgd", "bim", "mim")

# Attacks whose `eps` is an L-infinity radius unless their `norm` says otherwise
# (the others bound L2, L0 or nothing: their `eps` is no radius for the adaptive attack).
_LINF = ("fgsm", "pgd", "apgd", "bim", "mim", "uniform_noise", "spsa")


def linf_eps(specs):
    """The largest L-infinity radius among the attack specs (`0.0` if none has one)."""
    radii = [
        float(params["eps"])
        for name, params in specs
        if name in _LINF and "eps" in params and params.get("norm", np.inf) in (np.inf, "inf")
    ]
    return max(radii, default=0.0)


def check_attacks(attacks):
    """`attacks` as a list of `(name, params)`; names checked, nothing run."""
    if isinstance(attacks, str) or (isinstance(attacks, tuple) and _is_spec(attacks)):
        attacks = [attacks]
    _validation.check_type("attacks", attacks, (list, tuple), "a list of attack names")
    if not attacks:
        raise ValueError("Argument `attacks` must not be empty. Received: attacks=[]")
    specs = []
    for item in attacks:
        if isinstance(item, str):
            name, params = item, {}
        elif _is_spec(item):
            name, params = item[0], dict(item[1])
        else:
            raise TypeError(
                "Each entry of `attacks` must be an attack name or a pair "
                f"(name, params). Received: {item!r}"
            )
        _validation.check_choice("attacks", name, ATTACK_NAMES)
        specs.append((name, params))
    return specs


def _is_spec(item):
    return (
        isinstance(item, tuple | list)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], dict)
    )


def attack_function(name):
    from keras_advguard import attacks

    return getattr(attacks, name)


def attack_params(name, params, *, eps, quick):
    """The attack's parameters with the evaluation's defaults filled in."""
    accepted = inspect.signature(attack_function(name)).parameters
    full = {}
    if "eps" in accepted:
        full["eps"] = eps
    if name in _ITERATIVE:
        full["nb_iter"] = 10 if quick else 40
    elif name == "apgd" and quick:  # its own default: AutoAttack's 100 steps
        full["nb_iter"] = 10
    full.update(params)
    if name in _ITERATIVE and "eps_iter" not in full:
        full["eps_iter"] = min(full["eps"], 2.5 * full["eps"] / full["nb_iter"])
    unknown = sorted(set(full) - set(accepted))
    if unknown:
        raise ValueError(
            f"Attack {name!r} takes no parameter {', '.join(map(repr, unknown))}. "
            f"Received: params={params!r}"
        )
    return full


ENGINE_OPTIONS = ("num_images", "target")
"""Keys of an attack's params that `evaluate` itself takes (the attack never sees them)."""

TARGET_MODES = ("random", "next")
"""Target choices of a targeted attack: a seeded random other class, or `(y + 1) % C`."""


def split_options(name, params):
    """Split one attack's params into `(attack params, engine options)`, checked.

    The options are `num_images` (attack only the first that many sources)
    and `target` (`"random"` or `"next"`, a targeted attack); `targeted=True`
    alone means `target="random"`. A targeted attack's params keep
    `targeted=True` (the attack function's own argument).

    Raises:
        ValueError: a bad `num_images` or `target`, `targeted=False` with a
            `target`, or a target for an attack that cannot be targeted.
        TypeError: `num_images` not an integer or `targeted` not a bool.
    """
    params = dict(params)
    options = {key: params.pop(key) for key in ENGINE_OPTIONS if key in params}
    if "num_images" in options:
        n = options["num_images"]
        if isinstance(n, bool) or not isinstance(n, int | np.integer):
            raise TypeError(
                f"The `num_images` of attack {name!r} must be an integer. "
                f"Received: num_images={n!r}"
            )
        if n < 1:
            raise ValueError(
                f"The `num_images` of attack {name!r} must be >= 1. Received: num_images={n!r}"
            )
        options["num_images"] = int(n)
    targeted = params.get("targeted", None)
    if targeted is not None and not isinstance(targeted, bool | np.bool_):
        raise TypeError(
            f"The `targeted` of attack {name!r} must be a bool. Received: targeted={targeted!r}"
        )
    if "target" in options:
        if options["target"] not in TARGET_MODES:
            raise ValueError(
                f"The `target` of attack {name!r} must be one of {TARGET_MODES}. "
                f"Received: target={options['target']!r}"
            )
        if targeted is not None and not targeted:
            raise ValueError(
                f"Attack {name!r} is given a `target` but `targeted=False`. "
                f"Received: targeted=False, target={options['target']!r}"
            )
    elif targeted:
        options["target"] = "random"
    if "target" in options:
        if "targeted" not in inspect.signature(attack_function(name)).parameters:
            raise ValueError(
                f"Attack {name!r} cannot be targeted (it takes no `targeted` argument). "
                f"Received: target={options['target']!r}"
            )
        params["targeted"] = True
    return params, options


def attack_targets(mode, y, num_classes, seed):
    """Target labels `!= y`: `"next"` = `(y + 1) % C`; `"random"` = seeded uniform other class.

    The random targets depend only on `seed` and `y`, so every targeted
    attack of one evaluation aims at the same targets.
    """
    y = np.asarray(y, dtype=np.int64)
    if mode == "next":
        return (y + 1) % num_classes
    offsets = np.random.default_rng([int(seed), 104]).integers(1, num_classes, size=len(y))
    return (y + offsets) % num_classes


def labels_of(specs, options=None):
    """Unique report names: the attack's name, with its parameters when repeated.

    `options` (one dict per spec, see `split_options`) count as parameters.
    """
    if options is not None:
        specs = [(n, {**p, **o}) for (n, p), o in zip(specs, options, strict=True)]
    names = [name for name, _ in specs]
    labels = []
    for name, params in specs:
        if names.count(name) > 1:
            inner = ", ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(params.items())
            )
            name = f"{name} ({inner})"
        labels.append(name)
    if len(set(labels)) != len(labels):
        raise ValueError(f"Argument `attacks` lists the same attack twice. Received: {labels}")
    return labels


def selective_loss(threshold):
    """Selective-PGD objective for `pgd_with_loss` (maximised).

    Correctly classified samples: the cross-entropy of the true class;
    fooled ones: `-(score - threshold)`, i.e. push the detector's score
    below its threshold without undoing the misclassification.
    """
    import tensorflow as tf

    def loss(outputs, y):
        logits = tf.cast(outputs["logits"], tf.float32)
        y = tf.cast(y, tf.int64)
        correct = tf.equal(tf.argmax(logits, axis=-1), y)
        ce = tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        score = tf.reshape(tf.cast(outputs["score"], tf.float32), [-1])
        return tf.where(correct, ce, -(score - threshold))

    loss.__name__ = "selective_loss"
    return loss


ADAPTIVE_STEP_DECAY = 0.05
"""`step_decay` of `"selective_pgd_decaying"`: its last step as a fraction of the first."""

ADAPTIVE_DETECTOR_ATTACKS = {
    "selective_pgd": ("selective_pgd", 1.0, None),
    "orthogonal_pgd": ("orthogonal_pgd", 1.0, None),
    "selective_pgd_decaying": ("selective_pgd", ADAPTIVE_STEP_DECAY, None),
    "selective_pgd_runner_up": ("selective_pgd", ADAPTIVE_STEP_DECAY, "runner_up"),
}
"""The attacks `evaluate` runs against every detector (the best per source is reported).

Name in the report -> `(attack function, step_decay, target)`, `target`
`None` (untargeted) or `"runner_up"`.
`"selective_pgd_decaying"` is selective PGD whose step shrinks from eps/10 to
`eps/10 * ADAPTIVE_STEP_DECAY` (eps/200) over the steps: a learned
detector's score can have maxima narrower than the constant sign step
eps/10, which then jumps over all of them (on MNIST at eps 0.3 the
class-conditional detector attacked alone was evaded on 0 of 100 sources
with eps/10, on 100 with the shrinking step at the same 500 steps;
`benchmarks/results/robust.md`).
`"selective_pgd_runner_up"` is the same, targeted at each source's runner-up
class (the most likely wrong one on the clean source): an untargeted step
stops at the first wrong class it reaches, often barely across the
boundary, where a confidence-based score such as max-softmax flags it;
pushing one class all the way up evades such a score far more often (on the
`--quick` digits run of `benchmarks/robust.py`, max-softmax of the
adversarially trained CNN was evaded at 5% FPR on 12 of 74 sources against 6
untargeted).
"""


def runner_up_targets(model, x, y, batch_size):
    """Per input, the most likely class other than `y` under `model` (int64 `(N,)`)."""
    import tensorflow as tf

    from keras_advguard.attacks._common import as_logits_fn

    if len(x) == 0:
        return np.zeros(0, np.int64)
    logits_fn = as_logits_fn(model)
    logits = np.concatenate(
        [
            np.asarray(logits_fn(tf.constant(x[i : i + batch_size])), dtype=np.float64)
            for i in range(0, len(x), batch_size)
        ]
    )
    logits[np.arange(len(x)), np.asarray(y, dtype=np.int64)] = -np.inf
    return np.argmax(logits, axis=1).astype(np.int64)


def adaptive_detector_attack(
    model, detector, x, y, *, eps, nb_iter, clip, batch_size, seed, attack="selective_pgd"
):
    """Selective (or orthogonal) PGD against `model` guarded by the calibrated `detector`."""
    import keras

    from keras_advguard import attacks
    from keras_advguard.attacks._common import as_logits_fn

    threshold = float(detector.threshold_)
    eps_iter = eps / 10 if nb_iter >= 10 else eps / nb_iter * 2.5
    attack, step_decay, target = ADAPTIVE_DETECTOR_ATTACKS.get(attack, (attack, 1.0, None))
    keras.utils.set_random_seed(seed)
    selective = getattr(attacks, attack, None)
    if selective is not None:
        accepted = inspect.signature(selective).parameters
        kwargs = dict(
            eps=eps,
            eps_iter=min(eps, eps_iter),
            nb_iter=nb_iter,
            y=y,
            clip_min=clip[0],
            clip_max=clip[1],
            batch_size=batch_size,
        )
        if "seed" in accepted:
            kwargs["seed"] = seed
        if "step_decay" in accepted:
            kwargs["step_decay"] = step_decay
        if target == "runner_up":
            kwargs.update(y=runner_up_targets(model, x, y, batch_size), targeted=True)
        return selective(model, x, [detector], **kwargs)
    logits_fn = as_logits_fn(model)

    def forward(x):
        return {"logits": logits_fn(x), "score": detector.score_tensor(x)}

    return attacks.pgd_with_loss(
        forward,
        x,
        selective_loss(threshold),
        eps=eps,
        eps_iter=min(eps, eps_iter),
        nb_iter=nb_iter,
        step_decay=step_decay,
        y=np.asarray(y, dtype=np.int64),
        clip_min=clip[0],
        clip_max=clip[1],
        batch_size=batch_size,
        seed=seed,
    )
