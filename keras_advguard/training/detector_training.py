"""`adversarial_fit`: train a Keras detector on examples crafted against itself."""

import numpy as np

from keras_advguard import _validation

ATTACKS = ("selective_pgd", "orthogonal_pgd")
"""Adaptive attacks `adversarial_fit` can regenerate the negatives with."""


def _attack_functions(attack):
    from keras_advguard import attacks

    names = [attack] if isinstance(attack, str) or callable(attack) else list(attack)
    if not names:
        raise ValueError(f"Argument `attack` must name at least one attack. Received: {attack!r}")
    functions = []
    for i, name in enumerate(names):
        if callable(name):
            functions.append((getattr(name, "__name__", f"attack[{i}]"), name))
            continue
        if not isinstance(name, str):
            raise TypeError(
                f"Argument `attack` must be one of {ATTACKS}, a callable "
                f"`(model, x, detector, **kwargs) -> AttackResult`, or a list of them. "
                f"Received: {name!r} of type {type(name).__name__}"
            )
        _validation.check_choice("attack", name, ATTACKS)
        functions.append((name, getattr(attacks, name)))
    return functions


def _balanced_weights(n_clean, n_adv):
    """Per-sample weights giving clean and adversarial inputs equal total weight, mean 1."""
    total = n_clean + n_adv
    return np.r_[
        np.full(n_clean, total / (2.0 * n_clean)), np.full(n_adv, total / (2.0 * max(n_adv, 1)))
    ].astype("float32")


def adversarial_fit(
    detector,
    x,
    y=None,
    *,
    eps,
    rounds=3,
    epochs_per_round=5,
    attack="selective_pgd",
    nb_iter=20,
    eps_iter=None,
    norm=np.inf,
    restarts=1,
    x_adv=None,
    fpr=0.05,
    accumulate=True,
    batch_size=None,
    attack_batch_size=128,
    clip_min=0.0,
    clip_max=1.0,
    seed=None,
    verbose=0,
    **fit_kwargs,
):
    """Adversarially train a Keras detector against the adaptive attacker, round by round.

    The detector-side step of asymmetric adversarial training (Yin, Kolouri
    and Rohde, ICLR 2020) for the detectors trained with
    `fit(x, is_adversarial)` (`InputCNNDetector`, `MedoidLSTMDetector`):
    the negatives are regenerated against the **current** detector between
    rounds of ordinary Keras training.

    1. Round 0: the detector is fitted for `epochs_per_round` epochs on the
       clean `x` against `x_adv` (e.g. oblivious PGD examples), or, when
       `x_adv` is `None`, against oblivious PGD on the classifier alone
       (`attacks.pgd`, same budget), keeping the inputs that fool it.
    2. Each of the next `rounds`: the detector is calibrated at `fpr` on
       `x` (only so that the attack has a threshold to go below), then
       `attack` (selective or orthogonal PGD, or a list of them: all are
       run) crafts examples that fool the classifier **and** try to pass
       the current detector; those that fool the classifier are added to the
       negatives (`accumulate=True`, or replace them) and training continues
       for `epochs_per_round` epochs (`initial_epoch` carries on, so
       callbacks see one run).

    Clean and adversarial inputs get equal total weight (`sample_weight`).
    The threshold set for the attacks is removed at the end: calibrate the
    trained detector on held-out clean inputs.

    `KNNDetector` (Carrara et al.'s kNN vote) has no adversarial class in
    its fit; its analogue of this loop augments the **reference set**: the
    examples that fool the classifier are added to the training activations
    with the label of their source (`y`), so an input the attack pushes
    towards them finds neighbours that disagree with the wrong prediction.
    Round 0 fits it on `x` and the oblivious examples (or `x_adv`, one
    attacked version per row of `x`); each round refits it on `x` and every
    fooling example so far (`accumulate`). `epochs_per_round`, `batch_size`
    and `**fit_kwargs` do not apply there (the kNN has no epochs; the
    classifier passes use `attack_batch_size`). The calibration-only
    detectors have nothing to train, and `ClassConditionalInputDetector`
    trains against its own attacker inside `fit`.

    Args:
        detector: a `keras.Model` detector with `supervised = True` and a
            guarded classifier (`detector.model`), or a `KNNDetector` with a
            classifier (see above).
        x: clean training images `(N, ...)` in `[clip_min, clip_max]`.
        y: their labels `(N,)`, what the attacks move away from (and, for
            `KNNDetector`, the reference labels). Defaults to `None`: the
            classifier's predictions.
        eps: the attack radius in `norm` (>= 0).
        rounds: adaptive rounds after round 0 (>= 0). Defaults to `3`.
        epochs_per_round: training epochs per round (>= 1). Defaults to `5`.
        attack: `"selective_pgd"`, `"orthogonal_pgd"`, a callable
            `(model, x, detector, **kwargs) -> AttackResult` taking the
            keyword arguments of `attacks.selective_pgd`, or a list of these.
            Defaults to `"selective_pgd"`.
        nb_iter: attack steps (>= 1). Defaults to `20`.
        eps_iter: attack step size. Defaults to `None`: `eps / 10`.
        norm: `np.inf` or `2`. Defaults to `np.inf`.
        restarts: attack restarts (>= 1). Defaults to `1`.
        x_adv: round 0's adversarial inputs. Defaults to `None` (oblivious
            PGD, see above).
        fpr: false positive rate of the threshold the attacks must go below.
            Defaults to `0.05`.
        accumulate: keep the negatives of every round (`True`) or only the
            latest round's. Defaults to `True`.
        batch_size: training batch size. Defaults to `None`: the detector's
            `fit` default.
        attack_batch_size: attack batch size. Defaults to `128`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        seed: seed of the attacks' random starts (round `r` uses
            `seed + r`). Defaults to `None`.
        verbose: `0` silent, `1` one line per round (and Keras's own bars
            with `verbose=1` in `fit_kwargs`). Defaults to `0`.
        **fit_kwargs: passed to every `detector.fit` (`callbacks`,
            `validation_data`, `verbose`, ...).

    Returns:
        A `keras.callbacks.History`: `history` holds the metrics of every
        epoch of every round, in order; `rounds` is a list of dicts per
        round, `{"round", "attack", "n_new", "fooled", "evaded",
        "n_negatives"}` (`fooled`: share of `x` whose crafted input fools the
        classifier; `evaded`: share that fools it and scores at or below the
        current threshold, before this round's training; `None` in round 0).
        For `KNNDetector`, `history` is empty (no epochs) and
        `n_negatives` counts the adversarial reference samples.

    Raises:
        TypeError: a detector that is neither trained with
            `fit(x, is_adversarial)` nor a `KNNDetector`, `fit_kwargs` for a
            `KNNDetector`, or an `attack` of the wrong type.
        ValueError: a detector without a classifier, an unknown attack, bad
            budgets, NaN or infinite `x`, or `x` outside the clip range.

    Example:

        >>> import keras, numpy as np
        >>> from keras_advguard.detectors import InputCNNDetector
        >>> from keras_advguard.training import adversarial_fit
        >>> keras.utils.set_random_seed(0)
        >>> model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
        ...                           keras.layers.Dense(2)])
        >>> x = np.random.default_rng(0).random((32, 6, 6, 1)).astype("float32")
        >>> detector = InputCNNDetector(model, filters=(2,), dense_units=4)
        >>> history = adversarial_fit(detector, x, eps=0.1, rounds=1,
        ...                           epochs_per_round=1, nb_iter=3, seed=0)
        >>> [r["round"] for r in history.rounds], len(history.history["loss"])
        ([0, 1], 2)
    """
    import keras

    from keras_advguard import attacks
    from keras_advguard.detectors.knn_detector import KNNDetector

    knn = isinstance(detector, KNNDetector)
    if not knn and not (
        isinstance(detector, keras.Model) and getattr(detector, "supervised", False)
    ):
        raise TypeError(
            "Argument `detector` must be a keras.Model detector trained with "
            "`fit(x, is_adversarial)` (supervised = True: InputCNNDetector, "
            "MedoidLSTMDetector) or a KNNDetector. The calibration-only detectors have "
            "nothing to train; ClassConditionalInputDetector trains against its own "
            f"attacker in `fit`. Received: detector of type {type(detector).__name__}"
        )
    if knn and fit_kwargs:
        raise TypeError(
            "A KNNDetector has no Keras `fit` to pass keyword arguments to. "
            f"Received: {', '.join(sorted(fit_kwargs))}"
        )
    model = getattr(detector, "model", None)
    if model is None:
        raise ValueError(
            "Argument `detector` must guard a classifier (`detector.model`): the "
            "adaptive examples must fool it. Received: a detector without one"
        )
    _validation.check_number("eps", eps, min_value=0.0)
    _validation.check_type("rounds", rounds, int)
    if isinstance(rounds, bool) or rounds < 0:
        raise ValueError(f"Argument `rounds` must be >= 0. Received: rounds={rounds!r}")
    _validation.check_positive_int("epochs_per_round", epochs_per_round)
    _validation.check_positive_int("nb_iter", nb_iter)
    _validation.check_type("accumulate", accumulate, bool)
    _validation.check_choice("verbose", verbose, (0, 1))
    functions = _attack_functions(attack)
    x = _validation.check_array("x", x, min_ndim=2, dtype_kind="fiu")
    _validation.check_finite("x", x)
    x = x.astype("float32", copy=False)
    low, high = float(x.min()), float(x.max())
    if low < clip_min or high > clip_max:
        raise ValueError(
            f"Argument `x` must lie in [clip_min, clip_max] = [{clip_min}, {clip_max}]. "
            f"Received: values in [{low}, {high}]"
        )
    if y is None:
        y = np.argmax(np.asarray(model.predict(x, batch_size=attack_batch_size, verbose=0)), 1)
    y = _validation.check_array("y", y, dtype_kind="iub")
    _validation.check_same_length("x", x, "y", y)
    budget = {
        "eps": eps,
        "eps_iter": eps_iter,
        "nb_iter": nb_iter,
        "norm": norm,
        "clip_min": clip_min,
        "clip_max": clip_max,
        "batch_size": attack_batch_size,
    }

    def log(message):
        if verbose:
            print(f"adversarial_fit: {message}", flush=True)

    fit_verbose = fit_kwargs.pop("verbose", 0)
    if "epochs" in fit_kwargs or "initial_epoch" in fit_kwargs or "sample_weight" in fit_kwargs:
        raise TypeError(
            "`adversarial_fit` sets `epochs`, `initial_epoch` and `sample_weight` of every "
            "round itself; use `rounds` and `epochs_per_round`."
        )
    if batch_size is not None:
        fit_kwargs["batch_size"] = batch_size

    history = keras.callbacks.History()
    history.history = {}
    history.rounds = []

    def train(negatives, round_index):
        if knn:
            x_ref = np.concatenate([x, negatives])
            detector.fit(x_ref, np.r_[y, neg_labels], batch_size=attack_batch_size)
            return
        x_fit = np.concatenate([x, negatives])
        labels = np.r_[np.zeros(len(x)), np.ones(len(negatives))].astype("float32")
        weights = _balanced_weights(len(x), len(negatives))
        start = round_index * epochs_per_round
        h = detector.fit(
            x_fit,
            labels,
            sample_weight=weights,
            epochs=start + epochs_per_round,
            initial_epoch=start,
            verbose=fit_verbose,
            **fit_kwargs,
        )
        for key, values in h.history.items():
            history.history.setdefault(key, []).extend(values)
        history.set_model(detector)
        history.set_params(h.params)

    # Round 0: oblivious examples.
    if x_adv is None:
        result = attacks.pgd(model, x, y=y, seed=seed, **budget)
        negatives = result.x_adv[result.success]
        neg_labels = y[result.success]
        fooled = result.success_rate
    else:
        negatives = _validation.check_array("x_adv", x_adv, min_ndim=2, dtype_kind="fiu")
        _validation.check_finite("x_adv", negatives)
        negatives = negatives.astype("float32", copy=False)
        if knn and negatives.shape != x.shape:
            raise ValueError(
                "For a KNNDetector, `x_adv` must hold one attacked version of each row "
                f"of `x` (their labels are `y`). Received: x_adv of shape {negatives.shape} "
                f"for x of shape {x.shape}"
            )
        neg_labels = y
        fooled = None
    train(negatives, 0)
    history.rounds.append(
        {
            "round": 0,
            "attack": "pgd" if x_adv is None else "x_adv",
            "n_new": len(negatives),
            "fooled": fooled,
            "evaded": None,
            "n_negatives": len(negatives),
        }
    )
    log(f"round 0: {len(negatives)} oblivious negatives")

    for r in range(1, rounds + 1):
        detector.calibrate(x, fpr=fpr, batch_size=attack_batch_size)
        new, new_labels = [], []
        for name, fn in functions:
            run_seed = None if seed is None else seed + r
            result = fn(model, x, detector, y=y, restarts=restarts, seed=run_seed, **budget)
            scores = detector.score(result.x_adv, batch_size=attack_batch_size)
            evaded = result.success & (scores <= detector.threshold_)
            new.append(result.x_adv[result.success])
            new_labels.append(y[result.success])
            history.rounds.append(
                {
                    "round": r,
                    "attack": name,
                    "n_new": int(result.success.sum()),
                    "fooled": result.success_rate,
                    "evaded": float(np.mean(evaded)),
                }
            )
            log(
                f"round {r}, {name}: fooled {result.success_rate:.3f}, "
                f"fooled and undetected {np.mean(evaded):.3f}"
            )
        new, new_labels = np.concatenate(new), np.concatenate(new_labels)
        negatives = np.concatenate([negatives, new]) if accumulate else new
        neg_labels = np.concatenate([neg_labels, new_labels]) if accumulate else new_labels
        for entry in history.rounds:
            if entry["round"] == r:
                entry["n_negatives"] = len(negatives)
        train(negatives, r)
    detector._clear_threshold()
    return history
