"""`evaluate`: every defence against every attack, under one protocol (floor 4)."""

import time

import numpy as np

from keras_advguard.evaluation import _cache, _defences, _protocol, _shared, _stages, _threats
from keras_advguard.evaluation._arguments import BUDGETS, THREAT_MODELS, check_arguments
from keras_advguard.evaluation.report import EvaluationReport

__all__ = ["THREAT_MODELS", "evaluate"]


def evaluate(
    model,
    train,
    test,
    defences=None,
    attacks=("fgsm", "pgd"),
    threat_models=THREAT_MODELS,
    fpr=(0.01, 0.05, 0.1),
    splits=5,
    seed=0,
    cache_dir=None,
    verbose=1,
    *,
    eps=None,
    clip=None,
    quick=False,
    num_images=None,
    epochs=None,
    batch_size=128,
    adaptive_eps=None,
    adaptive_steps=None,
    return_adversarial=False,
    baselines=True,
):
    """Evaluate defences of `model` against attacks, honestly, in one call.

    The protocol of METHODS.md section 7, once for every defence:

    1. **Sets.** `num_images` test images are attacked with each attack
       (with their true labels; a targeted attack with target labels, an
       attack with its own `num_images` on the first that many sources
       only). The *sources* are the test images the classifier gets right
       (the clean set); an attack's adversarial set is its successful
       attacks on them. Counts are reported.
    2. **Splits by source image.** The sources are split `splits` times
       (stratified k-fold on their class) into fit, calibration and test
       parts; a source's clean and adversarial images are always in the same
       part. Every threshold comes from the *clean calibration* images only,
       never from the test part.
    3. **Detectors.** Statistical detectors (`supervised = False`) are fitted
       once on clean training images. Trained ones (`supervised = True`) are
       `clone()`d and fitted on each split's fit part, once per attack and
       once on all attacks mixed, which also gives the attack-unknown matrix
       (trained on one attack, tested on the others). Reported per attack and
       mixed: ROC AUC and TPR at each `fpr` (mean and standard deviation over
       the splits), and the achieved FPR.
    4. **Sanitizers** (`sanitize` after every convolution and hidden dense
       layer, or the layers their entry names) are reported by accuracy:
       clean and under each attack.
    5. **Adaptive threat model.** For every detector, selective and
       orthogonal PGD on the classifier and the detector's `score_tensor`
       (thresholded at the largest `fpr`, on the first split's calibration
       images), on the first split's test sources, the stronger result kept
       per source; reported as AUC, TPR and SR@N (share of sources both
       misclassified and undetected). For every sanitizer, each attack
       again on the sanitized model with BPDA through the sanitizers. The
       report shows both threat models side by side.

    **One activation pass.** Detectors whose score comes from one forward
    pass of the classifier (`tap_request()` not `None`: max-softmax, KNN, the
    medoid LSTM) share it: the classifier runs once per input set (clean
    sources, each attack's adversarial images) over the union of their taps,
    and they are scored, and the medoid LSTM trained on every split and
    attack, from those features (`score_features`, `fit_features`), with
    the same figures as their own passes. The others (entropy: gradients;
    squeezing: squeezed copies; the input CNN: the pixels) run their own.

    The baselines (`max_softmax`, `input_cnn`) are added unless
    `baselines=False`. Oblivious
    attack results are cached on disk, keyed by a content hash of the
    model's weights, the images and the attack's configuration, so a rerun,
    or a run with other defences, loads them.

    Args:
        model: the classifier, a built `keras.Model` (softmax or logits).
        train: `(x_train, y_train)`, images and integer labels, or a
            `tf.data.Dataset` of `(images, labels)` pairs (batched or not,
            read once); statistical detectors are fitted on them, the medoid
            LSTM takes its medoids from them.
        test: `(x_test, y_test)` or a dataset of pairs, the images to attack
            and score. From a dataset with `num_images`, only a seeded
            uniform sample of `num_images` pairs is kept in memory.
        defences: a list of names (`"medoid_lstm"`, `"knn"`, `"entropy"`,
            `"squeeze"`, `"max_softmax"`, `"input_cnn"`, `"mask"`,
            `"median"`, `"nl_means"`), detector instances (unfitted
            statistical ones are fitted here) or sanitizer layers. An
            instance is named in the report by its class (`KNNDetector`,
            `KNNDetector_2`...); a `(name, defence)` pair names it, e.g.
            `("knn_fc4", KNNDetector(model, layer="fc4"))`. A sanitizer goes
            after every convolution and hidden dense layer unless a
            `(name, sanitizer, {"after": layers})` triple says where
            (`layers` as `sanitize(model, after, ...)` takes them: names,
            nested paths, presets, classes). A statistical detector you
            have already fitted (say, a `ClassConditionalInputDetector`
            trained for an hour) goes in as `(name, detector, {"fit":
            False})`: used as given, not fitted again on `train`. Report
            names must be unique.
            Defaults to `None`: all.
        attacks: names of `keras_advguard.attacks` functions, or
            `(name, params)` pairs. Besides the attack's own arguments,
            `params` may hold `num_images` (attack only the first that many
            sources, e.g. a slow attack on fewer images; the other sources
            simply have no adversarial image for it) and `targeted=True` or
            `target="random"` / `"next"` (a targeted attack towards seeded
            random other classes, or `(y + 1) % num_classes`; it succeeds
            when the prediction equals the target). Defaults to
            `("fgsm", "pgd")`.
        threat_models: a subset of `("oblivious", "adaptive")`. Defaults to
            both.
        fpr: target false positive rates in `(0, 1)`. Defaults to
            `(0.01, 0.05, 0.1)`.
        splits: number of source splits, >= 2 (`quick=True` uses at most 2).
            Defaults to `5`.
        seed: seed of the image choice, the splits and the attacks.
            Defaults to `0`.
        cache_dir: folder of the attack cache; `False` disables it.
            Defaults to `None`: `$KERAS_ADVGUARD_HOME/attacks`, else
            `~/.keras_advguard/attacks`.
        verbose: `0` silent, `1` one line per stage and progress bars.
            Defaults to `1`.
        eps: attack radius (L-infinity) of the attacks that take one.
            Defaults to `None`: a tenth of the input range.
        clip: `(clip_min, clip_max)`, the valid input range. Defaults to
            `None`: `(0, 1)` when the images lie there, else their min and max.
        quick: tiny budgets (150 images, 300 training images, 10 PGD steps,
            3 epochs, 20 adaptive steps, at most 2 splits). Defaults to `False`.
        num_images: test images to attack. Defaults to `None`: all (150 with
            `quick=True`).
        epochs: training epochs of trained detectors. Defaults to `None`: 30
            (3 with `quick=True`).
        batch_size: batch size of every pass. Defaults to `128`.
        adaptive_eps: L-infinity radius of the adaptive detector attacks.
            Defaults to `None`: the largest L-infinity `eps` among `attacks`
            (FGSM, PGD, BIM, MIM, noise, SPSA; an L2 attack's `eps` is no
            L-infinity radius), else `eps`.
        adaptive_steps: steps of each adaptive detector attack. Defaults to
            `None`: 100 (20 with `quick=True`).
        return_adversarial: whether the report keeps every attack's
            adversarial images, their test indices and success masks
            (`report.adversarial(attack)`, `report.save(dir,
            adversarial=True)`); they never enter report.json. Defaults to
            `False`.
        baselines: whether to add the baselines (`max_softmax`,
            `input_cnn`). With `False` the report says in its summary that
            they were left out. Defaults to `True`.

    Returns:
        An `EvaluationReport`.

    Raises:
        ValueError: bad values (shapes, NaN, labels out of range, unknown
            names, `fpr` outside `(0, 1)`, too few correctly classified
            images for the splits, two defences with one report name, a
            sanitizer's `after` naming layers the model lacks, an attack's
            `num_images` above `num_images`, a target for an attack that
            cannot be targeted).
        TypeError: arguments of the wrong type.

    Example:

        >>> import keras_advguard as ag
        >>> from keras_advguard.datasets import load_dataset
        >>> from keras_advguard.models import load_or_train
        >>> train, test = load_dataset("digits")
        >>> model, _ = load_or_train("digits_cnn", "digits", epochs=30)
        >>> report = ag.evaluate(model, train, test, defences=["mask"], attacks=["fgsm"],
        ...                      threat_models=("oblivious",), num_images=60, splits=2,
        ...                      quick=True, cache_dir=False, verbose=0)
        >>> sorted(report.sanitizers), report.meta["n_images"]
        (['mask'], 60)
        >>> sorted(report.detectors) == sorted(report.meta["baselines"])
        True
    """

    start = time.perf_counter()
    config = check_arguments(
        model,
        train,
        test,
        defences,
        attacks,
        threat_models,
        fpr,
        splits,
        seed,
        cache_dir,
        verbose,
        eps,
        clip,
        quick,
        num_images,
        epochs,
        batch_size,
        adaptive_eps,
        adaptive_steps,
        return_adversarial,
        baselines,
    )
    (x_train, y_train), (x_test, y_test) = config["train"], config["test"]
    budget = BUDGETS[bool(quick)]
    log = _stages.Log(verbose)
    timing = {}

    # --- Defences: names and sanitizer placements, checked before any work --
    if config["baselines"]:
        items = _defences.with_baselines(config["defences"])
    else:
        items = _defences.without_baselines(config["defences"])
    names = _defences.report_names(items)
    placements, prefitted = {}, set()
    for item, name in zip(items, names, strict=True):
        options = _defences.unpack(item)[2]
        if "after" in options:
            placements[name] = _defences.check_after(model, name, options["after"])
        if options.get("fit") is False:
            prefitted.add(name)

    # --- Images: the attacked subset, its clean predictions, the sources ----
    rng = np.random.default_rng(seed)
    n_images = config["num_images"]
    chosen = np.sort(rng.choice(len(x_test), size=n_images, replace=False))
    x_eval, y_eval = x_test[chosen], y_test[chosen]
    y_pred = _stages.predict_labels(model, x_eval, batch_size)
    sources = np.flatnonzero(y_pred == y_eval)
    n_splits = config["splits"]
    if len(sources) < 2 * n_splits:
        raise ValueError(
            f"Only {len(sources)} of the {n_images} test images are classified "
            f"correctly: too few for {n_splits} splits (at least {2 * n_splits}). "
            f"Received: splits={n_splits}, num_images={n_images}"
        )
    split_list = _protocol.source_splits(y_eval[sources], n_splits, seed)
    log(
        f"{n_images} test images, {len(sources)} classified correctly (the sources); "
        f"{n_splits} splits by source image."
    )

    # --- Oblivious attacks (cached) -----------------------------------------
    cache = _cache.AttackCache(config["cache_dir"])
    model_hash = _cache.model_fingerprint(model)
    specs = config["attacks"]
    options = config["attack_options"]
    labels = _threats.labels_of(specs, options)
    num_classes = int(model.outputs[0].shape[-1]) if model.outputs else int(y_eval.max()) + 1
    is_source = np.zeros(n_images, bool)
    is_source[sources] = True
    attacked, attack_rows, adversarial = {}, {}, {}
    t0 = time.perf_counter()
    for label, (name, params), opts in zip(labels, specs, options, strict=True):
        rows = np.arange(n_images)
        if "num_images" in opts:
            rows = sources[: opts["num_images"]]
            if len(rows) < opts["num_images"]:
                log(
                    f"attack {label}: num_images={opts['num_images']} but only "
                    f"{len(rows)} sources; all of them are attacked"
                )
        targets = None
        if "target" in opts:
            targets = _threats.attack_targets(opts["target"], y_eval, num_classes, seed)[rows]
        y_attack = y_eval[rows] if targets is None else targets
        result, cached = _stages.run_attack(
            cache, model_hash, model, name, params, x_eval[rows], y_attack, config, seed
        )
        run = attacked[label] = _stages.Attacked(rows, result, targets)
        success = run.success(y_eval)
        adv = run.full(success, np.zeros(n_images, bool))[sources]
        n_attacked_sources = int(is_source[rows].sum())
        l2 = run.full(result.l2, np.full(n_images, np.nan, np.float32))[sources][adv]
        linf = run.full(result.linf, np.full(n_images, np.nan, np.float32))[sources][adv]
        attack_rows[label] = {
            "attack": name,
            "params": _cache.jsonable(params),
            "n_attacked": int(len(rows)),
            "n_sources": n_attacked_sources,
            "n_adversarial": int(adv.sum()),
            "success_rate": float(adv.sum() / n_attacked_sources) if n_attacked_sources else 0.0,
            "accuracy": float(np.mean(result.y_pred_after == y_eval[rows])),
            "mean_l2": float(np.mean(l2)) if adv.any() else None,
            "mean_linf": float(np.mean(linf)) if adv.any() else None,
            "seconds": float(result.seconds),
            "cached": cached,
            "targeted": run.targeted,
            "target": opts.get("target"),
            "num_images": opts.get("num_images"),
        }
        if config["return_adversarial"]:
            adversarial[label] = {
                "x_adv": np.asarray(result.x_adv),
                "index": chosen[rows].astype(np.int64),
                "source": is_source[rows],
                "y": y_eval[rows],
                "y_pred": np.asarray(result.y_pred_after, np.int64),
                "success": success,
                "adversarial": success & is_source[rows],
            }
            if run.targeted:
                adversarial[label]["target"] = np.asarray(targets, np.int64)
        log(
            f"attack {label}: {adv.sum()} / {n_attacked_sources} sources fooled"
            + (" (targeted)" if run.targeted else "")
            + (" (from the cache)" if cached else f" in {result.seconds:.1f} s")
        )
    timing["attacks"] = time.perf_counter() - t0
    adv_mask = {
        label: run.full(run.success(y_eval), np.zeros(n_images, bool))[sources]
        for label, run in attacked.items()
    }

    # --- Defences -----------------------------------------------------------
    n_train = budget["num_train"] or len(x_train)
    train_pick = np.sort(rng.choice(len(x_train), size=min(n_train, len(x_train)), replace=False))
    x_fit_clean, y_fit_clean = x_train[train_pick], y_train[train_pick]

    detectors_out, sanitizers_out, roc = {}, {}, {}
    adaptive_wanted = "adaptive" in config["threat_models"]
    oblivious_wanted = "oblivious" in config["threat_models"]
    timing["fit"] = timing["score"] = timing["adaptive"] = timing["sanitizers"] = 0.0
    x_sources = x_eval[sources]
    y_sources = y_eval[sources]
    adv_images = {
        label: run.full(run.result.x_adv, x_eval)[sources] for label, run in attacked.items()
    }
    first = split_list[0]
    adaptive_eps = config["adaptive_eps"] or _threats.linf_eps(specs) or config["eps"]
    budget = dict(budget, adaptive_iter=config["adaptive_steps"] or budget["adaptive_iter"])

    built = {}  # detector name -> detector, statistical ones fitted
    for item, name in zip(items, names, strict=True):
        item = _defences.unpack(item)[1]
        kind = _defences.kind_of(item)
        try:
            defence = _defences.build(
                item, model, quick=quick, seed=seed, after=placements.get(name)
            )
            defence.name = name
            if defence.kind == "sanitizer":
                t0 = time.perf_counter()
                sanitizers_out[defence.name] = _stages.evaluate_sanitizer(
                    defence,
                    x_eval,
                    y_eval,
                    attacked,
                    labels,
                    specs,
                    config,
                    cache,
                    seed,
                    adaptive_wanted,
                    log,
                )
                timing["sanitizers"] += time.perf_counter() - t0
                continue
            t0 = time.perf_counter()
            if defence.detector is None:  # the medoid LSTM: medoids from the training images
                defence.detector = _defences.build_lstm(
                    model, x_fit_clean, y_fit_clean, quick=quick, seed=seed
                )
            if name not in prefitted:
                _stages.fit_unsupervised(defence.detector, x_fit_clean, y_fit_clean, config)
            timing["fit"] += time.perf_counter() - t0
            built[name] = defence.detector
        except Exception as error:  # one broken defence does not cost the others
            message = _stages.one_line(error)
            log(f"{name}: failed: {message}")
            (sanitizers_out if kind == "sanitizer" else detectors_out)[name] = {"error": message}

    # --- One activation pass shared by the detectors that allow it ----------
    t0 = time.perf_counter()
    sets = {"clean": x_sources, **adv_images}
    shared, features = _shared_features(model, built, sets, adv_mask, config, log)
    timing["taps"] = time.perf_counter() - t0

    for name, detector in built.items():
        try:
            if shared is not None and name in shared.errors:
                raise shared.errors[name]
            if name in features:
                inputs = _stages.DetectorInputs(features[name], config, shared=True)
            else:
                inputs = _stages.DetectorInputs(sets, config)
            entry, fold_scores, final = _stages.evaluate_detector(
                detector,
                inputs,
                x_sources,
                adv_mask,
                labels,
                split_list,
                config,
                timing,
                log,
                name=name,
            )
        except Exception as error:  # one broken defence does not cost the others
            message = _stages.one_line(error)
            log(f"{name}: failed: {message}")
            detectors_out[name] = {"error": message}
            continue
        entry["name"] = name
        roc.update({(name, k): v for k, v in fold_scores.items()})
        if adaptive_wanted:
            t0 = time.perf_counter()
            entry["adaptive"] = _stages.adaptive_detector(
                model,
                final,
                x_sources,
                y_sources,
                first,
                config,
                adaptive_eps,
                budget,
                seed,
                entry,
                log,
                name=name,
            )
            timing["adaptive"] += time.perf_counter() - t0
        if not oblivious_wanted:
            entry["oblivious"] = {}
            entry["attack_unknown"] = {}
        detectors_out[name] = entry

    undefended = {"clean": float(np.mean(y_pred == y_eval))}
    undefended.update({label: attack_rows[label]["accuracy"] for label in labels})
    timing["total"] = time.perf_counter() - start
    meta = {
        "n_images": int(n_images),
        "n_sources": int(len(sources)),
        "n_train": int(len(x_train)),
        "n_train_used": int(len(x_fit_clean)),
        "input_shape": [int(d) for d in x_test.shape[1:]],
        "clip": [float(c) for c in config["clip"]],
        "eps": float(config["eps"]),
        "adaptive_eps": float(adaptive_eps),
        "splits": int(n_splits),
        "fprs": [float(f) for f in config["fpr"]],
        "seed": int(seed),
        "quick": bool(quick),
        "epochs": int(config["epochs"]),
        "threat_models": list(config["threat_models"]),
        "baselines": [b for b in _defences.BASELINES if b in detectors_out],
        "baselines_left_out": not config["baselines"],
        "model": getattr(model, "name", type(model).__name__),
        "model_fingerprint": model_hash,
        "cache_dir": config["cache_dir"],
        "cache_hits": cache.hits,
        "cache_misses": cache.misses,
        "timing": {k: float(v) for k, v in timing.items()},
        "versions": _versions(),
    }
    return EvaluationReport(
        meta=meta,
        attacks=attack_rows,
        detectors=detectors_out,
        sanitizers=sanitizers_out,
        undefended=undefended,
        roc=roc,
        adversarial=adversarial if config["return_adversarial"] else None,
    )


def _shared_features(model, detectors, sets, adv_mask, config, log):
    """Run the shared activation pass over every input set.

    Returns `(shared, features)`: the `SharedTaps` (or `None` when no
    detector takes part or the pass cannot be built) and `{name: {set:
    features aligned with the sources}}` (adversarial rows filled where the
    attack succeeded).
    """
    try:
        shared = _shared.SharedTaps(model, detectors)
    except Exception as error:  # every detector falls back to its own pass
        log(f"no shared activation pass ({_stages.one_line(error)}); each detector runs its own")
        return None, {}
    if not shared.names:
        return shared, {}
    n = len(sets["clean"])
    features = {name: {} for name in shared.names}
    for key, x in sets.items():
        rows = np.arange(n) if key == "clean" else np.flatnonzero(adv_mask[key])
        got = shared.features(x[rows], config["batch_size"])
        for name, values in got.items():
            like = values if values is not None else features[name]["clean"]
            full = np.zeros((n,) + like.shape[1:], like.dtype)
            if values is not None:
                full[rows] = values
            features[name][key] = full
    features = {name: sets_ for name, sets_ in features.items() if name in shared.names}
    own = [name for name in detectors if name not in features]
    log(
        f"one shared activation pass for {', '.join(features) or 'no detector'}"
        + (f"; own passes: {', '.join(own)}" if own else "")
    )
    return shared, features


def _versions():
    import keras
    import tensorflow as tf

    from keras_advguard.version import __version__

    return {"keras_advguard": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}
